"""The decision log's key file: the one secret that encrypts the log and keys its customer hashes.

Kept apart from the log because it is a file of its own with its own care: created once, by
whichever worker gets there first, readable by its owner only, durable before it is used, and
never replaced, since a new key cannot read decisions already recorded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path

from cryptography.fernet import Fernet

from .decisions import DecisionLogError

log = logging.getLogger(__name__)


def load_or_create_key(path: str | Path) -> bytes:
    """The log's Fernet key, created (mode 0o600) on first use; losing it loses the log."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(descriptor, 0o600)  # whatever the umask
            os.write(descriptor, Fernet.generate_key())
            os.fsync(descriptor)
            # A link, unlike a rename, never replaces a key another worker has just created.
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
                log.info("created decision-log key %s", path)
        finally:
            os.close(descriptor)
            temporary.unlink(missing_ok=True)
        folder = os.open(path.parent, os.O_RDONLY)  # make the new name itself durable
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    key = path.read_bytes().strip()
    try:
        Fernet(key)
    except (TypeError, ValueError) as exc:
        raise DecisionLogError(f"{path} is not a valid Fernet key; restore the original key file "
                               "(a new key cannot read decisions already recorded)") from exc
    if path.stat().st_mode & 0o077:
        log.warning("decision-log key %s is readable by other users; chmod 600 it", path)
    return key
