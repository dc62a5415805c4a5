"""IdMap: external ids <-> matrix positions, strict and lenient, immutable."""

import numpy as np
import pytest

from recommender.data.ids import IdMap
from recommender.exceptions import UnknownIdError


@pytest.fixture
def ids() -> IdMap:
    return IdMap(["C003", "C001", "C002"], "customer")


def test_positions_follow_the_given_order(ids):
    """The internal id is the position in the list given, not a sorted order."""
    assert ids.to_internal(["C001", "C003", "C002"]).tolist() == [1, 0, 2]
    assert ids.position("C002") == 2
    assert ids.to_external([2, 0]).tolist() == ["C002", "C003"]
    assert len(ids) == 3


def test_strict_conversion_names_the_unknown_ids(ids):
    """to_internal refuses unknown ids and says which ones (a KeyError the API can map)."""
    with pytest.raises(UnknownIdError, match=r"unknown customer ids: \['C999', 'X'\]") as info:
        ids.to_internal(["C001", "C999", "X"])
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownIdError, match="C404"):
        ids.position("C404")


def test_lenient_conversion_marks_unknown_ids_with_minus_one(ids):
    """to_internal_lenient never raises: unknown ids get -1."""
    positions = ids.to_internal_lenient(["C002", "nope", "C003"])
    assert positions.tolist() == [2, -1, 0]
    assert positions.dtype == np.int64


def test_ids_are_compared_as_strings():
    """Numbers and strings with the same text are the same external id."""
    numeric = IdMap([10, 20, 30])
    assert numeric.external_ids.tolist() == ["10", "20", "30"]
    assert numeric.to_internal([30, "10"]).tolist() == [2, 0]
    assert 20 in numeric and "20" in numeric and 40 not in numeric


def test_empty_lookup_gives_an_empty_integer_array(ids):
    result = ids.to_internal([])
    assert result.shape == (0,) and result.dtype == np.int64


def test_add_ids_keeps_existing_positions_and_appends_new_ones(ids):
    """Positions already handed out never move; unseen ids go at the end, first-seen order."""
    grown = ids.add_ids(["C009", "C001", "C008", "C009"])
    assert grown.external_ids.tolist() == ["C003", "C001", "C002", "C009", "C008"]
    assert grown.to_internal(["C003", "C001", "C002"]).tolist() == [0, 1, 2]
    assert grown.entity == "customer"


def test_add_ids_returns_a_new_map_and_leaves_the_old_one_alone(ids):
    grown = ids.add_ids(["C100"])
    assert grown is not ids
    assert len(ids) == 3 and "C100" not in ids
    assert ids.add_ids(["C001"]) == ids  # nothing new: an equal map


def test_external_ids_cannot_be_written(ids):
    """The id array is read-only, so a shared map cannot change under a model or server."""
    with pytest.raises(ValueError):
        ids.external_ids[0] = "hacked"
    assert ids.position("C003") == 0


def test_map_is_a_copy_of_its_input():
    """Changing the list or array the map was built from does not change the map."""
    source_list = ["a", "b"]
    source_array = np.array(["a", "b"])
    from_list, from_array = IdMap(source_list), IdMap(source_array)
    source_list[0] = "z"
    source_array[0] = "z"
    assert from_list.external_ids.tolist() == ["a", "b"]
    assert from_array.external_ids.tolist() == ["a", "b"]
    assert "z" not in from_array


def test_duplicate_ids_are_rejected():
    """Two rows with the same external id would make positions ambiguous."""
    with pytest.raises(ValueError, match=r"duplicate product ids in id map: \['b'\]"):
        IdMap(["a", "b", "c", "b"], "product")
    with pytest.raises(ValueError, match="duplicate"):
        IdMap([1, "1"])  # the same id once compared as strings


def test_from_values_is_sorted_and_distinct():
    """The same data always gives the same map, whatever the row order."""
    assert IdMap.from_values(["b", "a", "b", "c"]).external_ids.tolist() == ["a", "b", "c"]
    assert IdMap.from_values(["c", "b", "a"]) == IdMap.from_values(["a", "c", "b", "a"])


def test_equality_and_hash_depend_on_ids_and_entity():
    assert IdMap(["a", "b"], "x") == IdMap(["a", "b"], "x")
    assert hash(IdMap(["a", "b"], "x")) == hash(IdMap(["a", "b"], "x"))
    assert IdMap(["a", "b"], "x") != IdMap(["b", "a"], "x")
    assert IdMap(["a", "b"], "x") != IdMap(["a", "b"], "y")


def test_constructor_accepts_any_iterable():
    assert IdMap(x for x in ["q", "r"]).external_ids.tolist() == ["q", "r"]


def test_lookups_accept_any_iterable_like_the_constructor(ids):
    """The lookup methods take the same kinds of input as the constructor."""
    assert ids.to_internal(x for x in ["C002", "C003"]).tolist() == [2, 0]
    assert ids.add_ids(iter(["C010"])).external_ids.tolist()[-1] == "C010"
