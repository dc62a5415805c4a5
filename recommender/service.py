"""The offer service: one trained model, one policy and the current customer book,
answering requests, recording responses and logging every decision.

The HTTP layer and the CLI call these methods and only format what they return.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .data import columns as C
from .data.book import CustomerBatch, CustomerBook, profile_batch
from .data.mapped_book import MappedBook, open_book
from .data.profiles import plain_value
from .exceptions import ArtifactError
from .policy.adaptive import Adjustment
from .policy.config import CHANNELS, PolicyConfig, load_policy
from .policy.experiment import ExperimentSettings
from .policy.offers import MAX_OFFERS, OfferEngine, decided
from .policy.rules import ContactState, DecisionContext, contact_state
from .policy.why_not import why_not
from .ranking import artifacts
from .ranking.ranker import RankerScores
from .ranking.reproducible import ATOL, RTOL
from .ranking.score_table import ServedScores
from .store.database import Database, StoreError, StoreUnavailableError, database_url
from .store.decision_key import load_or_create_key
from .store.decisions import DecisionLog, DecisionLogError
from .store.learning import AdaptiveState
from .store.legacy import check_no_legacy
from .store.replay import decision_inputs
from .store.responses import Exposure, ResponseStore
from .store.settings import promoted_arm

log = logging.getLogger(__name__)

LANGUAGES = ("en", "zh")
PROMOTION_RECHECK_SECONDS = 30.0
_PROFILE_FIELDS = (C.AGE, C.INCOME, C.MARITAL_STATUS, C.DEPENDANTS, C.TENURE_MONTHS, C.SEGMENT,
                   C.RISK_GRADE, C.RESIDENCY, C.CONSENT_PROFILING, C.VULNERABLE,
                   C.OPEN_COMPLAINT)


@dataclass
class ServingArm:
    """What decides for the customers of one arm (or for all, without an experiment): an
    engine (model and policy), its precomputed scores and its adaptive correction."""

    name: str | None
    engine: OfferEngine
    scores: ServedScores | None = None
    learning: AdaptiveState | None = None

    def adjustment(self, batch: CustomerBatch, channel: str,
                   now: datetime) -> Adjustment | None:
        if self.learning is None:
            return None
        return self.learning.current(now).adjustment(list(batch.customer_ids), batch.stages,
                                                     channel)

    def exposure(self, customer_id: str, stage: int, product: int, channel: str,
                 now: datetime, ranked: RankerScores) -> Exposure:
        """What this arm predicted for a product shown to one customer (of life stage
        position ``stage``, with these ranker scores)."""
        engine = self.engine
        propensity = engine.propensity(ranked.scores)
        factor = 1.0
        if self.learning is not None:
            adjustment = self.learning.current(now).adjustment([customer_id],
                                                               np.array([stage]), channel)
            propensity = adjustment.prior(propensity)
            factor = float(adjustment.factors[0, product])
        return Exposure(engine.model.version, engine.stages.stages[stage].id, self.name or "",
                        min(float(propensity[0, product]), 1.0), factor)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class OfferService:
    engine: OfferEngine
    book: CustomerBook | MappedBook
    responses: ResponseStore
    decisions: DecisionLog
    scores: ServedScores | None = None  # precomputed ranker scores; None: score live
    _stores_checked: bool = False
    arms: dict[str, ServingArm] = field(default_factory=dict)  # by name; {} without experiment
    clock: Callable[[], datetime] = _now  # a simulation runs on its own clock
    learning: AdaptiveState | None = None  # the champion's adaptive correction

    def __post_init__(self) -> None:
        if self.learning is None and self.engine.policy.adaptive is not None:
            self.learning = AdaptiveState(self.responses, self.engine.model,
                                          self.engine.policy.adaptive)
        self._default = ServingArm(None, self.engine, self.scores, self.learning)
        self._promotion: tuple[float, str | None] = (0.0, None)  # (read again at, arm)

    @property
    def experiment(self) -> ExperimentSettings | None:
        return self.engine.policy.experiment if self.arms else None

    def serving_arm(self, customer_id: str) -> ServingArm:
        """The arm deciding for this customer: a stable hash of the id (the champion's policy
        names the experiment); the only one without an experiment."""
        experiment = self.experiment
        if experiment is None:
            return self._default
        promoted = self._promoted(experiment.name)
        if promoted is not None and promoted in self.arms:
            return self.arms[promoted]
        return self.arms[str(experiment.assign([customer_id])[0])]

    def _promoted(self, experiment: str) -> str | None:
        """The promoted arm (``nbo experiment promote``), read again every
        ``PROMOTION_RECHECK_SECONDS``; the last read stays while the database is away."""
        now = time.monotonic()
        if now >= self._promotion[0]:
            try:
                arm = promoted_arm(self.responses.database, experiment)
            except StoreUnavailableError:
                arm = self._promotion[1]
            if arm != self._promotion[1] and arm is not None:
                log.info("experiment %s: arm %s now serves every customer (promoted)",
                         experiment, arm)
            self._promotion = (now + PROMOTION_RECHECK_SECONDS, arm)
        return self._promotion[1]

    @property
    def catalog(self):
        return self.engine.catalog

    def stores_problem(self) -> str | None:
        """Why the stores cannot be used now (database away, older schema, another decision
        key), or None: what readiness reports. Checked in full until it first passes, then
        only whether the database answers."""
        try:
            if self._stores_checked:
                self.responses.database.ping()
            else:
                check_stores(self.responses.database, self.decisions)
                self._stores_checked = True
        except StoreError as exc:
            return str(exc)
        return None

    @property
    def stages(self):
        return self.engine.stages

    @property
    def policy(self) -> PolicyConfig:
        return self.engine.policy

    def context(self, channel: str | None = None, intent: str | None = None) -> DecisionContext:
        return DecisionContext(channel or self.policy.default_channel, intent or None,
                               self.clock())

    def _contact(self, batch: CustomerBatch, context: DecisionContext,
                 policy: PolicyConfig | None = None) -> ContactState:
        policy = policy or self.policy
        since = context.now() - timedelta(days=policy.history_days)
        if len(batch) == 1 and not self.responses.any_since(str(batch.customer_ids[0]), since):
            return ContactState.empty(1, len(self.catalog))
        history = self.responses.contact_history(list(batch.customer_ids), since)
        return contact_state(history, batch.customer_ids, self.catalog, policy, context,
                             self.book.snapshot)

    def _decide(self, arm: ServingArm, batch: CustomerBatch, limit: int, lang: str,
                context: DecisionContext, contact: ContactState,
                ranked: RankerScores | None = None) -> dict[str, Any]:
        engine = arm.engine
        adjustment = arm.adjustment(batch, context.channel, context.now())
        decision = engine.offers(batch, limit, context, contact, ranked, adjustment)[0]
        versions = {"model_version": engine.model.version,
                    "policy_version": engine.policy.version}
        answer = {**decision.to_dict(lang), **versions}
        inputs = decision_inputs(batch, 0, self.catalog, contact, context, limit)
        if adjustment is not None:
            inputs["adaptive"] = adjustment.record(0, self._product_ids)
        if arm.name is not None:
            inputs["arm"] = answer["arm"] = arm.name
        decision_id = self.decisions.record(
            customer_id=str(batch.customer_ids[0]), source="api",
            model_version=versions["model_version"], policy_version=versions["policy_version"],
            policy_text=engine.policy.text, inputs=inputs,
            output=decided(answer))  # the same in either language
        return {**answer, "decision_id": decision_id}

    @cached_property
    def _product_ids(self) -> list[str]:
        return [str(p) for p in self.catalog.ids.external_ids]

    def _ranked(self, position: int, arm: ServingArm | None = None) -> RankerScores | None:
        scores = self.scores if arm is None else arm.scores
        return scores.at(position) if scores is not None else None

    def offers(self, customer_id: str, limit: int = 5, lang: str = "en",
               channel: str | None = None, intent: str | None = None) -> dict[str, Any]:
        """The decision for a customer of the book (UnknownCustomerError if not)."""
        position = self.book.position(customer_id)
        batch = self.book.batch(np.array([position]))
        context = self.context(channel, intent)
        arm = self.serving_arm(customer_id)
        return self._decide(arm, batch, limit, lang, context,
                            self._contact(batch, context, arm.engine.policy),
                            self._ranked(position, arm))

    def offers_for_profile(self, profile: dict[str, Any], holdings: list[str], limit: int = 5,
                           lang: str = "en", channel: str | None = None,
                           intent: str | None = None) -> dict[str, Any]:
        """Offers for a customer described in the request (validated like the extract)."""
        batch = profile_batch(profile, holdings, self.catalog, self.stages)
        context = self.context(channel, intent)
        empty = ContactState.empty(1, len(self.catalog))
        return self._decide(self.serving_arm(str(batch.customer_ids[0])), batch, limit, lang,
                            context, empty)

    def why_not(self, customer_id: str, product_id: str, lang: str = "en",
                channel: str | None = None, intent: str | None = None,
                limit: int = 5) -> dict[str, Any]:
        """Which rule removes a product for a customer, in both languages."""
        position = self.book.position(customer_id)
        batch = self.book.batch(np.array([position]))
        self.catalog.ids.position(product_id)  # UnknownIdError for an unknown product
        context = self.context(channel, intent)
        arm = self.serving_arm(customer_id)
        return why_not(arm.engine, batch, product_id, limit, context,
                       self._contact(batch, context, arm.engine.policy), lang,
                       self._ranked(position, arm),
                       arm.adjustment(batch, context.channel, context.now()))

    def record_response(self, customer_id: str, product_id: str, outcome: str,
                        channel: str) -> dict[str, Any]:
        """Store a customer's answer with what the customer's arm predicted for it (the
        evidence the adaptive correction, the experiment report and the monitor read)."""
        position = self.book.position(customer_id)  # only customers of the book
        now, exposure = self.clock(), None
        if channel in CHANNELS and product_id in self.catalog.ids:
            arm = self.serving_arm(customer_id)
            ranked = self._ranked(position, arm)
            if ranked is None:
                ranked = arm.engine.ranker.score(self.book.batch(np.array([position])))
            exposure = arm.exposure(customer_id, int(self.book.stage_codes[position]),
                                    self.catalog.ids.position(product_id), channel, now,
                                    ranked)
        return self.responses.record(customer_id, product_id, outcome, channel, now,
                                     exposure).to_dict()

    def list_responses(self, customer_id: str, limit: int = 100) -> list[dict[str, Any]]:
        self.book.position(customer_id)
        return [r.to_dict() for r in self.responses.for_customer(customer_id, limit)]

    def profile(self, customer_id: str, lang: str = "en") -> dict[str, Any]:
        """Life stage, holdings and the attributes the rules use (never the protected ones)."""
        position = self.book.position(customer_id)
        row = self.book.profiles_at(np.array([position])).iloc[0]
        stage = self.stages.stages[int(self.book.stage_codes[position])]
        attributes = {f: plain_value(row[f]) for f in _PROFILE_FIELDS if f in row.index}
        if C.RISK_ASSESSED_ON in row.index:
            assessed = plain_value(row[C.RISK_ASSESSED_ON])
            attributes[C.RISK_ASSESSED_ON] = assessed[:10] if assessed else None
        holdings = [{"product_id": pid, "name": self.catalog[pid].name(lang)}
                    for pid in self.book.held_product_ids(position)]
        return {
            "customer_id": customer_id,
            "life_stage": {"id": stage.id, "name": stage.name(lang), "name_en": stage.name_en,
                           "name_zh": stage.name_zh},
            **attributes,
            "holdings": holdings,
            "as_of": str(self.book.snapshot.date()) if self.book.snapshot is not None else None,
        }

    def products(self, lang: str = "en") -> list[dict[str, Any]]:
        return [{
            "product_id": p.id, "name": p.name(lang), "name_en": p.name_en, "name_zh": p.name_zh,
            "category": p.category, "risk_grade": p.risk_grade, "value_weight": p.value_weight,
            "eligibility": {"min_age": p.min_age, "max_age": p.max_age,
                            "min_income": p.min_income, "residency": list(p.residency)},
            "prerequisites": list(p.prerequisites), "exclusions": list(p.exclusions),
            "life_stages": list(p.life_stages), "talking_points": list(p.talking_points(lang)),
        } for p in self.catalog.products]

    def life_stages(self, lang: str = "en") -> list[dict[str, Any]]:
        counts = np.bincount(self.book.stage_codes, minlength=len(self.stages.stages))
        return [{
            "id": s.id, "name": s.name(lang), "name_en": s.name_en, "name_zh": s.name_zh,
            "description": s.description(lang), "rules": dict(s.when),
            "bundle": self.catalog.bundle(s.id), "customers": int(counts[i]),
        } for i, s in enumerate(self.stages.stages)]

    def model_info(self) -> dict[str, Any]:
        manifest = self.engine.model.manifest
        info = {key: manifest.get(key) for key in ("version", "created_at", "data", "served")}
        metrics = manifest.get("metrics") or {}
        info["metrics"] = {k: metrics.get(k) for k in ("k", "served", "test_customers",
                                                       "methods", "calibration")}
        info["policy_version"] = self.policy.version
        return info


def open_database(state_dir: str | Path, url: str | None = None, *,
                  legacy_ok: bool = False) -> Database:
    """The stores' database: ``url``, else ``NBO_DATABASE_URL``, else the SQLite file in
    ``state_dir``. Nothing is read yet: the server may be away (see ``check_stores``).

    Refuses a state folder that still holds stores from before the database (they would be
    forgotten), naming ``nbo db upgrade``, which imports them (``legacy_ok``: that command).
    """
    if not legacy_ok:
        check_no_legacy(state_dir)
    return Database(database_url(url, state_dir))


def check_stores(database: Database, decisions: DecisionLog) -> None:
    """Raise unless the stores can be used now: the database answers (else
    ``StoreUnavailableError``), its schema is this code's (a new SQLite file gets it) and the
    decision log was written with this service's key."""
    database.ensure_schema()
    decisions.check_key()


