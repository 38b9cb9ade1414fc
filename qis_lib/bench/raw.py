"""The backends' own query calls, without qis_lib, for the router-overhead ratio.

Everything that can be built before the clock starts is built here: the native filter
and request object of every query, and the vector in the form the client takes. The
timed call is then only the client's own: `shard.query(request)` (qdrant-edge),
`client.query_points(...)` (qdrant-client), `collection.query(...)` (chroma), and for
the memory store, which has no client, the exact numpy search it does on the same
matrix with the filter's rows precomputed. That last one is also the exact floor.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..transports.base import QueryFilter


def exact_search(matrix: np.ndarray, rows: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Top-k rows of `matrix` among `rows` by dot product: one matmul, argpartition, sort of k."""
    scores = matrix @ query
    sub = scores[rows]
    if len(sub) == 0:
        return rows[:0]
    k = min(k, len(sub))
    best = np.argpartition(-sub, k - 1)[:k]
    return rows[best[np.argsort(-sub[best], kind="stable")]]


def numpy_query_fn(matrix: np.ndarray, masks: Sequence[np.ndarray], queries: np.ndarray, k: int) -> Callable[[int], Any]:
    """fn(j): exact top-k for query j, its filter's rows found before timing."""
    rows_of: dict[int, np.ndarray] = {}
    rows = [rows_of.setdefault(id(m), np.flatnonzero(m)) for m in masks]
    return lambda j: exact_search(matrix, rows[j], queries[j], k)


def raw_query_fn(transport, matrix: np.ndarray, masks: Sequence[np.ndarray], queries: np.ndarray,
                 filters: Sequence[QueryFilter], k: int) -> Callable[[int], Any]:
    """fn(j): the backend's own call for query j, for any transport qis_lib has."""
    name = transport.name
    if name == "memory":
        return numpy_query_fn(matrix, masks, queries, k)
    if name == "qdrant-edge":
        import qdrant_edge as qe

        from ..transports.qdrant_edge import edge_filter

        params = getattr(transport, "_params", None)  # the transport's search params (None at defaults)
        requests = [qe.QueryRequest(limit=k, query=qe.Query.Nearest(q.tolist()), filter=edge_filter(f),
                                    with_payload=True, params=params) for q, f in zip(queries, filters)]
        shard = transport.shard
        return lambda j: shard.query(requests[j])
    if name == "qdrant":
        from ..transports.qdrant import qdrant_filter

        native = [qdrant_filter(f) for f in filters]
        vectors = [q.tolist() for q in queries]
        client, collection = transport.client, transport.collection_name
        return lambda j: client.query_points(collection, query=vectors[j], limit=k, query_filter=native[j],
                                             with_payload=True)
    if name == "chroma":
        from ..transports.chroma import chroma_where

        wheres = [chroma_where(f) for f in filters]
        batches = [q[None, :] for q in queries]
        collection = transport.collection
        return lambda j: collection.query(query_embeddings=batches[j], n_results=k, where=wheres[j],
                                          include=["metadatas", "distances"])
    raise ValueError(f"no raw call known for transport {name!r}")
