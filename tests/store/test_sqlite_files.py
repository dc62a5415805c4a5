"""The one SQLite file every server worker opens (``nbo.db``: responses, decision log, API
keys), opened by several workers at once."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet

from recommender.store.database import Database, head_revision
from recommender.store.decisions import DecisionLog
from recommender.store.keys import KeyStore, create_key
from recommender.store.responses import ResponseStore

KEY = Fernet.generate_key()
WORKERS = 6


def _decision_log(path):
    return DecisionLog(path, KEY)


def _response_store(path):
    return ResponseStore(path)


def _key_store(path):
    store = KeyStore(path)
    store.refresh()
    store.database.dispose()
    return store


def _open(openers, n, path, barrier, errors) -> None:
    barrier.wait()
    try:
        opened = openers[n % len(openers)](path)
        if hasattr(opened, "close"):
            opened.close()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        errors.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("openers", [(_decision_log,), (_response_store,), (_key_store,),
                                     (_decision_log, _response_store, _key_store)],
                         ids=["decision_log", "response_store", "key_store", "all_stores"])
def test_workers_starting_at_once_open_a_new_file_together(tmp_path, openers):
    """As gunicorn's workers on a new state folder: no 'database is locked' (SQLite refuses a
    switch to WAL at once while another connection holds a lock), no schema made twice, and
    every store works in the one file afterwards."""
    fork = multiprocessing.get_context("fork")
    errors = fork.Queue()
    for attempt in range(8):
        path = tmp_path / f"nbo-{attempt}.db"
        barrier = fork.Barrier(WORKERS, timeout=30)
        workers = [fork.Process(target=_open, args=(openers, n, path, barrier, errors))
                   for n in range(WORKERS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [w.exitcode for w in workers] == [0] * WORKERS
        assert errors.empty(), errors.get()
        database = Database(f"sqlite:///{path}")
        assert database.revision() == head_revision()
        database.dispose()
        with DecisionLog(path, KEY) as log:
            assert log.record(customer_id="C1", source="api", model_version="m",
                              policy_version="p", policy_text="t", inputs={}, output={})
            assert log.count() == 1
        with ResponseStore(path) as store:
            assert store.record("C1", "p1", "shown", "branch", datetime.now(UTC))
            assert store.count() == 1
        clear, key = create_key(path, "teller")
        keys = KeyStore(path)
        assert keys.authenticate(clear) == key
        keys.database.dispose()