def open_decision_log(state_dir: str | Path, flush_seconds: float = 0.0, *,
                      database: Database | None = None) -> DecisionLog:
    """The decision log in ``database`` (default: ``open_database(state_dir)``), encrypted
    with the key file ``state_dir/decision.key``, which every replica must share.

    Refuses a log written with another key, or whose key file has gone missing (a new key
    could not read it). ``flush_seconds`` > 0 queues answers and writes them in packs."""
    key_file = Path(state_dir) / "decision.key"
    owned = database is None
    database = database or open_database(state_dir)
    had_key = key_file.exists()
    decisions = DecisionLog(database, load_or_create_key(key_file), flush_seconds,
                            owns_database=owned)
    try:
        database.ensure_schema()
        decisions.check_key(first_use=had_key)
    except StoreUnavailableError as exc:  # checked again before the service reports ready
        log.error("the stores' database is unavailable at start (%s); not ready until it "
                  "answers", exc)
    except DecisionLogError as exc:
        if not had_key:
            key_file.unlink()  # the key just made is of no use: do not leave it behind
            raise DecisionLogError(
                f"the decision log in {database.name} was written with a key, but the key "
                f"file {key_file} is missing: restore it (a new key could not read the "
                "log)") from exc
        raise
    return decisions


def load_service(data_dir: str | Path, models_dir: str | Path,
                 version: str = artifacts.CURRENT, *, policy_file: str | Path | None = None,
                 state_dir: str | Path = "var", score_tables: str = "use",
                 decision_flush_seconds: float = 0.0, database: Database | str | None = None,
                 ) -> OfferService:
    """Load the model version, the policy and the bank's current extracts (validated with the
    model's catalog), and open the response store and the decision log in the database
    ``database`` (a URL; default: ``open_database``). A database that does not answer yet
    is logged and the service loads anyway: it reports not ready until it answers
    (``OfferService.stores_problem``); one of an older schema stops the load.

    The customer book is memory-mapped from ``state_dir/book-cache`` (built there on first
    use), so every worker of a server shares one copy; so is the model's ``ScoreTable``
    (``score_tables``: a ``ServedScores`` mode). Decisions are written in packs every
    ``decision_flush_seconds`` when it is above 0, else one by one (``DecisionLog``).
    """
    decisions = open_decision_log(state_dir, decision_flush_seconds,
                                  database=database if isinstance(database, Database)
                                  else open_database(state_dir, database))
    engine, book = _engine_and_book(data_dir, models_dir, version, policy_file, state_dir)
    responses = ResponseStore(decisions.database,
                              product_ids=[str(p) for p in engine.catalog.ids.external_ids])
    scores = ServedScores(score_tables, state_dir, book, engine.model, data_dir=data_dir,
                          models_dir=models_dir)
    scores.build_missing()
    log.info("serving model %s (%s) with policy %s for %d customers (%s)",
             engine.model.version, engine.model.served, engine.policy.version, len(book),
             "precomputed scores" if scores.table is not None else "live scoring")
    service = OfferService(engine, book, responses, decisions, scores)
    service.arms = experiment_arms(service, data_dir, models_dir, policy_file, state_dir)
    return service


