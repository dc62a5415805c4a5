"""Decision log: known answers on tiny records, on SQLite and on a real PostgreSQL server;
what is on disk (SQLite) is scanned for data in clear."""

import base64
import hashlib
import hmac
import json
import logging
import math
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from recommender.exceptions import RecommenderError
from recommender.store import tables
from recommender.store.database import StoreUnavailableError
from recommender.store.decision_key import load_or_create_key
from recommender.store.decision_records import COMPRESSED_LIST_PACK
from recommender.store.decisions import (
    Decision,
    DecisionLog,
    DecisionLogError,
    fingerprint,
)

CUSTOMER = "CUST-ZX-31415"
PROFILE = {"age": 34, "income": 987654.321, "life_stage": "mid_career",
           "holdings": ["current_account"], "name_zh": "王小明"}
OUTPUT = {"offers": [{"product_id": "platinum_xq_mortgage", "score": 0.91, "rank": 1}]}
POLICY = "eligibility v3: min_age 18; contact at most once a week"


def _row(**changes) -> dict:
    row = {"customer_id": CUSTOMER, "source": "api", "model_version": "m-2024-05",
           "policy_version": "policy-3", "policy_text": POLICY, "inputs": PROFILE,
           "output": OUTPUT}
    return {**row, **changes}


def _sql(target, statement: str, parameters: tuple = ()) -> list:
    """Run one statement (``?`` placeholders) in its own transaction, outside the log's code;
    ``target``: a log, or an SQLite file's path."""
    if not hasattr(target, "database"):
        with closing(sqlite3.connect(target)) as conn:
            rows = conn.execute(statement, parameters).fetchall()
            conn.commit()
        return rows
    database = target.database
    if not database.is_sqlite:
        statement = statement.replace("?", "%s")
    with database.begin() as conn:
        result = conn.exec_driver_sql(statement, parameters)
        return [tuple(row) for row in result] if result.returns_rows else []


@pytest.fixture
def key(tmp_path) -> bytes:
    return load_or_create_key(tmp_path / "keys" / "decisions.key")


@pytest.fixture
def log(database, key):
    with DecisionLog(database, key) as opened:
        yield opened


def test_key_is_created_private_and_reused(tmp_path):
    path = tmp_path / "secrets" / "nested" / "decisions.key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(key)  # a usable key
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["decisions.key"]  # no temp file left


def test_a_file_that_is_not_a_fernet_key_is_refused(tmp_path):
    path = tmp_path / "decisions.key"
    path.write_text("not-a-fernet-key\n")
    with pytest.raises(DecisionLogError, match=re.escape(str(path))) as caught:
        load_or_create_key(path)
    assert isinstance(caught.value, RecommenderError)
    assert path.read_text() == "not-a-fernet-key\n"  # left for the operator to restore
    with pytest.raises(DecisionLogError, match="not a valid Fernet key"):
        DecisionLog(tmp_path / "decisions.db", b"short")


def test_record_then_get_returns_what_was_served(log):
    at = datetime(2024, 5, 1, 17, 30, 15, 123456, tzinfo=timezone(timedelta(hours=8)))
    decision_id = log.record(**_row(at=at))
    decision = log.get(decision_id)
    assert isinstance(decision, Decision) and decision.id == decision_id
    assert len(decision_id) == 32 and int(decision_id, 16) >= 0
    assert decision.inputs == PROFILE and decision.output == OUTPUT
    assert (decision.source, decision.model_version, decision.policy_version,
            decision.policy_text) == ("api", "m-2024-05", "policy-3", POLICY)
    assert decision.created_at == at and decision.created_at.utcoffset() == timedelta(0)
    assert decision.inputs_fingerprint == fingerprint(PROFILE) == log.fingerprint(PROFILE)
    assert decision.customer_hash == log.customer_hash(CUSTOMER)
    with pytest.raises(DecisionLogError, match="no decision 0123abcd"):
        log.get("0123abcd")


