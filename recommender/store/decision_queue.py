"""The decision log's write-behind queue: decisions recorded in memory, written later in bulk.

A busy server records an answer per request; one encryption and one commit for hundreds of them
costs far less than one each. So with ``flush_seconds`` > 0 the log queues each decision, and a
background thread of each process writes the queue every ``flush_seconds``; so does the
process's normal exit. A forked child starts with an empty queue: its parent writes its own.

The queue holds whatever the log puts in it and writes it with the function the log passes to
``flush``; how a decision is queued and written down stays with the log
(``recommender.store.decisions``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from recommender.store.database import StoreUnavailableError

log = logging.getLogger(__name__)


class _Log(Protocol):
    """What the flusher needs of the log it writes for."""

    path: Path
    flush_seconds: float

    @property
    def closed(self) -> bool: ...

    def flush(self) -> None: ...


class DecisionQueue:
    """Queued decisions of one log, and the thread that flushes that log in this process.

    Holds only a weak reference to its log: a log that is dropped stops its thread and writes
    nothing at exit, as an unqueued one would.
    """

    def __init__(self, owner: _Log) -> None:
        self._owner = weakref.ref(owner)
        self._items: list[tuple] = []
        self._lock, self._flush_lock = threading.Lock(), threading.Lock()
        self._flusher_pid: int | None = None
        _QUEUES.add(self)

    def put(self, item: tuple) -> None:
        """Queue one decision; the first of this process starts its flusher."""
        with self._lock:
            self._items.append(item)
        if self._flusher_pid != os.getpid():  # first queued decision of this process
            self._start_flusher()

    def flush(self, write: Callable[[list[tuple]], None]) -> None:
        """Hand what is queued to ``write``, at most one flush at a time; if ``write`` fails,
        the items go back in front of the queue, in order: nothing is lost."""
        with self._flush_lock:
            with self._lock:
                queued, self._items = self._items, []
            if not queued:
                return
            try:
                write(queued)
            except BaseException:
                with self._lock:
                    self._items[:0] = queued
                raise

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
        owner = self._owner

        def run() -> None:
            failing = False
            while (log_ := owner()) is not None and not log_.closed:
                seconds = log_.flush_seconds
                del log_  # hold no reference while asleep: the log may be dropped meanwhile
                time.sleep(seconds)
                if (log_ := owner()) is not None and not log_.closed:
                    failing = _flush_quietly(log_, failing)

        threading.Thread(target=run, name="nbo-decision-log", daemon=True).start()
        atexit.register(_flush_at_exit, owner)

    def _forget(self) -> None:
        self._items = []
        self._lock, self._flush_lock = threading.Lock(), threading.Lock()


def _flush_quietly(decision_log: _Log, failing: bool = False) -> bool:
    """Flush, keeping what fails queued for the next try; whether this try failed.

    A database that is away fails every try until it returns: that is said once when it
    starts and once when the queue is written again, not on every try.
    """
    try:
        decision_log.flush()
    except Exception as exc:  # noqa: BLE001 - kept queued and retried; never kill the thread
        if not failing:
            log.error("writing queued decisions to %s failed (%s); keeping them queued and "
                      "trying again every %g s", decision_log.path, exc,
                      decision_log.flush_seconds,
                      exc_info=not isinstance(exc, StoreUnavailableError))
        return True
    if failing:
        log.info("queued decisions written to %s again", decision_log.path)
    return False


def _flush_at_exit(owner: weakref.ref) -> None:
    """A process that exits normally (gunicorn's graceful stop too) writes its queue first."""
    decision_log = owner()
    if decision_log is not None and not decision_log.closed:
        _flush_quietly(decision_log)


def _forget_parents_queue() -> None:
    """A forked child must not write its parent's queued decisions a second time."""
    for queue in list(_QUEUES):
        queue._forget()


_QUEUES: weakref.WeakSet[DecisionQueue] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parents_queue)
