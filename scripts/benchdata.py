"""What the benchmark scripts share: the `nbo` command in a child process, and a demo bank
with a trained model under a work folder, made once and reused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def nbo(*args: str, capture: bool = False) -> str:
    """Run `nbo` in a child process (its memory is not the benchmark's); its stdout if asked."""
    done = subprocess.run([sys.executable, "-m", "recommender.cli", *args], check=True,
                          stdout=subprocess.PIPE if capture else None, text=True)
    return done.stdout or ""


def prepare(work: Path, customers: int) -> tuple[Path, Path]:
    """``work/bank_<N>`` and ``work/models_<N>``: generated and trained unless already there."""
    data, models = work / f"bank_{customers}", work / f"models_{customers}"
    if not (data / "holdings.parquet").is_file():
        nbo("demo-data", "--customers", str(customers), "--out", str(data))
    if not (models / "current").exists():
        nbo("train", "--data", str(data), "--models", str(models))
    return data, models
