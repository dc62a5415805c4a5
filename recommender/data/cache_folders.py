"""Cache folders shared by server workers: written whole or not at all, old ones pruned.

The customer book and the score tables are folders of ``.npy`` files that every worker maps.
A folder is written under a temporary name and renamed when complete, so a reader never sees
half of one; two processes building the same folder at once both succeed, and the first one
renamed is kept.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(folder: str | Path, marker: str) -> Iterator[Path]:
    """A temporary folder to fill; renamed to ``folder`` if the block succeeds. ``marker`` is
    the file written last, whose presence says a folder is complete."""
    folder = Path(folder)
    partial = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.partial")
    partial.mkdir(parents=True)
    try:
        yield partial
        try:
            partial.rename(folder)
        except OSError:  # another process finished the same folder first: keep theirs
            if not (folder / marker).exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def prune_siblings(keep: Path, spare: int = 1) -> None:
    """Remove the other folders beside ``keep`` but the ``spare`` newest: a worker that still
    maps one keeps its pages (unlinked files live until unmapped)."""
    others = sorted((p for p in keep.parent.iterdir() if p.is_dir() and p != keep
                     and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime,
                    reverse=True)
    for old in others[spare:]:
        shutil.rmtree(old, ignore_errors=True)
