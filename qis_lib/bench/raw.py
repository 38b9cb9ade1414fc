"""The exact floor: numpy top-k over the benchmark's own matrix, each filter's rows found
before the clock starts. No index can be exact and faster per query at small N; past
about 100k only an index keeps p99 in single milliseconds.

(The engines' own calls, for the router-overhead ratio, are each store's
`native_query_fn`.)
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..stores.exact import top_k_rows


def numpy_query_fn(matrix: np.ndarray, masks: Sequence[np.ndarray], queries: np.ndarray, k: int) -> Callable[[int], Any]:
    """fn(j): exact top-k for query j, its filter's rows found before timing."""
    rows_of: dict[int, np.ndarray] = {}
    rows = [rows_of.setdefault(id(m), np.flatnonzero(m)) for m in masks]
    return lambda j: top_k_rows(matrix, queries[j], rows[j], k)[0]
