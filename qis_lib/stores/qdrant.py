"""Qdrant through qdrant-client: local mode (":memory:" or a path), a server, or a cluster.

Local mode is qdrant-client's pure-Python stand-in for the engine (exact search,
filters checked in Python, payload indexes ignored); it is fine for demos and tests.
For a cluster give several node URLs: qdrant-client talks to one URL and does not
fail over (qdrant/qdrant-client#136), so this class moves to the next node itself
when the current one does not answer (`no_answer`: refused, reset, timed out, HTTP
502/503/504, gRPC UNAVAILABLE or DEADLINE_EXCEEDED). A node that answers with an
error (a 4xx, a 500, another gRPC status) or with a body the client cannot read is a
`QdrantNodeError` at once, naming the node and its answer: another node would answer
the same, and "no node answered" would hide what went wrong.

A write that timed out may have been applied all the same (the node got it and did not
answer in time); the store then sends it to the next node. Writes are upserts by
packet id, so a write applied twice is stored once. When every node fails the error is
`NoNodeAnswered` (a ConnectionError) whose `may_have_been_applied` says whether any node
might have stored it.

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
from .contract import (Capabilities, FolderManifest, QueryFilter, Store, StoreBusyError, check_dim, check_uuid_ids,
                       opening_error)
from .options import DEFAULT, resolve, warn_ignored
from .qdrant_nodes import NoNodeAnswered, QdrantNodeError, _answer, no_answer
from .qdrant_params import (DEFAULT_GRPC_PORT, check_grpc, check_url, collection_params,  # noqa: F401 (re-exported)
                            index_params, payload_indexes, qdrant_filter, search_params, server_url,
                            warn_local_settings)


class QdrantStore(Store):
    """Qdrant through qdrant-client: local mode (`location=":memory:"` or `path=`), one server
    (`url=`, or qdrant-client's `host=`/`port=`) or a cluster (`urls=[...]`, moving to the next
    node when one does not answer). `grpc_port`/`prefer_grpc` are passed to qdrant-client. Server
    settings local mode cannot honour (cluster settings, gRPC) are a UserWarning naming them."""

    name = "qdrant"

    def __init__(self, location: str | None = None, path: str | None = None, url: str | None = None,
                 urls: Sequence[str] | None = None, collection: str = "outcomes", dim: int = 384,
                 shard_number: int | None = None, replication_factor: int | None = None,
                 write_consistency_factor: int | None = None, timeout: int = 5, api_key: str | None = None,
                 payload_index: bool = True, host: str | None = None, port: int | None = None,
                 grpc_port: int = 6334, prefer_grpc: bool = False, *, quantization: str | None = DEFAULT,
                 m: int | None = DEFAULT, ef_construct: int | None = DEFAULT, hnsw_ef: int | None = DEFAULT,
                 rescore: bool = True, oversampling: float | None = DEFAULT,
                 hybrid: bool | None = False, rrf_k: int = HybridParams.rrf_k,
                 prefetch: int = HybridParams.prefetch, bm25_avg_len: float = HybridParams.avg_len):
        from qdrant_client import QdrantClient

        # Index options: checked now, sent with create_collection (a server builds with them;
        # an existing collection keeps the settings it was created with) and with every query.
        self.options, given = resolve(quantization, m, ef_construct, hnsw_ef, rescore, oversampling)
        index = index_params(self.options)
        if url is None and urls is None and host is None:
            warn_ignored("qdrant-client local mode (exact search)", "a Qdrant server or qdrant-edge", **given)

        given = [k for k, v in (("location", location), ("path", path), ("url", url), ("urls", urls), ("host", host))
                 if v is not None]
        if len(given) > 1:
            raise ValueError(f"give qdrant one of location, path, url, urls, host; got {given}")
        url = server_url(host, port) if host is not None or port is not None else url
        check_grpc(grpc_port, prefer_grpc)
        self.grpc_port, self.prefer_grpc = grpc_port, prefer_grpc
        self.dim = check_dim(dim)
        self.collection_name = collection
        if url is not None:
            urls = [url]
        if urls is not None:
            if isinstance(urls, str) or not urls:
                raise ValueError(f"urls must be a non-empty list of node urls, got {urls!r}")
            self.urls = [check_url(u) for u in urls]
            self._clients = [QdrantClient(url=u, timeout=timeout, api_key=api_key, check_compatibility=False,
                                          grpc_port=grpc_port, prefer_grpc=prefer_grpc) for u in self.urls]
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
                if path is None:
                    raise
                raise opening_error("qdrant", str(path), exc) from exc
            except Exception as exc:  # local mode unpickles every point on open
                if path is None:
                    raise
                raise opening_error("qdrant", str(path), exc) from exc
            self._clients = [client]
            self.capabilities = Capabilities(persistent=path is not None)
            warn_local_settings(shard_number=shard_number, replication_factor=replication_factor,
                                write_consistency_factor=write_consistency_factor, prefer_grpc=prefer_grpc or None,
                                grpc_port=grpc_port if grpc_port != DEFAULT_GRPC_PORT else None)
            # Local mode has no locking between threads (qdrant-client#1193).
            self._lock = threading.RLock()
        self._active = 0
        if hybrid not in (None, True, False):
            raise ValueError(f"hybrid must be True, False or None (follow the stored collection), got {hybrid!r}")
        self.hybrid_params = HybridParams(rrf_k=rrf_k, prefetch=prefetch, avg_len=bm25_avg_len)
        self.params = collection_params(dim, shard_number, replication_factor, write_consistency_factor)
        self.params.update(index)
        # Local mode searches exactly and warns on every query given search_params: send them to servers only.
        self._search_params = search_params(self.options) if self.urls else None
        self._manifest = FolderManifest(str(path), "qdrant") if path is not None else None
        self._hybrid_wanted = hybrid
        if self._manifest is None:
            try:
                hybrid = self._call(self._ensure_collection, payload_index)
            except NoNodeAnswered as exc:  # say where we looked and what to do; keep its failures
                self.close()
                exc.args = (f"no Qdrant server answered at {self.addresses()}: {exc}. Start one (see README: "
                            "A Qdrant cluster), or use local mode: make_router('qdrant') or path=",)
                raise
        else:
            try:
                hybrid = self._call(self._ensure_collection, payload_index)
                count = self.count()
            except ValueError:  # our own check of the folder's settings (size, hybrid): not damage
                self._clients[0].close()
                raise
            except Exception as exc:
                self._clients[0].close()
                raise opening_error("qdrant", str(path), exc) from exc
            try:
                self._manifest.check(count)
            except Exception:
                self._clients[0].close()
                raise
        self.capabilities = Capabilities(**{**vars(self.capabilities), "hybrid": hybrid})
        self._bm25 = Bm25Encoder(bm25_avg_len) if hybrid else None

    def addresses(self) -> str:
        """The node addresses this store talks to, with the gRPC port when gRPC is preferred."""
        if not self.urls:
            return "local mode"
        if self.prefer_grpc:
            return ", ".join(f"{urlparse(u).hostname}:{self.grpc_port} (gRPC; REST {u})" for u in self.urls)
        return ", ".join(self.urls)

    def info(self) -> dict[str, Any]:
        """Qdrant's own view of the collection (`get_collection`): points, indexed vectors,
        status and the settings it was created with."""
        info = self._call(lambda c: c.get_collection(self.collection_name))
        params = info.config.params
        return {"points": info.points_count, "indexed_vectors": info.indexed_vectors_count,
                "status": getattr(info.status, "value", info.status), "segments": info.segments_count,
                "shard_number": params.shard_number, "replication_factor": params.replication_factor,
                "write_consistency_factor": params.write_consistency_factor,
                "payload_indexes": sorted(info.payload_schema or {}),
                "mode": "server" if self.urls else "local", "transport": "gRPC" if self.prefer_grpc and self.urls
                else ("HTTP" if self.urls else "in-process")}

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
        failures: list[tuple[str, str, BaseException]] = []
        for step in range(len(self._clients)):
            index = (self._active + step) % len(self._clients)
            try:
                result = fn(self._clients[index], *args, **kwargs)
            except Exception as exc:
                why = no_answer(exc)
                if why is None:  # the node answered: another node would answer the same
                    answer = _answer(exc)
                    if answer is None:
                        raise  # not from the node (our own checks, a bug): unchanged
                    self._active = index
                    raise QdrantNodeError(self.urls[index], answer) from exc
                failures.append((self.urls[index], why, exc))
                continue
            self._active = index
            return result
        # A write that timed out may still have been applied on that node: the caller does
        # not know. Deposits are upserts by packet id, so sending them again is safe.
        raise NoNodeAnswered(failures) from failures[-1][2]

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
        if self._manifest is None:
            self._call(lambda c: c.upsert(self.collection_name, points=batch, wait=True))
            return
        try:
            self._call(lambda c: c.upsert(self.collection_name, points=batch, wait=True))
        except Exception as exc:  # local mode: SQLite refused the write (a full disk, for one)
            raise OSError(f"the qdrant store at {self._manifest.folder} could not write an upsert "
                          f"({type(exc).__name__}: {exc}); if its disk is full, free space: what was acknowledged "
                          f"before is kept") from exc
        self._manifest.after_write(self.count)

    def _query(self, vector: np.ndarray, top_k: int, flt: QueryFilter,
               text: str | None = None) -> list[tuple[dict, float]]:
        if text is None:
            query_filter = qdrant_filter(flt)
            result = self._call(lambda c: c.query_points(self.collection_name, query=vector.tolist(), limit=top_k,
                                                         query_filter=query_filter, with_payload=True,
                                                         search_params=self._search_params))
            return [(dict(p.payload or {}), float(p.score)) for p in result.points]
        from .qdrant_edge_params import cosines

        request = self._hybrid_request(vector, text, top_k, flt)
        result = self._call(lambda c: c.query_points(self.collection_name, **request))
        stored = [p.vector[""] if isinstance(p.vector, dict) else p.vector for p in result.points]
        return list(zip([dict(p.payload or {}) for p in result.points], cosines(vector, stored)))

    def _hybrid_request(self, vector: np.ndarray, text: str, top_k: int, flt: QueryFilter) -> dict:
        """The keywords of one `query_points`: dense and BM25 prefetches, each under the filter, fused by RRF."""
        from qdrant_client import models

        query_filter = qdrant_filter(flt)
        limit = max(self.hybrid_params.prefetch, top_k)
        indices, values = self._bm25.query(text)
        prefetch = [models.Prefetch(query=vector.tolist(), filter=query_filter, limit=limit, params=self._search_params),
                    models.Prefetch(query=models.SparseVector(indices=indices, values=values), using=SPARSE_NAME,
                                    filter=query_filter, limit=limit)]
        fusion = models.RrfQuery(rrf=models.Rrf(k=self.hybrid_params.rrf_k))
        return dict(prefetch=prefetch, query=fusion, limit=top_k, query_filter=query_filter, with_payload=True,
                    with_vectors=[""])

    def native_query_fn(self, vectors: np.ndarray, filters: Sequence[QueryFilter], k: int):
        """`client.query_points(...)` on the current node, filters and vectors built beforehand."""
        native = [qdrant_filter(f) for f in filters]
        lists = [v.tolist() for v in vectors]
        client, collection, params = self.client, self.collection_name, self._search_params
        return lambda j: client.query_points(collection, query=lists[j], limit=k, query_filter=native[j],
                                             with_payload=True, search_params=params)

    def _get(self, ids: list[str]) -> dict[str, dict]:
        records = self._call(lambda c: c.retrieve(self.collection_name, ids=ids, with_payload=True))
        return {str(r.id): dict(r.payload or {}) for r in records}

    def _delete(self, ids: list[str]) -> None:
        from qdrant_client import models

        selector = models.PointIdsList(points=ids)
        if self._manifest is not None:
            self._manifest.before_delete(len(ids))
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

    def _purge_expired(self, now: float, agent_id: str | None) -> int:
        """Delete the packets expired at `now` (of `agent_id` only, if given) inside Qdrant: a
        count, then a delete by filter."""
        from qdrant_client import models

        must = [models.FieldCondition(key="expires_at", range=models.Range(lte=now))]
        if agent_id is not None:
            must.append(models.FieldCondition(key="agent_id", match=models.MatchValue(value=agent_id)))
        expired = models.Filter(must=must)
        n = self._call(lambda c: c.count(self.collection_name, count_filter=expired, exact=True).count)
        if n:
            if self._manifest is not None:
                self._manifest.before_delete(n)
            selector = models.FilterSelector(filter=expired)
            self._call(lambda c: c.delete(self.collection_name, points_selector=selector, wait=True))
        return n

    def scroll_ids(self, page: int = 1000) -> list[str]:
        ids: list[str] = []
        offset = None
        while True:
            records, offset = self._call(lambda c: c.scroll(self.collection_name, limit=page, offset=offset,
                                                            with_payload=False, with_vectors=False))
            ids.extend(str(r.id) for r in records)
            if offset is None:
                return ids

    def close(self) -> None:
        if self._manifest is not None:
            self._manifest.record(self.count())
            self._manifest = None  # closing twice must not count a closed client
        for client in self._clients:
            client.close()