def test_numpy_values_and_keys_are_recorded_as_plain_json(log):
    """Decision inputs carry numpy strings as keys (product names) and numpy numbers."""
    inputs = {"confidence": {np.str_("bond_fund"): np.float32(1.5)}, "lags": [np.array([1, 2])],
              "when": np.datetime64("2026-10-31")}
    decision = log.get(log.record(**{**_row(), "inputs": inputs}))
    assert decision.inputs == {"confidence": {"bond_fund": 1.5}, "lags": [[1, 2]],
                               "when": "2026-10-31T00:00:00"}


def test_invalid_records_are_refused_and_nothing_is_written(log):
    with pytest.raises(ValueError, match="source"):
        log.record(**_row(source="email"))
    with pytest.raises(ValueError, match="timezone-aware"):
        log.record(**_row(at=datetime(2024, 5, 1)))
    with pytest.raises(TypeError, match="customer_id must be a str"):
        log.record(**_row(customer_id=31415))
    assert log.count() == 0


def test_fingerprint_is_the_sha256_of_canonical_json():
    expected = hashlib.sha256('{"a":[1,2.5],"b":"储蓄"}'.encode()).hexdigest()
    assert fingerprint({"b": "储蓄", "a": [1, 2.5]}) == expected
    assert fingerprint({"x": {"b": 1, "a": 2}}) == fingerprint({"x": {"a": 2, "b": 1}})
    assert fingerprint(PROFILE) == fingerprint(dict(PROFILE))
    assert fingerprint(PROFILE) != fingerprint({**PROFILE, "income": 987654.322})
    assert fingerprint({"a": 1}) != fingerprint({"a": "1"})


def test_numpy_and_pandas_values_fingerprint_like_their_python_equivalents(log):
    as_numpy = {"age": np.int64(34), "income": np.float64(987654.321), "active": np.bool_(True),
                "scores": np.array([0.5, 0.25]), "seen": pd.Timestamp("2024-05-01 09:30", tz="UTC"),
                "opened": np.datetime64("2020-01-02T03:04:05"), "segment": np.str_("mid")}
    as_python = {"age": 34, "income": 987654.321, "active": True, "scores": [0.5, 0.25],
                 "seen": "2024-05-01T09:30:00+00:00", "opened": "2020-01-02T03:04:05",
                 "segment": "mid"}
    assert fingerprint(as_numpy) == fingerprint(as_python)
    decision = log.get(log.record(**_row(inputs=as_numpy)))
    assert decision.inputs == as_python
    assert decision.inputs_fingerprint == fingerprint(as_python)


def test_values_json_cannot_hold_faithfully_are_refused_by_name():
    with pytest.raises(TypeError, match=r"inputs\.profile\.income: Decimal"):
        fingerprint({"profile": {"income": Decimal("1.5")}})
    with pytest.raises(TypeError, match="key 3 is not a str"):
        fingerprint({3: "x"})


def test_customer_hash_is_keyed_stable_and_not_a_bare_sha256(tmp_path, key):
    with DecisionLog(tmp_path / "a.db", key) as first, \
            DecisionLog(tmp_path / "b.db", key) as same_key, \
            DecisionLog(tmp_path / "c.db", Fernet.generate_key()) as other_key:
        digest = first.customer_hash(CUSTOMER)
        assert len(digest) == 64 and int(digest, 16) >= 0
        assert digest == first.customer_hash(CUSTOMER) == same_key.customer_hash(CUSTOMER)
        assert digest != other_key.customer_hash(CUSTOMER)
        assert digest != first.customer_hash("CUST-ZX-31416")
        assert digest != hashlib.sha256(CUSTOMER.encode()).hexdigest()


def test_customer_hash_is_the_hmac_logs_were_written_with(log, key):
    """A changed construction would lose every customer's earlier decisions to for_customer."""
    hash_key = hmac.digest(base64.urlsafe_b64decode(key),
                           b"recommender.decisions customer_hash v1", "sha256")
    expected = hmac.new(hash_key, CUSTOMER.encode(), hashlib.sha256).hexdigest()
    assert log.customer_hash(CUSTOMER) == expected


