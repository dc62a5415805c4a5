"""Id maps: one immutable map per entity between external ids and matrix positions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..exceptions import UnknownIdError


def _sequence(values: Iterable) -> np.ndarray | pd.Index | pd.Series | list | tuple:
    """Array-likes as they are; any other iterable (generator, set) as a list."""
    if isinstance(values, np.ndarray | pd.Index | pd.Series | list | tuple):
        return values
    return list(values)


class IdMap:
    """External ids of one entity; the internal id is the position in ``external_ids``.

    Immutable: ``add_ids`` returns a new map, so a map shared by a model and a server
    can never change under them.
    """

    __slots__ = ("_external", "_index", "entity")

    def __init__(self, external_ids: Iterable, entity: str = "id") -> None:
        external = np.array(_sequence(external_ids), dtype=str)  # a private copy, frozen below
        index = pd.Index(external)
        if not index.is_unique:
            dupes = index[index.duplicated()].unique()[:5].tolist()
            raise ValueError(f"duplicate {entity} ids in id map: {dupes}")
        external.setflags(write=False)
        self._external = external
        self._index: pd.Index | None = index
        self.entity = entity

    @classmethod
    def saved(cls, external_ids: np.ndarray, entity: str = "id") -> IdMap:
        """The map of ids a map wrote (unique already), with its lookup index built when
        first used: a server reloading a model of a million customers may never look one
        up by id, and building the index costs half a second."""
        ids = cls.__new__(cls)
        ids._external = np.array(external_ids, dtype=str)
        ids._external.setflags(write=False)
        ids._index, ids.entity = None, entity
        return ids

    @property
    def _lookup(self) -> pd.Index:
        if self._index is None:
            self._index = pd.Index(self._external)
        return self._index

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
        return str(external_id) in self._lookup

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, IdMap) and self.entity == other.entity
                and np.array_equal(self._external, other._external))

    def __hash__(self) -> int:
        return hash((self.entity, len(self._external)))

    def __repr__(self) -> str:
        return f"IdMap({self.entity}, n={len(self)})"

    def to_internal(self, external_ids: Iterable) -> np.ndarray:
        """Positions of the ids; raises ``UnknownIdError`` naming the first unknown ones."""
        external_ids = np.asarray(_sequence(external_ids)).astype(str)
        positions = self.to_internal_lenient(external_ids)
        missing = positions < 0
        if missing.any():
            unknown = external_ids[missing][:5].tolist()
            raise UnknownIdError(f"unknown {self.entity} ids: {unknown}")
        return positions

    def to_internal_lenient(self, external_ids: Iterable) -> np.ndarray:
        """Positions of the ids, ``-1`` where an id is unknown."""
        ids = np.asarray(_sequence(external_ids)).astype(str)
        return self._lookup.get_indexer(ids).astype(np.int64)

    def position(self, external_id: object) -> int:
        """Position of one id; raises ``UnknownIdError``. One hash lookup: an answer reads
        a few of these, and an array round trip costs a hundred times more."""
        try:
            found = self._lookup.get_loc(str(external_id))
        except KeyError:
            raise UnknownIdError(f"unknown {self.entity} ids: {[str(external_id)]}") from None
        return int(found)

    def to_external(self, internal_ids: Iterable[int]) -> np.ndarray:
        return self._external[np.asarray(internal_ids, dtype=np.int64)]

    def add_ids(self, external_ids: Iterable) -> IdMap:
        """A new map with the unseen ids appended; existing positions are kept."""
        candidates = pd.unique(np.asarray(_sequence(external_ids)).astype(str))
        new = candidates[self._lookup.get_indexer(candidates) < 0]
        return IdMap(np.concatenate([self._external, new]), self.entity)
