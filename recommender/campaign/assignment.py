"""Assigning offers under quotas: the greedy by expected value, computed in vectorised rounds.

Candidate (customer, product) pairs are taken in decreasing value, each while its customer
has room (``max_offers_per_customer``) and its product has quota left. A loop over a million
pairs in Python takes seconds; deferred acceptance in rounds reaches the same pairs with a few
passes of numpy each (tests/campaign/test_campaign_fast.py compares it with the sequential loop).
"""

from __future__ import annotations

import numpy as np


def greedy_assign(customers: np.ndarray, products: np.ndarray, values: np.ndarray,
                  quotas: dict[int, int], per_customer: int) -> np.ndarray:
    """Indices of the pairs the greedy takes, in its order: by decreasing value (ties:
    customer, then product), each pair taken while its customer has fewer than
    ``per_customer`` pairs and its product fewer than its quota (0 if not in ``quotas``).

    ``customers`` and ``products`` are small non-negative integer codes, a pair at most once.
    Computed as deferred acceptance, in rounds: every customer proposes their best pairs not
    yet refused, every product keeps its ``quota`` best proposals and refuses every pair after
    them. When both sides rank pairs in one order, the only assignment that no left-out pair
    would improve for its customer and its product alike is the greedy's, and deferred
    acceptance ends in it. A round is a few passes over the pairs; a handful of rounds do.
    """
    n = len(values)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if _sorted_pairs(customers, products):  # as a campaign's pool comes: one sort will do
        order, grouped = np.argsort(_descending(values), kind="stable"), None
    else:
        order = np.lexsort((products, customers, -values))
        grouped = np.argsort(customers, kind="stable")  # each customer's pairs together
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    ranks, cols, owners = ((rank, products, customers) if grouped is None
                           else (rank[grouped], products[grouped], customers[grouped]))
    quota = np.zeros(int(max([int(products.max()), *quotas])) + 1, dtype=np.int64)
    for product, room in quotas.items():
        quota[product] = room
    proposals, queues = _Proposals(owners, per_customer), _Queues(ranks, cols, len(quota))
    refused_from = np.full(len(quota), n)  # a product refuses pairs ranked from here on
    while True:
        proposed = proposals.best(np.where(ranks < refused_from[cols], ranks, n), n)
        refused = queues.first_over_quota(proposed, quota)
        if (refused >= refused_from).all():  # no product has more proposals than its quota
            return order[np.sort(ranks[proposed])]
        refused_from = np.minimum(refused_from, refused)


def _descending(values: np.ndarray) -> np.ndarray:
    """A key sorting as ``-values``: positive floats (a pool's gains) sort as their bits, and
    integers sort faster than floats."""
    if values.dtype == np.float64 and (values > 0).all():
        return -values.view(np.int64)
    return -values


def _sorted_pairs(customers: np.ndarray, products: np.ndarray) -> bool:
    """Whether the pairs are sorted by customer, then product."""
    same = customers[1:] == customers[:-1]
    return bool((customers[1:] >= customers[:-1]).all()
                and (products[1:][same] > products[:-1][same]).all())


class _Queues:
    """Each product's pairs in rank order, to find the rank of its first proposal over quota
    in a few passes, whatever the number of products."""

    def __init__(self, ranks: np.ndarray, cols: np.ndarray, n_products: int) -> None:
        by_rank = np.empty_like(ranks)
        by_rank[ranks] = np.arange(len(ranks))
        kind = np.min_scalar_type(n_products)  # small integers: a radix sort
        self.order = by_rank[np.argsort(cols[by_rank].astype(kind), kind="stable")]
        self.ranks = ranks[self.order]
        self.ends = np.cumsum(np.bincount(cols, minlength=n_products))
        self.starts = self.ends - np.bincount(cols, minlength=n_products)

    def first_over_quota(self, proposed: np.ndarray, quota: np.ndarray) -> np.ndarray:
        """Per product, the rank of its proposal number ``quota + 1`` (the number of pairs
        when it has no more proposals than its quota)."""
        count = np.concatenate([[0], np.cumsum(proposed[self.order])])  # before each pair
        refused = np.full(len(quota), len(proposed))
        over = np.flatnonzero(count[self.ends] - count[self.starts] > quota)
        first_over = np.searchsorted(count, count[self.starts[over]] + quota[over] + 1)
        refused[over] = self.ranks[first_over - 1]
        return refused


class _Proposals:
    """Each customer's ``k`` best open pairs, for pairs grouped by customer. Most customers
    have one pair, proposed when open: only the others need a reduction per customer."""

    def __init__(self, owners: np.ndarray, k: int) -> None:
        starts = np.flatnonzero(np.concatenate([[True], owners[1:] != owners[:-1]]))
        sizes = np.diff(np.append(starts, len(owners)))
        self.k, self.everything = k, k >= sizes.max()
        self.shared = np.flatnonzero(np.repeat(sizes > 1, sizes))  # pairs of such customers
        shared_sizes = sizes[sizes > 1]
        self.starts = np.cumsum(shared_sizes) - shared_sizes  # in ``shared``
        self.owner = np.repeat(np.arange(len(shared_sizes)), shared_sizes)

    def best(self, ranks: np.ndarray, missing: int) -> np.ndarray:
        """Whether each pair is among its customer's ``k`` smallest ranks below ``missing``."""
        chosen = ranks < missing
        if self.everything or len(self.shared) == 0:
            return chosen
        shared = ranks[self.shared]
        taken = np.zeros(len(shared), dtype=bool)
        for _ in range(self.k):
            best = np.minimum.reduceat(shared, self.starts)[self.owner]
            hit = (shared == best) & (shared < missing)
            taken |= hit
            shared[hit] = missing
        chosen[self.shared] = taken
        return chosen