def test_nothing_about_the_customer_is_stored_in_clear(tmp_path, key):
    path = tmp_path / "decisions.db"
    wal = tmp_path / "decisions.db-wal"
    secrets = (CUSTOMER, "987654.321", "platinum_xq_mortgage", "王小明")
    log = DecisionLog(path, key)
    log.record(**_row())
    log.record_many([_row(source="batch"), _row(source="batch")])
    assert wal.stat().st_size > 0  # the log is open: the WAL still holds the writes
    raw = path.read_bytes() + wal.read_bytes()
    assert POLICY.encode() in raw  # the scan does find what is stored in clear
    assert log.customer_hash(CUSTOMER).encode() in raw
    for secret in secrets:
        assert secret.encode() not in raw, secret
    log.close()  # checkpoints the WAL into the database file
    raw = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert POLICY.encode() in raw
    for secret in secrets:
        assert secret.encode() not in raw, secret


def test_a_log_opened_with_another_key_cannot_read_payloads(database, key):
    with DecisionLog(database, key) as log:
        decision_id = log.record(**_row())
        log.check_key()  # the first service records the key it writes with
    with DecisionLog(database, Fernet.generate_key()) as other:
        with pytest.raises(DecisionLogError, match="written with another key"):
            other.check_key()  # what a service, or a replica, given another key is told
        assert other.count() == 1
        with pytest.raises(DecisionLogError, match="key does not match"):
            other.get(decision_id)


def test_a_payload_moved_to_another_decision_is_detected(log):
    first = log.record(**_row())
    second = log.record(**_row(inputs={"income": 1.0}))
    _sql(log, "UPDATE decisions SET payload = (SELECT payload FROM decisions WHERE id = ?) "
                   "WHERE id = ?", (second, first))
    with pytest.raises(DecisionLogError, match="inconsistent"):
        log.get(first)


def test_each_policy_text_is_stored_once(log):
    for _ in range(5):
        log.record(**_row())
    log.record_many([_row(source="batch")] * 3)
    edited = POLICY + "\nat most 3 offers"
    newer = log.record(**_row(policy_version="policy-4", policy_text=edited))
    assert _sql(log, "SELECT policy_version, policy_text FROM policies "
                          "ORDER BY policy_version") == [("policy-3", POLICY), ("policy-4", edited)]
    assert log.count() == 9
    assert log.get(newer).policy_text == edited


def test_record_many_writes_a_campaign_in_one_transaction(log):
    rows = [_row(customer_id=f"C{i:05d}", source="batch", inputs={"income": float(i)})
            for i in range(2000)]
    ids = log.record_many(rows)
    assert len(ids) == len(set(ids)) == log.count() == 2000
    decision = log.get(ids[1234])
    assert decision.inputs == {"income": 1234.0} and decision.source == "batch"
    assert [d.id for d in log.for_customer("C01234")] == [ids[1234]]
    with pytest.raises(ValueError, match="source") as caught:
        log.record_many([_row(), _row(), _row(source="email")])
    assert caught.value.__notes__ == ["in decision row 2"]
    assert log.count() == 2000  # the valid rows before it were not written either
    assert log.record_many([]) == []


def test_threads_and_separate_logs_record_concurrently(database, database_url, key):
    path = database_url
    barrier = threading.Barrier(8, timeout=10)

    def work(n: int) -> list[str]:
        # Odd threads share one log (one connection each); even ones open their own, as
        # separate gunicorn workers would.
        log = shared if n % 2 else DecisionLog(path, key)
        try:
            barrier.wait()
            return [log.record(**_row(customer_id=f"T{n}-{i}")) for i in range(25)]
        finally:
            if log is not shared:
                log.close()

    with DecisionLog(path, key) as shared, ThreadPoolExecutor(max_workers=8) as pool:
        ids = [i for batch in pool.map(work, range(8)) for i in batch]
        assert len(ids) == len(set(ids)) == 200
        assert shared.count() == 200
        assert shared.get(ids[-1]).inputs == PROFILE


