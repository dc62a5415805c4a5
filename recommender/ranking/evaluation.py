"""Metrics of rankings: per customer (Kaggle's AP@k, MAP@1, recall, precision, NDCG) and
per product (AUC and lift of the customers ranked for it).

Per-customer inputs are the ranked product positions per customer (``-1`` pads short lists)
and a boolean matrix of what each customer actually added. On a catalog of a few products
MAP@5 and recall@5 saturate (every method offers everything); MAP@1 and the per-product
AUC and lift do not, so every report carries them too.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata


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
        return {"customers": 0, f"map@{k}": 0.0, "map@1": 0.0, f"precision@{k}": 0.0,
                f"recall@{k}": 0.0, f"ndcg@{k}": 0.0, "coverage": 0.0}
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
        "map@1": float(hits[:, 0].mean()),
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


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (tied scores count a half), None without both classes."""
    labels = np.asarray(labels, dtype=bool)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)  # average ranks: a tie is worth a half whatever the order
    return float((ranks[labels].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def lift(scores: np.ndarray, labels: np.ndarray, share: float = 0.1) -> float | None:
    """Take-up rate among the ``share`` best-scored over the rate among all.

    Customers tied at the cut count by the fraction of their group that fits, so neither
    the order of the file nor a last-bit rounding difference can move the figure.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if len(labels) == 0 or labels.sum() == 0:
        return None
    n = max(int(round(share * len(labels))), 1)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ordered, hits = np.asarray(scores)[order], labels[order]
    threshold = ordered[n - 1]
    above = ordered > threshold
    tied = ordered == threshold
    expected = hits[above].sum() + (n - above.sum()) * hits[tied].mean()
    return float((expected / n) / labels.mean())


def product_metrics(scores: np.ndarray, labels: np.ndarray, candidates: np.ndarray,
                    products: np.ndarray | list[str], share: float = 0.1) -> dict:
    """Per product, among its candidates (customers it may be offered to): AUC, lift in
    the top ``share`` and the number of candidates and positives; and their means over the
    products with both classes (``mean_auc``, ``mean_lift``)."""
    per_product, aucs, lifts = {}, [], []
    labels, candidates = np.asarray(labels, dtype=bool), np.asarray(candidates, dtype=bool)
    for j, product in enumerate(products):
        rows = candidates[:, j]
        y, s = labels[rows, j], scores[rows, j]
        figures = {"candidates": int(rows.sum()), "positives": int(y.sum()),
                   "auc": auc(s, y), f"lift@{share:g}": lift(s, y, share)}
        per_product[str(product)] = figures
        if figures["auc"] is not None:
            aucs.append(figures["auc"])
            lifts.append(figures[f"lift@{share:g}"])
    return {"mean_auc": float(np.mean(aucs)) if aucs else None,
            f"mean_lift@{share:g}": float(np.mean(lifts)) if lifts else None,
            "by_product": per_product}
