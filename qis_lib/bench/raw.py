"""The engines' own calls, for measuring what qis_lib adds, and the exact floor.

- `engine_call(store, vectors, filters, k, texts=, payloads=)`: fn(j), the store's engine
  answering query j with its request built before timing (the store's `native_query_fn`;
  with `texts`, the same fused BM25 + dense request the store sends for `query(text=)`),
  then every hit's payload read as a dict, each value touched, as the router's `_packets`
  reads them. So router minus raw compares like work: the same answer, the same payloads.
- `numpy_query_fn`: numpy top-k over the benchmark's own matrix, each filter's rows found
  before the clock starts. No index can be exact and faster per query at small N; past
  about 100k only an index keeps p99 in single milliseconds.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..stores.contract import QueryFilter, Store
from ..stores.exact import top_k_rows

# The payload dicts of an engine's answer, per store: fn(answer, the payloads loaded, in row order).
# qdrant-edge builds a new dict on every read of `.payload`, so each hit is read once, as the store does.
HIT_PAYLOADS: dict[str, Callable[[Any, Sequence[dict]], Iterable[dict]]] = {
    "memory": lambda answer, loaded: (loaded[r] for r in answer[0]),  # its rows are the load order
    "qdrant-edge": lambda answer, loaded: (hit.payload for hit in answer),
    "qdrant": lambda answer, loaded: (point.payload for point in answer.points),
    "chroma": lambda answer, loaded: answer["metadatas"][0],
}


def reads_payloads(store: Store) -> bool:
    """Whether `engine_call` reads this store's payloads (a store missing from HIT_PAYLOADS is
    timed as its `native_query_fn` answers, whatever that holds)."""
    return store.name in HIT_PAYLOADS


def hybrid_native_fn(store: Store, vectors: np.ndarray, texts: Sequence[str], filters: Sequence[QueryFilter],
                     k: int) -> Callable[[int], Any] | None:
    """fn(j): the fused request the Qdrant stores send for `query(vectors[j], k, filters[j],
    text=texts[j])`, built beforehand, sent straight to the engine. None for other stores."""
    if store.name not in ("qdrant-edge", "qdrant") or not store.capabilities.hybrid:
        return None
    requests = [store._hybrid_request(v, t, k, f) for v, t, f in zip(vectors, texts, filters)]
    if store.name == "qdrant-edge":
        shard = store.shard
        return lambda j: shard.query(requests[j])
    client, collection = store.client, store.collection_name
    return lambda j: client.query_points(collection, **requests[j])


def engine_call(store: Store, vectors: np.ndarray, filters: Sequence[QueryFilter], k: int,
                texts: Sequence[str] | None = None, payloads: Sequence[dict] = ()) -> Callable[[int], Any] | None:
    """fn(j): the engine's own answer to query j and the reading of its hits' payloads (see the
    module docstring). `texts`: hybrid queries; `payloads`: what was loaded, in order (the
    memory store's answer is row numbers). None where the store has no such call."""
    native = (store.native_query_fn(vectors, filters, k) if texts is None
              else hybrid_native_fn(store, vectors, texts, filters, k))
    read = HIT_PAYLOADS.get(store.name)
    if native is None or read is None:
        return native

    def call(j):
        answer = native(j)
        for payload in read(answer, payloads):
            tuple(payload.values())
        return answer

    return call


def numpy_query_fn(matrix: np.ndarray, masks: Sequence[np.ndarray], queries: np.ndarray, k: int) -> Callable[[int], Any]:
    """fn(j): exact top-k for query j, its filter's rows found before timing."""
    rows_of: dict[int, np.ndarray] = {}
    rows = [rows_of.setdefault(id(m), np.flatnonzero(m)) for m in masks]
    return lambda j: top_k_rows(matrix, queries[j], rows[j], k)[0]
