"""SQLite files that every server worker opens: the response store and the decision log."""

from __future__ import annotations

import sqlite3
import time


def use_wal(conn: sqlite3.Connection, seconds: float) -> str:
    """Ask for WAL mode (readers never wait for a writer) and return the journal mode the
    file now has.

    SQLite refuses the switch at once, without waiting out its busy timeout, while another
    connection holds a lock: as when workers start together on a new state folder and one of
    them is creating the schema. The switch is asked again until ``seconds`` have passed.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
