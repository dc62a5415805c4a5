"""Breaking ties between customers by a stable hash of their id.

When two customers tie (the same propensity, the same expected value), the one a list takes
first must depend neither on the order of rows in the bank's files nor on how ids were
allocated: ids follow opening dates, branches or file sort orders, and a tie decided by id
order carries that order into the list (the oldest customers first, say). A hash of the id
orders tied customers arbitrarily but the same way on every machine, in every run and for
every chunking of the bank.

The hash is pandas' ``hash_array`` (SipHash with a fixed key, on the UTF-8 bytes), as
``ranking.ownership.folds_of`` and ``data.partition.part_of`` use; never Python's
``hash()``, which is salted per process.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def id_hashes(ids) -> np.ndarray:
    """(n,) uint64: a stable 64-bit hash of each id, the same on every machine and run."""
    ids = np.asarray(ids)
    if ids.dtype != object:  # numpy strings or numbers: hashed as Python strings
        ids = ids.astype(str).astype(object)
    # categorize=False: the same values, without factorizing first (5 times faster here)
    return pd.util.hash_array(ids, categorize=False)


def tie_codes(ids) -> np.ndarray:
    """(n,) int64 codes that sort as (hash of the id, id): equal ids get equal codes.

    Sort by a score, then by these codes, to break the score's ties by the hash. Two
    distinct ids sharing a 64-bit hash (about one chance in 10^7 for a bank of ten million
    customers) are ordered by the ids themselves, so that the order stays total.
    """
    ids = np.asarray(ids)
    if len(ids) == 0:
        return np.empty(0, dtype=np.int64)
    hashes = id_hashes(ids)
    order = np.argsort(hashes)
    ordered = hashes[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    same = np.flatnonzero(~new[1:])  # neighbours sharing a hash: the same id, or a collision
    if (ids[order[same]] != ids[order[same + 1]]).any():  # then the ids decide
        id_rank = np.unique(ids.astype(str), return_inverse=True)[1].reshape(len(ids))
        order = np.lexsort((id_rank, hashes))
        new = np.r_[True, (hashes[order][1:] != hashes[order][:-1])
                    | (id_rank[order][1:] != id_rank[order][:-1])]
    codes = np.empty(len(ids), dtype=np.int64)
    codes[order] = np.cumsum(new) - 1
    return codes
