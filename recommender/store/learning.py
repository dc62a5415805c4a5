"""The adaptive correction of a served model, kept fresh from the response store.

Every ``refresh_seconds`` the evidence is brought up to the start of the current interval of
the clock (``as_of``) less ``SETTLE_SECONDS`` (a response is committed within moments of the
time it carries): every worker and replica that refreshes within the same interval counts
the same rows and so applies the same factors, and explores the same customers. Between
refreshes a decision costs one fancy-indexed read of the factors.

A refresh reads only the responses recorded since the last one, grouped per day, and adds
them to the counts it keeps (a few thousand rows: product x channel x life stage x day);
whole days leave the window as it moves. A worker reads the whole window once, at its first
decision; the same whole days, so it agrees with the workers that started before it.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import UTC, datetime, time, timedelta

import pandas as pd

from ..policy.adaptive import AdaptiveSettings, Evidence, LearnedPropensity
from ..policy.config import CHANNELS
from ..ranking.artifacts import TrainedModel
from .database import StoreUnavailableError
from .responses import NANOS, ResponseStore

log = logging.getLogger(__name__)

SETTLE_SECONDS = 5.0
_CELL = ["product_id", "channel", "life_stage", "day"]


def interval_start(now: datetime, seconds: float) -> datetime:
    """The start of the refresh interval ``now`` falls in, counted from the Unix epoch (so
    the same on every machine whose clock is right)."""
    return datetime.fromtimestamp(_interval(now, seconds), UTC)


def _interval(now: datetime, seconds: float) -> float:
    return math.floor(now.timestamp() / seconds) * seconds


class AdaptiveState:
    """The ``LearnedPropensity`` of ``model`` under ``settings``, refreshed from
    ``responses`` when the clock enters a new refresh interval."""

    def __init__(self, responses: ResponseStore, model: TrainedModel,
                 settings: AdaptiveSettings) -> None:
        self.responses, self.model, self.settings = responses, model, settings
        self.products = [str(p) for p in model.catalog.ids.external_ids]
        self.stages = [s.id for s in model.stages.stages]
        self._current: LearnedPropensity | None = None
        self._start: float | None = None  # the interval _current was read for
        self._lock = threading.Lock()
        self._failing = False
        self._counts: pd.DataFrame | None = None  # per cell and day, read up to _through
        self._through: datetime | None = None

    def adopt(self, other: AdaptiveState) -> None:
        """Take over the counts ``other`` has read (a reload: the responses are the same, so
        the new model's state need not read the whole window again)."""
        with other._lock:
            self._counts, self._through = other._counts, other._through

    def current(self, now: datetime) -> LearnedPropensity:
        """The corrections for a decision at ``now``: read again when ``now`` is in a new
        interval. With the database away, the last corrections read stay in use (logged
        once); before any were read, StoreUnavailableError."""
        start = _interval(now, self.settings.refresh_seconds)
        learned = self._current
        if learned is not None and start == self._start:  # most calls: no dates built
            return learned
        as_of = datetime.fromtimestamp(start, UTC)
        stamp = as_of.isoformat()
        with self._lock:
            if self._current is not None and self._current.as_of == stamp:
                return self._current
            try:
                learned = self._read(as_of)
            except StoreUnavailableError:
                if self._current is None:
                    raise
                if not self._failing:
                    log.warning("adaptive evidence cannot be read; the corrections of %s stay "
                                "in use until the database answers", self._current.as_of)
                self._failing = True
                return self._current
            if self._failing:
                log.info("adaptive evidence read again (%s)", stamp)
            self._failing = False
            self._current, self._start = learned, start
            return learned

    def _read(self, as_of: datetime) -> LearnedPropensity:
        first_day = datetime.combine((as_of - timedelta(days=self.settings.window_days)).date(),
                                     time(), UTC)
        cut = as_of - timedelta(seconds=SETTLE_SECONDS)
        if self._through is None or self._through < first_day or cut < self._through:
            counts = self.responses.evidence(first_day, cut)  # the whole window
        else:
            fresh = self.responses.evidence(self._through, cut)
            counts = pd.concat([self._counts, fresh], ignore_index=True) if len(fresh) else (
                self._counts)
            counts = counts.groupby(_CELL, as_index=False, sort=False).sum()
            counts = counts[counts["day"] >= first_day.date().isoformat()]
        self._counts, self._through = counts, cut
        counts = counts.sort_values(_CELL).assign(expected=counts["expected_nanos"] / NANOS)
        evidence = Evidence.from_counts(counts, self.products, CHANNELS, self.stages,
                                        as_of=as_of.date(),
                                        half_life_days=self.settings.half_life_days)
        log.debug("adaptive evidence as of %s: %d cells x days", as_of.isoformat(),
                  len(counts))
        return LearnedPropensity.fit(evidence, self.settings, self.model.rates.overall,
                                     as_of.isoformat())
