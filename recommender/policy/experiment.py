"""Champion / challenger: which arm of an experiment a customer is in.

A customer's arm must not change between requests, workers, replicas or days (or the arms'
results mix), and must not follow anything about the customer (or the comparison is biased).
So it is a hash of the experiment's name and the customer id, read as a number in [0, 1) and
cut by the arms' cumulative shares. A new experiment name reshuffles everyone; changing one
arm's share moves only the customers at the boundary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from ..exceptions import ConfigError

_SCALE = float(2 ** 64)


def _check_shares(shares: Mapping[str, float], experiment: str) -> None:
    if not shares:
        raise ConfigError(f"experiment {experiment!r} has no arms")
    for arm, share in shares.items():
        if not isinstance(share, int | float) or isinstance(share, bool) or share < 0:
            raise ConfigError(f"experiment {experiment!r}: the share of arm {arm!r} must be "
                              f"a number from 0 to 1, got {share!r}")
    total = sum(shares.values())
    if abs(total - 1) > 1e-9:
        raise ConfigError(f"experiment {experiment!r}: the arms' shares add up to {total:g}, "
                          "not 1")


def unit_hash(experiment: str, customer_ids: Sequence[str]) -> np.ndarray:
    """Each customer's place in [0, 1) for this experiment, the same on every machine."""
    prefix = experiment.encode() + b"\x00"
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(prefix + str(c).encode(), digest_size=8).digest(),
                        "big") / _SCALE for c in customer_ids),
        dtype=np.float64, count=len(customer_ids))


def assign_arms(experiment: str, customer_ids: Sequence[str],
                shares: Mapping[str, float]) -> np.ndarray:
    """The arm (a key of ``shares``) of each customer, as an array of arm names."""
    _check_shares(shares, experiment)
    arms = list(shares)
    edges = np.cumsum([shares[a] for a in arms])
    edges[-1] = 1.0  # no customer falls past the last arm by rounding
    which = np.searchsorted(edges, unit_hash(experiment, customer_ids), side="right")
    return np.asarray(arms, dtype=object)[np.minimum(which, len(arms) - 1)]
