"""The stores' database: URLs, the versioned schema and its upgrade, on SQLite and on a real
PostgreSQL server."""

import multiprocessing
from pathlib import Path

import pytest
import sqlalchemy as sa

from recommender.exceptions import ConfigError
from recommender.store import tables
from recommender.store.database import (
    Database,
    DatabaseUrlError,
    SchemaOutdatedError,
    StoreUnavailableError,
    database_url,
    default_url,
    head_revision,
)


@pytest.mark.parametrize(("url", "match"), [
    ("not a url", "malformed"),
    ("mysql://u@h/db", "mysql is not supported"),
    ("sqlite://", "names no file"),
    ("sqlite:///:memory:", "names no file"),
])
def test_a_bad_url_is_refused_naming_it(url: str, match: str) -> None:
    with pytest.raises(DatabaseUrlError, match=match) as caught:
        Database(url)
    assert isinstance(caught.value, ConfigError)


def test_the_url_comes_from_the_option_then_the_environment_then_the_state_folder(
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NBO_DATABASE_URL", raising=False)
    assert database_url(None, tmp_path) == default_url(tmp_path) == \
        f"sqlite:///{tmp_path.resolve()}/nbo.db"
    monkeypatch.setenv("NBO_DATABASE_URL", "postgresql://nbo@db.bank/nbo")
    assert database_url(None, tmp_path) == "postgresql://nbo@db.bank/nbo"
    assert database_url("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_postgresql_urls_use_psycopg_3_and_hide_the_password() -> None:
    database = Database("postgresql://nbo:s3cret@db.bank:5432/nbo")
    assert database.url.drivername == "postgresql+psycopg"
    assert "s3cret" not in database.name and "s3cret" not in repr(database)
    database.dispose()


def test_upgrade_creates_the_schema_once(database_url: str) -> None:
    database = Database(database_url)
    try:
        assert database.revision() is None
        with pytest.raises(SchemaOutdatedError, match="nbo db upgrade"):
            database.check_current()
        assert database.upgrade() == (None, head_revision())
        assert database.upgrade() == (head_revision(), head_revision())  # nothing to do
        database.check_current()
        assert set(tables.metadata.tables) <= set(database.table_names())
    finally:
        database.dispose()


def test_the_tables_the_queries_use_are_the_ones_the_migrations_make(database) -> None:
    """``tables`` mirrors the head revision: a column added to one and not the other fails."""
    with database.connect() as conn:
        inspector = sa.inspect(conn)
        for name, table in tables.metadata.tables.items():
            made = {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
            declared = {c.name: c.nullable for c in table.columns}
            assert made == declared, name
            made_indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes(name)}
            for index in table.indexes:
                assert made_indexes[index.name] == [c.name for c in index.columns]


def test_an_older_schema_is_refused_naming_the_command(database) -> None:
    with database.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(SchemaOutdatedError) as caught:
        database.check_current()
    message = str(caught.value)
    assert "is at schema 0000" in message and head_revision() in message
    assert "nbo db upgrade --database" in message


def test_a_new_sqlite_file_gets_the_schema_but_a_postgresql_database_does_not(
        database_url: str) -> None:
    database = Database(database_url)
    try:
        if database.is_sqlite:
            database.ensure_schema()
            assert database.revision() == head_revision()
        else:  # replicas never race a migration: only `nbo db upgrade` makes it
            with pytest.raises(SchemaOutdatedError, match="has no schema yet"):
                database.ensure_schema()
            assert database.table_names() == []
    finally:
        database.dispose()


def _upgrade(url: str) -> None:
    database = Database(url)
    database.upgrade()
    database.dispose()


def test_upgrades_run_at_once_from_several_processes_all_succeed(database_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_upgrade, args=(database_url,)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    database = Database(database_url)
    assert database.revision() == head_revision()
    database.dispose()


def test_a_server_that_is_not_there_is_unavailable_at_once(tmp_path: Path) -> None:
    database = Database(f"postgresql://nbo@/nbo?host={tmp_path}")  # no server on that socket
    with pytest.raises(StoreUnavailableError, match="unavailable") as caught:
        database.ping()
    assert database.name in str(caught.value)
    database.dispose()
