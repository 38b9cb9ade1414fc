"""Qdrant through qdrant-client: local mode (":memory:" or a path), a server, or a cluster.

Local mode is qdrant-client's pure-Python stand-in for the engine (exact search,
filters checked in Python, payload indexes ignored); it is fine for demos and tests.
For a cluster give several node URLs: qdrant-client talks to one URL and does not
fail over (qdrant/qdrant-client#136), so this class moves to the next node itself
when the current one stops answering. Writes are idempotent upserts by packet id,
so sending one again to another node is safe.

Hybrid search (`hybrid=True`) is the same as qdrant-edge's, through qdrant-client: a
"bm25" sparse vector with the IDF modifier beside the dense one, and one `query_points`
with a dense and a BM25 prefetch (each under the filter) fused by RRF. Local mode and a
server take the same request.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import numpy as np

from .bm25 import SPARSE_NAME, TEXT_FIELD, Bm25Encoder, HybridParams
from .contract import Capabilities, QueryFilter, Store, StoreBusyError, check_dim, check_uuid_ids


def qdrant_filter(flt: QueryFilter):
    """The router's filter as a qdrant-client `models.Filter`."""
    from qdrant_client import models

    must = [
        models.FieldCondition(key="expires_at", range=models.Range(gt=flt.now)),
        models.FieldCondition(key="confidence", range=models.Range(gte=flt.min_confidence)),
    ]
    if flt.domain is not None:
        must.append(models.FieldCondition(key="domain_tags", match=models.MatchValue(value=flt.domain)))
    must_not = None
    if flt.exclude_agent is not None:
        must_not = [models.FieldCondition(key="agent_id", match=models.MatchValue(value=flt.exclude_agent))]
    return models.Filter(must=must, must_not=must_not)


def check_url(url: Any) -> str:
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"Qdrant node url must look like http://host:6333, got {url!r}")
    return url


def collection_params(dim: int, shard_number: int | None = None, replication_factor: int | None = None,
                      write_consistency_factor: int | None = None) -> dict[str, Any]:
    """Arguments for `create_collection`; cluster settings only when given."""
    from qdrant_client import models

    for key, value in (("shard_number", shard_number), ("replication_factor", replication_factor),
                       ("write_consistency_factor", write_consistency_factor)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    if replication_factor is not None and write_consistency_factor is not None \
            and write_consistency_factor > replication_factor:
        raise ValueError(f"write_consistency_factor ({write_consistency_factor}) cannot exceed "
                         f"replication_factor ({replication_factor}): no write could ever succeed")
    params: dict[str, Any] = {"vectors_config": models.VectorParams(size=dim, distance=models.Distance.COSINE)}
    for key, value in (("shard_number", shard_number), ("replication_factor", replication_factor),
                       ("write_consistency_factor", write_consistency_factor)):
        if value is not None:
            params[key] = value
    return params


def payload_indexes():
    """The payload index of each filter field (a server plans filtered searches with them)."""
    from qdrant_client import models

    return {
        "domain_tags": models.PayloadSchemaType.KEYWORD,
        "agent_id": models.PayloadSchemaType.KEYWORD,
        "confidence": models.PayloadSchemaType.FLOAT,
        "expires_at": models.PayloadSchemaType.FLOAT,
    }


def _is_unreachable(exc: Exception) -> bool:
    """True for errors that mean 'this node did not answer', where another node may."""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, UnexpectedResponse) and exc.status_code in (502, 503, 504)


