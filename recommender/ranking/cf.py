"""A thin typed wrapper around implicit: ALS or item-kNN on the customer x product matrix.

It works in external ids at its edges, scores with numpy (implicit's batch ``recommend``
is an order of magnitude slower for few products and many customers), and never lets
implicit's sentinel scores or ``-1`` ids escape.

implicit fits the model. Serving computes with ``reproducible``: ALS scores, fold-in factors
and explanations are the same bits for one customer at the counter, a chunk of a campaign or
another server's CPU, so no decision can depend on which of them computed it. Item-kNN
scores are sparse products, summed row by row in index order: already the same everywhere.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import ItemItemRecommender, normalize

from ..data import columns as C
from ..data.ids import IdMap
from ..exceptions import NotFittedError
from .config import CFConfig
from .reproducible import cholesky, cholesky_solve, dot_rows, fixed_point, grid_bits
from .topk import top_k

log = logging.getLogger(__name__)

_FOLD_IN_BLOCK = 1 << 22  # elements of the (customers, k, k) systems solved at once


class CFModel:
    """Collaborative filtering on holdings, in the orientation customers x products."""

    def __init__(self, config: CFConfig | None = None) -> None:
        self.config = config or CFConfig()
        self.customers: IdMap | None = None
        self.products: IdMap | None = None
        self.user_items: sp.csr_matrix | None = None
        self._als: AlternatingLeastSquares | None = None
        self._similarity: sp.csr_matrix | None = None
        self._item_grid: tuple[np.ndarray, np.ndarray] | None = None  # item factors, fixed point
        self._gram: np.ndarray | None = None  # Y^T Y + regularization * I, for fold-in
        self._explained: tuple[bytes, np.ndarray] | None = None  # last customer's shares

    @property
    def is_fitted(self) -> bool:
        return self.user_items is not None

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("the CF model is not fitted: call fit() or load an artifact")

    def fit(self, user_items: sp.csr_matrix, customers: IdMap, products: IdMap) -> CFModel:
        """Fit on a (n_customers x n_products) CSR matrix of confidences."""
        expected = (len(customers), len(products))
        if user_items.shape != expected:
            raise ValueError(f"user_items has shape {user_items.shape}, expected {expected}"
                             " (customers x products)")
        user_items = sp.csr_matrix(user_items, dtype=np.float32)
        cfg = self.config
        if cfg.kind == "als":
            model = AlternatingLeastSquares(
                factors=cfg.factors, regularization=cfg.regularization, alpha=cfg.alpha,
                iterations=cfg.iterations, random_state=cfg.random_state, num_threads=1,
            )
            model.fit(user_items, show_progress=False)
            self._use_als(model)
        else:
            # Cosine item-kNN. implicit's CosineRecommender hands a COO matrix to its own
            # fit (and warns); normalising here and passing CSR is the same computation.
            model = ItemItemRecommender(K=cfg.neighbours, num_threads=1)
            model.fit(normalize(user_items.T).T.tocsr(), show_progress=False)
            self._similarity = sp.csr_matrix(model.similarity, dtype=np.float32)
        self.customers, self.products, self.user_items = customers, products, user_items
        log.info("fitted %s on %d customers x %d products (%d holdings)", cfg.kind,
                 *user_items.shape, user_items.nnz)
        return self

    def _use_als(self, als: AlternatingLeastSquares) -> None:
        """Serve ``als``: its item factors on the fixed-point grid of ``dot_rows``, and the
        Gram matrix every fold-in starts from, computed once."""
        items = als.item_factors
        self._als = als
        self._item_grid = fixed_point(items, grid_bits(items.shape[1]))
        gram = dot_rows(items.T, items.T)
        self._gram = gram + np.diag(np.full(len(gram), float(als.regularization)))

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Dense scores (len(rows) x n_products) of customers at these model positions: a
        customer's row is the same bits in any batch (``reproducible``)."""
        self._require_fitted()
        rows = np.asarray(rows, dtype=np.int64)
        if self._als is not None:
            return dot_rows(self._als.user_factors[rows], None, self._item_grid)
        return _dense(self.user_items[rows] @ self._similarity)

    def fold_in_scores(self, user_items: sp.csr_matrix) -> np.ndarray:
        """Scores for customers described only by their holdings (changed or new customers)."""
        self._require_fitted()
        if self._als is not None:
            return dot_rows(self.fold_in_factors(user_items), None, self._item_grid)
        return _dense(sp.csr_matrix(user_items, dtype=np.float32) @ self._similarity)

    def fold_in_factors(self, user_items: sp.csr_matrix) -> np.ndarray:
        """ALS customer factors recomputed from holdings, as implicit's ``recalculate_user``
        defines them (one least-squares step against the item factors), solved by
        ``reproducible`` so a customer gets the same factors alone or in a batch."""
        self._require_fitted()
        user_items = _canonical(user_items)
        k = self._gram.shape[0]
        block = max(1, _FOLD_IN_BLOCK // (k * k))
        factors = np.empty((user_items.shape[0], k), dtype=np.float64)
        for start in range(0, user_items.shape[0], block):
            part = slice(start, start + block)
            lower, rhs = self._normal_equations(user_items[part])
            factors[part] = cholesky_solve(lower, rhs)
        return factors

    def _normal_equations(self, user_items: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Per customer, the Cholesky factor of ``Y^T C Y + regularization * I`` and the
        right-hand side ``Y^T C p`` of implicit's least-squares step (confidence
        ``C = alpha * holdings``; a negative confidence counts in the system only).

        Each customer's sums run over their products in index order, element-wise: the
        same bits in any batch."""
        items = self._als.item_factors.astype(np.float64)
        n, k = user_items.shape[0], items.shape[1]
        system = np.broadcast_to(self._gram, (n, k, k)).copy()
        rhs = np.zeros((n, k))
        confidence = float(self._als.alpha) * user_items.data.astype(np.float64)
        counts = np.diff(user_items.indptr)
        for t in range(int(counts.max(initial=0))):  # each customer's t-th product
            who = np.flatnonzero(counts > t)
            at = user_items.indptr[who] + t
            factor, c = items[user_items.indices[at]], confidence[at]
            rhs[who] += np.maximum(c, 0.0)[:, None] * factor
            system[who] += (np.abs(c) - 1.0)[:, None, None] * (factor[:, :, None]
                                                                * factor[:, None, :])
        empty = counts == 0  # implicit gives them zero factors: a zero right-hand side
        system[empty] = np.eye(k)
        return cholesky(system), rhs

    def explain(self, user_items_row: sp.csr_matrix, product: int,
                n: int = 3) -> list[tuple[int, float]]:
        """Held products (positions) that contribute most to one product's score, largest first.

        Only positive contributions are kept: a reason must argue for the offer.
        """
        self._require_fitted()
        row = sp.csr_matrix(user_items_row, dtype=np.float32)
        if row.nnz == 0:
            return []
        if self._als is not None:
            pairs = self._als_contributions(row, int(product))
        else:
            held = row.indices
            weights = row.data * _dense(self._similarity[held][:, [int(product)]]).ravel()
            pairs = [(int(i), float(w)) for i, w in zip(held, weights, strict=True)]
        return sorted([p for p in pairs if p[1] > 0], key=lambda p: -p[1])[:n]

    def _als_contributions(self, row: sp.csr_matrix, product: int) -> list[tuple[int, float]]:
        """Each held product's share of ``product``'s ALS score (Hu, Koren and Volinsky,
        section 5, as implicit's ``explain``): ``c_j * y_product^T W_u y_j``. Computed for
        every product at once and kept for the customer's next offer: an answer explains
        several."""
        row = _canonical(row)
        key = row.indices.tobytes() + row.data.tobytes()
        confidence = float(self._als.alpha) * row.data.astype(np.float64)
        cached = self._explained  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] != key:
            items = self._als.item_factors
            lower = self._normal_equations(row)[0]
            weighted = cholesky_solve(lower, items.T[None].astype(np.float64))[0]  # (k, p)
            cached = (key, dot_rows(weighted.T, items[row.indices]) * confidence)
            self._explained = cached
        shares = cached[1][product]
        return [(int(i), float(s)) for i, s, c in zip(row.indices, shares, confidence,
                                                       strict=True) if c >= 0]

    def recommend(self, customer_ids: list[str], k: int = 5) -> pd.DataFrame:
        """Top-k unheld products per known customer: [customer_id, product_id, score, rank]."""
        self._require_fitted()
        rows = self.customers.to_internal(customer_ids)
        scores = np.where(self.user_items[rows].toarray() > 0, -np.inf, self.scores(rows))
        return top_k_frame(scores, self.customers.to_external(rows), self.products, k)

    def to_state(self) -> dict[str, Any]:
        """Plain arrays and parameters, for ``artifacts`` to store (memory-mappable)."""
        self._require_fitted()
        state = {"config": self.config.__dict__.copy(), "user_items": self.user_items}
        if self._als is not None:
            state["user_factors"] = np.ascontiguousarray(self._als.user_factors)
            state["item_factors"] = np.ascontiguousarray(self._als.item_factors)
        else:
            state["similarity"] = self._similarity
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], customers: IdMap, products: IdMap) -> CFModel:
        """Rebuild a fitted model from ``to_state`` output, checking every shape."""
        model = cls(CFConfig(**state["config"]))
        user_items = state["user_items"]
        expected = (len(customers), len(products))
        if user_items.shape != expected:
            raise ValueError(f"stored matrix has shape {user_items.shape}, expected {expected}")
        if model.config.kind == "als":
            cfg = model.config
            als = AlternatingLeastSquares(factors=cfg.factors, regularization=cfg.regularization,
                                          alpha=cfg.alpha, iterations=cfg.iterations,
                                          random_state=cfg.random_state, num_threads=1)
            # Customer factors stay memory-mapped (shared by server workers); the small item
            # factors are copied because implicit's fold-in needs a writable buffer.
            als.user_factors = state["user_factors"]
            als.item_factors = np.array(state["item_factors"], dtype=np.float32)
            if als.user_factors.shape[0] != expected[0] or als.item_factors.shape[0] != expected[1]:
                raise ValueError("stored factors do not match the id maps")
            model._use_als(als)
        else:
            model._similarity = state["similarity"]
        model.customers, model.products, model.user_items = customers, products, user_items
        return model


def _canonical(user_items: sp.spmatrix) -> sp.csr_matrix:
    """CSR float32 with sorted, summed indices (a copy only when needed): the order in which
    a customer's products are summed must not depend on how the matrix was built."""
    user_items = sp.csr_matrix(user_items, dtype=np.float32)
    if not user_items.has_canonical_format:
        user_items = user_items.copy()
        user_items.sum_duplicates()
    return user_items


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def top_k_frame(scores: np.ndarray, customer_ids: np.ndarray, products: IdMap,
                k: int) -> pd.DataFrame:
    """Long frame of the k best offerable scores per row; -inf marks products not to offer."""
    top, top_scores = top_k(scores, k)
    rows, ranks = np.nonzero(top >= 0)
    return pd.DataFrame({
        C.CUSTOMER_ID: np.asarray(customer_ids)[rows],
        C.PRODUCT_ID: products.to_external(top[rows, ranks]),
        C.SCORE: top_scores[rows, ranks].astype(np.float64),
        C.RANK: ranks + 1,
    })
