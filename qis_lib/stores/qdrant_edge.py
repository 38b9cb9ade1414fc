"""Qdrant Edge: the Qdrant engine itself, in-process (package qdrant-edge-py, module qdrant_edge).

HNSW and payload indexes as in a Qdrant server, no network hop. The engine has no
background optimizer: points written since the last `optimize()` are searched by
brute force, which is exact but slower, so call `optimize()` after bulk loads.

Hybrid search (`hybrid=True`): each point also holds a BM25 sparse vector of its
problem text ("bm25", IDF modifier), and a query with `text=` is one request: a dense
and a BM25 prefetch, each under the router's filter, fused by `Fusion.Rrf` in the engine.

Durability: an upsert is acknowledged once `update()` has appended it to the
write-ahead log. That survives a crash of the process (SIGKILL), not a power loss;
`flush()` (done on close) syncs to disk.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from typing import Sequence

import numpy as np

from .bm25 import SPARSE_NAME, TEXT_FIELD, Bm25Encoder, HybridParams
from .contract import Capabilities, QueryFilter, Store, StoreBusyError, check_dim, check_uuid_ids


def edge_filter(flt: QueryFilter):
    """The router's filter as a qdrant_edge `Filter`."""
    import qdrant_edge as qe

    must = [
        qe.FieldCondition("expires_at", range=qe.RangeFloat(gt=flt.now)),
        qe.FieldCondition("confidence", range=qe.RangeFloat(gte=flt.min_confidence)),
    ]
    if flt.domain is not None:
        must.append(qe.FieldCondition("domain_tags", match=qe.MatchValue(flt.domain)))
    must_not = None
    if flt.exclude_agent is not None:
        must_not = [qe.FieldCondition("agent_id", match=qe.MatchValue(flt.exclude_agent))]
    return qe.Filter(must=must, must_not=must_not)


def cosine(query: np.ndarray, stored) -> float:
    """Cosine of a query and a stored vector (Qdrant stores cosine vectors normalised)."""
    stored = np.asarray(stored, dtype=np.float32)
    return float(stored @ query / max(float(np.linalg.norm(query) * np.linalg.norm(stored)), 1e-12))


