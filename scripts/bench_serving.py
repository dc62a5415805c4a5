"""Serving speed at bank scale: offers per second against the server's own floor, and with the
stores in PostgreSQL against the same load with them in SQLite.

    python scripts/bench_serving.py --customers 1000000 --json bench_serving.json
    python scripts/bench_serving.py --database postgresql --customers 1000000 --json pg.json

Generates (or reuses, under --work) a demo bank and a trained model with the `nbo` command in
child processes. A run copies the model into a fresh state folder (so a reload can switch
versions without touching the shared one), creates the stores' schema (``nbo db upgrade``) and
two API keys in the run's database, and starts the real server, `nbo serve` (gunicorn), in its
own process group. wrk, a separate process on the same two cores, then drives for --duration
seconds each, after a warm-up: (a) ``GET /healthz``, the trivial endpoint behind the same
middleware, the floor of this server and configuration; (b) ``GET /v1/customers/<id>/offers``
with a mobile key, a random existing customer per request. Half-way through (b) the served
model is switched to a second version and reloaded (``POST /admin/reload``, or SIGHUP to the
master with ``--reload-via sighup``); every failed request of the run counts in ``errors``.
Memory is read from /proc per gunicorn worker: RSS, and PSS, which splits the pages the
workers share (the memory-mapped book and model) between them. Each run's ``cpu`` splits the
machine's CPU seconds between the server, the database server (PostgreSQL's processes), wrk
and other processes: a large ``others_s`` means something else ran on the two cores and the
run should be repeated.

``--database sqlite`` (the default) is one run, its stores in the state folder's SQLite file.
``--database postgresql`` is two runs of the same load in one invocation, SQLite first (a
state folder of its own), then PostgreSQL: a throwaway server of the bench's own
(``tests/postgres_server.py``, on a unix socket; stopped and removed at the end, on failure
too) with a new database. The top-level figures (``offers_rps``, ``offers_p99_ms``,
``errors``, ...) are PostgreSQL's; ``sqlite_offers_rps``, ``sqlite_offers_p99_ms`` and
``sqlite_errors`` (and ``sqlite``, the whole run) are the SQLite run's, and
``postgresql_offers_rps/sqlite_offers_rps`` compares them. Both runs share the machine's
state of the moment: repeat the whole invocation, rather than compare runs of two of them.
Prints and writes JSON.

``--adaptive`` is two SQLite runs of the same load over the same 200,000 responses of the
last 28 days (recorded with their predictions): the packaged policy, then the same policy
with an ``[adaptive]`` table refreshed every 10 s, ``--rounds`` times.
``adaptive_cpu_ms/static_cpu_ms`` is the median over the rounds of the server's CPU per
answer, adaptive over static (target: at most 1.1), and ``rounds_server_cpu_ms`` lists every
round's; the top-level figures are the last adaptive run's and ``static`` holds the last
static one.

Needs wrk (``make bench-tools`` installs it), and for ``--database postgresql`` PostgreSQL's
server binaries (``make postgres``); without them, or without the project installed, the
script stops at once, before making a bank, with one line saying what to run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from bench_tools import require  # noqa: E402 (scripts/ is on the path)
from benchdata import nbo, prepare  # noqa: E402

# The library is imported where it is used, after ``require``: its import takes up to seconds.
LUA = Path(__file__).resolve().with_name("wrk_offers.lua")
# The tests and this bench share one throwaway-server helper, tests/postgres_server.py: its
# folder goes last on the path (no test module shadows a package), imported after ``require``.
TESTS = Path(__file__).resolve().parents[1] / "tests"
TARGETS = {"offers_rps/hello_rps": 0.7, "offers_p99_ms": 20.0, "errors": 0}
PG_RATIO = "postgresql_offers_rps/sqlite_offers_rps"
ADAPTIVE_RATIO = "adaptive_cpu_ms/static_cpu_ms"
POSTGRESQL_TARGETS = {**TARGETS, "offers_p99_ms": 25.0, PG_RATIO: 0.8}
_PROBLEMS = re.compile(r"Traceback|\bERROR\b|CRITICAL|WORKER TIMEOUT|was sent SIGKILL|exited with"
                       r"|\bFATAL\b|\bPANIC\b")
log = logging.getLogger("bench_serving")


def _served_models(models: Path, state: Path) -> tuple[Path, str, str]:
    """A models folder of the run's own: the current version and a copy under another name,
    the version a reload switches to."""
    from recommender.ranking import artifacts

    source = artifacts.resolve(models)
    served = state / "models"
    first, second = source.name, f"{source.name}-reload"
    shutil.copytree(source, served / first)
    shutil.copytree(source, served / second)
    manifest_path = served / second / artifacts.MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest_path.write_text(json.dumps({**manifest, "version": second}, indent=2),
                             encoding="utf-8")
    artifacts.set_current(served, first)
    return served, first, second


def _api_key(state: Path, database: str, role: str) -> str:
    printed = nbo("keys", "create", "--role", role, "--name", "bench_serving", "--state",
                  str(state), "--database", database, capture=True)
    match = re.search(r"^API key: (\S+)", printed, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"`nbo keys create` printed no 'API key:' line: {printed!r}")
    return match.group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, key: str | None = None, method: str = "GET",
         timeout: float = 10) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"{}")
        except json.JSONDecodeError:
            return exc.code, {"body": body.decode(errors="replace")[:300]}


def _wait_ready(base: str, server: subprocess.Popen, timeout: float, server_log: Path) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode} while "
                               f"starting; its log: {server_log}")
        try:
            if _get(f"{base}/readyz", timeout=5)[0] == 200:
                return round(time.perf_counter() - started, 1)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{base}/readyz did not answer 200 within {timeout:.0f} s")


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (gunicorn, its workers, their children), SIGKILL
    after a minute; nothing when the group is gone (a server that failed to start), so that
    the error which stopped the run is the one reported."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    except ProcessLookupError:
        server.wait()
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _workers(master: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{master}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            children += [int(p) for p in (task / "children").read_text().split()]
    return sorted(children)


def _proc_kb(path: str, field: str) -> float:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


def _memory(master: int) -> dict:
    pids = _workers(master)
    rss = [_proc_kb(f"/proc/{p}/status", "VmRSS") / 1024 for p in pids]
    pss = [_proc_kb(f"/proc/{p}/smaps_rollup", "Pss") / 1024 for p in pids]
    return {"worker_pids": pids, "rss_mb": [round(v, 1) for v in rss],
            "pss_mb": [round(v, 1) for v in pss],
            "master_rss_mb": round(_proc_kb(f"/proc/{master}/status", "VmRSS") / 1024, 1)}


def _cpu_s(master: int | None) -> float:
    """User + system seconds of the master and its children (every thread), and of the
    children it has reaped (a worker replaced, a database backend that ended); 0 for None."""
    if master is None:
        return 0.0
    total = 0
    for pid in [master, *_workers(master)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended since it was listed: its parent counts it now
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14, 15 of stat
        if pid == master:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: fields 16, 17
    return total / os.sysconf("SC_CLK_TCK")


def _machine() -> list[int]:
    """Jiffies of all cores: user nice system idle iowait irq softirq steal (/proc/stat)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def _wrk(url: str, args: argparse.Namespace, seconds: float, extra: list[str], master: int,
         database: int | None, log_file: Path | None = None) -> dict:
    """One wrk run, with the CPU the server, the database server (``database``: its master
    process, None for SQLite, which runs in the server's workers) and wrk used in it: all
    share the machine."""
    command = ["wrk", "-t", str(args.wrk_threads), "-c", str(args.connections),
               "-d", f"{seconds:g}s", "--latency", "--timeout", f"{args.wrk_timeout:g}s",
               "-s", str(LUA), url, "--", *extra]
    server_before, wrk_before = _cpu_s(master), resource.getrusage(resource.RUSAGE_CHILDREN)
    database_before, machine_before = _cpu_s(database), _machine()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = [b - a for a, b in zip(machine_before, _machine(), strict=True)]
    server_s = _cpu_s(master) - server_before
    database_s = _cpu_s(database) - database_before
    wrk_s = (wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime
             - wrk_before.ru_stime)
    busy_s = (sum(machine) - machine[3] - machine[4]) / os.sysconf("SC_CLK_TCK")
    cpu = {"server_s": round(server_s, 1), "database_s": round(database_s, 1),
           "wrk_s": round(wrk_s, 1),
           "others_s": round(busy_s - server_s - database_s - wrk_s, 1),  # not ours: off
           "idle": round((machine[3] + machine[4]) / max(sum(machine), 1), 3)}
    if cpu["others_s"] > 0.1 * seconds * os.cpu_count():
        log.warning("other processes used %.0f CPU-s of this %g s run", cpu["others_s"], seconds)
    if log_file is not None:
        log_file.write_text(done.stdout + done.stderr, encoding="utf-8")
    line = next(x for x in done.stdout.splitlines() if x.startswith("bench-json: "))
    raw = json.loads(line.removeprefix("bench-json: "))
    errors = {k: raw[k] for k in ("connect", "read", "write", "timeout", "status")}
    return {"rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            "requests": raw["requests"], "p50_ms": raw["p50_us"] / 1000,
            "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000, "errors": sum(errors.values()),
            "errors_by_kind": errors, "cpu": cpu}


