"""Id maps: one immutable map per entity between external ids and matrix positions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from .exceptions import UnknownIdError


class IdMap:
    """External ids of one entity; the internal id is the position in ``external_ids``.

    Immutable: ``add_ids`` returns a new map, so a map shared by a model and a server
    can never change under them.
    """

    __slots__ = ("_external", "_index", "entity")

    def __init__(self, external_ids: Iterable, entity: str = "id") -> None:
        if not isinstance(external_ids, (np.ndarray, pd.Index, pd.Series, list, tuple)):
            external_ids = list(external_ids)
        external = np.array(external_ids, dtype=str)  # a private copy, frozen below
        index = pd.Index(external)
        if not index.is_unique:
            dupes = index[index.duplicated()].unique()[:5].tolist()
            raise ValueError(f"duplicate {entity} ids in id map: {dupes}")
        external.setflags(write=False)
        self._external = external
        self._index = index
        self.entity = entity

    @classmethod
    def from_values(cls, values: Iterable, entity: str = "id") -> IdMap:
        """Map of the distinct values, sorted, so the same data always gives the same map."""
        return cls(np.sort(pd.unique(np.asarray(values).astype(str))), entity)

    @property
    def external_ids(self) -> np.ndarray:
        return self._external

    def __len__(self) -> int:
        return len(self._external)

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._index

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, IdMap) and self.entity == other.entity
                and np.array_equal(self._external, other._external))

    def __hash__(self) -> int:
        return hash((self.entity, len(self._external)))

    def __repr__(self) -> str:
        return f"IdMap({self.entity}, n={len(self)})"

    def to_internal(self, external_ids: Iterable) -> np.ndarray:
        """Positions of the ids; raises ``UnknownIdError`` naming the first unknown ones."""
        positions = self.to_internal_lenient(external_ids)
        missing = positions < 0
        if missing.any():
            unknown = np.asarray(external_ids, dtype=str)[missing][:5].tolist()
            raise UnknownIdError(f"unknown {self.entity} ids: {unknown}")
        return positions

    def to_internal_lenient(self, external_ids: Iterable) -> np.ndarray:
        """Positions of the ids, ``-1`` where an id is unknown."""
        return self._index.get_indexer(np.asarray(external_ids).astype(str)).astype(np.int64)

    def position(self, external_id: object) -> int:
        """Position of one id; raises ``UnknownIdError``."""
        return int(self.to_internal([str(external_id)])[0])

    def to_external(self, internal_ids: Iterable[int]) -> np.ndarray:
        return self._external[np.asarray(internal_ids, dtype=np.int64)]

    def add_ids(self, external_ids: Iterable) -> IdMap:
        """A new map with the unseen ids appended; existing positions are kept."""
        candidates = pd.unique(np.asarray(external_ids).astype(str))
        new = candidates[self._index.get_indexer(candidates) < 0]
        return IdMap(np.concatenate([self._external, new]), self.entity)
