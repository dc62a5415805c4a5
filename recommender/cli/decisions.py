"""``nbo recommend``, ``nbo replay`` and ``nbo audit``: offer decisions made, recomputed from
the decision log, and audited for fairness across the book."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..policy.config import CHANNELS
from .arguments import add_database, add_serving_inputs, positive_int


def cmd_recommend(args: argparse.Namespace) -> int:
    from ..service import load_service

    service = load_service(args.data, args.models, state_dir=args.state,
                           database=args.database)
    results = [service.offers(cid, args.limit, args.lang) for cid in args.customer]
    if args.json:
        sys.stdout.write(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
        return 0
    for result in results:
        sys.stdout.write(_offer_table(result))
    return 0


_TABLE_ROW = "  {:>4}  {:>10}  {:>10}  {:<16}  {}\n"


def _offer_table(result: dict[str, Any]) -> str:
    """A customer's offers as the API orders them: by priority, which is printed with the
    propensity it grows from (the ranker's raw score orders nothing the teller sees)."""
    lines = [f"{result['customer_id']} ({result['life_stage']['name']}):\n"]
    if not result["offers"]:
        return lines[0] + "  no offer\n"
    lines.append(_TABLE_ROW.format("rank", "priority", "propensity", "source", "offer — reason"))
    for offer in result["offers"]:
        reason = offer["reasons"][0]["text"] if offer["reasons"] else ""
        lines.append(_TABLE_ROW.format(
            offer["rank"], f"{offer['priority']:.6f}", f"{offer['propensity']:.6f}",
            offer["source"], f"{offer['name']} — {reason}" if reason else offer["name"]))
    return "".join(lines)


def cmd_replay(args: argparse.Namespace) -> int:
    from ..service import open_database, open_decision_log
    from ..store.replay import replay

    state = Path(args.state)
    key = state / "decision.key"
    if not key.is_file():
        from ..exceptions import ConfigError

        raise ConfigError(f"no decision-log key at {key}: replay needs the key that wrote the log")
    with open_decision_log(state, database=open_database(state, args.database)) as decisions:
        result = replay(decisions.get(args.decision_id), args.models)
    sys.stdout.write(json.dumps({
        "decision_id": args.decision_id, "created_at": result.decision.created_at.isoformat(),
        "model_version": result.decision.model_version,
        "policy_version": result.decision.policy_version, "same": result.same,
        "logged": result.decision.output, "replayed": result.output,
    }, ensure_ascii=False, indent=2) + "\n")
    return 0 if result.same else 1


def cmd_audit(args: argparse.Namespace) -> int:
    from ..audit import audit, write_audit
    from ..data.book import load_book
    from ..policy.config import load_policy
    from ..policy.offers import OfferEngine
    from ..policy.rules import DecisionContext
    from ..ranking import artifacts

    model = artifacts.load(args.models)
    engine = OfferEngine(model, load_policy(args.policy))
    book = load_book(args.data, model)
    channel = args.channel or engine.policy.default_channel
    result = audit(engine, book, args.limit, DecisionContext(channel=channel))
    path = write_audit(result, args.out)
    Path(args.out, "audit.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    sys.stdout.write(f"{len(result['flags'])} flag(s) below four-fifths; report: {path}\n")
    for flag in result["flags"]:
        sys.stdout.write(f"  {flag['dimension']}={flag['group']} {flag['product_id']}: "
                         f"{flag['group_rate']:.4f} vs {flag['overall_rate']:.4f} "
                         f"({flag['ratio']:.2f})\n")
    return 0


def add_recommend(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="offers for customers of the book")
    add_serving_inputs(p)
    p.add_argument("--customer", action="append", required=True, help="repeat for several")
    p.add_argument("--limit", type=positive_int, default=5)
    p.add_argument("--lang", choices=("en", "zh"), default="en")
    add_database(p)
    p.add_argument("--json", action="store_true", help="the API's answers instead of a table")
    p.set_defaults(func=cmd_recommend)


def add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="recompute a logged decision with its own model and policy")
    p.add_argument("decision_id")
    p.add_argument("--models", default="models")
    add_database(p)
    p.set_defaults(func=cmd_replay)


def add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="fairness audit: offer rates by gender and age band")
    add_serving_inputs(p)
    p.add_argument("--policy", help="decision policy TOML (default: the packaged one)")
    p.add_argument("--limit", type=positive_int, default=5)
    p.add_argument("--channel", choices=CHANNELS)
    p.add_argument("--out", default="reports/audit")
    p.set_defaults(func=cmd_audit)