def _reload_later(args, base: str, admin_key: str, master: int, served: Path, version: str,
                  started: float) -> tuple[threading.Timer, dict]:
    from recommender.ranking import artifacts

    report: dict = {"via": args.reload_via, "to_version": version}

    def reload() -> None:
        artifacts.set_current(served, version)
        report["at_s"] = round(time.perf_counter() - started, 2)
        sent = time.perf_counter()
        try:
            if args.reload_via == "sighup":
                os.kill(master, signal.SIGHUP)
            else:
                code, body = _get(f"{base}/admin/reload", admin_key, "POST", timeout=120)
                report.update(http_status=code, status=body.get("status"),
                              model_version=body.get("model_version"), body=body)
        except OSError as exc:  # a timeout or a refused connection is a result, not a crash
            report["error"] = repr(exc)
        report["latency_s"] = round(time.perf_counter() - sent, 3)

    timer = threading.Timer(args.reload_at or args.duration / 2, reload)
    timer.start()
    return timer, report


def _versions_after(base: str, expected: str, timeout: float = 60, probes: int = 40) -> dict:
    """Model versions /healthz names over fresh connections, which reach every worker, until
    all name ``expected``: workers other than the one reloaded follow in the background."""
    started = time.perf_counter()
    while True:
        seen = {str(_get(f"{base}/healthz")[1].get("model_version")) for _ in range(probes)}
        waited = round(time.perf_counter() - started, 1)
        if seen == {expected} or waited > timeout:
            return {"versions_after": sorted(seen), "all_workers_after_s": waited}
        time.sleep(0.5)


