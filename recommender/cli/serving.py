"""``nbo serve``: the HTTP service under gunicorn, its shared book and score table built first,
with example customers and requests printed for whoever started it."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from .arguments import add_database, add_serving_inputs, positive_int

log = logging.getLogger("nbo")  # every command logs as "nbo", whatever its module


def cmd_serve(args: argparse.Namespace) -> int:
    from ..data.mapped_book import open_book
    from ..ranking import artifacts
    from ..ranking.score_table import build_in_child

    artifacts.resolve(args.models)  # fail early, clearly, if nothing is trained
    _check_database(args)
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
    if args.database:
        os.environ["NBO_DATABASE_URL"] = args.database
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


def _check_database(args: argparse.Namespace) -> None:
    """Refuse to start on a database of an older schema (naming ``nbo db upgrade``); one that
    does not answer yet is logged, and the service starts and reports not ready."""
    from ..service import open_database
    from ..store.database import StoreUnavailableError

    database = open_database(args.state, args.database)
    try:
        database.ensure_schema()
    except StoreUnavailableError as exc:
        log.error("%s; starting anyway, not ready until it answers", exc)
    finally:
        database.dispose()


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


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the HTTP service under gunicorn")
    add_serving_inputs(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=positive_int, default=8000)
    p.add_argument("--workers", type=positive_int, default=2)
    p.add_argument("--threads", type=positive_int, default=1,
                   help="threads per worker (gthread); 1 = sync workers")
    add_database(p)
    p.add_argument("--policy", help="decision policy TOML (default: the packaged one)")
    p.add_argument("--no-examples", dest="examples", action="store_false",
                   help="do not print example customers and requests")
    p.set_defaults(func=cmd_serve)
