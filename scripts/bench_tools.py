"""What a benchmark needs from outside its own code, checked before anything slow runs.

Each script calls ``require`` right after parsing its arguments, before it imports the library
(up to seconds on a cold machine) or makes a bank (minutes): a missing tool stops it at once
with one line naming the tool and the command that installs it, not later with a traceback.
``make bench-tools`` installs everything checked here that can be installed.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

INSTALL = "make bench-tools"


def missing(packages: Iterable[str] = ("recommender",), programs: Iterable[str] = (),
            files: Mapping[str | Path, str] | None = None) -> str | None:
    """The first thing missing, said with what provides it; None when everything is there.

    ``packages`` are looked up in this interpreter (without importing them), ``programs`` on
    PATH, ``files`` on disk, each file with the advice to give when it is not there.
    """
    for package in packages:
        if importlib.util.find_spec(package) is None:
            return (f"the {package} package is not installed for {sys.executable}; "
                    f"run '{INSTALL}' and use .venv/bin/python")
    for program in programs:
        if shutil.which(program) is None:
            return f"{program} is not installed; run '{INSTALL}'"
    for path, advice in (files or {}).items():
        if not Path(path).exists():
            return f"{path} is missing; {advice}"
    return None


def require(script: str, packages: Iterable[str] = ("recommender",),
            programs: Iterable[str] = (), files: Mapping[str | Path, str] | None = None) -> None:
    """Exit with code 1 and one line on stderr, ``<script>: <what is missing>; <fix>``, if
    anything is missing (see ``missing``)."""
    problem = missing(packages, programs, files)
    if problem is not None:
        sys.exit(f"{Path(script).name}: {problem}")
