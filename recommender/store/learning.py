"""The adaptive correction of a served model, kept fresh from the response store.

Every ``refresh_seconds`` the evidence is read again, up to the start of the current
interval of the clock (``as_of``): every worker and replica that reads within the same
interval reads the same rows and so applies the same factors, and explores the same
customers. Between refreshes a decision costs one fancy-indexed read of the factors.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import UTC, datetime, timedelta

from ..policy.adaptive import AdaptiveSettings, Evidence, LearnedPropensity
from ..policy.config import CHANNELS
from ..ranking.artifacts import TrainedModel
from .database import StoreUnavailableError
from .responses import ResponseStore

log = logging.getLogger(__name__)


def interval_start(now: datetime, seconds: float) -> datetime:
    """The start of the refresh interval ``now`` falls in, counted from the Unix epoch (so
    the same on every machine whose clock is right)."""
    stamp = math.floor(now.timestamp() / seconds) * seconds
    return datetime.fromtimestamp(stamp, UTC)


class AdaptiveState:
    """The ``LearnedPropensity`` of ``model`` under ``settings``, refreshed from
    ``responses`` when the clock enters a new refresh interval."""

    def __init__(self, responses: ResponseStore, model: TrainedModel,
                 settings: AdaptiveSettings) -> None:
        self.responses, self.model, self.settings = responses, model, settings
        self.products = [str(p) for p in model.catalog.ids.external_ids]
        self.stages = [s.id for s in model.stages.stages]
        self._current: LearnedPropensity | None = None
        self._lock = threading.Lock()
        self._failing = False

    def current(self, now: datetime) -> LearnedPropensity:
        """The corrections for a decision at ``now``: read again when ``now`` is in a new
        interval. With the database away, the last corrections read stay in use (logged
        once); before any were read, StoreUnavailableError."""
        as_of = interval_start(now, self.settings.refresh_seconds)
        stamp = as_of.isoformat()
        learned = self._current
        if learned is not None and learned.as_of == stamp:
            return learned
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
            self._current = learned
            return learned

    def _read(self, as_of: datetime) -> LearnedPropensity:
        since = as_of - timedelta(days=self.settings.window_days)
        counts = self.responses.evidence(since, as_of)
        evidence = Evidence.from_counts(counts, self.products, CHANNELS, self.stages,
                                        as_of=as_of.date(),
                                        half_life_days=self.settings.half_life_days)
        log.debug("adaptive evidence as of %s: %d cells", as_of.isoformat(), len(counts))
        return LearnedPropensity.fit(evidence, self.settings, self.model.rates.overall,
                                     as_of.isoformat())
