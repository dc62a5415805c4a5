"""The campaign on Spark beside the local engine, on the same extracts: time, equality, memory.

    python scripts/bench_spark.py --customers 1000000 --scaling 1000000,2000000 --json out.json

Generates (or reuses, under --work) demo banks of each size and one model trained on the
--customers bank, then runs `nbo campaign` as a bank would, each in a child process: the
local engine at --customers, and `--engine spark` on a local Spark (--master, `local[2]` by
default: this machine's two cores) at every size of --scaling. Every run scores every
customer, applies every rule, logs its decisions and writes its list; the quotas are the
example campaign's, scaled once for --customers and the same at every size (a campaign's
quotas are the business's, not the bank's size), so the driver's share stays bounded.

Reports ``local_s`` and ``spark_s`` (wall time of the whole command, Spark's start
included) and ``equal`` (the two lists at --customers: the same customers, products, ranks
and order, numbers within the project's tolerance); ``spark_s_by_customers``;
``driver_peak_mb_by_customers`` (the peak resident memory of the driver's Python process),
``jvm_peak_mb_by_customers`` (Spark's JVM, which in local mode is driver and executor
alike) and ``executor_peak_mb`` (the largest Python worker: the process that loads the model
and scores a part); ``scoring_s`` (the driver's measure of the scoring job: parts scored,
sent back and assigned), ``part_s`` and ``customers_per_s_per_core`` (the throughput a
cluster's projection starts from). Memory is sampled every 0.1 s from /proc. Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from bench_tools import require  # noqa: E402 (scripts/ is on the path)
from benchdata import nbo  # noqa: E402

SPEC = Path(__file__).resolve().parents[1] / "examples" / "campaign.toml"
log = logging.getLogger("bench_spark")


def _bank(work: Path, customers: int) -> Path:
    data = work / f"bank_{customers}"
    if not (data / "holdings.parquet").is_file():
        nbo("demo-data", "--customers", str(customers), "--out", str(data))
    return data


def _models(work: Path, data: Path, customers: int) -> Path:
    models = work / f"models_{customers}"
    if not (models / "current").exists():
        nbo("train", "--data", str(data), "--models", str(models))
    return models


def _scaled_spec(work: Path, scale: int) -> Path:
    """The example campaign with its quotas multiplied by ``scale``."""
    spec = tomllib.loads(SPEC.read_text(encoding="utf-8"))
    lines = [f"{key} = {json.dumps(value)}" for key, value in spec.items()
             if key != "quotas"]
    lines += ["", "[quotas]"] + [f"{p} = {q * scale}" for p, q in spec["quotas"].items()]
    path = work / f"campaign_x{scale}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text(encoding="ascii").split()
            except OSError:
                continue
            for child in map(int, children):
                found.append(child)
                todo.append(child)
    return found


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="ascii").strip()
    except OSError:
        return ""


class _Sampler(threading.Thread):
    """Peak memory of a command's driver (its own process), its JVM and its Python workers."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.done = pid, threading.Event()
        self.driver = self.jvm = self.worker = 0.0

    def run(self) -> None:
        while not self.done.is_set():
            self.driver = max(self.driver, _rss_mb(self.pid, "VmHWM"))
            for child in _descendants(self.pid):
                name, rss = _name(child), _rss_mb(child)
                if name == "java":
                    self.jvm = max(self.jvm, rss)
                elif name.startswith("python"):
                    self.worker = max(self.worker, rss)
            time.sleep(0.1)