class QdrantStore(Store):
    """Qdrant through qdrant-client: local mode (`location=":memory:"` or `path=`), one server
    (`url=`) or a cluster (`urls=[...]`, moving to the next node when one does not answer)."""

    name = "qdrant"

    def __init__(self, location: str | None = None, path: str | None = None, url: str | None = None,
                 urls: Sequence[str] | None = None, collection: str = "outcomes", dim: int = 384,
                 shard_number: int | None = None, replication_factor: int | None = None,
                 write_consistency_factor: int | None = None, timeout: int = 5, api_key: str | None = None,
                 payload_index: bool = True, *, hybrid: bool | None = False, rrf_k: int = HybridParams.rrf_k,
                 prefetch: int = HybridParams.prefetch, bm25_avg_len: float = HybridParams.avg_len):
        from qdrant_client import QdrantClient

        given = [k for k, v in (("location", location), ("path", path), ("url", url), ("urls", urls)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give qdrant one of location, path, url, urls; got {given}")
        self.dim = check_dim(dim)
        self.collection_name = collection
        if url is not None:
            urls = [url]
        if urls is not None:
            if isinstance(urls, str) or not urls:
                raise ValueError(f"urls must be a non-empty list of node urls, got {urls!r}")
            self.urls = [check_url(u) for u in urls]
            self._clients = [QdrantClient(url=u, timeout=timeout, api_key=api_key, check_compatibility=False) for u in self.urls]
            self.capabilities = Capabilities(persistent=True, shared=True, server=True)
            self._lock = None  # a server handles concurrent requests itself
        else:
            self.urls = []
            try:
                client = QdrantClient(path=str(path)) if path is not None else QdrantClient(location=location or ":memory:")
            except RuntimeError as exc:
                if "already accessed" in str(exc):
                    raise StoreBusyError(
                        f"{path} is open in another qdrant-client (local mode allows one process at a time); "
                        "close it, or use a Qdrant server to share a store") from None
                raise
            self._clients = [client]
            self.capabilities = Capabilities(persistent=path is not None)
            # Local mode has no locking between threads (qdrant-client#1193).
            self._lock = threading.RLock()
        self._active = 0
        if hybrid not in (None, True, False):
            raise ValueError(f"hybrid must be True, False or None (follow the stored collection), got {hybrid!r}")
        self.hybrid_params = HybridParams(rrf_k=rrf_k, prefetch=prefetch, avg_len=bm25_avg_len)
        self.params = collection_params(dim, shard_number, replication_factor, write_consistency_factor)
        self._hybrid_wanted = hybrid
        hybrid = self._call(self._ensure_collection, payload_index)
        self.capabilities = Capabilities(**{**vars(self.capabilities), "hybrid": hybrid})
        self._bm25 = Bm25Encoder(bm25_avg_len) if hybrid else None

    @property
    def client(self):
        return self._clients[self._active]

    @property
    def active_url(self) -> str | None:
        """The node url that answered the last call (None in local mode)."""
        return self.urls[self._active] if self.urls else None

    def _call(self, fn: Callable, *args, **kwargs):
        """Run fn(client, ...) on the current node, moving on to the next node if it is down."""
        if self._lock is not None:
            with self._lock:
                return fn(self.client, *args, **kwargs)
        errors = []
        for step in range(len(self._clients)):
            index = (self._active + step) % len(self._clients)
            try:
                result = fn(self._clients[index], *args, **kwargs)
            except Exception as exc:
                if not _is_unreachable(exc):
                    raise
                errors.append(f"{self.urls[index]}: {type(exc).__name__}: {exc}")
                continue
            self._active = index
            return result
        raise ConnectionError("no Qdrant node answered: " + "; ".join(errors))

    def _ensure_collection(self, client, payload_index: bool) -> bool:
        """Create the collection if needed, check it; returns whether it holds the BM25 sparse vector."""
        from qdrant_client import models

        name = self.collection_name
        if not client.collection_exists(name):
            sparse = {SPARSE_NAME: models.SparseVectorParams(modifier=models.Modifier.IDF)} \
                if self._hybrid_wanted is not False else None
            try:
                client.create_collection(name, **self.params, sparse_vectors_config=sparse)
            except Exception:
                if not client.collection_exists(name):  # lost a race with another client: fine
                    raise
        info = client.get_collection(name)
        size = info.config.params.vectors.size
        if size != self.dim:
            raise ValueError(f"collection {name!r} holds {size}-d vectors, not {self.dim}-d")
        has_bm25 = SPARSE_NAME in (info.config.params.sparse_vectors or {})
        if self._hybrid_wanted is not None and self._hybrid_wanted != has_bm25:
            raise ValueError(f"collection {name!r} was created with{'' if has_bm25 else 'out'} a BM25 sparse vector, "
                             f"but hybrid={self._hybrid_wanted}; open it with hybrid={has_bm25} or hybrid=None")
        if payload_index and self.urls:  # local mode ignores payload indexes
            for field, schema in payload_indexes().items():
                if field not in (info.payload_schema or {}):
                    client.create_payload_index(name, field_name=field, field_schema=schema, wait=True)
        return has_bm25

    def check_store_ids(self, ids: list[str]) -> None:
        check_uuid_ids(ids)

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        from qdrant_client import models

        if self._bm25 is None:
            batch = models.Batch(ids=ids, vectors=vectors.tolist(), payloads=payloads)
        else:
            sparse = [models.SparseVector(**dict(zip(("indices", "values"), self._bm25.document(str(p.get(TEXT_FIELD, ""))))))
                      for p in payloads]
            batch = models.Batch(ids=ids, vectors={"": vectors.tolist(), SPARSE_NAME: sparse}, payloads=payloads)
        # wait=True: the server answers once the change has been applied, so an ack means stored.
        self._call(lambda c: c.upsert(self.collection_name, points=batch, wait=True))

    def _query(self, vector: np.ndarray, top_k: int, flt: QueryFilter,
               text: str | None = None) -> list[tuple[dict, float]]:
        query_filter = qdrant_filter(flt)
        if text is None:
            result = self._call(lambda c: c.query_points(self.collection_name, query=vector.tolist(), limit=top_k,
                                                         query_filter=query_filter, with_payload=True))
            return [(dict(p.payload or {}), float(p.score)) for p in result.points]
        from qdrant_client import models

        from .qdrant_edge import cosine

        limit = max(self.hybrid_params.prefetch, top_k)
        indices, values = self._bm25.query(text)
        prefetch = [models.Prefetch(query=vector.tolist(), filter=query_filter, limit=limit),
                    models.Prefetch(query=models.SparseVector(indices=indices, values=values), using=SPARSE_NAME,
                                    filter=query_filter, limit=limit)]
        fusion = models.RrfQuery(rrf=models.Rrf(k=self.hybrid_params.rrf_k))
        result = self._call(lambda c: c.query_points(self.collection_name, prefetch=prefetch, query=fusion, limit=top_k,
                                                     query_filter=query_filter, with_payload=True, with_vectors=[""]))
        return [(dict(p.payload or {}), cosine(vector, p.vector[""] if isinstance(p.vector, dict) else p.vector))
                for p in result.points]

    def native_query_fn(self, vectors: np.ndarray, filters: Sequence[QueryFilter], k: int):
        """`client.query_points(...)` on the current node, filters and vectors built beforehand."""
        native = [qdrant_filter(f) for f in filters]
        lists = [v.tolist() for v in vectors]
        client, collection = self.client, self.collection_name
        return lambda j: client.query_points(collection, query=lists[j], limit=k, query_filter=native[j],
                                             with_payload=True)

    def _get(self, ids: list[str]) -> dict[str, dict]:
        records = self._call(lambda c: c.retrieve(self.collection_name, ids=ids, with_payload=True))
        return {str(r.id): dict(r.payload or {}) for r in records}

    def _delete(self, ids: list[str]) -> None:
        from qdrant_client import models

        selector = models.PointIdsList(points=ids)
        self._call(lambda c: c.delete(self.collection_name, points_selector=selector, wait=True))

    def after_bulk_load(self, timeout: float = 600.0) -> None:
        """On a server, wait until the background optimizer has indexed everything (status green)."""
        if not self.urls:
            return  # local mode has no index to build
        import time

        from qdrant_client import models

        deadline = time.monotonic() + timeout
        while self._call(lambda c: c.get_collection(self.collection_name).status) != models.CollectionStatus.GREEN:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Qdrant server did not finish indexing {self.collection_name!r} "
                                   f"within {timeout}s")
            time.sleep(0.2)

    def drop_collection(self) -> None:
        """Delete this store's collection with everything in it (tests and benchmarks clean up with it)."""
        self._call(lambda c: c.delete_collection(self.collection_name))

    def count(self) -> int:
        return self._call(lambda c: c.count(self.collection_name, exact=True).count)

    def close(self) -> None:
        for client in self._clients:
            client.close()
