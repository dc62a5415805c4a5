"""``nbo``: the command line. Each subcommand parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/implicit load BLAS

from .policy.config import CHANNELS
from .store.keys import ROLES

log = logging.getLogger("nbo")


def _catalog_and_stages(args):
    from .data.catalog import catalog_text, parse_catalog
    from .data.life_stages import life_stages_text, parse_life_stages

    cat_text, cat_source = catalog_text(args.catalog)
    st_text, st_source = life_stages_text(args.life_stages)
    catalog, stages = parse_catalog(cat_text, cat_source), parse_life_stages(st_text, st_source)
    catalog.check_life_stages([s.id for s in stages.stages])
    return catalog, stages, cat_text, st_text


def _config(args):
    from .ranking.config import TrainConfig
    from .ranking.training import with_overrides

    config = TrainConfig.from_toml(args.config) if args.config else TrainConfig()
    return with_overrides(config, kind=args.cf, factors=args.factors)


def cmd_demo_data(args) -> int:
    from .data.demo import generate
    from .data.extracts import BankData, write_bank

    catalog, stages, _, _ = _catalog_and_stages(args)
    started = time.perf_counter()
    bank = generate(args.customers, args.months, args.seed, catalog, stages)
    write_bank(BankData(bank.customers, bank.holdings), args.out)
    log.info("wrote the demo bank (%d customers, %d months) to %s in %.1f s", args.customers,
             args.months, args.out, time.perf_counter() - started)
    return 0


def cmd_train(args) -> int:
    from .data.extracts import load_bank
    from .ranking.training import train

    catalog, stages, cat_text, st_text = _catalog_and_stages(args)
    started = time.perf_counter()
    bank = load_bank(args.data, catalog)
    model = train(bank, catalog, stages, _config(args), args.models, cat_text, st_text,
                  run_evaluation=not args.no_evaluate)
    metrics = model.manifest.get("metrics", {})
    log.info("trained model %s in %.1f s", model.version, time.perf_counter() - started)
    if metrics:
        _print_metrics(metrics)
    return 0


def cmd_evaluate(args) -> int:
    from .data.extracts import load_bank
    from .ranking import artifacts
    from .ranking.training import evaluate, fingerprint

    catalog, stages, _, _ = _catalog_and_stages(args)
    bank = load_bank(args.data, catalog)
    result = evaluate(bank, catalog, stages, _config(args), k=args.k)
    _print_metrics(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.report:
        from .report import write_report

        write_report(result, args.report, f"Evaluation of {args.data}")
    if args.record:
        path = artifacts.record_metrics(args.models, result, fingerprint(bank))
        log.info("recorded the metrics in %s", path)
    return 0


def _print_metrics(result: dict) -> None:
    k = result["k"]
    sys.stdout.write(f"{result['protocol']}\ntest customers: {result['test_customers']}\n")
    sys.stdout.write(f"{'method':<18}{'MAP@' + str(k):>10}{'recall@' + str(k):>11}"
                     f"{'NDCG@' + str(k):>10}{'coverage':>10}\n")
    for name, m in result["methods"].items():
        served = "  <- served" if name == result["served"] else ""
        sys.stdout.write(f"{name:<18}{m[f'map@{k}']:>10.4f}{m[f'recall@{k}']:>11.4f}"
                         f"{m[f'ndcg@{k}']:>10.4f}{m['coverage']:>10.2f}{served}\n")


def cmd_import_santander(args) -> int:
    from .data import santander
    from .data.extracts import write_bank

    source = Path(args.source)
    imported = santander.load_raw(source) if source.is_file() else santander.load_adders(source)
    write_bank(imported.bank, args.out)
    for packaged in (santander.CATALOG_FILE, santander.LIFE_STAGES_FILE):
        shutil.copyfile(packaged, Path(args.out) / packaged.name)
    log.info("wrote %d customers and %d holding rows to %s; train with --catalog %s "
             "--life-stages %s", len(imported.bank.customers), len(imported.bank.holdings),
             args.out, Path(args.out) / santander.CATALOG_FILE.name,
             Path(args.out) / santander.LIFE_STAGES_FILE.name)
    return 0


def cmd_replay(args) -> int:
    from .service import open_decision_log
    from .store.replay import replay

    state = Path(args.state)
    key = state / "decision.key"
    if not key.is_file():
        from .exceptions import ConfigError

        raise ConfigError(f"no decision-log key at {key}: replay needs the key that wrote the log")
    with open_decision_log(state) as decisions:
        result = replay(decisions.get(args.decision_id), args.models)
    sys.stdout.write(json.dumps({
        "decision_id": args.decision_id, "created_at": result.decision.created_at.isoformat(),
        "model_version": result.decision.model_version,
        "policy_version": result.decision.policy_version, "same": result.same,
        "logged": result.decision.output, "replayed": result.output,
    }, ensure_ascii=False, indent=2) + "\n")
    return 0 if result.same else 1


def cmd_audit(args) -> int:
    from .audit import audit, write_audit
    from .data.book import load_book
    from .policy.config import load_policy
    from .policy.offers import OfferEngine
    from .policy.rules import DecisionContext
    from .ranking import artifacts

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


def cmd_campaign(args) -> int:
    from .campaign.output import summary, write_list, write_summary
    from .campaign.run import run_campaign, top_customers
    from .campaign.spec import CampaignSpec
    from .data.partition import open_customers
    from .exceptions import ConfigError
    from .policy.config import load_policy
    from .policy.offers import OfferEngine
    from .ranking import artifacts
    from .service import open_decision_log
    from .store.responses import ResponseStore

    if not args.spec and not args.for_product:
        raise ConfigError("give --spec campaign.toml, or --for-product ID --top N")
    model = artifacts.load(args.models)
    engine = OfferEngine(model, load_policy(args.policy))
    spec = CampaignSpec.from_toml(args.spec) if args.spec else None
    if spec is not None:
        spec.check(engine)  # before reading the bank: a typo should not cost a pass over it
    with open_customers(args.data, model) as customers:
        if spec is None:
            frame = top_customers(engine, customers, args.for_product, args.top, args.channel)
            log.info("wrote %s", write_list(frame, args.out))
            return 0
        responses_db = Path(args.state) / "responses.db"
        responses = ResponseStore(responses_db) if responses_db.exists() else None
        with open_decision_log(args.state) as decisions:
            frame = run_campaign(engine, customers, spec, responses, decisions=decisions)
        write_list(frame, args.out)
        report = write_summary(summary(frame, len(customers), spec), args.report)
    sys.stdout.write(f"{len(frame):,} offers to {frame['customer_id'].nunique():,} customers "
                     f"written to {args.out}; summary: {report}\n")
    return 0


def cmd_recommend(args) -> int:
    from .service import load_service

    service = load_service(args.data, args.models, state_dir=args.state)
    results = [service.offers(cid, args.limit, args.lang) for cid in args.customer]
    if args.json:
        sys.stdout.write(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
        return 0
    for result in results:
        sys.stdout.write(f"{result['customer_id']} ({result['life_stage']['name']}):\n")
        for offer in result["offers"]:
            reason = offer["reasons"][0]["text"] if offer["reasons"] else ""
            sys.stdout.write(f"  {offer['rank']}. {offer['name']} [{offer['source']}] "
                             f"{offer['score']:.3f}  {reason}\n")
    return 0


def cmd_serve(args) -> int:
    from .data.mapped_book import open_book
    from .ranking import artifacts
    from .ranking.score_table import build_in_child

    artifacts.resolve(args.models)  # fail early, clearly, if nothing is trained
    # Build the workers' shared customer book now, before gunicorn replaces this process:
    # workers then only map it. Nothing here trains or scores (DESIGN.md: forked children).
    book = open_book(args.data, artifacts.load(args.models), Path(args.state) / "book-cache")
    # Every customer's ranker scores, computed once in a child process: an answer then reads
    # a row instead of running the model (recommender.ranking.score_table).
    build_in_child(args.data, args.models, artifacts.CURRENT, args.state)
    if args.examples:
        _print_examples(book, args.host, args.port)
    gunicorn = shutil.which("gunicorn") or str(Path(sys.executable).with_name("gunicorn"))
    metrics_dir = Path(args.state).resolve() / "prometheus"
    os.environ.update({"NBO_DATA_DIR": str(args.data), "NBO_MODELS_DIR": str(args.models),
                       "NBO_STATE_DIR": str(args.state), "OPENBLAS_NUM_THREADS": "1",
                       "NBO_BIND": f"{args.host}:{args.port}", "NBO_WORKERS": str(args.workers),
                       "NBO_THREADS": str(args.threads), "NBO_SCORE_TABLES": "background",
                       "NBO_DECISION_FLUSH_SECONDS": "0.1",
                       "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    if args.policy:
        os.environ["NBO_POLICY_FILE"] = str(args.policy)
    import api

    config = Path(api.__file__).resolve().parent / "gunicorn_conf.py"
    command = [gunicorn, "--config", str(config), "api.wsgi:app"]
    log.info("starting: %s (%d workers x %d threads on %s:%d)", " ".join(command),
             args.workers, args.threads, args.host, args.port)
    sys.stdout.flush()
    os.execv(command[0], command)
    return 0  # not reached


def _keys_file(args) -> Path:
    return Path(args.file) if args.file else Path(args.state) / "api_keys.toml"


def cmd_keys_create(args) -> int:
    from .store.keys import create_key

    clear, key = create_key(_keys_file(args), args.role, args.name, args.expires_days)
    expires = key.expires_at.isoformat() if key.expires_at else "never"
    sys.stdout.write(f"API key: {clear}\nid: {key.id}  role: {key.role}  expires: {expires}\n")
    log.info("the key is shown only this once and stored hashed in %s; give it to the client "
             "now", _keys_file(args))
    return 0


def cmd_keys_list(args) -> int:
    from .store.keys import list_keys

    path = _keys_file(args)
    keys = list_keys(path)
    if not keys:
        sys.stdout.write(f"no API keys in {path}\n")
        return 0
    sys.stdout.write(f"{'id':<12}{'role':<10}{'created':<27}{'expires':<27}name\n")
    for key in keys:
        expires = key.expires_at.isoformat() if key.expires_at else "never"
        sys.stdout.write(f"{key.id:<12}{key.role:<10}{key.created_at.isoformat():<27}"
                         f"{expires:<27}{key.name}\n")
    return 0


def cmd_keys_revoke(args) -> int:
    from .store.keys import revoke_key

    key = revoke_key(_keys_file(args), args.key_id)
    sys.stdout.write(f"revoked {key.id} (role {key.role})\n")
    return 0


def _print_examples(book, host: str, port: int) -> None:
    """The first three customers who consented to profiling and hold 2+ products, in
    different life stages (read from the served book, not the extracts again)."""
    import numpy as np

    candidates = (np.diff(book.held.indptr) >= 2) & book.profile_arrays.consent
    first_of_stage: dict[int, int] = {}
    for position in np.flatnonzero(candidates):  # in book order
        first_of_stage.setdefault(int(book.stage_codes[position]), int(position))
        if len(first_of_stage) == 3:
            break
    positions = np.array(list(first_of_stage.values()), dtype=np.int64)
    examples = book.batch(positions).customer_ids.tolist()
    base = f"http://{host}:{port}"
    lines = ["", f"Teller console: {base}/teller (sign in with a teller key)",
             "Example customers: " + ", ".join(examples),
             "Example requests (a key from `nbo keys create --role teller` in $NBO_API_KEY):"]
    first = examples[0] if examples else "C00000001"
    curl = "curl -H \"Authorization: Bearer $NBO_API_KEY\""
    lines += [f"  {curl} '{base}/v1/customers/{cid}/offers'" for cid in examples]
    lines += [
        f"  {curl} '{base}/v1/customers/{first}/offers?lang=zh&limit=3'",
        f"  {curl} '{base}/v1/customers/{first}'",
        f"  {curl} '{base}/v1/customers/{first}/offers/mortgage/why-not?lang=zh'",
        f"  {curl} -X POST '{base}/v1/customers/{first}/responses' -H 'Content-Type: "
        "application/json' -d '{\"product_id\": \"mobile_banking\", \"outcome\": "
        "\"declined\", \"channel\": \"branch\"}'",
        f"  {curl} '{base}/v1/products'",
        f"  {curl} '{base}/v1/life-stages'",
        f"  {curl} -X POST '{base}/v1/offers/score' -H 'Content-Type: application/json' -d "
        "'{\"customer\": {\"age\": 31, \"income\": 180000, \"marital_status\": \"married\", "
        "\"dependants\": 1, \"tenure_months\": 24, \"segment\": \"mass\", \"risk_grade\": "
        "\"C3\", \"residency\": \"resident\", \"consent_profiling\": true}, "
        "\"holdings\": [\"current_account\", \"mortgage\"]}'",
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def _add_model_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", help="product catalog TOML (default: the packaged one)")
    parser.add_argument("--life-stages", help="life-stage rules TOML (default: packaged)")


def _add_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/demo", help="folder with customers and holdings")
    parser.add_argument("--config", help="training config TOML ([cf] table, cf_weight, ...)")
    parser.add_argument("--cf", choices=("als", "item_knn"), help="override the CF kind")
    parser.add_argument("--factors", type=int, help="override the number of ALS factors")
    _add_model_inputs(parser)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_serving_inputs(parser: argparse.ArgumentParser) -> None:
    """The bank's extracts and the trained models a command serves from."""
    parser.add_argument("--data", default="data/demo", help="folder with customers and holdings")
    parser.add_argument("--models", default="models", help="models folder (uses current)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbo", description="Next-best-offer recommender")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate the embedded demo bank")
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="data/demo")
    _add_model_inputs(p)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("train", help="evaluate, fit and save a new model version")
    _add_training(p)
    p.add_argument("--models", default="models")
    p.add_argument("--no-evaluate", action="store_true", help="skip the held-out evaluation")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="held-out next-month evaluation against baselines")
    _add_training(p)
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.add_argument("--report", help="also write report.md and PNG plots to this folder")
    p.add_argument("--k", type=_positive_int, help="cut-off of the metrics (default: eval_k)")
    p.add_argument("--models", default="models")
    p.add_argument("--record", action="store_true",
                   help="store the metrics in the current model's manifest (same data only)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("import-santander",
                       help="convert the Santander data into customers and holdings extracts")
    p.add_argument("--source", required=True,
                   help="folder with may2016_adders.parquet, or a raw train_ver2-format CSV")
    p.add_argument("--out", default="data/santander")
    p.set_defaults(func=cmd_import_santander)

    p = sub.add_parser("replay", help="recompute a logged decision with its own model and policy")
    p.add_argument("decision_id")
    p.add_argument("--models", default="models")
    p.add_argument("--state", default="var", help="folder of the decision log and its key")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("audit", help="fairness audit: offer rates by gender and age band")
    _add_serving_inputs(p)
    p.add_argument("--policy", help="decision policy TOML (default: the packaged one)")
    p.add_argument("--limit", type=_positive_int, default=5)
    p.add_argument("--channel", choices=CHANNELS)
    p.add_argument("--out", default="reports/audit")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("campaign", help="campaign list over all customers, or a target list")
    p.add_argument("--spec", help="campaign spec TOML (see examples/campaign.toml)")
    p.add_argument("--for-product", help="instead: the best customers for this product")
    p.add_argument("--top", type=_positive_int, default=1000, help="with --for-product")
    p.add_argument("--channel", choices=CHANNELS, default="branch", help="with --for-product")
    p.add_argument("--out", required=True, help="output file, .parquet or .csv")
    p.add_argument("--report", default="reports/campaign", help="folder for the summary")
    _add_serving_inputs(p)
    p.add_argument("--policy", help="decision policy TOML (default: the packaged one)")
    p.add_argument("--state", default="var", help="folder of recorded responses")
    p.set_defaults(func=cmd_campaign)

    p = sub.add_parser("recommend", help="offers for customers of the book")
    _add_serving_inputs(p)
    p.add_argument("--customer", action="append", required=True, help="repeat for several")
    p.add_argument("--limit", type=_positive_int, default=5)
    p.add_argument("--lang", choices=("en", "zh"), default="en")
    p.add_argument("--state", default="var", help="folder of responses and the decision log")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("serve", help="run the HTTP service under gunicorn")
    _add_serving_inputs(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_positive_int, default=8000)
    p.add_argument("--workers", type=_positive_int, default=2)
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="threads per worker (gthread); 1 = sync workers")
    p.add_argument("--state", default="var",
                   help="folder for recorded responses, the decision log and its key")
    p.add_argument("--policy", help="decision policy TOML (default: the packaged one)")
    p.add_argument("--no-examples", dest="examples", action="store_false",
                   help="do not print example customers and requests")
    p.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="API keys of the HTTP service: create, list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    p = keys_sub.add_parser("create", help="a new key; printed once, stored hashed")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", default="", help="who or what uses it, e.g. 'branch 12 counter 3'")
    p.add_argument("--expires-days", type=_positive_int, help="default: never expires")
    p.set_defaults(func=cmd_keys_create)
    p = keys_sub.add_parser("list", help="ids, roles, names and dates (never keys or hashes)")
    p.set_defaults(func=cmd_keys_list)
    p = keys_sub.add_parser("revoke", help="remove a key; a running service refuses it at once")
    p.add_argument("key_id", help="the key's id (k_...), as `nbo keys list` shows it")
    p.set_defaults(func=cmd_keys_revoke)
    for p in keys_sub.choices.values():
        p.add_argument("--state", default="var", help="the service's state folder")
        p.add_argument("--file", help="the keys file (default: <state>/api_keys.toml)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from .exceptions import RecommenderError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except RecommenderError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
