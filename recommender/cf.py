"""A thin typed wrapper around implicit: ALS or item-kNN on the customer x product matrix.

It works in external ids at its edges, scores with numpy (implicit's batch ``recommend``
is an order of magnitude slower for few products and many customers), and never lets
implicit's sentinel scores or ``-1`` ids escape.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import ItemItemRecommender, normalize

from . import columns as C
from .config import CFConfig
from .exceptions import NotFittedError
from .ids import IdMap
from .topk import top_k

log = logging.getLogger(__name__)


class CFModel:
    """Collaborative filtering on holdings, in the orientation customers x products."""

    def __init__(self, config: CFConfig | None = None) -> None:
        self.config = config or CFConfig()
        self.customers: IdMap | None = None
        self.products: IdMap | None = None
        self.user_items: sp.csr_matrix | None = None
        self._als: AlternatingLeastSquares | None = None
        self._similarity: sp.csr_matrix | None = None

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
            self._als = model
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

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Dense scores (len(rows) x n_products) of customers at these model positions."""
        self._require_fitted()
        rows = np.asarray(rows, dtype=np.int64)
        if self._als is not None:
            return self._als.user_factors[rows] @ self._als.item_factors.T
        return _dense(self.user_items[rows] @ self._similarity)

    def fold_in_scores(self, user_items: sp.csr_matrix) -> np.ndarray:
        """Scores for customers described only by their holdings (changed or new customers)."""
        self._require_fitted()
        user_items = sp.csr_matrix(user_items, dtype=np.float32)
        if self._als is not None:
            factors = self._als.recalculate_user(np.arange(user_items.shape[0]), user_items)
            return factors @ self._als.item_factors.T
        return _dense(user_items @ self._similarity)

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
            _, top, _ = self._als.explain(0, row, int(product), N=n)
            pairs = [(int(item), float(score)) for item, score in top]
        else:
            held = row.indices
            weights = row.data * _dense(self._similarity[held][:, [int(product)]]).ravel()
            pairs = [(int(i), float(w)) for i, w in zip(held, weights, strict=True)]
        return sorted([p for p in pairs if p[1] > 0], key=lambda p: -p[1])[:n]

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
            model._als = als
        else:
            model._similarity = state["similarity"]
        model.customers, model.products, model.user_items = customers, products, user_items
        return model


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
