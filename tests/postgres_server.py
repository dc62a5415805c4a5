"""A throwaway PostgreSQL server for the tests and the serving benchmark: a real one, never a
mock, made with ``initdb`` and ``pg_ctl`` in a temporary folder of its own and removed afterwards.

It listens on a unix socket in that folder only: no TCP port to clash with, and a server left
behind by a killed run never blocks the next one (each server has a new folder). The server
refuses to run as root, and CI runs as root: then the folder is given to the ``postgres`` user
and the server binaries run as that user (``runuser``). Trust authentication is safe here: only
this machine's users can reach the socket, and only while the tests run.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

BINARIES_ENV = "NBO_PG_BIN"
DEBIAN_VERSIONS = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"  # the OS user the server runs as under root, and its superuser
START_TIMEOUT_S = 60
STOP_MODES = ("smart", "fast", "immediate")
# Plain lower-case names only: they go into SQL and into a URL without quoting either way.
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresServerError(RuntimeError):
    """The throwaway server could not be made, started or stopped; the message says why."""


def server_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: ``NBO_PG_BIN`` if set, else
    the newest of Debian's ``/usr/lib/postgresql/*/bin``, else that of ``initdb`` on PATH."""
    if os.environ.get(BINARIES_ENV):
        return Path(os.environ[BINARIES_ENV])
    debian = [initdb.parent for initdb in DEBIAN_VERSIONS.glob("*/bin/initdb")]
    if debian:
        return max(debian, key=lambda folder: _version_key(folder.parent.name))
    on_path = shutil.which("initdb")
    if on_path is None:
        return None
    real = Path(on_path).resolve().parent  # a symlink on PATH: pg_ctl sits beside its target
    return real if (real / "pg_ctl").exists() else Path(on_path).parent


def _version_key(name: str) -> tuple[int, ...]:
    """Orders "9.6" < "15" < "16" (a name that is not a version sorts first)."""
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (-1,)


