"""Ranking metrics for next-period acquisitions (Kaggle's AP@k, recall, precision, NDCG).

Inputs are the ranked product positions per customer (``-1`` pads short lists) and a
boolean matrix of what each customer actually added.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _hits(top: np.ndarray, added: np.ndarray) -> np.ndarray:
    safe = np.where(top >= 0, top, 0)
    return np.take_along_axis(added, safe, axis=1) & (top >= 0)


def ranking_metrics(top: np.ndarray, added: sp.csr_matrix | np.ndarray, k: int) -> dict:
    """Mean metrics over customers with at least one acquisition (others are skipped)."""
    added = added.toarray() if sp.issparse(added) else np.asarray(added)
    added = added > 0
    if top.shape[1] < k:  # fewer products than k: the missing places are empty
        top = np.hstack([top, np.full((top.shape[0], k - top.shape[1]), -1, dtype=top.dtype)])
    n_relevant = added.sum(axis=1)
    keep = n_relevant > 0
    top, added, n_relevant = top[keep, :k], added[keep], n_relevant[keep]
    if len(top) == 0:
        return {"customers": 0, f"map@{k}": 0.0, f"precision@{k}": 0.0, f"recall@{k}": 0.0,
                f"ndcg@{k}": 0.0, "coverage": 0.0}
    hits = _hits(top, added)
    cum_precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (cum_precision * hits).sum(axis=1) / np.minimum(n_relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    offered = np.unique(top[top >= 0])
    return {
        "customers": int(len(top)),
        f"map@{k}": float(ap.mean()),
        f"precision@{k}": float((hits.sum(axis=1) / k).mean()),
        f"recall@{k}": float((hits.sum(axis=1) / n_relevant).mean()),
        f"ndcg@{k}": float((dcg / ideal).mean()),
        "coverage": float(len(offered) / added.shape[1]),
    }


def breakdown(top: np.ndarray, added: sp.csr_matrix | np.ndarray, k: int,
              groups: np.ndarray, products: np.ndarray) -> tuple[dict, dict]:
    """(metrics per group of customers, hit figures per product).

    Per product: how many test customers added it (``added``), how often it was in their
    top k (``recall@k``), and how often it was offered at all (``offered``).
    """
    added = added.toarray() if sp.issparse(added) else np.asarray(added)
    added = added > 0
    per_group = {str(g): ranking_metrics(top[groups == g], added[groups == g], k)
                 for g in np.unique(groups)}
    hits = np.zeros(added.shape[1], dtype=np.int64)
    offered = np.zeros(added.shape[1], dtype=np.int64)
    for j in range(min(k, top.shape[1])):
        column = top[:, j]
        valid = column >= 0
        np.add.at(offered, column[valid], 1)
        np.add.at(hits, column[valid], added[np.flatnonzero(valid), column[valid]])
    n_added = added.sum(axis=0)
    per_product = {
        str(p): {"added": int(n_added[i]), "offered": int(offered[i]),
                 f"recall@{k}": float(hits[i] / n_added[i]) if n_added[i] else None}
        for i, p in enumerate(products)
    }
    return per_group, per_product