def test_decisions_survive_close_and_reopen(tmp_path):
    path, key_path = tmp_path / "decisions.db", tmp_path / "decisions.key"
    with DecisionLog(path, load_or_create_key(key_path)) as log:
        decision_id = log.record(**_row())
        assert log.count() == 1  # a connection of this thread is open
    assert not (tmp_path / "decisions.db-wal").exists()  # all closed: the WAL was checkpointed
    with pytest.raises(DecisionLogError, match="closed"):
        log.count()
    with DecisionLog(path, load_or_create_key(key_path)) as reopened:
        assert reopened.count() == 1
        assert reopened.get(decision_id).output == OUTPUT


def test_for_customer_is_newest_first_and_limited(log):
    start = datetime(2024, 1, 1, tzinfo=UTC)
    ids = [log.record(**_row(at=start + timedelta(days=day))) for day in (3, 0, 4, 1, 2)]
    log.record(**_row(customer_id="someone-else", at=start + timedelta(days=9)))
    latest = log.for_customer(CUSTOMER, limit=3)
    assert [d.id for d in latest] == [ids[2], ids[0], ids[4]]
    assert [d.created_at.day for d in latest] == [5, 4, 3]
    assert len(log.for_customer(CUSTOMER)) == 5
    assert log.for_customer("nobody") == []
    tied = log.record_many([_row(customer_id="tie", at=start)] * 3)
    assert [d.id for d in log.for_customer("tie")] == tied[::-1]  # same instant: last first
    with pytest.raises(ValueError, match="limit"):
        log.for_customer(CUSTOMER, limit=0)


# -- queued writes (flush_seconds > 0): what a busy server uses -------------------------------

@pytest.fixture
def queued(database, key):
    with DecisionLog(database, key, flush_seconds=3600) as opened:
        yield opened  # the background thread sleeps an hour: each test flushes when it says


def test_a_queued_decision_is_written_on_the_next_read_whole(queued, tmp_path):
    ids = [queued.record(**_row(inputs={**PROFILE, "n": n}, output={"rank": n}))
           for n in range(3)]
    assert _sql(queued, "SELECT COUNT(*) FROM decisions") == [(0,)]
    got = queued.get(ids[1])  # a read writes the queue first
    assert got.inputs == {**PROFILE, "n": 1} and got.output == {"rank": 1}
    assert got.customer_hash == queued.customer_hash(CUSTOMER) and got.policy_text == POLICY
    assert queued.count() == 3 and [d.id for d in queued.for_customer(CUSTOMER)] == ids[::-1]
    packs = _sql(queued, "SELECT COUNT(*) FROM decision_packs")
    assert packs == [(1,)]  # one encrypted pack for the three answers
    if queued.database.is_sqlite:
        assert b"987654" not in Path(queued.database.url.database).read_bytes()  # not in clear


def test_bad_arguments_are_refused_before_queueing(queued):
    with pytest.raises(ValueError, match="source"):
        queued.record(**_row(source="teller"))
    with pytest.raises(ValueError, match="timezone-aware"):
        queued.record(**_row(at=datetime(2024, 5, 1)))
    with pytest.raises(TypeError, match="dicts"):
        queued.record(**_row(inputs=[1, 2]))
    assert queued.count() == 0


