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
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Arm:
    """One arm: its share of customers, the model version it serves (None: the served one)
    and its policy variant (a policy file, relative to the main policy's folder; None: the
    main policy)."""

    name: str
    share: float
    model: str | None = None
    policy: str | None = None


@dataclass(frozen=True)
class ExperimentSettings:
    """The policy's ``[experiment]``: its name (the hash's salt), arms (the first is the
    champion) and the confidence level of its report."""

    name: str
    arms: tuple[Arm, ...]
    level: float = 0.95

    @property
    def shares(self) -> dict[str, float]:
        return {arm.name: arm.share for arm in self.arms}

    @property
    def champion(self) -> Arm:
        return self.arms[0]

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise ConfigError(f"experiment {self.name!r} has no arm {name!r}; its arms are "
                          f"{[a.name for a in self.arms]}")

    def assign(self, customer_ids: Sequence[str]) -> np.ndarray:
        """Each customer's arm name (``assign_arms``)."""
        return assign_arms(self.name, customer_ids, self.shares)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> ExperimentSettings:
        """From the policy's ``[experiment]`` table and its ``[[experiment.arm]]`` list."""
        unknown = sorted(set(table) - {"name", "level", "arm"})
        if unknown:
            raise ConfigError(f"{where} [experiment] has unknown keys {unknown}; allowed: "
                              "['arm', 'level', 'name']")
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where} [experiment] needs a name (it salts the customers' "
                              f"hash), got {name!r}")
        level = table.get("level", 0.95)
        if not isinstance(level, float) or not 0 < level < 1:
            raise ConfigError(f"{where} [experiment] level must be a number between 0 and 1, "
                              f"got {level!r}")
        arms = []
        for i, arm in enumerate(table.get("arm", [])):
            if not isinstance(arm, dict):
                raise ConfigError(f"{where} [[experiment.arm]] #{i + 1} must be a table")
            unknown = sorted(set(arm) - {"name", "share", "model", "policy"})
            if unknown or not isinstance(arm.get("name"), str):
                raise ConfigError(f"{where} [[experiment.arm]] #{i + 1} needs a name and may "
                                  f"have share, model, policy; unknown keys {unknown}")
            for key in ("model", "policy"):
                if key in arm and not isinstance(arm[key], str):
                    raise ConfigError(f"{where} arm {arm['name']!r}: {key} must be a string")
            arms.append(Arm(arm["name"], arm.get("share", -1), arm.get("model"),
                            arm.get("policy")))
        if len(arms) < 2 or len({a.name for a in arms}) != len(arms):
            raise ConfigError(f"{where} [experiment] needs two or more arms with distinct "
                              f"names, got {[a.name for a in arms]}")
        _check_shares({a.name: a.share for a in arms}, name)
        return cls(name, tuple(arms), float(level))