def _campaign(data: Path, models: Path, spec: Path, out: Path, state: Path,
              spark_master: str | None, part_size: int) -> dict:
    """One `nbo campaign` in a child process: its wall time and peaks."""
    command = [sys.executable, "-m", "recommender.cli", "campaign", "--spec", str(spec),
               "--data", str(data), "--models", str(models), "--out", str(out),
               "--state", str(state), "--report", str(state / "report")]
    if spark_master:
        command += ["--engine", "spark", "--spark-master", spark_master,
                    "--part-size", str(part_size)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    sampler = _Sampler(child.pid)
    sampler.start()
    stdout, stderr = child.communicate()
    seconds = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    if child.returncode != 0:
        sys.exit(f"bench_spark: {' '.join(command[3:])} failed:\n{stderr[-3000:]}")
    log.info("%s", stdout.strip())
    scored = re.search(r"on Spark: .* in ([\d.]+) s", stderr)  # the driver's own measure
    return {"s": round(seconds, 1), "driver_mb": round(sampler.driver, 1),
            "jvm_mb": round(sampler.jvm, 1), "worker_mb": round(sampler.worker, 1),
            "scoring_s": float(scored.group(1)) if scored else None}


def _equal(local: Path, spark: Path) -> bool:
    """The same customers, products, ranks and order; numbers within the tolerance of
    ``recommender.ranking.reproducible``."""
    import numpy as np
    import pandas as pd

    from recommender.ranking.reproducible import ATOL, RTOL

    a = pd.read_parquet(local).drop(columns="decision_id")
    b = pd.read_parquet(spark).drop(columns="decision_id")
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    for name in a.columns:
        x, y = a[name].to_numpy(), b[name].to_numpy()
        same = (np.allclose(x, y, rtol=RTOL, atol=ATOL) if a[name].dtype.kind == "f"
                else (x == y).all())
        if not same:
            log.warning("lists differ in column %s", name)
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--scaling", help="bank sizes for Spark, comma-separated (default: "
                        "--customers only)")
    parser.add_argument("--json", required=True)
    parser.add_argument("--work", default="bench_work", help="where the banks and model live")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--part-size", type=int, default=100_000)
    args = parser.parse_args(argv)
    require(__file__, packages=("recommender", "pyspark"), programs=("java",),
            files={SPEC: "restore it from the repository"})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sizes = sorted({args.customers, *(int(n) for n in (args.scaling or "").split(",") if n)})
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = _bank(work, args.customers)
    models = _models(work, data, args.customers)
    spec = _scaled_spec(work, max(1, args.customers // 100_000))
    local = _campaign(data, models, spec, work / "local.parquet", work / "state_local", None,
                      args.part_size)
    log.info("local at %d: %s", args.customers, local)
    runs = {}
    for n in sizes:
        runs[n] = _campaign(_bank(work, n), models, spec, work / f"spark_{n}.parquet",
                            work / f"state_spark_{n}", args.master, args.part_size)
        log.info("spark at %d: %s", n, runs[n])
    here = runs[args.customers]
    parts = -(-args.customers // args.part_size)
    cores = int(args.master.split("[")[1].split("]")[0].split(",")[0]) if "[" in args.master \
        else os.cpu_count()
    result = {
        "customers": args.customers, "master": args.master, "part_size": args.part_size,
        "parts": parts, "quota_total": sum(tomllib.loads(spec.read_text())["quotas"].values()),
        "local_s": local["s"], "spark_s": here["s"],
        "equal": _equal(work / "local.parquet", work / f"spark_{args.customers}.parquet"),
        "spark_s_by_customers": {str(n): runs[n]["s"] for n in sizes},
        "driver_peak_mb_by_customers": {str(n): runs[n]["driver_mb"] for n in sizes},
        "jvm_peak_mb_by_customers": {str(n): runs[n]["jvm_mb"] for n in sizes},
        "executor_peak_mb": here["worker_mb"],
        "local_peak_mb": local["driver_mb"],
        "scoring_s": here["scoring_s"],
        # A part's time on one core: the scoring job's time over the waves of parts it ran.
        "part_s": round(here["scoring_s"] * cores / parts, 2),
        "customers_per_s_per_core": round(args.customers / (here["scoring_s"] * cores)),
        "ratios": {"spark_s/local_s": round(here["s"] / local["s"], 2)},
    }
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        result["ratios"][f"spark_s({large})/spark_s({small})"] = round(
            runs[large]["s"] / runs[small]["s"], 2)
        result["ratios"][f"driver_peak({large})/driver_peak({small})"] = round(
            runs[large]["driver_mb"] / runs[small]["driver_mb"], 2)
    Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