def experiment_arms(service: OfferService, data_dir: str | Path, models_dir: str | Path,
                    policy_file: str | Path | None, state_dir: str | Path,
                    ) -> dict[str, ServingArm]:
    """The arms of the policy's experiment, each with its model version and policy variant
    (a file named relative to the policy's folder); {} without an experiment. An arm of the
    served model shares its scores; another version must have the same catalog (the book is
    shared)."""
    experiment = service.policy.experiment
    if experiment is None:
        return {}
    folder = Path(policy_file).parent if policy_file is not None else Path(".")
    mode = service.scores.mode if service.scores is not None else "off"
    arms = {}
    for arm in experiment.arms:
        version = arm.model or service.engine.model.version
        model = (service.engine.model if version == service.engine.model.version
                 else artifacts.load(models_dir, version))
        if list(model.catalog.ids.external_ids) != service._product_ids:
            raise ArtifactError(f"experiment {experiment.name!r}, arm {arm.name!r}: model "
                                f"{version} has another catalog than the served model "
                                f"{service.engine.model.version}; an arm must offer the same "
                                "products")
        policy = (load_policy(folder / arm.policy) if arm.policy is not None
                  else service.policy)
        engine = (service.engine if model is service.engine.model and policy is service.policy
                  else OfferEngine(model, policy))
        scores = service.scores
        if model is not service.engine.model:
            scores = ServedScores(mode, state_dir, service.book, model, data_dir=data_dir,
                                  models_dir=models_dir)
            scores.build_missing()
        learning = (service.learning if engine is service.engine
                    else AdaptiveState(service.responses, model, policy.adaptive)
                    if policy.adaptive is not None else None)
        arms[arm.name] = ServingArm(arm.name, engine, scores, learning)
        log.info("experiment %s: arm %s (%.0f%%) serves model %s with policy %s%s",
                 experiment.name, arm.name, 100 * arm.share, version, policy.version,
                 " (adaptive)" if learning is not None else "")
    return arms