def _log_problems(path: Path) -> dict:
    lines = [x for x in path.read_text(errors="replace").splitlines() if _PROBLEMS.search(x)]
    return {"path": str(path), "problem_lines": len(lines), "first": lines[:5]}


def _serve_and_load(args: argparse.Namespace, data: Path, models: Path, state: Path,
                    database: str, database_pid: int | None = None,
                    adaptive: bool = False) -> dict:
    """One whole run against one database: a fresh state folder with its own copy of the
    model, the stores' schema and two keys in ``database``, the server started, driven
    (``/healthz``, then offers with a reload during them), measured and stopped.

    ``database_pid``: the database server's master process, whose CPU each wrk run counts.
    ``adaptive``: serve the packaged policy with an ``[adaptive]`` table. With
    ``--adaptive`` both runs start with the same ``ADAPTIVE_EVIDENCE`` responses recorded
    with their predictions (the contact policy reads them too), so that only the policy
    differs between them.
    """
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    served, _, second = _served_models(models, state)
    upgraded = nbo("db", "upgrade", "--state", str(state), "--database", database,
                   capture=True)
    log.info("%s", upgraded.strip())
    policy = ["--policy", str(_adaptive_policy(state))] if adaptive else []
    if args.adaptive:  # both runs hold the same responses: only the policy differs
        _record_evidence(database, served, ADAPTIVE_EVIDENCE)
    mobile_key, admin_key = (_api_key(state, database, role) for role in ("mobile", "admin"))

    port = args.port or _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "recommender.cli", "serve", "--data", str(data),
               "--models", str(served), "--state", str(state), "--database", database,
               "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
               "--threads", str(args.threads), "--no-examples", *policy]
    server_log = state / "server.log"
    with open(server_log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # execs gunicorn: same pid, own group
    timer, reload = None, None
    pids = (server.pid, database_pid)
    try:
        log.info("waiting for %s/readyz (server log: %s)", base, server_log)
        startup_s = _wait_ready(base, server, args.startup_timeout, server_log)
        at_ready = _memory(server.pid)
        code, body = _get(f"{base}/v1/customers/C{1:08d}/offers", mobile_key)
        if code != 200:
            raise RuntimeError(f"a first offers request answered {code}: {body}")
        offers_args = [mobile_key, str(args.customers)]
        log.info("warm-up and %g s of GET /healthz", args.duration)
        _wrk(f"{base}/healthz", args, args.warmup, [mobile_key], *pids)
        hello = _wrk(f"{base}/healthz", args, args.duration, [mobile_key], *pids,
                     state / "wrk_hello.txt")
        log.info("warm-up and %g s of GET /v1/customers/<id>/offers", args.duration)
        _wrk(base, args, args.warmup, offers_args, *pids)
        if args.reload_during:
            timer, reload = _reload_later(args, base, admin_key, server.pid, served, second,
                                          time.perf_counter())
        offers = _wrk(base, args, args.duration, offers_args, *pids, state / "wrk_offers.txt")
        if timer is not None:
            timer.join()
            reload.update(_versions_after(base, second))
        memory = _memory(server.pid)
        problems = _log_problems(server_log)  # before the shutdown's own lines
    finally:
        if timer is not None:
            timer.cancel()
        _stop(server)
    return _figures(startup_s, hello, offers, reload, memory, at_ready, problems)


def _figures(startup_s: float, hello: dict, offers: dict, reload: dict | None, memory: dict,
             at_ready: dict, problems: dict) -> dict:
    """One run's result: the headline figures first, then the details they come from."""
    per_request = {part: round(offers["cpu"][f"{part}_s"] / max(offers["requests"], 1) * 1e3, 3)
                   for part in ("server", "database")}
    return {
        "startup_s": startup_s,
        "offers_rps": offers["rps"], "hello_rps": hello["rps"],
        "offers_rps/hello_rps": round(offers["rps"] / hello["rps"], 3),
        "offers_p50_ms": offers["p50_ms"], "offers_p99_ms": offers["p99_ms"],
        "hello_p50_ms": hello["p50_ms"], "hello_p99_ms": hello["p99_ms"],
        "errors": offers["errors"] + hello["errors"],
        # CPU per answer: the server's, and the database server's (0 for SQLite, in-process)
        "offers_server_cpu_ms": per_request["server"],
        "offers_database_cpu_ms": per_request["database"],
        "rss_mb_per_worker": round(sum(memory["rss_mb"]) / len(memory["rss_mb"]), 1),
        "rss_mb_per_worker_max": max(memory["rss_mb"]),
        "pss_mb_per_worker": round(sum(memory["pss_mb"]) / len(memory["pss_mb"]), 1),
        "pss_mb_per_worker_max": max(memory["pss_mb"]),
        "memory": memory, "memory_at_ready": at_ready,
        "offers": offers, "hello": hello, "reload": reload,
        "server_log": problems,
    }


def _targets_met(run: dict, targets: dict) -> dict:
    reload = run["reload"]
    return {"offers_rps/hello_rps": run["offers_rps/hello_rps"] >= targets["offers_rps/hello_rps"],
            "offers_p99_ms": run["offers_p99_ms"] <= targets["offers_p99_ms"],
            "errors": run["errors"] == targets["errors"],
            "reload": None if reload is None
            else reload.get("versions_after") == [reload["to_version"]]}


def _postgresql_run(args: argparse.Namespace, data: Path, models: Path, state: Path,
                    server_class: type) -> dict:
    """``_serve_and_load`` against a new database of a throwaway PostgreSQL server of its
    own, stopped and removed afterwards whatever happens; its log is kept in ``state``."""
    server, kept_log = server_class(), state / "postgresql.log"
    try:
        server.start()
        url = server.create_database("nbo_bench")
        master = int((server.data / "postmaster.pid").read_text().split()[0])
        run = _serve_and_load(args, data, models, state, url, master)
        version = subprocess.run([str(server.binaries / "postgres"), "--version"],
                                 capture_output=True, text=True).stdout.strip()
    finally:
        if server.folder is not None:  # None: it never started, and said why
            state.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(server.log_file, kept_log)
        server.cleanup()
    return {**run, "postgresql_version": version, "database_log": _log_problems(kept_log)}


def _require(database: str) -> type | None:
    """Stop at once, in one line, if something the run needs is missing; the class of the
    throwaway PostgreSQL server for ``--database postgresql``."""
    postgresql = database == "postgresql"
    require(__file__, packages=("recommender", "gunicorn", *(("psycopg",) if postgresql else ())),
            programs=("wrk", *(("runuser",) if postgresql and os.geteuid() == 0 else ())),
            files={LUA: "restore it from the repository",
                   "/proc/self/smaps_rollup": "worker memory is read from Linux's /proc "
                   "(Linux 4.14 or later)"})
    if not postgresql:
        return None
    sys.path.append(str(TESTS))
    from postgres_server import PostgresServer, server_binaries

    binaries = server_binaries() or Path("/usr/lib/postgresql/<version>/bin")
    require(__file__, files={binaries / "initdb": "install PostgreSQL's server (Debian's "
                             "postgresql package): run 'make postgres'"})
    return PostgresServer


ADAPTIVE_EVIDENCE = 200_000
ADAPTIVE_POLICY = """
[adaptive]
prior_strength = 20.0
exploration_share = 0.05
refresh_seconds = 10.0
half_life_days = 7.0
window_days = 28.0
"""


def _adaptive_policy(state: Path) -> Path:
    from recommender.policy.config import load_policy

    path = state / "policy-adaptive.toml"
    path.write_text(load_policy().text + ADAPTIVE_POLICY, encoding="utf-8")
    return path


def _record_evidence(url: str, models: Path, rows: int) -> None:
    """``rows`` shows (and their accepts) of the last 28 days, as the service records them,
    written in one bulk insert: the evidence an adaptive server reads at each refresh."""
    import numpy as np
    import sqlalchemy as sa

    from recommender.ranking import artifacts
    from recommender.store.database import Database
    from recommender.store.tables import responses

    model = artifacts.load(models)
    rng = np.random.default_rng(3)
    products = np.asarray([str(p) for p in model.catalog.ids.external_ids])
    stages = np.asarray([s.id for s in model.stages.stages])
    now = datetime.now(UTC)
    at = [now - timedelta(seconds=float(s)) for s in rng.uniform(60, 28 * 86400, rows)]
    accepted = rng.random(rows) < 0.03
    propensity = rng.uniform(0.001, 0.08, rows)
    database = Database(url)
    sqlite = database.is_sqlite
    batch = [{"customer_id": f"C{int(c):08d}", "product_id": str(p), "outcome": o,
              "channel": ch, "recorded_at": t.replace(tzinfo=None) if sqlite else t,
              "model_version": model.version, "life_stage": str(s), "arm": "",
              "propensity": float(q), "factor": 1.0}
             for c, p, o, ch, t, s, q in zip(
                 rng.integers(1, 1_000_000, rows), rng.choice(products, rows),
                 np.where(accepted, "accepted", "shown"),
                 rng.choice(["mobile", "branch"], rows), at, rng.choice(stages, rows),
                 propensity, strict=True)]
    try:
        with database.begin(write=True) as conn:
            conn.execute(sa.insert(responses), batch)
    finally:
        database.dispose()
    log.info("recorded %d responses of the last 28 days as adaptive evidence", rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--json", required=True)
    parser.add_argument("--work", default="bench_work", help="where the bank and model live")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                        help="where the stores live; postgresql: a throwaway server of the "
                        "bench's own, and the same load against SQLite first to compare")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="per worker; 1 = sync workers")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--wrk-timeout", type=float, default=2.0, help="seconds; slower "
                        "requests count as errors")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per endpoint")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds per endpoint")
    parser.add_argument("--reload-during", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--reload-via", choices=("http", "sighup"), default="http")
    parser.add_argument("--reload-at", type=float, help="seconds into the offers run "
                        "(default: half-way)")
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--adaptive", action="store_true", help="with the SQLite database: "
                        "the same load twice, the packaged policy then the same with an "
                        "[adaptive] table, comparing the server's CPU per answer")
    parser.add_argument("--rounds", type=int, default=1, help="with --adaptive: pairs of "
                        "runs; the ratio reported is their median")
    args = parser.parse_args(argv)
    if args.adaptive and args.database != "sqlite":
        parser.error("--adaptive compares two SQLite runs; leave out --database")
    server_class = _require(args.database)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from recommender.store.database import default_url

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    work = Path(args.work)
    data, models = prepare(work, args.customers)
    static, rounds = None, []
    if server_class is None and args.adaptive:  # static then adaptive, --rounds times
        for _ in range(args.rounds):
            state = work / "serve_state_static"
            static = _serve_and_load(args, data, models, state, default_url(state))
            state = work / "serve_state_adaptive"
            run = _serve_and_load(args, data, models, state, default_url(state),
                                  adaptive=True)
            rounds.append((static["offers_server_cpu_ms"], run["offers_server_cpu_ms"]))
        targets, sqlite = {**TARGETS, ADAPTIVE_RATIO: 1.1}, None
    elif server_class is None:
        state = work / "serve_state"
        run = _serve_and_load(args, data, models, state, default_url(state))
        targets, sqlite = TARGETS, None
    else:  # SQLite first, then PostgreSQL: each in a state folder of its own
        state = work / "serve_state_sqlite"
        sqlite = _serve_and_load(args, data, models, state, default_url(state))
        run = _postgresql_run(args, data, models, work / "serve_state_postgresql",
                              server_class)
        targets = POSTGRESQL_TARGETS
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    result = {
        "database": args.database,
        "customers": args.customers, "workers": args.workers, "threads": args.threads,
        "connections": args.connections, "wrk_threads": args.wrk_threads,
        "duration_s": args.duration, "warmup_s": args.warmup,
        "wrk_version": (wrk_version.stdout or wrk_version.stderr).split("[")[0].strip(),
        "loadavg_at_start": load_at_start, **run,
        "targets": targets, "targets_met": _targets_met(run, targets),
    }
    if static is not None:  # the median of the rounds' ratios: the machine drifts
        ratios = sorted(a / b for b, a in rounds)
        ratio = ratios[len(ratios) // 2] if len(ratios) % 2 else (
            ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
        result.update({
            "static_offers_rps": static["offers_rps"],
            "static_offers_p99_ms": static["offers_p99_ms"],
            "static_offers_server_cpu_ms": static["offers_server_cpu_ms"],
            "rounds_server_cpu_ms": [{"static": b, "adaptive": a} for b, a in rounds],
            ADAPTIVE_RATIO: round(ratio, 3), "static": static})
        result["targets_met"][ADAPTIVE_RATIO] = ratio <= targets[ADAPTIVE_RATIO]
    if sqlite is not None:
        ratio = run["offers_rps"] / sqlite["offers_rps"]
        result.update({
            "sqlite_offers_rps": sqlite["offers_rps"],
            "sqlite_offers_p99_ms": sqlite["offers_p99_ms"],
            "sqlite_errors": sqlite["errors"],
            "sqlite_hello_rps": sqlite["hello_rps"],
            "sqlite_offers_server_cpu_ms": sqlite["offers_server_cpu_ms"],
            PG_RATIO: round(ratio, 3),
            "sqlite": sqlite})
        result["targets_met"][PG_RATIO] = ratio >= targets[PG_RATIO]
    Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
