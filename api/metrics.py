"""Prometheus metrics of the service, served at ``/metrics``.

Under gunicorn each worker is its own process, so counters kept in memory would each show a
share of the traffic. When ``PROMETHEUS_MULTIPROC_DIR`` is set (``nbo serve`` sets it to a
fresh folder before the workers start) every worker writes its values to files there and a
scrape adds them up; otherwise (tests, ``flask run``) one in-memory registry per app is used.

Labels never carry a customer id: requests are labelled by the URL rule
(``/v1/customers/<customer_id>/offers``), never by the path.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from recommender.exceptions import ConfigError

from .state import loaded_service

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXTENSION = "nbo_metrics"
# Most answers take 1-100 ms; the upper buckets catch the slow tail (cold caches, big limits).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25,
                   0.5, 1.0, 2.5)
UNMATCHED_ROUTE = "<unmatched>"  # 404s and 405s: the path may hold anything, keep it out

bp = Blueprint("metrics", __name__)


class Metrics:
    """The service's metrics, in one process-wide file set (multiprocess) or one registry."""

    def __init__(self, multiprocess_dir: str | Path | None = None) -> None:
        self.multiprocess_dir = Path(multiprocess_dir) if multiprocess_dir else None
        if self.multiprocess_dir is not None and not self.multiprocess_dir.is_dir():
            raise ConfigError(f"{MULTIPROC_ENV}={self.multiprocess_dir} is not a folder: create "
                              "it (empty) before starting the workers, or unset the variable")
        # In multiprocess mode values live in the folder's files: the metrics join no registry
        # (a scrape builds one that reads the files) so nothing is exported twice.
        self._registry = None if self.multiprocess_dir else CollectorRegistry(auto_describe=True)
        registry = self._registry
        self.requests = Counter("nbo_http_requests", "HTTP requests answered, by URL rule",
                                ("route", "method", "status"), registry=registry)
        self.latency = Histogram("nbo_http_request_duration_seconds",
                                 "Time to answer an HTTP request, by URL rule",
                                 ("route", "method"), buckets=LATENCY_BUCKETS, registry=registry)
        # livemax: a version is shown while any live worker serves it (gunicorn must call
        # prometheus_client.multiprocess.mark_process_dead for exited workers).
        self.model_info = Gauge("nbo_model_info", "The model version served (value 1)",
                                ("version",), multiprocess_mode="livemax", registry=registry)
        self.offers = Counter("nbo_offers_served", "Offers returned, by the source that ranked "
                              "them", ("source",), registry=registry)
        self._model_version: tuple[int, str] | None = None  # (process id, version)
        self._lock = threading.Lock()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration under its URL rule."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def count_offers(self, offers: Iterable[Mapping[str, Any]]) -> None:
        """Count the offers of one answer by their ``source`` (cf, popularity, ...)."""
        # One increment per source, not per offer: an answer's offers share their source.
        for source, n in collections.Counter(str(offer["source"]) for offer in offers).items():
            self.offers.labels(source).inc(n)

    def set_model_version(self, version: str) -> None:
        """Show ``version`` as the model served; the previous version drops to 0."""
        # Keyed by process too: a worker forked from a master that set the gauge has empty
        # files of its own and must write its version again.
        shown = (os.getpid(), version)
        if shown == self._model_version:
            return
        with self._lock:  # threads of one worker may see a reload at the same moment
            if self._model_version is not None and self._model_version[1] != version:
                previous = self._model_version[1]
                if self.multiprocess_dir is None:
                    self.model_info.remove(previous)
                else:  # labels cannot be removed across processes; 0: "no longer served"
                    self.model_info.labels(previous).set(0)
            self.model_info.labels(version).set(1)
            self._model_version = shown

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker)."""
        if self.multiprocess_dir is None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)


def init_app(app: Flask) -> Metrics:
    """Create the app's metrics (multiprocess if ``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    metrics = Metrics(os.environ.get(MULTIPROC_ENV) or None)
    app.extensions[EXTENSION] = metrics
    app.register_blueprint(bp)
    return metrics


def current_metrics() -> Metrics:
    """The metrics of the app answering this request."""
    return current_app.extensions[EXTENSION]


def set_model_version(version: str) -> None:
    """Call after a reload (inside the app context) so ``nbo_model_info`` follows the model."""
    current_metrics().set_model_version(version)


def count_offers(offers: Iterable[Mapping[str, Any]]) -> None:
    """Count the offers an endpoint is about to return, by source."""
    current_metrics().count_offers(offers)


@bp.get("/metrics")
def metrics_view():
    metrics = current_metrics()
    service = loaded_service()
    if service is not None:  # the scraped worker reports the model it serves right now
        metrics.set_model_version(service.engine.model.version)
    return Response(metrics.render(), mimetype=None, content_type=CONTENT_TYPE_LATEST)
