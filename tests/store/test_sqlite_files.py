"""The SQLite files every server worker opens, opened by several workers at once."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet

from recommender.store.decisions import DecisionLog
from recommender.store.responses import ResponseStore

KEY = Fernet.generate_key()


def _decision_log(path):
    return DecisionLog(path, KEY)


def _response_store(path):
    return ResponseStore(path)


def _open(opener, path, barrier, errors) -> None:
    barrier.wait()
    try:
        opener(path).close()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        errors.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("opener", [_decision_log, _response_store])
def test_workers_starting_at_once_open_a_new_file_together(tmp_path, opener):
    """As gunicorn's workers on a new state folder: no 'database is locked' (SQLite refuses a
    switch to WAL at once while another connection holds a lock), no schema made twice."""
    fork = multiprocessing.get_context("fork")
    errors = fork.Queue()
    for attempt in range(8):
        path = tmp_path / f"store-{attempt}.db"
        barrier = fork.Barrier(6, timeout=30)
        workers = [fork.Process(target=_open, args=(opener, path, barrier, errors))
                   for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [w.exitcode for w in workers] == [0] * 6
        assert errors.empty(), errors.get()
        with opener(path) as store:
            if isinstance(store, DecisionLog):
                assert store.record(customer_id="C1", source="api", model_version="m",
                                    policy_version="p", policy_text="t", inputs={}, output={})
            else:
                assert store.record("C1", "p1", "shown", "branch", datetime.now(UTC))
            assert store.count() == 1
