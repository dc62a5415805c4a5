"""The benchmarks stop at once, with one line naming what is missing and what installs it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recommender.data import santander

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def bench_tools(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module("bench_tools")


def test_nothing_missing(bench_tools, tmp_path):
    assert bench_tools.missing(("recommender",), ("sh",), {tmp_path: "unused"}) is None


def test_each_kind_of_missing_thing_is_named_with_its_fix(bench_tools, tmp_path):
    assert bench_tools.missing(("no_such_package_here",)) == (
        f"the no_such_package_here package is not installed for {sys.executable}; "
        "run 'make bench-tools' and use .venv/bin/python")
    assert bench_tools.missing(programs=("no-such-program-here",)) == (
        "no-such-program-here is not installed; run 'make bench-tools'")
    assert bench_tools.missing(files={tmp_path / "x.lua": "restore it"}) == (
        f"{tmp_path / 'x.lua'} is missing; restore it")


def test_require_exits_with_one_line(bench_tools):
    with pytest.raises(SystemExit) as stop:
        bench_tools.require("/a/b/bench_x.py", programs=("no-such-program-here",))
    assert stop.value.code == "bench_x.py: no-such-program-here is not installed; run " \
        "'make bench-tools'"


def _run(tmp_path: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path if path is not None else os.environ.get("PATH", "")}
    return subprocess.run([sys.executable, str(SCRIPTS / args[0]), *args[1:]], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_bench_serving_without_wrk_stops_before_making_a_bank(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    done = _run(tmp_path, "bench_serving.py", "--customers", "100", "--json", "out.json",
                "--work", "work", path=str(empty))
    assert done.returncode == 1
    assert done.stderr == "bench_serving.py: wrk is not installed; run 'make bench-tools'\n"
    assert not (tmp_path / "work").exists()


def test_bench_quality_without_its_data_stops_at_once(tmp_path):
    done = _run(tmp_path, "bench_quality.py", "--data", "nowhere", "--json", "out.json")
    assert done.returncode == 1
    assert done.stderr == (f"bench_quality.py: nowhere/{santander.ADDERS_FILE} is missing; "
                           "pass --data the folder of the Santander benchmark data "
                           "(../shared/data/santander)\n")
    assert not (tmp_path / "out.json").exists()
