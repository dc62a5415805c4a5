"""The one database every store lives in, named by a URL: SQLite for one machine, PostgreSQL
for several replicas.

Responses, the decision log with its packs, the served version and the API keys share it, so
two replicas behind a load balancer answer from one source of truth: a decline recorded on
one is seen by the other at its next read, and contact caps count across both.

SQLAlchemy (Core) is the dialect layer and the connection pool: a pooled connection that a
restarted server dropped is noticed at its next use and the whole pool is replaced, so the
service recovers by itself. Every failure to reach the database is raised as
``StoreUnavailableError`` (the HTTP layer answers 503 ``store_unavailable``); a failure of the
database's contents as ``StoreError``. The schema is versioned by Alembic
(``recommender/store/migrations``): ``upgrade`` creates or upgrades it, ``check_current``
refuses an older one and names the command that upgrades it.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection, Engine

from ..exceptions import ConfigError, RecommenderError
from .sqlite_files import use_wal

log = logging.getLogger(__name__)

ENV_URL = "NBO_DATABASE_URL"
DEFAULT_FILE = "nbo.db"  # in the state folder: the embedded default
CONNECT_SECONDS = 3  # a server that does not answer in this time is unavailable: fail fast
BUSY_SECONDS = 30.0  # SQLite: how long a writer waits for another before giving up
_MIGRATIONS = Path(__file__).with_name("migrations")
_VERSION_TABLE = "alembic_version"
_UPGRADE_LOCK = 7_204_117  # PostgreSQL advisory lock: one `nbo db upgrade` at a time


class StoreError(RecommenderError, RuntimeError):
    """The database answered, but not as a store of this service should (bad contents)."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached now (server down, network, locked too long): the
    request that needed it fails at once and may be retried; nothing stored is lost."""


class SchemaOutdatedError(StoreError):
    """The database's schema is older (or newer) than this code's: run ``nbo db upgrade``."""


class DatabaseUrlError(ConfigError):
    """The database URL is malformed or names a database this service cannot use."""


def default_url(state_dir: str | Path) -> str:
    """The embedded default: one SQLite file in the state folder."""
    return f"sqlite:///{(Path(state_dir) / DEFAULT_FILE).resolve()}"


def database_url(url: str | None, state_dir: str | Path) -> str:
    """``url`` if given, else ``NBO_DATABASE_URL``, else the state folder's SQLite file."""
    return url or os.environ.get(ENV_URL) or default_url(state_dir)


def _parsed(url: str) -> URL:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseUrlError(f"database URL {url!r} is malformed: {exc}; expected "
                               "sqlite:///path/to/nbo.db or postgresql://user@host/db") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseUrlError(f"database URL {parsed.render_as_string()!r}: {backend} is not "
                               "supported; use sqlite:///… or postgresql://…")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise DatabaseUrlError(f"database URL {url!r} names no file: an in-memory SQLite "
                               "database is not shared between workers; use sqlite:///path")
    return parsed


