"""The served ranker's scores for every customer of the book, computed once per model.

A customer's ranker scores depend only on the model and on the customer book (the bank's
extracts); the policy, the request's context and the contact history are applied afterwards,
at request time. Scoring one customer at a time costs milliseconds (feature building,
LightGBM, pandas); reading their row of a memory-mapped table costs microseconds, and every
server worker shares one copy in the page cache. The table is built in batches by the same
ranker, in a child process (``python -m recommender.ranking.score_table``) so that no server process
ever runs the batch scoring itself (DESIGN.md: forked children hang after such work).

A table is named by the book it scores and by the model's content (file checksums, served
ranker, parameters), not by the version's name: a copy of a model under a new name reuses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..data.cache_folders import prune_siblings, written_whole
from ..data.mapped_book import MappedBook, open_book
from ..exceptions import ArtifactError, ConfigError
from . import artifacts
from .ranker import SOURCES, RankerScores, served_ranker, source_codes

log = logging.getLogger(__name__)

FORMAT = 1
MODES = ("off", "use", "background")
CHUNK = 50_000  # customers scored at once while building: memory stays near 100 MB
_META = "scores.json"


def table_key(book: MappedBook, model: artifacts.TrainedModel) -> str:
    """The table's folder name: the book's cache key and what decides the model's scores."""
    manifest = model.manifest
    parts = {"format": FORMAT, "book": book.folder.name, "files": manifest.get("files"),
             "served": model.served, "parameters": manifest.get("parameters")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


class ScoreTable:
    """A built table, memory-mapped: ``at(position)`` is that customer's ``RankerScores``."""

    def __init__(self, folder: str | Path, book: MappedBook) -> None:
        self.folder = Path(folder)
        try:
            meta = json.loads((self.folder / _META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{self.folder}: not a score table ({exc})") from exc
        if meta.get("format") != FORMAT or meta.get("customers") != len(book) \
                or meta.get("products") != len(book.catalog):
            raise ArtifactError(f"{self.folder}: a score table of another format or book")
        self.scores, self.sources = (  # plain arrays over the mapping (see MappedBook)
            np.asarray(np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False))
            for name in ("scores", "sources"))
        self._names = np.asarray(SOURCES)

    def at(self, position: int) -> RankerScores:
        """One customer's scores and source, as the ranker computed them."""
        return RankerScores(scores=np.array(self.scores[position:position + 1]),
                            sources=self._names[self.sources[position:position + 1]])


def build_score_table(model: artifacts.TrainedModel, book: MappedBook, folder: str | Path,
                      chunk: int = CHUNK) -> Path:
    """Score every customer of ``book`` with the model's served ranker into ``folder``,
    written whole or not at all."""
    ranker, n = served_ranker(model), len(book)
    with written_whole(folder, _META) as partial:
        scores = np.lib.format.open_memmap(partial / "scores.npy", mode="w+", dtype=np.float32,
                                           shape=(n, len(book.catalog)))
        sources = np.lib.format.open_memmap(partial / "sources.npy", mode="w+", dtype=np.uint8,
                                            shape=(n,))
        for start in range(0, n, chunk):
            ranked = ranker.score(book.batch(np.arange(start, min(start + chunk, n))))
            scores[start:start + len(ranked.scores)] = ranked.scores
            sources[start:start + len(ranked.scores)] = source_codes(ranked.sources)
            log.debug("scored %d of %d customers", min(start + chunk, n), n)
        scores.flush()
        sources.flush()
        del scores, sources
        meta = {"format": FORMAT, "customers": n, "products": len(book.catalog),
                "model_version": model.version}
        (partial / _META).write_text(json.dumps(meta), encoding="utf-8")
    log.info("scored %d customers with model %s into %s", n, model.version, folder)
    return Path(folder)


def table_folder(state_dir: str | Path, book: MappedBook, model: artifacts.TrainedModel) -> Path:
    return Path(state_dir) / "score-tables" / table_key(book, model)


def open_table(state_dir: str | Path, book: MappedBook,
               model: artifacts.TrainedModel) -> ScoreTable | None:
    """The model's table for ``book`` if it has been built, else None (score live)."""
    folder = table_folder(state_dir, book, model)
    if not (folder / _META).exists():
        return None
    return ScoreTable(folder, book)


def build_in_child(data_dir: str | Path, models_dir: str | Path, version: str,
                   state_dir: str | Path, *, wait: bool = True) -> subprocess.Popen:
    """Build the table of ``version`` in a fresh interpreter (not a fork of this process).

    ``wait=False`` returns at once: a server worker keeps answering (live scoring) while the
    child works, and opens the table when it appears.
    """
    job = json.dumps({"data": str(data_dir), "models": str(models_dir), "version": version,
                      "state": str(state_dir)})
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "recommender.ranking.score_table", job],
                             env=env,
                             start_new_session=not wait)
    if not wait:  # reaped by a thread, so a long-running worker leaves no zombie behind
        threading.Thread(target=child.wait, name="nbo-score-table", daemon=True).start()
    elif child.wait() != 0:
        raise ArtifactError(f"building the score table of model {version} failed (exit code "
                            f"{child.returncode}); see the log above")
    return child


