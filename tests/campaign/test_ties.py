"""Ties between customers go by a stable hash of the customer id: the same codes on every
machine and in every process, and a total order even when two ids share a hash."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from recommender.campaign import ties
from recommender.campaign.ties import id_hashes, tie_codes


def test_hashes_are_pandas_siphash_values_of_the_ids():
    # Fixed values: a change of hash would reorder every tied list.
    assert id_hashes(["C1", "C2"]).tolist() == [12927426055305053718, 5726445593452473050]
    assert id_hashes(np.array(["C1"], dtype=object)).tolist() == [12927426055305053718]


def test_codes_sort_as_the_hash_and_equal_ids_share_a_code():
    assert tie_codes(["C1", "C2", "C1"]).tolist() == [1, 0, 1]  # C2 hashes lower
    assert tie_codes([]).tolist() == []
    ids = np.array([f"K{i:05d}" for i in range(2000)], dtype=object)
    codes = tie_codes(ids)
    assert sorted(codes.tolist()) == list(range(2000))
    np.testing.assert_array_equal(np.argsort(codes), np.argsort(id_hashes(ids)))
    assert not (np.diff(codes) > 0).all()  # not the id order


def test_ids_sharing_a_hash_are_ordered_by_id(monkeypatch):
    monkeypatch.setattr(ties, "id_hashes",
                        lambda ids: np.array([len(i) for i in ids], dtype=np.uint64))
    # hashes 2, 1, 1, 2, 1: then "a" < "c" under 1, "aa" < "bb" under 2
    assert tie_codes(["bb", "a", "c", "aa", "a"]).tolist() == [3, 0, 1, 2, 0]


def test_the_same_hashes_in_another_process_with_another_hash_seed():
    ids = ["C00000001", "客户-7", "x"]
    code = ("from recommender.campaign.ties import id_hashes; "
            f"print(id_hashes({ids!r}).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert out.strip() == str(id_hashes(ids).tolist())
