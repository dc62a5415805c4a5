"""A state folder from before the database: refused until `nbo db upgrade` imports it whole."""

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recommender.cli import main
from recommender.service import open_database
from recommender.store.database import SchemaOutdatedError
from recommender.store.keys import hash_key, list_keys
from recommender.store.legacy import LegacyImportError, import_legacy
from recommender.store.responses import ResponseStore
from recommender.store.settings import SERVED_VERSION, read_setting

# The files as the service wrote them before (schemas copied from that code).
_OLD_RESPONSES = (
    "CREATE TABLE responses (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL,"
    " product_id TEXT NOT NULL, outcome TEXT NOT NULL, channel TEXT NOT NULL,"
    " recorded_at TEXT NOT NULL)")
_OLD_DECISIONS = (
    "CREATE TABLE decisions (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, source TEXT NOT NULL,"
    " customer_hash TEXT NOT NULL, model_version TEXT NOT NULL, policy_version TEXT NOT NULL,"
    " inputs_fingerprint TEXT NOT NULL, payload BLOB NOT NULL, policy_hash TEXT NOT NULL,"
    " pack_id TEXT, pack_row INTEGER);"
    "CREATE TABLE policies (policy_version TEXT NOT NULL, policy_hash TEXT PRIMARY KEY,"
    " policy_text TEXT NOT NULL);"
    "CREATE TABLE decision_packs (id TEXT PRIMARY KEY, digest TEXT NOT NULL,"
    " payload BLOB NOT NULL)")
KEY_HASH = hash_key("nbo_an-old-key")


def _old_state(state: Path, keys_toml: str | None = None) -> None:
    state.mkdir(parents=True)
    with closing(sqlite3.connect(state / "responses.db")) as conn, conn:
        conn.execute(_OLD_RESPONSES)
        conn.executemany("INSERT INTO responses (customer_id, product_id, outcome, channel, "
                         "recorded_at) VALUES (?, ?, ?, ?, ?)", [
                             ("C1", "mortgage", "declined", "branch",
                              "2026-11-30T09:15:00.000001Z"),
                             ("C2", "credit_card", "shown", "mobile",
                              "2026-12-01T20:00:00.000000Z")])
    with closing(sqlite3.connect(state / "decisions.db")) as conn, conn:
        conn.executescript(_OLD_DECISIONS)
        conn.execute("INSERT INTO policies VALUES ('p1', 'h1', 'the policy text')")
        conn.execute("INSERT INTO decision_packs VALUES ('pack1', 'd1', x'00ff')")
        conn.execute("INSERT INTO decisions VALUES ('0001', '2026-11-30T09:15:00.000000+00:00',"
                     " 'batch', 'ch1', 'm1', 'p1', 'd1:0', x'', 'h1', 'pack1', 0)")
    (state / "api_keys.toml").write_text(keys_toml if keys_toml is not None else (
        '[[keys]]\nid = "k_0000abcd"\nrole = "teller"\nname = "counter 3"\n'
        f'hash = "{KEY_HASH}"\ncreated_at = 2026-11-01T08:00:00Z\n'), encoding="utf-8")
    (state / "served-version").write_text("v-2026-11\n", encoding="utf-8")


def test_a_service_refuses_an_old_state_folder_naming_the_command(tmp_path: Path) -> None:
    _old_state(tmp_path / "var")
    with pytest.raises(SchemaOutdatedError) as caught:
        open_database(tmp_path / "var")
    message = str(caught.value)
    assert "responses.db" in message and "api_keys.toml" in message
    assert f"nbo db upgrade --state {tmp_path / 'var'}" in message
    assert main(["keys", "list", "--state", str(tmp_path / "var")]) == 2


def test_db_upgrade_imports_every_store_and_keeps_the_files(tmp_path: Path) -> None:
    state = tmp_path / "var"
    _old_state(state)
    assert main(["db", "upgrade", "--state", str(state)]) == 0
    database = open_database(state)
    try:
        with ResponseStore(database) as responses:
            (declined,) = responses.for_customer("C1")
            assert (declined.product_id, declined.outcome, declined.recorded_at) == (
                "mortgage", "declined", datetime(2026, 11, 30, 9, 15, 0, 1, tzinfo=UTC))
            assert responses.count() == 2
        with database.connect() as conn:
            assert conn.exec_driver_sql("SELECT id, pack_id, pack_row FROM decisions").all() == [
                ("0001", "pack1", 0)]
            assert conn.exec_driver_sql("SELECT payload FROM decision_packs").scalar() == \
                b"\x00\xff"
        (key,) = list_keys(database)
        assert (key.id, key.role, key.name) == ("k_0000abcd", "teller", "counter 3")
        assert read_setting(database, SERVED_VERSION) == "v-2026-11"
    finally:
        database.dispose()
    assert sorted(p.name for p in state.iterdir() if p.suffix == ".imported") == [
        "api_keys.toml.imported", "decisions.db.imported", "responses.db.imported",
        "served-version.imported"]
    assert main(["db", "upgrade", "--state", str(state)]) == 0  # nothing left to import
    assert main(["keys", "list", "--state", str(state)]) == 0


def test_a_broken_old_file_imports_nothing_and_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "var"
    _old_state(state, keys_toml='[[keys]]\nid = "k_1"\nrole = "janitor"\nhash = "sha256:0"\n')
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    database = open_database(state, legacy_ok=True)
    database.upgrade()
    try:
        with pytest.raises(LegacyImportError, match=r"api_keys.toml: keys\[0\] \(id 'k_1'\)"):
            import_legacy(database, state)
        with ResponseStore(database) as responses:
            assert responses.count() == 0  # the responses before it were rolled back
    finally:
        database.dispose()
    assert {p.name: p.read_bytes() for p in state.iterdir() if p.name in before} == before
