"""How the decision log writes a decision down: canonical JSON, so that equal inputs always
fingerprint alike; one answer's JSON as it is queued; and the packs that hold many answers.

The log itself (``recommender.store.decisions``) encrypts, stores and reads them back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

LIST_PACK_FORMAT = "nbo-decision-list/1"  # a pack of queued answers (``flush_seconds``)
# What flush writes: this, the size of the JSON of a LIST_PACK_FORMAT pack, a newline, then that
# JSON as a zstd frame. A tenth of the bytes to encrypt and to write: answers repeat the same keys
# and products. pyarrow's zstd (a dependency for Parquet anyway) costs a third of zlib's level 1.
COMPRESSED_LIST_PACK = b"nbo-decision-list/2 zstd "
_ZSTD = pa.Codec("zstd", compression_level=1)
# orjson encodes the queued answers at a seventh of json's CPU. Dates, numpy values and dataclasses
# go through _json_default, so they are recorded (or refused) as jsonable has them.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_PLAIN = (str, bool, int, float, type(None))


def jsonable(value: Any, where: str = "value") -> Any:
    """Plain JSON types for numpy and pandas values, so equal inputs always hash alike."""
    if type(value) in _PLAIN:  # most values, checked first: every API decision goes through here
        return value
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[us]").item()  # a datetime, or None for NaT
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime | date):  # pandas Timestamp is a datetime
        return value.isoformat()
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a str; JSON keys must be strings")
            plain[str(key)] = item if type(item) in _PLAIN else jsonable(item, f"{where}.{key}")
        return plain
    if isinstance(value, list | tuple | np.ndarray):
        return [item if type(item) in _PLAIN else jsonable(item, f"{where}[{i}]")
                for i, item in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} cannot be recorded; convert it to a str, "
                    "number, bool, list or dict first")


def canonical_json(plain: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: one text for equal values (what fingerprints hash)."""
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the inputs: equal inputs, equal fingerprints."""
    return hashlib.sha256(canonical_json(jsonable(inputs, "inputs"))).hexdigest()


def _json_default(value: Any) -> Any:
    """``json.dumps`` hook for what ``jsonable`` converts, for whole packs at once."""
    plain = jsonable(value)
    if plain is value:
        raise TypeError(f"{type(value).__name__} cannot be recorded")
    return plain


def encoded_answer(inputs: Mapping[str, Any], output: Mapping[str, Any]) -> bytes:
    """One queued answer's JSON, made when it is recorded: a snapshot the caller may go on to
    change, and a value that cannot be recorded is refused by ``record``, not by the flusher.

    JSON has no NaN or infinity: orjson writes them as null. What orjson refuses (a key that
    is not a str, an int beyond 64 bits, what ``jsonable`` refuses too) goes through
    ``jsonable``: converted, or refused with the error that names it, as unqueued records are.
    """
    decision = {"inputs": inputs, "output": output}
    try:
        return orjson.dumps(decision, default=_json_default, option=_ORJSON_OPTIONS)
    except TypeError:
        return canonical_json({key: jsonable(value, key) for key, value in decision.items()})


def list_pack(answers: list[bytes]) -> bytes:
    """A compressed pack (``COMPRESSED_LIST_PACK``) of queued answers (``encoded_answer``)."""
    plain = b'{"format":"%s","decisions":[%s]}' % (LIST_PACK_FORMAT.encode(), b",".join(answers))
    return b"%s%d\n%s" % (COMPRESSED_LIST_PACK, len(plain), _ZSTD.compress(plain, asbytes=True))


def listed_answers(pack: bytes) -> list[dict] | None:
    """The answers of a pack of queued answers, compressed or not; None for a batch job's pack
    (an ``.npz`` that ``replay.unpacked`` reads)."""
    if pack.startswith(COMPRESSED_LIST_PACK):
        size, _, frame = pack[len(COMPRESSED_LIST_PACK):].partition(b"\n")
        pack = _ZSTD.decompress(frame, int(size), asbytes=True)
    return json.loads(pack)["decisions"] if pack[:1] == b"{" else None
