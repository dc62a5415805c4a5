"""Real ``nbo serve`` processes for the tests of several replicas (``tests/api/test_replicas.py``):
started as an operator starts them, called over HTTP, stopped with SIGTERM.

Each server runs in a process group of its own (``nbo serve`` execs gunicorn, which forks its
workers), so stopping the group stops them all and nothing is left behind. Its output goes to
a log file, whose end every failure message here quotes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 120.0  # on a busy 2-core machine: book cache, score table, gunicorn, model
STOP_TIMEOUT_S = 30.0
# No proxy, whatever the environment says: these servers are on this machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def child_env() -> dict[str, str]:
    """This environment without any NBO_* setting (every test passes what it means), and
    single-threaded OpenBLAS (implicit warns otherwise)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBO_")}
    return {**env, "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def nbo(*arguments: str, timeout: float = 120.0) -> str:
    """Run ``nbo`` as a command (a process of its own); its output, or an error quoting it."""
    done = subprocess.run([sys.executable, "-m", "recommender.cli", *arguments],
                          capture_output=True, text=True, env=child_env(), timeout=timeout)
    if done.returncode:
        raise AssertionError(f"`nbo {' '.join(arguments)}` exited with {done.returncode}:\n"
                             f"{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def create_key(url: str, role: str, state: Path) -> str:
    """A new API key of ``role`` in the database ``url``, made by ``nbo keys create``."""
    printed = nbo("keys", "create", "--role", role, "--name", f"replicas {role}",
                  "--state", str(state), "--database", url)
    found = re.search(r"^API key: (nbo_\S+)$", printed, re.MULTILINE)
    assert found, f"`nbo keys create` printed no 'API key: nbo_...' line:\n{printed}"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, JSON body, headers, and how long it took (seconds)."""

    status: int
    body: Any
    headers: dict[str, str] = field(repr=False)
    seconds: float

    @property
    def code(self) -> str | None:
        """The error code of an error answer (``{"code", "message", "details"}``)."""
        return self.body.get("code") if isinstance(self.body, dict) else None


def call(base: str, method: str, path: str, key: str | None = None, body: Any = None,
         timeout: float = 10.0) -> Answer:
    """One request with the standard library's client (a new connection each time)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    began = time.monotonic()
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, raw, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, headers = error.code, error.read(), dict(error.headers)
    seconds = time.monotonic() - began
    try:
        parsed = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        parsed = {"not_json": raw.decode(errors="replace")[:300]}
    return Answer(status, parsed, headers, seconds)


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               every: float = 0.1) -> float:
    """Call ``check`` until it is true; the seconds that took, or AssertionError naming
    ``what`` after ``timeout``."""
    began = time.monotonic()
    while True:
        if check():
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


class Replica:
    """One ``nbo serve`` (1 worker, gthread) on a free port of 127.0.0.1, logging to a file."""

    def __init__(self, data: str | Path, models: str | Path, state: Path, database: str,
                 *, threads: int = 4) -> None:
        self.state, self.models, self.database = state, Path(models), database
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = state.parent / f"{state.name}-server.log"
        self.command = [sys.executable, "-m", "recommender.cli", "serve", "--data", str(data),
                        "--models", str(models), "--state", str(state), "--database",
                        database, "--host", "127.0.0.1", "--port", str(self.port),
                        "--workers", "1", "--threads", str(threads), "--no-examples"]
        self.process: subprocess.Popen | None = None

    def start(self) -> Replica:
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            env=child_env(), start_new_session=True)
        return self

    def call(self, method: str, path: str, key: str | None = None, body: Any = None,
             timeout: float = 10.0) -> Answer:
        return call(self.base, method, path, key, body, timeout)

    def _answers(self, path: str, status: int) -> bool:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise AssertionError(f"{self} is not running (exit code {code})\n{self.log_tail()}")
        try:
            return self.call("GET", path, timeout=5).status == status
        except OSError:  # not listening yet
            return False

    def wait_for(self, path: str, status: int = 200, timeout: float = START_TIMEOUT_S) -> float:
        """Wait until GET ``path`` answers ``status``; the seconds it took."""
        try:
            return wait_until(lambda: self._answers(path, status), timeout,
                              f"{self} GET {path} -> {status}", every=0.2)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.log_tail()}") from None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError as error:
            return f"(no server log: {error})"

    def log_tail(self, lines: int = 40) -> str:
        return f"--- the end of {self.log}:\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the group; SIGKILL, and an error quoting the log, if it does not end
        within STOP_TIMEOUT_S. Nothing if it never started or has already ended."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except ProcessLookupError:
            self.process.wait()
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"{self} did not stop within {STOP_TIMEOUT_S:g} s of "
                                 f"SIGTERM\n{self.log_tail()}") from None
        finally:
            with contextlib.suppress(ProcessLookupError):  # a worker left behind, if any
                os.killpg(self.process.pid, signal.SIGKILL)

    def __repr__(self) -> str:
        return f"nbo serve on {self.base} (state {self.state.name})"


@contextlib.contextmanager
def serving(*replicas: Replica, ready: bool = True):
    """Start the replicas together, wait until each is ready (or only alive: ``ready``
    False), and stop them all afterwards, whatever happened."""
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_for("/readyz" if ready else "/healthz")
        yield replicas
    finally:
        errors = []
        for replica in replicas:
            try:
                replica.stop()
            except AssertionError as error:
                errors.append(str(error))
        if errors:
            raise AssertionError("\n".join(errors))
