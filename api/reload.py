"""Hot reload: serve the model version ``models/current`` points to, without downtime.

``POST /admin/reload`` (admin only) loads the version in this worker, verifies it (manifest,
checksums, a smoke scoring) and swaps it in with one assignment: requests already running
finish on the old service, new ones get the new one. A version that fails any check is
rejected with a log line naming the reason, and the previous model keeps serving.

Every other worker follows: the reload writes ``<state>/reload-request``, and each worker
looks at that file's time at most once a second and reloads in a background thread when it
changed. ``nbo serve`` makes SIGHUP to the gunicorn master write the same file, so a signal
reloads every worker in place instead of restarting them.

The last version that passed is recorded in the stores' database (``served_version``); a
worker that starts while ``current`` is broken serves that version instead of failing to boot.
A reload request reaches the workers of one machine: each replica is reloaded on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app

from recommender.exceptions import ConfigError, RecommenderError
from recommender.policy.config import load_policy
from recommender.ranking import artifacts
from recommender.service import OfferService, load_service, open_database, reload_service
from recommender.store.database import Database, StoreError, StoreUnavailableError
from recommender.store.settings import SERVED_VERSION, read_setting, write_setting

from .errors import error_response

log = logging.getLogger(__name__)

EXTENSION = "nbo_reloader"
REQUEST_FILE = "reload-request"
_CHECK_EVERY_S = 1.0

bp = Blueprint("admin", __name__)


def request_reload(state_dir: str | Path) -> None:
    """Ask every worker serving from ``state_dir`` to reload (what SIGHUP does)."""
    path = Path(state_dir) / REQUEST_FILE
    partial = path.with_name(f".{REQUEST_FILE}.{os.getpid()}")
    partial.write_text(f"{time.time_ns()}\n", encoding="utf-8")
    partial.replace(path)


def _stamp(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


class Reloader:
    """Loads, checks and swaps the service of one app (one per worker process)."""

    def __init__(self, app: Flask) -> None:
        self.app, self.config = app, app.config
        self.state = Path(self.config["STATE_DIR"])
        self._lock = threading.Lock()
        self._seen = _stamp(self.state / REQUEST_FILE)
        self._next_check = 0.0

    def reload(self) -> dict[str, Any]:
        """Serve ``MODEL_VERSION`` (``current``) if it changed; raises RecommenderError (and
        keeps the served model) when the new version fails a check."""
        with self._lock:
            served: OfferService = self.app.extensions["nbo"]
            previous = served.engine.model.version
            try:
                if self._unchanged(served):
                    return {"status": "unchanged", "model_version": previous,
                            "previous_version": previous}
                candidate = reload_service(
                    served, self.config["DATA_DIR"], self.config["MODELS_DIR"],
                    self.config["MODEL_VERSION"], policy_file=self.config["POLICY_FILE"],
                    state_dir=self.state)
            except (RecommenderError, OSError, ValueError) as exc:
                log.error("reload rejected, still serving model %s: %s", previous, exc)
                raise
            self.app.extensions["nbo"] = candidate  # one assignment: atomic for readers
            version = candidate.engine.model.version
            log.info("reloaded: serving model %s (was %s), policy %s", version, previous,
                     candidate.policy.version)
            remember_served(candidate.responses.database, version)
            return {"status": "reloaded", "model_version": version, "previous_version": previous}

    def _unchanged(self, served: OfferService) -> bool:
        """Same version folder and same policy text: nothing to load."""
        folder = artifacts.resolve(self.config["MODELS_DIR"], self.config["MODEL_VERSION"])
        return (folder.name == served.engine.model.version
                and load_policy(self.config["POLICY_FILE"]).text == served.policy.text)

    def broadcast(self) -> None:
        """Ask the other workers to follow this one's reload."""
        request_reload(self.state)
        self._seen = _stamp(self.state / REQUEST_FILE)  # this worker is done already

    def follow(self) -> None:
        """Start a background reload if another worker or SIGHUP asked for one."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + _CHECK_EVERY_S
        stamp = _stamp(self.state / REQUEST_FILE)
        if stamp == self._seen:
            return
        self._seen = stamp
        threading.Thread(target=self._reload_quietly, name="nbo-reload", daemon=True).start()

    def _reload_quietly(self) -> None:
        with contextlib.suppress(RecommenderError, OSError, ValueError):
            self.reload()  # a failure is logged by reload; the served model stays


def remember_served(database: Database, version: str) -> None:
    """Record the version that passed its checks, for workers that start while current is
    broken; a database away now only costs that fallback (logged)."""
    try:
        write_setting(database, SERVED_VERSION, version)
    except StoreUnavailableError as exc:
        log.warning("could not record the served version %s: %s", version, exc)


def _last_served(database: Database) -> str:
    try:
        return read_setting(database, SERVED_VERSION) or ""
    except StoreUnavailableError:
        return ""


def _seconds(config, name: str) -> float:
    value = config[name]
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"{name} (or NBO_{name}) must be a number of seconds >= 0, "
                          f"got {value!r}")
    return seconds


def load_at_start(config) -> OfferService:
    """The service a worker starts with: ``MODEL_VERSION``, or the last version served when
    that one is broken (logged); without a last version the error stands. A database of an
    older schema stops the start (the message names ``nbo db upgrade``)."""
    state = Path(config["STATE_DIR"])
    database = open_database(state, config["DATABASE_URL"])
    options = {"policy_file": config["POLICY_FILE"], "state_dir": state,
               "score_tables": config["SCORE_TABLES"], "database": database,
               "decision_flush_seconds": _seconds(config, "DECISION_FLUSH_SECONDS")}
    try:
        service = load_service(config["DATA_DIR"], config["MODELS_DIR"],
                               config["MODEL_VERSION"], **options)
    except StoreError:
        raise
    except RecommenderError as exc:
        last = _last_served(database)
        if not last or last == config["MODEL_VERSION"]:
            raise
        log.error("cannot serve model %s (%s); serving the last good version %s",
                  config["MODEL_VERSION"], exc, last)
        return load_service(config["DATA_DIR"], config["MODELS_DIR"], last, **options)
    remember_served(database, service.engine.model.version)
    return service


def init_app(app: Flask) -> None:
    reloader = Reloader(app)
    app.extensions[EXTENSION] = reloader
    app.before_request(reloader.follow)
    app.register_blueprint(bp, url_prefix="/admin")


@bp.post("/reload")
def reload():
    reloader: Reloader = current_app.extensions[EXTENSION]
    try:
        result = reloader.reload()
    except (RecommenderError, OSError, ValueError) as exc:
        return error_response(409, "reload_rejected", f"{exc}; still serving "
                              f"{current_app.extensions['nbo'].engine.model.version}")
    reloader.broadcast()
    return result
