"""Proof by simulation that the loop closes: simulated weeks of app and counter traffic on the
demo bank, through the offer service in process, with two arms of one experiment: ``static``
(the offline model's propensity as it is) and ``adaptive`` (corrected by the answers).

    python scripts/simulate_loop.py --json simulate_loop.json

The demo generator knows each customer's true monthly take-up probability of every product
(``demo.take_up_probability``); a simulated customer shown an offer accepts it with that
probability, else declines with ``--decline-share`` or leaves it unanswered. Half-way
(``--change-day``) two things happen at once:

- the product ranked first most often stops selling as well: its true acceptance halves
  (a competitor's rate, say) for every customer;
- a new product, which no holdings extract has seen, joins the catalog: a model version with
  it (trained on the same extracts, so it has no take-up of it) is reloaded into the
  service, as a bank would publish one.

The service decides with its own clock set to the simulated time: contact caps, cooldowns,
the adaptive refresh interval and the age of the evidence all run on simulated time. Every
show and answer is recorded through ``OfferService.record_response``, as the API would.

Reported (JSON, printed and written to ``--json``):

- ``accept_rate_after_change`` and ``value_after_change`` per arm: accepts per show, and the
  expected value delivered per show (true acceptance probability x value weight, summed over
  the shows, so not subject to the noise of the draws) after the change;
- ``days_until_collapsed_drops`` per arm: simulated days after the change until the collapsed
  product is no longer ranked first for most of its panel (checked every six hours; null:
  never in the run). The collapsed product is the one ranked first most often, by both arms,
  in a sample of the book just before the change; its panel, the sampled customers both
  arms ranked it first for by less than twice the runner-up's priority (at half the
  acceptance, it should be first for none of them). The check ranks the panel on mobile as
  each arm would now, without contact history: it measures the ranking, not who visited;
- ``new_product_shows_to_20pct``: shows of the new product until the 95% interval of its
  acceptance rate is within +-20% of the rate (null: not reached in the run);
- ``cap_violations``: (customer, channel, day) with more shows than the policy's daily cap.

``targets_met`` checks the issue's targets. The run is deterministic for a ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from recommender.data.catalog import Catalog, catalog_text, parse_catalog  # noqa: E402
from recommender.data.demo import generate, take_up_probability  # noqa: E402
from recommender.data.extracts import BankData, load_bank, write_bank  # noqa: E402
from recommender.data.life_stages import life_stages_text, load_life_stages  # noqa: E402
from recommender.policy.config import load_policy  # noqa: E402
from recommender.policy.experiment_report import wilson_interval  # noqa: E402
from recommender.policy.rules import DecisionContext  # noqa: E402
from recommender.ranking.config import TrainConfig  # noqa: E402
from recommender.ranking.score_table import build_in_child  # noqa: E402
from recommender.ranking.training import train  # noqa: E402
from recommender.service import OfferService, load_service, reload_service  # noqa: E402

log = logging.getLogger("simulate_loop")

NEW_PRODUCT = "green_deposit"
NEW_PRODUCT_TOML = f"""
[[product]]
id = "{NEW_PRODUCT}"
name_en = "Green time deposit"
name_zh = "绿色定期存款"
category = "deposit"
risk_grade = "R1"
value_weight = 1.5
min_age = 18
prerequisites = ["current_account"]
life_stages = ["mid_career", "established_family", "pre_retirement", "retired"]
talking_points_en = ["A fixed rate, and the deposit funds green projects"]
talking_points_zh = ["利率锁定，存款用于绿色项目"]
"""
ADAPTIVE = """
[adaptive]
prior_strength = {prior_strength}
min_factor = 0.2
max_factor = 3.0
exploration_share = {exploration_share}
refresh_seconds = 3600.0
half_life_days = {half_life_days}
window_days = 21.0
min_shows = 100
"""
EXPERIMENT = """
[experiment]
name = "closing-the-loop"
level = 0.95

[[experiment.arm]]
name = "static"
share = 0.5
policy = "static.toml"

[[experiment.arm]]
name = "adaptive"
share = 0.5
"""
ARMS = ("static", "adaptive")
START = datetime(2026, 11, 2, tzinfo=UTC)  # the Monday after the demo bank's last extract


class Clock:
    """The service's clock, set by the simulation."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Shows:
    """One row per offer shown: what the metrics are computed from."""

    rows: list[tuple] = field(default_factory=list)

    def add(self, *row) -> None:
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=[
            "day", "hour", "customer_id", "channel", "arm", "product_id", "rank",
            "p_true", "value", "accepted"])


