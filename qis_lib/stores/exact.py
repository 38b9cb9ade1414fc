"""Exact top-k by cosine: the reference every index is measured against."""
from __future__ import annotations

import numpy as np


def top_k_rows(matrix: np.ndarray, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of `matrix` among `rows` with the highest dot product with `query`, best first.

    Returns (rows, scores). One matrix-vector product, an argpartition, and a
    stable sort of the k kept, so ties keep the order of `rows`.
    """
    rows = np.asarray(rows)
    if len(rows) == 0 or k <= 0:
        return rows[:0], np.zeros(0, dtype=np.float32)
    scores = (matrix @ query)[rows]  # one contiguous product beats gathering the rows first
    k = min(k, len(rows))
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return rows[best], scores[best]