def _engine_and_book(data_dir: str | Path, models_dir: str | Path, version: str,
                     policy_file: str | Path | None, state_dir: str | Path,
                     ) -> tuple[OfferEngine, MappedBook]:
    """The verified model version with its policy, and its memory-mapped customer book."""
    model = artifacts.load(models_dir, version)
    policy = load_policy(policy_file)  # before the book: a bad policy file fails at once
    return OfferEngine(model, policy), open_book(data_dir, model, Path(state_dir) / "book-cache")


def smoke_test(service: OfferService, customers: int = 20) -> None:
    """Decide for a few customers of the book before serving a model: a model that loads but
    cannot score (wrong shapes, broken calibrator, mismatched book) must never go live. A
    score table that disagrees with the model is dropped (answers are then scored live)."""
    n = min(customers, len(service.book))
    if n == 0:
        raise ArtifactError("smoke test: the customer book is empty")
    batch = service.book.batch(np.arange(n))
    context = service.context()
    try:
        scored = service.engine.score(batch, MAX_OFFERS, context)
        service.engine.offers(batch, MAX_OFFERS, context)
    except Exception as exc:  # any failure here means: do not serve this model
        raise ArtifactError(f"smoke test of model {service.engine.model.version} failed: "
                            f"{type(exc).__name__}: {exc}") from exc
    if not np.isfinite(scored.propensity).all() or (scored.propensity < 0).any():
        raise ArtifactError(f"smoke test of model {service.engine.model.version}: propensities "
                            "are not finite probabilities")
    table = service.scores.table if service.scores is not None else None
    if table is not None and not np.allclose(table.scores[:n], scored.scores, rtol=RTOL,
                                             atol=ATOL):
        service.scores.discard(f"its scores disagree with model {service.engine.model.version}")