def _bank(work: Path, customers: int, months: int, seed: int) -> tuple[Catalog, Catalog]:
    """The demo bank in ``work/data`` and two model versions: ``before`` (today's catalog)
    and ``after`` (with the new product; the same extracts, so no take-up of it)."""
    stages = load_life_stages()
    base_text, _ = catalog_text()
    after_text = base_text + NEW_PRODUCT_TOML
    base, after = parse_catalog(base_text, "catalog"), parse_catalog(after_text, "catalog+new")
    demo = generate(customers, months, seed, base, stages)
    write_bank(BankData(demo.customers, demo.holdings), work / "data")
    st_text, _ = life_stages_text()
    for catalog, text, name in ((base, base_text, "before"), (after, after_text, "after")):
        model = train(load_bank(work / "data", catalog), catalog, stages,
                      TrainConfig(ranker="hybrid"), work / "models", text, st_text,
                      run_evaluation=False)
        (work / f"{name}.version").write_text(model.version)
    return base, after


def _true_probability(service: OfferService, catalog: Catalog, order: np.ndarray) -> np.ndarray:
    """(customer x product) true acceptance, in the book's order and ``catalog``'s."""
    batch = service.book.batch(order)
    held = np.zeros((len(order), len(catalog)), dtype=bool)
    rows, cols = batch.held.nonzero()
    held[rows, cols] = True
    profiles = batch.profiles.reset_index(drop=True)
    return take_up_probability(profiles, held, catalog, load_life_stages())


def _policies(work: Path, args: argparse.Namespace) -> Path:
    static = load_policy().text
    (work / "static.toml").write_text(static, encoding="utf-8")
    adaptive = static + ADAPTIVE.format(prior_strength=args.prior_strength,
                                        exploration_share=args.exploration_share,
                                        half_life_days=args.half_life_days) + EXPERIMENT
    (work / "policy.toml").write_text(adaptive, encoding="utf-8")
    return work / "policy.toml"


def simulate(args: argparse.Namespace, work: Path) -> dict:
    started = time.perf_counter()
    base, after = _bank(work, args.customers, args.months, args.seed)
    versions = {name: (work / f"{name}.version").read_text() for name in ("before", "after")}
    policy_file = _policies(work, args)
    options = {"policy_file": policy_file, "state_dir": work / "state"}
    # decisions written in packs, as a busy server does: the simulation spends its time
    # deciding, not committing the log
    for version in versions.values():  # as `nbo serve` does: answers read precomputed scores
        build_in_child(work / "data", work / "models", version, work / "state")
    service = load_service(work / "data", work / "models", versions["before"],
                           decision_flush_seconds=1.0, **options)
    clock = Clock(START)
    service.clock = clock
    n = len(service.book)
    order = np.arange(n)
    p_true = _true_probability(service, base, order)
    ids = [str(c) for c in service.book.batch(order).customer_ids]
    arm_of = {c: service.serving_arm(c).name for c in ids}
    caps = service.policy.daily_caps
    values = {p.id: p.value_weight for p in after.products}
    rng = np.random.default_rng(args.seed)
    shows, collapsed, catalog, panel = Shows(), None, base, None
    first_share: dict[str, list[tuple[float, float]]] = {arm: [] for arm in ARMS}
    sessions = 0
    trained_at = time.perf_counter()
    for day in range(args.days):
        if day == args.change_day:
            clock.now = START + timedelta(days=day)
            collapsed, panel = _collapsing(service, rng, args.panel)
            log.info("day %d: %s is first for a panel of %d customers at half the margin",
                     day, collapsed, len(panel))
            service = reload_service(service, work / "data", work / "models", versions["after"],
                                     **options)
            service.clock = clock
            catalog = after
            p_true = _true_probability(service, after, order)
            p_true[:, after.ids.position(collapsed)] *= 0.5
            new = after.ids.position(NEW_PRODUCT)  # a rate the competitors do not match
            p_true[:, new] = _lifted(p_true[:, new], args.new_product_lift)
            log.info("day %d: %s collapses, %s launches", day, collapsed, NEW_PRODUCT)
        visits = _visits(rng, n, args.app_sessions, args.branch_visits)
        checks = [6 * 3600 * k for k in range(4)] if panel is not None else []
        for seconds, who, channel in visits:
            while checks and seconds >= checks[0]:  # every six hours after the change
                clock.now = START + timedelta(days=day, seconds=checks.pop(0))
                elapsed = (clock.now - START).total_seconds() / 86400 - args.change_day
                for arm, share in _still_first(service, panel, collapsed).items():
                    first_share[arm].append((round(elapsed + 0.25, 2), share))
            clock.now = START + timedelta(days=day, seconds=float(seconds))
            customer = ids[who]
            answer = service.offers(customer, limit=3 if channel == "mobile" else 5,
                                    channel=channel)
            sessions += 1
            for offer in answer["offers"]:
                product = offer["product_id"]
                p = float(p_true[who, catalog.ids.position(product)])
                service.record_response(customer, product, "shown", channel)
                accepted = rng.random() < p
                if accepted:
                    service.record_response(customer, product, "accepted", channel)
                elif rng.random() < args.decline_share:
                    service.record_response(customer, product, "declined", channel)
                shows.add(day, seconds / 3600, customer, channel, answer.get("arm"), product,
                          offer["rank"], p, values[product], accepted)
        log.info("day %d: %d sessions, %d shows so far", day, sessions, len(shows.rows))
    frame = shows.frame()
    if args.work is not None:  # for a closer look
        frame.to_csv(work / "shows.csv.gz", index=False)
    result = _report(frame, args, collapsed, caps, arm_of, first_share,
                     0 if panel is None else len(panel))
    result["seconds"] = {"setup": round(trained_at - started, 1),
                         "simulation": round(time.perf_counter() - trained_at, 1)}
    result["sessions"] = sessions
    return result


