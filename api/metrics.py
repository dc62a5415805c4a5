"""Prometheus metrics of the service, served at ``/metrics``.

Under gunicorn each worker is its own process, so counters kept in memory would each show a
share of the traffic. When ``PROMETHEUS_MULTIPROC_DIR`` is set (``nbo serve`` sets it to a
fresh folder before the workers start) every worker writes its values to files there and a
scrape adds them up; otherwise (tests, ``flask run``) one in-memory registry per app is used.

Labels never carry a customer id: requests are labelled by the URL rule
(``/v1/customers/<customer_id>/offers``), never by the path.

The model-health gauges (``nbo_monitor_*``, from the figures ``nbo monitor`` keeps in the
database, and ``nbo_adaptive_factor``, the served correction) are computed when scraped, by
the worker scraped, and never written to the multiprocess files. They are not something a
worker accumulates: every worker reads the same figures from the shared database and
applies the same factors (read from the same evidence in the same refresh interval), so the
scraped worker's reading is the answer. A multiprocess gauge would do worse in every mode:
``all``/``liveall`` add a ``pid`` label per worker (cardinality times workers), and ``max``
or ``mostrecent`` keep, in each worker's file, the series of a product or feature that has
since gone, since labels cannot be removed across processes.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
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
from prometheus_client.core import GaugeMetricFamily, Metric

from recommender.exceptions import ConfigError
from recommender.monitor import MonitorError, MonitorFigures, adaptive_factors, read_figures
from recommender.service import OfferService
from recommender.store.database import Database, StoreError

from .state import loaded_service

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXTENSION = "nbo_metrics"
# Most answers take 1-100 ms; the upper buckets catch the slow tail (cold caches, big limits).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25,
                   0.5, 1.0, 2.5)
UNMATCHED_ROUTE = "<unmatched>"  # 404s and 405s: the path may hold anything, keep it out
FIGURES_CACHE_SECONDS = 60.0  # the monitor runs daily: a scrape a minute reads it once

log = logging.getLogger(__name__)

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
        self.figures = FiguresCache()

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

    def render(self, service: OfferService | None = None) -> bytes:
        """The Prometheus text exposition of every metric (of every worker), with the
        model-health gauges of ``service`` read now."""
        registry = CollectorRegistry()
        if self.multiprocess_dir is None:
            registry.register(self._registry)
        else:
            multiprocess.MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        if service is not None:
            registry.register(_Read(self.service_families(service)))
        return generate_latest(registry)

    def service_families(self, service: OfferService) -> list[Metric]:
        """The monitor's figures (cached) and the adaptive factors the service applies now;
        nothing for a stand-in without stores, or a policy without ``[adaptive]``."""
        if not isinstance(service, OfferService):
            return []
        figures = self.figures.read(service.responses.database)
        factors = []
        if service.learning is not None:
            try:
                table = adaptive_factors(service.learning.current(service.clock()).corrections)
                factors = list(zip(table["product_id"], table["channel"], table["factor"],
                                   strict=True))
            except StoreError as exc:  # before the first read of the evidence
                log.warning("nbo_adaptive_factor not exported: %s", exc)
        return monitor_families(figures, factors, datetime.now(UTC))


class FiguresCache:
    """The monitor's figures of a database, read again at most every ``seconds``: a scrape
    costs no query in between. While the database is away (or holds something else under
    the setting) the last figures read stay, and the failure is logged."""

    def __init__(self, seconds: float = FIGURES_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self._read: tuple[float, Database, MonitorFigures | None] | None = None
        self._lock = threading.Lock()

    def read(self, database: Database) -> MonitorFigures | None:
        now = self.clock()
        with self._lock:  # one reader at a time: concurrent scrapes share its answer
            last = self._read if self._read is not None and self._read[1] is database else None
            if last is not None and now < last[0] + self.seconds:
                return last[2]
            try:
                figures = read_figures(database)
            except (StoreError, MonitorError) as exc:
                figures = last[2] if last is not None else None
                log.warning("the monitor's figures cannot be read (%s); /metrics shows %s",
                            exc, "the last read" if figures is not None else "none")
            self._read = (now, database, figures)
            return figures


def monitor_families(figures: MonitorFigures | None,
                     factors: Iterable[tuple[str, str, float]], now: datetime) -> list[Metric]:
    """The model-health gauges: those of the monitor's last run (none before the first),
    and ``nbo_adaptive_factor`` per (product, channel, factor) of ``factors``. A gauge with
    nothing to show is left out, rather than shown as a reassuring 0."""
    families = [_labelled("nbo_adaptive_factor", "The adaptive correction served: the "
                          "posterior mean factor over life stages weighted by shows",
                          ("product", "channel"),
                          [((str(p), str(c)), float(v)) for p, c, v in factors])]
    if figures is not None:
        families += [
            _labelled("nbo_monitor_observed_over_predicted", "Observed over predicted "
                      "acceptance of the offers shown (served propensity), at the last "
                      "monitor run", ("product", "channel"),
                      list(figures.observed_over_predicted.items())),
            _labelled("nbo_monitor_take_up_ratio", "Take-ups seen in the newest holdings "
                      "over those predicted, at the last monitor run", ("product",),
                      [((p,), v) for p, v in figures.take_up_ratio.items()]),
            _labelled("nbo_monitor_input_psi", "Population stability index of each input "
                      "against the training data, at the last monitor run", ("feature",),
                      [((f,), v) for f, v in figures.input_psi.items()]),
            GaugeMetricFamily("nbo_monitor_age_seconds", "Seconds since the last monitor run",
                              value=(now - figures.ran_at).total_seconds())]
        if figures.input_psi:  # without a drift reference there is no count to show
            families.append(GaugeMetricFamily(
                "nbo_monitor_drift_flagged", "Inputs whose PSI is above 0.2 at the last "
                "monitor run", value=figures.drift_flagged))
    return [family for family in families if family.samples]


def _labelled(name: str, documentation: str, labels: tuple[str, ...],
              values: list[tuple[tuple[str, ...], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


class _Read:
    """A collector of families computed for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


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
    return Response(metrics.render(service), mimetype=None, content_type=CONTENT_TYPE_LATEST)