def test_a_failed_write_keeps_the_queue_in_order_for_the_next_flush(queued, monkeypatch):
    first = queued.record(**_row(output={"rank": 1}))
    original = DecisionLog._write

    def broken(self, *args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(DecisionLog, "_write", broken)
    with pytest.raises(sqlite3.OperationalError):
        queued.flush()
    second = queued.record(**_row(output={"rank": 2}))
    monkeypatch.setattr(DecisionLog, "_write", original)
    queued.flush()
    assert [d.id for d in queued.for_customer(CUSTOMER)] == [second, first]


def test_closing_and_exiting_write_the_queue(database, database_url, key):
    path = database_url
    opened = DecisionLog(path, key, flush_seconds=3600)
    decision_id = opened.record(**_row())
    opened.close()
    with DecisionLog(path, key) as reopened:
        assert reopened.get(decision_id).output == OUTPUT
    script = ("import sys; from recommender.store.decisions import DecisionLog; "
              "log = DecisionLog(sys.argv[1], sys.argv[2].encode(), flush_seconds=3600); "
              "print(log.record(customer_id='C1', source='api', model_version='m', "
              "policy_version='p', policy_text='t', inputs={'a': 1}, output={'b': 2}))")
    done = subprocess.run([sys.executable, "-c", script, str(path), key.decode()],
                          capture_output=True, text=True, check=True)
    with DecisionLog(path, key) as reopened:
        assert reopened.get(done.stdout.strip()).inputs == {"a": 1}


def test_the_background_thread_writes_within_its_interval(database, key):
    with DecisionLog(database, key, flush_seconds=0.05) as timed:
        timed.record(**_row())
        deadline = time.monotonic() + 10
        while _sql(timed, "SELECT COUNT(*) FROM decisions") != [(1,)]:
            assert time.monotonic() < deadline, "the queued decision was never written"
            time.sleep(0.02)


def test_the_background_thread_says_once_that_writing_fails_and_once_that_it_works_again(
        database, key, monkeypatch, caplog):
    original, away = DecisionLog._write, threading.Event()
    away.set()

    def while_away(self, *args, **kwargs):
        if away.is_set():
            raise StoreUnavailableError("database x is unavailable: connection refused")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DecisionLog, "_write", while_away)
    with (caplog.at_level(logging.INFO, "recommender.store.decision_queue"),
          DecisionLog(database, key, flush_seconds=0.02) as timed):
        decision_id = timed.record(**_row())
        time.sleep(0.3)  # about fifteen failed tries
        away.clear()
        deadline = time.monotonic() + 10
        while _sql(timed, "SELECT COUNT(*) FROM decisions") != [(1,)]:
            assert time.monotonic() < deadline, "the queued decision was never written"
            time.sleep(0.02)
        assert timed.get(decision_id).output == OUTPUT
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 1 and not failed[0].exc_info  # unavailable: no traceback
    assert "connection refused" in failed[0].getMessage()
    assert sum("written to" in r.getMessage() and "again" in r.getMessage()
               for r in caplog.records) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_writes_its_parents_queue(queued, tmp_path):
    queued.record(**_row())
    child = os.fork()
    if child == 0:  # the child: its queue must be empty, so this writes nothing
        queued.flush()
        os._exit(0)
    os.waitpid(child, 0)
    assert _sql(queued, "SELECT COUNT(*) FROM decisions") == [(0,)]
    assert queued.count() == 1  # the parent's own flush, once


def test_a_tampered_pack_of_queued_answers_is_refused(queued, tmp_path, key):
    decision_id = queued.record(**_row())
    queued.flush()
    token = Fernet(key).encrypt(b'{"decisions": [{"inputs": {}, "output": {}}]}')
    _sql(queued, "UPDATE decision_packs SET payload = ?", (token,))
    with pytest.raises(DecisionLogError, match="inconsistent"):
        queued.get(decision_id)


def test_flush_seconds_must_be_a_number_of_seconds(tmp_path, key):
    with pytest.raises(ValueError, match="flush_seconds"):
        DecisionLog(tmp_path / "x.db", key, flush_seconds=-1)


NUMPY_INPUTS = {"age": np.int64(34), "income": np.float64(987654.321), "active": np.bool_(True),
                "scores": np.array([0.5, 0.25]), "ratio": np.float32(0.1),
                "seen": pd.Timestamp("2024-05-01 09:30", tz="UTC"), "pair": (1, 2),
                "opened": np.datetime64("2020-01-02T03:04:05"), "segment": np.str_("mid"),
                "at": datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=8)))}


@pytest.mark.parametrize("inputs", [
    NUMPY_INPUTS,
    # keys that are not plain str and ints beyond 64 bits take the slower, converting way
    {**NUMPY_INPUTS, "confidence": {np.str_("bond_fund"): 1.5}, "big": 2**70},
])
def test_queued_values_are_recorded_as_unqueued_ones_are(queued, log, inputs):
    expected = log.get(log.record(**_row(inputs=inputs))).inputs
    assert queued.get(queued.record(**_row(inputs=inputs))).inputs == expected
    assert expected["ratio"] == float(np.float32(0.1)) and expected["pair"] == [1, 2]


