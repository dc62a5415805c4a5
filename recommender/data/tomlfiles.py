"""Reading the TOML configuration files (catalog, life stages) with errors that name the file."""

from __future__ import annotations

import tomllib
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any


def toml_text(path: str | Path | None, packaged: str, error: type[Exception],
              what: str) -> tuple[str, str]:
    """(text, source name) of ``path``, or of the file ``packaged`` shipped in the package."""
    if path is None:
        resource = resources.files(__package__) / packaged  # beside this module
        return resource.read_text(encoding="utf-8"), f"<packaged {packaged}>"
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file not found: {path}")
    return path.read_text(encoding="utf-8"), str(path)


def toml_document(text: str, source: str, error: type[Exception],
                  top_level: set[str] | None = None) -> dict[str, Any]:
    """The parsed document; invalid TOML or (when ``top_level`` is given) unknown top-level
    keys raise ``error``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - top_level) if top_level is not None else []
    if unknown:
        raise error(f"{source}: unknown top-level keys {unknown}")
    return document


def duplicated(ids: list[str]) -> list[str]:
    return sorted(i for i, n in Counter(ids).items() if n > 1)
