"""Top-k selection over dense score matrices, shared by serving, batch and evaluation."""

from __future__ import annotations

import numpy as np

# implicit marks filtered items with about -3.4e38; anything this low is "not offerable".
NOT_OFFERABLE = -1e30


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores) of the k best entries per row, best first, ties by position.

    Entries at or below ``NOT_OFFERABLE`` (or -inf) are returned with position -1.
    """
    k = max(0, min(k, scores.shape[1]))
    if k == 0:
        empty = np.empty((scores.shape[0], 0))
        return empty.astype(np.int64), empty.astype(scores.dtype)
    # Sort by (-score, position) so equal scores always come out in the same order. Bank
    # catalogs hold tens of products, so a full sort per row costs little.
    positions = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((positions, -scores), axis=1)[:, :k]
    chosen = np.take_along_axis(scores, order, axis=1)
    order = np.where(chosen > NOT_OFFERABLE, order, -1)
    return order.astype(np.int64), chosen

