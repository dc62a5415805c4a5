"""Fitting: from validated extracts to a ``TrainedModel`` and its calibration.

``fit`` builds every part of a model from the extracts as they stand (``upto`` cuts them at
an earlier month, for the back-test); ``calibrate`` maps the served ranker's scores to
take-up probabilities on the latest transition. Choosing and judging what is served is
``backtest``'s; saving a version is ``training``'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import columns as C
from ..data.book import CustomerBook
from ..data.catalog import Catalog
from ..data.eligibility import offerable_mask
from ..data.extracts import BankData
from ..data.interactions import (
    acquisitions,
    confidence_matrix,
    months_between,
    present_at,
    snapshot_matrix,
)
from ..data.life_stages import LifeStageRules
from ..exceptions import DataValidationError, InsufficientDataError
from .acquisition import AcquisitionRanker
from .artifacts import TrainedModel
from .calibration import Calibrator, fit_calibrator
from .cf import CFModel
from .config import TrainConfig
from .ownership import OwnershipModel
from .popularity import acquisition_rates
from .ranker import served_ranker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class History:
    """Monthly holdings matrices (oldest first) and who was a customer at each."""

    snapshots: list[sp.csr_matrix]
    presence: np.ndarray  # (n_customers x n_snapshots) bool


def history(bank: BankData, n_customers: int, n_products: int) -> History:
    dates = bank.snapshots
    matrices = [snapshot_matrix(bank.holdings, (n_customers, n_products), d) for d in dates]
    tenure = bank.customers[C.TENURE_MONTHS].to_numpy()
    presence = np.column_stack(
        [present_at(m, tenure, months_between(d, bank.reference_date))
         for m, d in zip(matrices, dates, strict=True)]
    ) if dates else np.zeros((n_customers, 0), dtype=bool)
    return History(matrices, presence)


def upto(bank: BankData, snapshot: pd.Timestamp) -> BankData:
    """The extracts as they stood at ``snapshot``: later holdings snapshots removed, and the
    bank's time-varying columns at their values of then."""
    holdings = bank.holdings[bank.holdings[C.SNAPSHOT_DATE] <= snapshot].reset_index(drop=True)
    # Time-varying columns as they stood then, never the values of the months held out.
    return replace(bank, customers=bank.customers_at(snapshot), holdings=holdings,
                   as_of=bank.reference_date, months=None)


def fit(bank: BankData, catalog: Catalog, stages: LifeStageRules, config: TrainConfig,
        catalog_text: str = "", stages_text: str = "", served: str = "hybrid",
        cf_kind: str | None = None, ownership: OwnershipModel | None = None) -> TrainedModel:
    """Fit CF on the latest snapshot, take-up rates on every transition, and the ranker
    ``served`` names: the acquisition ranker, or the propensity to own (``ownership``: one
    already fitted on these extracts, as the cross-validation fits it, is used as it is)."""
    snapshots = bank.snapshots
    if not snapshots:
        raise DataValidationError("the holdings extract has no rows: nothing to train on")
    book = CustomerBook(bank, catalog, stages, config.cf.weighting, config.acquisition.n_lags)
    past = history(bank, len(book), len(catalog))
    user_items = confidence_matrix(bank.holdings, book.held.shape, snapshots[-1],
                                   config.cf.weighting)
    cf_config = replace(config.cf, kind=cf_kind) if cf_kind else config.cf
    cf = CFModel(cf_config).fit(user_items, book.ids, catalog.ids)
    rates = acquisition_rates(past.snapshots, book.stage_codes, len(stages.stages),
                              config.prior_smoothing)
    ranker = None
    if served != "ownership":
        ownership = None
    if served == "acquisition":
        profiles_at = None
        if bank.customer_features is not None:  # each month's features as they stood then
            def profiles_at(t: int) -> pd.DataFrame:
                return book.profiles.assign(**{
                    c: v for c, v in bank.customers_at(snapshots[t]).items()
                    if c in bank.schema.names})
        ranker = AcquisitionRanker(config.acquisition).fit(
            past.snapshots, past.presence, list(catalog.ids.external_ids), book.profiles,
            book.stage_codes, bank.schema, profiles_at)
    if served == "ownership" and ownership is None:
        ownership = OwnershipModel(random_state=config.acquisition.random_state).fit(
            book.held, book.profiles, book.stage_codes, book.ids.external_ids,
            list(catalog.ids.external_ids), bank.schema)
    return TrainedModel(cf=cf, rates=rates, catalog=catalog, stages=stages, config=config,
                        catalog_text=catalog_text, stages_text=stages_text,
                        acquisition=ranker, served=served, ownership=ownership)


CALIBRATION_SAMPLE = 200_000
_LOG_GRID = np.linspace(np.log(1e-5), 0.0, 4001)
# Scores that are already log-probabilities: the map back is exp (to a few parts in 1e6).
LOG_PROBABILITY = Calibrator(_LOG_GRID, np.exp(_LOG_GRID))


def transition_batch(bank: BankData, catalog: Catalog, stages: LifeStageRules,
                      config: TrainConfig, before: pd.Timestamp, after: pd.Timestamp,
                      seed: int) -> tuple:
    """(batch of customers present at ``before``, their additions at ``after``, allowed mask),
    sampled to at most CALIBRATION_SAMPLE customers, consent ignored (it is a policy)."""
    book = CustomerBook(upto(bank, before), catalog, stages, config.cf.weighting,
                        config.acquisition.n_lags)
    later = snapshot_matrix(bank.holdings, book.held.shape, after)
    present = np.flatnonzero(book.present[:, 0])
    if len(present) > CALIBRATION_SAMPLE:
        rng = np.random.default_rng(seed)
        present = np.sort(rng.choice(present, CALIBRATION_SAMPLE, replace=False))
    batch = book.batch(present)
    batch = replace(batch, profile_frame=batch.profiles.assign(**{C.CONSENT_PROFILING: True}))
    everyone = np.ones(len(present), dtype=bool)  # present, even those holding nothing
    added = acquisitions(batch.held, later[present], everyone).toarray() > 0
    return batch, added, offerable_mask(batch.profiles, batch.held, catalog)


def calibrate(model: TrainedModel, bank: BankData) -> Calibrator | None:
    """Fit the served ranker's score -> take-up probability map on the latest transition.

    Raises InsufficientDataError when nobody took anything up in it: the map would send every
    score to 0, and every list would come out empty with nothing said."""
    snapshots = bank.snapshots
    if model.served == "ownership":  # calibrated per product already: scores are log P(own)
        return LOG_PROBABILITY
    if len(snapshots) < 2:
        return None
    batch, added, allowed = transition_batch(bank, model.catalog, model.stages, model.config,
                                              snapshots[-2], snapshots[-1],
                                              model.config.cf.random_state)
    if not added[allowed].any():
        raise InsufficientDataError(
            f"no customer took up a product between the snapshots {snapshots[-2].date()} and "
            f"{snapshots[-1].date()}, the months the take-up probabilities are calibrated on: "
            "identical snapshots, or a last month with no take-up, would make every "
            "propensity 0. Give holdings up to a month in which customers added products")
    scores = served_ranker(model).score(batch).scores
    return fit_calibrator(scores[allowed], added[allowed])