class ServedScores:
    """The score table one service reads: ``at`` answers None (score live) until it is built.

    ``mode`` is ``"off"`` (always live), ``"use"`` (the table if it was built, e.g. by
    ``nbo serve``) or ``"background"`` (if not built, ``build_missing`` builds it in a child
    process and answers start reading it once it is there).
    """

    RECHECK_SECONDS = 2.0

    def __init__(self, mode: str, state_dir: str | Path, book: MappedBook,
                 model: artifacts.TrainedModel, *, data_dir: str | Path | None = None,
                 models_dir: str | Path | None = None) -> None:
        if mode not in MODES:
            raise ConfigError(f"score table mode must be one of {list(MODES)}, got {mode!r}")
        self.mode, self.book, self.table = mode, book, None
        self.folder = table_folder(state_dir, book, model)
        self._next_check, self._discarded = 0.0, False
        self._job = (data_dir, models_dir, model.version, state_dir)
        if mode != "off":
            self._open()

    def build_missing(self) -> None:
        """In background mode, start building a missing table: call it once the model has
        passed its checks, so a rejected model never costs a build."""
        data_dir, models_dir, version, state_dir = self._job
        if self.mode != "background" or self.table is not None or self._discarded \
                or data_dir is None or models_dir is None:
            return
        log.info("no score table for model %s yet: scoring live while a child process builds "
                 "%s", version, self.folder)
        build_in_child(data_dir, models_dir, version, state_dir, wait=False)

    def _open(self) -> bool:
        if (self.folder / _META).exists():
            try:
                self.table = ScoreTable(self.folder, self.book)
            except ArtifactError as exc:
                self.discard(str(exc))
        return self.table is not None

    def discard(self, reason: str) -> None:
        """Stop reading a table that is unusable: answers are scored live (slower, still
        right). It is a cache, so it never stops the service; deleting its folder has the
        next start (or reload) build it again."""
        log.error("not using the score table %s: %s; scoring live", self.folder, reason)
        self.table, self._discarded = None, True

    def at(self, position: int) -> RankerScores | None:
        """The customer's precomputed scores, or None while there is no table."""
        if self.table is None:
            now = time.monotonic()
            if self.mode == "off" or self._discarded or now < self._next_check:
                return None
            self._next_check = now + self.RECHECK_SECONDS
            if not self._open():
                return None
        return self.table.at(position)


def _main(job_text: str) -> None:
    job = json.loads(job_text)
    model = artifacts.load(job["models"], job["version"])
    book = open_book(job["data"], model, Path(job["state"]) / "book-cache")
    folder = table_folder(job["state"], book, model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f".{folder.name}.lock"), "w") as lock:
        try:  # one builder per table: another worker's child may be at it already
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("score table %s is being built by another process", folder)
            return
        if not (folder / _META).exists():
            build_score_table(model, book, folder)
            prune_siblings(folder)


if __name__ == "__main__":  # python -m recommender.ranking.score_table '<job json>'
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _main(sys.argv[1])