def test_a_queued_value_that_cannot_be_recorded_is_refused_by_record(queued):
    """Refused when recorded, as unqueued: not left in the queue to fail every flush."""
    with pytest.raises(TypeError, match=r"inputs\.profile\.income: Decimal"):
        queued.record(**_row(inputs={"profile": {"income": Decimal("1.5")}}))
    with pytest.raises(TypeError, match="key 3 is not a str"):
        queued.record(**_row(output={3: "x"}))
    with pytest.raises(TypeError, match="customer_id must be a str"):
        queued.record(**_row(customer_id=31415))
    with pytest.raises(ValueError, match="customer_id is empty"):
        queued.record(**_row(customer_id=""))
    decision_id = queued.record(**_row())
    assert queued.count() == 1 and queued.get(decision_id).inputs == PROFILE


def test_a_queued_decision_is_what_was_served_when_it_was_recorded(queued):
    inputs, output = {"holdings": ["current_account"]}, {"offers": [{"rank": 1}]}
    decision_id = queued.record(**_row(inputs=inputs, output=output))
    inputs["holdings"].append("mortgage")
    output["offers"].clear()
    decision = queued.get(decision_id)
    assert decision.inputs == {"holdings": ["current_account"]}
    assert decision.output == {"offers": [{"rank": 1}]}


def test_nan_in_a_queued_decision_is_recorded_as_null(queued):
    decision_id = queued.record(**_row(output={"score": float("nan"), "gain": float("inf")}))
    assert queued.get(decision_id).output == {"score": None, "gain": None}


def test_decision_ids_are_32_hex_digits_in_time_order(queued, log):
    for opened in (queued, log):
        ids = []
        for _ in range(3):
            ids.append(opened.record(**_row()))
            time.sleep(0.002)
        assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)
        assert sorted(ids) == ids and len(set(ids)) == 3


def _old_list_pack(log, key: bytes, answers: list[dict]) -> list[str]:
    """Queued answers as logs stored them before packs were compressed (nbo-decision-list/1)."""
    pack = json.dumps({"format": "nbo-decision-list/1", "decisions": answers},
                      separators=(",", ":")).encode()
    digest = hashlib.sha256(pack).hexdigest()
    ids = [f"{i:032x}" for i in range(len(answers))]
    policy_hash = hashlib.sha256(POLICY.encode()).hexdigest()
    with log.database.begin() as conn:
        conn.execute(sa.insert(tables.decision_packs), {
            "id": "old-pack", "digest": digest, "payload": Fernet(key).encrypt(pack)})
        tables.insert_new(conn, tables.policies, [{
            "policy_version": "policy-3", "policy_hash": policy_hash, "policy_text": POLICY}])
        conn.execute(sa.insert(tables.decisions), [{
            "id": ids[i], "created_at": "2024-05-01T00:00:00.000000+00:00", "source": "api",
            "customer_hash": hashlib.sha256(b"?").hexdigest(), "model_version": "m-2024-05",
            "policy_version": "policy-3", "inputs_fingerprint": f"{digest}:{i}",
            "payload": b"", "policy_hash": policy_hash, "pack_id": "old-pack", "pack_row": i}
            for i in range(len(answers))])
    return ids


def test_packs_are_compressed_and_older_uncompressed_packs_stay_readable(queued, key):
    queued.record(**_row())
    queued.flush()
    (token,) = _sql(queued, "SELECT payload FROM decision_packs")[0]
    assert Fernet(key).decrypt(token).startswith(COMPRESSED_LIST_PACK)
    ids = _old_list_pack(queued, key, [{"inputs": {"income": 1.0}, "output": {"rank": 1}},
                                            {"inputs": {"income": math.nan}, "output": {}}])
    assert queued.get(ids[0]).inputs == {"income": 1.0}
    assert queued.get(ids[0]).output == {"rank": 1}
    assert math.isnan(queued.get(ids[1]).inputs["income"])  # json wrote NaN; still read