class QdrantEdgeStore(Store):
    """The Qdrant engine in-process: one shard in `path` (a temporary one if None), payload
    indexes on the filter fields, HNSW built by `optimize()` (or `after_bulk_load()`).

    hybrid: True keeps a BM25 sparse vector beside the dense one (see the module
    docstring); False, dense only; None, what an existing folder holds (a new one: hybrid).
    rrf_k, prefetch, bm25_avg_len: the fusion's parameters (`HybridParams`)."""

    name = "qdrant-edge"

    def __init__(self, path: str | None = None, dim: int = 384, payload_index: bool = True, hnsw_ef: int | None = None,
                 *, hybrid: bool | None = False, rrf_k: int = HybridParams.rrf_k, prefetch: int = HybridParams.prefetch,
                 bm25_avg_len: float = HybridParams.avg_len):
        import qdrant_edge as qe

        self.dim = check_dim(dim)
        self._tmpdir = None
        if path is None:  # a throwaway store, removed on close
            self._tmpdir = tempfile.mkdtemp(prefix="qis-edge-")
            path = os.path.join(self._tmpdir, "shard")
        self.path = str(path)
        if hybrid not in (None, True, False):
            raise ValueError(f"hybrid must be True, False or None (follow the stored folder), got {hybrid!r}")
        self.hybrid_params = HybridParams(rrf_k=rrf_k, prefetch=prefetch, avg_len=bm25_avg_len)
        exists = os.path.isdir(os.path.join(self.path, "wal"))
        hybrid = self._open(qe, dim, hybrid, exists)
        self.capabilities = Capabilities(persistent=self._tmpdir is None, hybrid=hybrid)
        self._bm25 = Bm25Encoder(bm25_avg_len) if hybrid else None
        stored = self.shard.info()
        if payload_index:
            schema = {"domain_tags": qe.PayloadSchemaType.Keyword, "agent_id": qe.PayloadSchemaType.Keyword,
                      "confidence": qe.PayloadSchemaType.Float, "expires_at": qe.PayloadSchemaType.Float}
            for field, kind in schema.items():
                if field not in stored.payload_schema:
                    self.shard.update(qe.UpdateOperation.create_field_index(field, kind))
        self._params = qe.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None
        self._lock = threading.RLock()  # close() must not race a query

    def _open(self, qe, dim: int, hybrid: bool | None, exists: bool) -> bool:
        """Create or load the shard (hybrid=None: as the folder holds it, a new one hybrid). Returns hybrid."""
        def config(with_bm25: bool):
            sparse = {SPARSE_NAME: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if with_bm25 else None
            return qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
                                 sparse_vectors=sparse)

        # A shard loads under a config without its sparse vector, not under one with a sparse vector
        # it lacks: so an existing folder is tried with BM25 first, and that says what it holds.
        for with_bm25 in ([hybrid is not False] if not exists else [True, False]):
            try:
                # load() with a config checks that the stored vectors have our size.
                self.shard = qe.EdgeShard.load(self.path, config(with_bm25)) if exists \
                    else qe.EdgeShard.create(self.path, config(with_bm25))
                break
            except Exception as exc:
                if "WouldBlock" in str(exc):
                    raise StoreBusyError(f"{self.path} is open in another qdrant-edge shard (one opener per folder)") from None
                if "incompatible" not in str(exc):
                    raise
                if with_bm25 and exists:
                    continue
                raise ValueError(f"qdrant-edge store {self.path} does not hold {dim}-d cosine vectors: {exc}") from None
        if hybrid is not None and hybrid != with_bm25:
            self.shard.close()
            raise ValueError(f"qdrant-edge store {self.path} was created with{'' if with_bm25 else 'out'} a BM25 sparse "
                             f"vector, but hybrid={hybrid}; open it with hybrid={with_bm25} or hybrid=None")
        return with_bm25

    def check_store_ids(self, ids: list[str]) -> None:
        check_uuid_ids(ids)

    def _request(self, vector: np.ndarray, top_k: int, flt: QueryFilter):
        import qdrant_edge as qe

        return qe.QueryRequest(limit=top_k, query=qe.Query.Nearest(vector.tolist()), filter=edge_filter(flt),
                               with_payload=True, params=self._params)

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        import qdrant_edge as qe

        if self._bm25 is None:
            points = [qe.Point(pid, v.tolist(), p) for pid, v, p in zip(ids, vectors, payloads)]
        else:
            points = [qe.Point(pid, {"": v.tolist(), SPARSE_NAME: self._bm25.document_edge(str(p.get(TEXT_FIELD, "")))}, p)
                      for pid, v, p in zip(ids, vectors, payloads)]
        with self._lock:
            self.shard.update(qe.UpdateOperation.upsert_points(points))

    def _hybrid_request(self, vector: np.ndarray, text: str, top_k: int, flt: QueryFilter):
        """One request: dense and BM25 prefetches, each under the filter, fused by RRF in the engine."""
        import qdrant_edge as qe

        native = edge_filter(flt)
        limit = max(self.hybrid_params.prefetch, top_k)
        prefetches = [qe.Prefetch(limit=limit, query=qe.Query.Nearest(vector.tolist()), filter=native,
                                  params=self._params),
                      qe.Prefetch(limit=limit, query=qe.Query.Nearest(self._bm25.query_edge(text), using=SPARSE_NAME),
                                  filter=native)]
        return qe.QueryRequest(limit=top_k, query=qe.Fusion.Rrf(k=self.hybrid_params.rrf_k), prefetches=prefetches,
                               filter=native, with_payload=True, with_vector=True)

    def _query(self, vector: np.ndarray, top_k: int, flt: QueryFilter,
               text: str | None = None) -> list[tuple[dict, float]]:
        if text is None:
            request = self._request(vector, top_k, flt)
            with self._lock:
                hits = self.shard.query(request)
            return [(dict(h.payload or {}), float(h.score)) for h in hits]
        request = self._hybrid_request(vector, text, top_k, flt)
        with self._lock:
            hits = self.shard.query(request)
        return [(dict(h.payload or {}), cosine(vector, h.vector[""])) for h in hits]

    def lexical_query(self, text: str, top_k: int, flt: QueryFilter) -> list[tuple[dict, float]]:
        """BM25 alone (the hybrid's lexical branch), for measuring what each branch contributes."""
        import qdrant_edge as qe

        if self._bm25 is None:
            raise ValueError("lexical_query needs a store opened with hybrid=True")
        request = qe.QueryRequest(limit=top_k, query=qe.Query.Nearest(self._bm25.query_edge(text), using=SPARSE_NAME),
                                  filter=edge_filter(flt), with_payload=True)
        with self._lock:
            hits = self.shard.query(request)
        return [(dict(h.payload or {}), float(h.score)) for h in hits]

    def _get(self, ids: list[str]) -> dict[str, dict]:
        with self._lock:
            records = self.shard.retrieve(ids, with_payload=True, with_vector=False)
        return {str(r.id): dict(r.payload or {}) for r in records}

    def _delete(self, ids: list[str]) -> None:
        import qdrant_edge as qe

        with self._lock:
            self.shard.update(qe.UpdateOperation.delete_points(ids))

    def native_query_fn(self, vectors: np.ndarray, filters: Sequence[QueryFilter], k: int):
        """`shard.query(request)` with every request built beforehand."""
        requests = [self._request(v, k, f) for v, f in zip(vectors, filters)]
        shard = self.shard
        return lambda j: shard.query(requests[j])

    def after_bulk_load(self) -> None:
        """Build the HNSW and payload indexes: the engine has no background optimizer."""
        self.optimize()

    def count(self) -> int:
        import qdrant_edge as qe

        with self._lock:
            return self.shard.count(qe.CountRequest(exact=True))

    def optimize(self) -> bool:
        """Build HNSW and payload indexes over everything written so far (synchronous)."""
        with self._lock:
            return self.shard.optimize()

    def flush(self) -> None:
        with self._lock:
            self.shard.flush()

    def close(self) -> None:
        """Flush the write-ahead log and segments to disk, then release the folder."""
        with self._lock:
            if self.shard is not None:
                self.shard.flush()
                self.shard.close()
                self.shard = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