def _lifted(p: np.ndarray, lift: float) -> np.ndarray:
    """Probabilities with ``lift`` added to their log-odds (0 stays 0: not allowed)."""
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    return np.where(p > 0, 1 / (1 + np.exp(-(logit + lift))), 0.0).astype(p.dtype)


def _visits(rng: np.random.Generator, n: int, app: float, branch: float) -> list[tuple]:
    """One day's sessions, in time order: (seconds into the day, customer, channel)."""
    out = []
    for channel, rate, opens, hours in (("mobile", app, 7, 16), ("branch", branch, 9, 8)):
        who = np.flatnonzero(rng.random(n) < rate)
        seconds = (opens + rng.random(len(who)) * hours) * 3600
        out += list(zip(seconds.tolist(), who.tolist(), [channel] * len(who), strict=True))
    return sorted(out)


def _ranked(service: OfferService, arm: str, positions: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each customer's first product on mobile in ``arm`` now (-1: no offer), with its
    priority and the runner-up's (-inf: none), ignoring contact history: the ranking itself,
    free of who happened to visit."""
    serving = service.arms[arm]
    batch = service.book.batch(positions)
    context = DecisionContext("mobile", None, service.clock())
    scored = serving.engine.score(batch, 3, context, adjustment=serving.adjustment(
        batch, "mobile", context.now()))
    rows = np.arange(len(positions))
    best, second = scored.priority[rows, scored.order[:, 0]], scored.priority[
        rows, scored.order[:, 1]]
    return np.where(np.isfinite(best), scored.order[:, 0], -1), best, second


def _collapsing(service: OfferService, rng: np.random.Generator,
                size: int) -> tuple[str, np.ndarray]:
    """The product ranked first most often (both arms, a sample of the book) just before
    the change, and its panel: the sampled customers both arms rank it first for by less
    than twice the runner-up's priority, so that at half its acceptance it should no longer
    be first."""
    sample = np.sort(rng.choice(len(service.book), min(size, len(service.book)),
                                replace=False))
    ranked = {arm: _ranked(service, arm, sample) for arm in ARMS}
    counts = np.bincount(np.concatenate([r[0] for r in ranked.values()]) + 1)[1:]
    product = int(np.argmax(counts))
    panel = np.ones(len(sample), dtype=bool)
    for first, best, second in ranked.values():
        panel &= (first == product) & (second > 0.5 * best)
    return str(service.catalog.ids.external_ids[product]), sample[panel]


def _still_first(service: OfferService, panel: np.ndarray, product: str) -> dict[str, float]:
    """Per arm, the share of the panel ``product`` is still ranked first for."""
    position = service.catalog.ids.position(product)
    return {arm: round(float(np.mean(_ranked(service, arm, panel)[0] == position)), 4)
            for arm in ARMS}


def _report(frame: pd.DataFrame, args: argparse.Namespace, collapsed: str,
            caps: dict[str, int], arm_of: dict[str, str],
            first_share: dict[str, list[tuple[float, float]]], panel_size: int) -> dict:
    after = frame[frame["day"] >= args.change_day]
    rate, value, drops = {}, {}, {}
    for arm in ARMS:
        mine = after[after["arm"] == arm]
        rate[arm] = round(float(mine["accepted"].mean()), 5)
        value[arm] = round(float((mine["p_true"] * mine["value"]).mean()), 6)
        drops[arm] = next((days for days, share in first_share[arm] if share < 0.5), None)
    before = frame[frame["day"] < args.change_day]
    old = after[after["product_id"] != NEW_PRODUCT]
    rate_before = {arm: round(float(before[before["arm"] == arm]["accepted"].mean()), 5)
                   for arm in ARMS}
    rate_old = {arm: round(float(old[old["arm"] == arm]["accepted"].mean()), 5)
                for arm in ARMS}
    new = after[after["product_id"] == NEW_PRODUCT]
    shows_to_20 = _shows_to_precision(new["accepted"].to_numpy(), 0.2)
    per_day = frame.groupby(["customer_id", "channel", "day"]).size().rename("shows")
    per_day = per_day.reset_index()
    over = per_day["shows"] > per_day["channel"].map(caps).fillna(np.inf)
    targets = {
        "adaptive/static accept rate": 1.1, "days_until_collapsed_drops": 3.0,
        "cap_violations": 0,
    }
    ratio = rate["adaptive"] / rate["static"] if rate["static"] else float("inf")
    adaptive_days = drops["adaptive"]
    return {
        "accept_rate_after_change": rate,
        "value_after_change": value,
        "days_until_collapsed_drops": drops,
        "new_product_shows_to_20pct": shows_to_20,
        "cap_violations": int(over.sum()),
        "adaptive/static accept rate": round(ratio, 3),
        # the same without the new product (which only the adaptive arm can learn), and
        # before the change: how much of the gain is the collapse, the launch, the rest
        "accept_rate_after_change_without_new_product": rate_old,
        "accept_rate_before_change": rate_before,
        "collapsed_product": collapsed,
        "collapsed_panel": panel_size,
        "collapsed_still_first": {arm: dict(first_share[arm]) for arm in ARMS},
        "new_product": {
            "id": NEW_PRODUCT, "shows": int(len(new)), "accepts": int(new["accepted"].sum()),
            "observed_rate": round(float(new["accepted"].mean()), 5) if len(new) else None,
            "true_rate_of_shows": round(float(new["p_true"].mean()), 5) if len(new) else None,
            "shows_by_arm": {a: int((new["arm"] == a).sum()) for a in ARMS}},
        "shows_after_change": {a: int((after["arm"] == a).sum()) for a in ARMS},
        "customers_by_arm": dict(Counter(arm_of.values())),
        "targets": targets,
        "targets_met": {
            "adaptive/static accept rate": ratio >= 1.1,
            "days_until_collapsed_drops": adaptive_days is not None and adaptive_days <= 3.0,
            "new_product_learned": shows_to_20 is not None,
            "cap_violations": int(over.sum()) == 0,
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "work")},
    }


def _shows_to_precision(accepted: np.ndarray, relative: float) -> int | None:
    """Shows until the 95% Wilson interval of the acceptance rate lies within +-``relative``
    of the rate (None: not reached)."""
    trials = np.arange(1, len(accepted) + 1)
    successes = np.cumsum(accepted)
    low, high = wilson_interval(successes, trials)
    rate = successes / trials
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (successes > 0) & ((high - low) / 2 <= relative * rate)
    return int(trials[np.argmax(ok)]) if ok.any() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the result here too")
    parser.add_argument("--work", type=Path, help="keep the bank, models and stores here")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--days", type=int, default=18)
    parser.add_argument("--change-day", type=int, default=7)
    parser.add_argument("--app-sessions", type=float, default=0.1,
                        help="share of customers opening the app each day")
    parser.add_argument("--branch-visits", type=float, default=0.01,
                        help="share of customers at a counter each day")
    parser.add_argument("--decline-share", type=float, default=0.3,
                        help="of the offers not accepted, the share answered with a decline")
    parser.add_argument("--new-product-lift", type=float, default=2.0,
                        help="log-odds the new product's offer adds to the generator's "
                        "take-up of it")
    parser.add_argument("--prior-strength", type=float, default=5.0,
                        help="expected accepts the prior is worth: a bank with 10,000 "
                        "customers sees about a hundredth of a big bank's evidence")
    parser.add_argument("--exploration-share", type=float, default=0.1)
    parser.add_argument("--half-life-days", type=float, default=2.0)
    parser.add_argument("--panel", type=int, default=3000,
                        help="customers sampled to find the collapsing product's panel")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("recommender").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="simulate_loop-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        result = simulate(args, work)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