def reload_service(served: OfferService, data_dir: str | Path, models_dir: str | Path,
                   version: str = artifacts.CURRENT, *, policy_file: str | Path | None = None,
                   state_dir: str | Path = "var") -> OfferService:
    """The service for ``version`` (verified, smoke-tested), sharing ``served``'s stores and
    its score table mode.

    Raises ArtifactError (or ConfigError for the policy) and leaves ``served`` untouched when
    the new version is missing, corrupt or incompatible.
    """
    engine, book = _engine_and_book(data_dir, models_dir, version, policy_file, state_dir)
    mode = served.scores.mode if served.scores is not None else "off"
    scores = ServedScores(mode, state_dir, book, engine.model, data_dir=data_dir,
                          models_dir=models_dir)
    responses = served.responses
    if set(engine.catalog.ids.external_ids) != responses.product_ids:  # a new catalog
        responses = ResponseStore(responses.database,
                                  product_ids=[str(p) for p in engine.catalog.ids.external_ids])
    candidate = OfferService(engine, book, responses, served.decisions, scores)
    if candidate.learning is not None and served.learning is not None:
        candidate.learning.adopt(served.learning)
    smoke_test(candidate)
    scores.build_missing()
    candidate.arms = experiment_arms(candidate, data_dir, models_dir, policy_file, state_dir)
    return candidate


__all__ = ["CHANNELS", "LANGUAGES", "MAX_OFFERS", "OfferService", "load_service",
           "reload_service", "smoke_test"]