class Database:
    """One database's engine and pool, shared by the stores of a process (and its threads)."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        parsed = _parsed(url)
        self.url = parsed
        self.name = parsed.render_as_string(hide_password=True)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            _private_file(Path(parsed.database).expanduser())
            self.engine = sa.create_engine(
                parsed, pool_size=pool_size, max_overflow=15,
                connect_args={"timeout": BUSY_SECONDS, "check_same_thread": False})
            _sqlite_behaviour(self.engine)
        else:
            self.engine = sa.create_engine(
                parsed, pool_size=pool_size, max_overflow=15, pool_timeout=CONNECT_SECONDS,
                connect_args={"connect_timeout": CONNECT_SECONDS,
                              "application_name": "nbo"})
        # Connections whose statements each commit on their own: no BEGIN and no ROLLBACK
        # around the one indexed read most requests make (a round trip each on PostgreSQL).
        # SQLite's driver already runs so; only the BEGIN this module adds is left out.
        self._statements = self.engine.execution_options(
            **({"sqlite_begin": None} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"}))
        _DATABASES.add(self)

    def __repr__(self) -> str:
        return f"Database({self.name!r})"

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A pooled connection, no transaction (each statement commits on its own)."""
        with self._named_errors(), self._statements.connect() as conn:
            yield conn

    @contextmanager
    def begin(self, *, write: bool = False) -> Iterator[Connection]:
        """A transaction: committed when the block ends, rolled back if it raises.

        ``write``: on SQLite, take the write lock at the start (BEGIN IMMEDIATE), so that two
        writers that read first never deadlock; PostgreSQL needs no such thing.
        """
        with self._named_errors(), self.engine.connect() as conn:
            if write and self.is_sqlite:
                conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with conn.begin():
                yield conn

    @contextmanager
    def _named_errors(self) -> Iterator[None]:
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            raise StoreUnavailableError(f"database {self.name} is unavailable: "
                                        f"{_first_line(exc)}") from exc
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailableError(f"database {self.name} is unavailable: "
                                            f"{_first_line(exc)}") from exc
            raise StoreError(f"database {self.name}: {_first_line(exc)}") from exc

    def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the database answers now."""
        with self.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # ------------------------------------------------------------------ schema

    def revision(self) -> str | None:
        """The schema revision the database is at; None for a database never upgraded."""
        with self.connect() as conn:  # read, not MigrationContext: cheap and quiet
            if not sa.inspect(conn).has_table(_VERSION_TABLE):
                return None
            return conn.execute(sa.text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalar()

    def check_current(self) -> None:
        """Raise ``SchemaOutdatedError`` (naming the command) unless the schema is this code's.

        A service never migrates a shared database on its own: replicas starting together
        would race, and an old replica would meet a schema it does not know.
        """
        found, head = self.revision(), head_revision()
        if found is None and self.table_names():
            raise SchemaOutdatedError(
                f"database {self.name} holds tables but is not a database of this service "
                "(no schema version); point the service at a new or empty database")
        if found != head:
            state = "has no schema yet" if found is None else f"is at schema {found}"
            raise SchemaOutdatedError(
                f"database {self.name} {state}; this code needs {head}: run "
                f"`nbo db upgrade --database '{self.name}'` (as the service's user)")

    def upgrade(self) -> tuple[str | None, str]:
        """Create or upgrade the schema to this code's; returns (before, after).

        Safe to run from several machines at once: one waits for the other, then finds
        nothing to do.
        """
        with self.begin(write=True) as conn:
            if not self.is_sqlite:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": _UPGRADE_LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            config = _alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        if self.is_sqlite:
            self._use_wal()
        after = self.revision()
        if before != after:
            log.info("database %s upgraded from %s to %s", self.name, before or "nothing",
                     after)
        return before, after

    def _use_wal(self) -> None:
        """WAL, which the file keeps: readers never wait for a writer. Asked once the schema is
        ours, never of a file that may be another application's."""
        with self.connect() as conn:
            mode = use_wal(conn.connection.dbapi_connection, BUSY_SECONDS)
        if mode != "wal":  # e.g. a network file system: still correct, but writers block
            log.warning("SQLite database %s cannot use WAL (journal mode %s); writers will "
                        "block readers", self.name, mode)

    def ensure_schema(self) -> None:
        """SQLite, one machine: create the schema of a new file (as before there was a
        database URL); an existing one must be current. PostgreSQL: ``check_current`` only."""
        if self.is_sqlite and self.revision() is None and not self.table_names():
            self.upgrade()
        self.check_current()

    def table_names(self) -> list[str]:
        """The tables the database has (no schema: none)."""
        with self.connect() as conn:
            return sa.inspect(conn).get_table_names()

    def dispose(self) -> None:
        """Close the pool's connections (the next use opens new ones)."""
        self.engine.dispose()

    def _after_fork(self) -> None:
        self.engine.dispose(close=False)  # the parent's sockets are the parent's


def open_database(target: Database | str | Path) -> tuple[Database, bool]:
    """``target`` as a ``Database``, and whether the caller opened it (and so closes it).

    A URL or an SQLite file's path gives a database of the caller's own, its schema created
    if the SQLite file is new (``ensure_schema``): what a library user or a test opening one
    store wants. The service passes its one shared ``Database`` instead.
    """
    if isinstance(target, Database):
        return target, False
    text = str(target)
    database = Database(text if "://" in text else f"sqlite:///{Path(text).resolve()}")
    database.ensure_schema()
    return database, True


def head_revision() -> str:
    """The schema revision this code writes and reads."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def _private_file(path: Path) -> None:
    """Create a new SQLite file readable by its owner only (it holds key hashes and customer
    ids; SQLite gives its -wal and -shm files the same mode). An empty file is an empty
    database to SQLite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sqlite_behaviour(engine: Engine) -> None:
    """Transactions as SQLite means them: the driver's own implicit BEGIN is off, and each
    transaction begins as asked (deferred, or IMMEDIATE for writers that read first). WAL is
    set by ``Database.upgrade``."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN of its own
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")
        # FULL syncs the WAL at every commit: a lost "declined" means a pestered customer.
        dbapi_connection.execute("PRAGMA synchronous = FULL")
        # Checkpoint at 40 MB of WAL, not 4: fewer copies of the decision index's pages.
        dbapi_connection.execute("PRAGMA wal_autocheckpoint = 10000")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        begin = conn.get_execution_options().get("sqlite_begin", "BEGIN")
        if begin is not None:  # None: ``Database.connect``, each statement on its own
            conn.exec_driver_sql(begin)


_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: [db._after_fork() for db in _DATABASES])