class PostgresServer:
    """One PostgreSQL cluster of its own, from ``start()`` until ``cleanup()``."""

    def __init__(self, binaries: Path | None = None) -> None:
        self.binaries = binaries or server_binaries()
        if self.binaries is None or not (self.binaries / "initdb").exists():
            raise PostgresServerError(
                f"PostgreSQL server binaries (initdb, pg_ctl) not found (looked in "
                f"{self.binaries or f'${BINARIES_ENV}, {DEBIAN_VERSIONS}/*/bin and PATH'}): "
                "install Debian's postgresql package (`make postgres`) or set "
                f"{BINARIES_ENV} to their folder")
        self.as_server_user = os.geteuid() == 0  # the server will not run as root
        self.folder: Path | None = None
        self.running = False
        self._initdb_output = ""

    @property
    def socket_dir(self) -> Path:
        """The folder holding the server's unix socket (its ``-k``)."""
        if self.folder is None:
            raise PostgresServerError("the server has no folder yet: call start() first")
        return self.folder

    @property
    def data(self) -> Path:
        return self.socket_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.socket_dir / "server.log"

    def start(self) -> PostgresServer:
        """Make a new cluster in a new folder and start its server; returns once it accepts."""
        if self.folder is not None:
            raise PostgresServerError(f"already started in {self.folder}: after stop(), "
                                      "start_again() restarts the same cluster")
        began = time.perf_counter()
        self.folder = Path(tempfile.mkdtemp(prefix="nbo-pg-", dir="/tmp"))
        try:
            self._give_folder_to_server()
            self._initdb()
            self._pg_ctl_start()
        except BaseException:
            self.cleanup()  # the error carries the logs' tails; the folder is of no more use
            raise
        log.info("PostgreSQL started in %s (%.2f s)", self.folder, time.perf_counter() - began)
        return self

    def start_again(self) -> None:
        """Start the server again on the same cluster, with the same options (after stop())."""
        if self.running:
            raise PostgresServerError(f"the server in {self.socket_dir} is already running")
        self._pg_ctl_start()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` disconnects clients cleanly, ``immediate`` is like a
        crash (recovery on the next start), ``smart`` waits for clients to leave."""
        if mode not in STOP_MODES:
            raise ValueError(f"stop mode {mode!r} is not one of {', '.join(STOP_MODES)}")
        if not self.running:
            return
        stopped = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w",
                            "-t", str(START_TIMEOUT_S), "stop")
        if stopped.returncode:
            raise PostgresServerError(f"pg_ctl stop -m {mode} failed ({stopped.returncode}):\n"
                                      f"{_output(stopped)}\n{self._server_log_tail()}")
        self.running = False

    def restart(self) -> None:
        """Stop the server (fast) and start it again on the same cluster."""
        self.stop("fast")
        self.start_again()

    def cleanup(self) -> None:
        """Stop the server if it runs and remove its folder; the object can start() again."""
        if self.folder is None:
            return
        try:
            if self.running:
                self.stop("immediate")  # the data goes next: no need to write it out first
            elif (self.data / "postmaster.pid").exists():  # a start that timed out
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
            self.running = False

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database of this server: psycopg 3, over the unix socket."""
        return f"postgresql+psycopg://{SERVER_USER}@/{database}?host={self.socket_dir}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database called ``name`` (a new unique name if None), dropped first if
        it exists; returns its URL."""
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: use 1 to 63 lower-case letters, digits "
                             "and underscores, not starting with a digit")
        with psycopg.connect(host=str(self.socket_dir), user=SERVER_USER, dbname="postgres",
                             autocommit=True, connect_timeout=10) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                               .format(sql.Identifier(name)))
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def _give_folder_to_server(self) -> None:
        """Let the server's user own the folder (under root) and any local client reach it."""
        if self.as_server_user:
            if shutil.which("runuser") is None:
                raise PostgresServerError("running as root needs runuser (util-linux) to start "
                                          f"the server as the {SERVER_USER!r} user")
            try:
                user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresServerError(
                    f"running as root, but there is no {SERVER_USER!r} OS user to run the "
                    "server as: Debian's postgresql package creates it, or run the tests as "
                    "a user other than root") from None
            os.chown(self.socket_dir, user.pw_uid, user.pw_gid)
        self.socket_dir.chmod(0o755)

    def _initdb(self) -> None:
        # -N: no fsync of the new cluster's files, as the server runs with fsync=off anyway
        made = self._run("initdb", "-D", str(self.data), "--auth=trust",
                         f"--username={SERVER_USER}", "--encoding=UTF8", "--locale=C", "-N")
        self._initdb_output = _output(made)
        if made.returncode:
            raise PostgresServerError(f"initdb failed ({made.returncode}):\n"
                                      f"{_tail(self._initdb_output)}")

    def _pg_ctl_start(self) -> None:
        # Unix socket only, in our folder. fsync and full-page writes off for speed: a committed
        # row still survives a server stop (immediate too), as the OS keeps the files; only an
        # OS crash could lose it. synchronous_commit stays on, as in production.
        options = (f"-c listen_addresses='' -k {shlex.quote(str(self.socket_dir))} "
                   "-c fsync=off -c full_page_writes=off -c max_connections=200")
        started = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-w",
                            "-t", str(START_TIMEOUT_S), "start", "-o", options)
        if started.returncode:
            raise PostgresServerError(
                f"pg_ctl start failed ({started.returncode}) for {self.data}:\n"
                f"{_output(started)}\n{self._server_log_tail()}\n"
                f"--- initdb's output:\n{_tail(self._initdb_output)}")
        self.running = True

    def _run(self, tool: str, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run one of the server binaries, as the server's user when we are root."""
        command = [str(self.binaries / tool), *arguments]
        if self.as_server_user:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        log.debug("running %s", shlex.join(command))
        try:
            # cwd: the server's user may not enter ours (root's home, say)
            return subprocess.run(command, capture_output=True, text=True, cwd=self.socket_dir,
                                  timeout=START_TIMEOUT_S + 30)
        except subprocess.TimeoutExpired as error:
            raise PostgresServerError(f"{tool} did not finish within {error.timeout} s:\n"
                                      f"{self._server_log_tail()}") from None

    def _server_log_tail(self) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError as error:
            return f"--- no server log ({error.strerror}: {self.log_file})"
        return f"--- the end of {self.log_file}:\n{_tail(text)}"


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"{result.stdout}{result.stderr}".strip()


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
