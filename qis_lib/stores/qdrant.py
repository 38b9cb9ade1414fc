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

import json
import threading
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import numpy as np

from .bm25 import SPARSE_NAME, TEXT_FIELD, Bm25Encoder, HybridParams
from .contract import (Capabilities, FolderManifest, QueryFilter, Store, StoreBusyError, check_dim, check_uuid_ids,
                       opening_error)
from .options import DEFAULT, IndexOptions, resolve, warn_ignored


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


def index_params(options: IndexOptions) -> dict[str, Any]:
    """`create_collection` arguments for the HNSW and quantization options (a server honours them)."""
    from qdrant_client import models

    params: dict[str, Any] = {"hnsw_config": models.HnswConfigDiff(m=options.m, ef_construct=options.ef_construct)}
    kinds = {
        "int8": lambda: models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=0.99, always_ram=True)),
        "binary": lambda: models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True)),
        "product": lambda: models.ProductQuantization(product=models.ProductQuantizationConfig(
            compression=models.CompressionRatio.X16, always_ram=True)),
    }
    if options.quantization is not None:
        if options.quantization not in kinds:
            raise ValueError(f"quantization={options.quantization!r} is not offered by qdrant-client "
                             f"{_client_version()}; choose None or one of {', '.join(map(repr, kinds))}")
        params["quantization_config"] = kinds[options.quantization]()
    return params


def search_params(options: IndexOptions):
    """The query-time `SearchParams`: hnsw_ef and rescoring of quantized candidates."""
    from qdrant_client import models

    quant = None
    if options.quantization is not None:
        quant = models.QuantizationSearchParams(rescore=options.rescore, oversampling=options.oversampling)
    return models.SearchParams(hnsw_ef=options.hnsw_ef, quantization=quant)


def _client_version() -> str:
    from importlib.metadata import version

    return version("qdrant-client")


def payload_indexes():
    """The payload index of each filter field (a server plans filtered searches with them)."""
    from qdrant_client import models

    return {
        "domain_tags": models.PayloadSchemaType.KEYWORD,
        "agent_id": models.PayloadSchemaType.KEYWORD,
        "confidence": models.PayloadSchemaType.FLOAT,
        "expires_at": models.PayloadSchemaType.FLOAT,
    }


class QdrantNodeError(RuntimeError):
    """A Qdrant node answered, and the answer was an error (a 4xx, a 500, a gRPC status other
    than UNAVAILABLE or DEADLINE_EXCEEDED) or could not be read. Another node would most
    likely answer the same, so the store raises this at once instead of moving on."""

    def __init__(self, url: str, answer: str):
        super().__init__(f"Qdrant node {url} answered {answer}")
        self.url = url
        self.answer = answer


class NoNodeAnswered(ConnectionError):
    """No node of the list answered. `failures` holds (url, why, exception) per node tried.

    `may_have_been_applied` is True when a node timed out or dropped the connection after
    the request was sent: a write may then be stored although it was not acknowledged.
    Deposits are upserts by packet id, so sending the same write again is safe."""

    def __init__(self, failures: list[tuple[str, str, BaseException]]):
        super().__init__("no Qdrant node answered: " + "; ".join(
            f"{url}: {why} ({type(exc).__name__})" for url, why, exc in failures))
        self.failures = failures

    @property
    def timed_out(self) -> bool:
        return any(why.startswith("timed out") for _, why, _ in self.failures)

    @property
    def may_have_been_applied(self) -> bool:
        return any(not why.startswith("refused") for _, why, _ in self.failures)


def _causes(exc: BaseException):
    """exc, then qdrant-client's wrapped `source` and the chain of causes, each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        source = getattr(exc, "source", None)  # qdrant-client's ResponseHandlingException
        exc = source if isinstance(source, BaseException) else (exc.__cause__ or exc.__context__)


def _grpc_code(exc: BaseException) -> str | None:
    """The status name of a grpc.RpcError ("UNAVAILABLE", ...), else None."""
    code = getattr(exc, "code", None)
    if not type(exc).__module__.startswith("grpc") or not callable(code):
        return None
    try:
        return code().name
    except Exception:
        return None


def no_answer(exc: BaseException) -> str | None:
    """Why the node did not answer ("refused", "timed out", "connection lost", "HTTP 503",
    "gRPC UNAVAILABLE", ...) when another node may; None when the node answered, even with
    an error or a body the client could not read (or when exc is not a transport error).

    REST and gRPC alike: connection refused or reset, timeouts, 502/503/504 (what a proxy or
    a node without quorum answers), gRPC UNAVAILABLE and DEADLINE_EXCEEDED mean "did not
    answer". qdrant-client wraps both network errors and response-validation errors in
    ResponseHandlingException, so the chain of causes decides, not the outer type.
    """
    import httpx
    from qdrant_client.http.exceptions import UnexpectedResponse

    for link in _causes(exc):
        grpc_code = _grpc_code(link)
        if grpc_code is not None:
            return {"UNAVAILABLE": "gRPC UNAVAILABLE",
                    "DEADLINE_EXCEEDED": "timed out (gRPC DEADLINE_EXCEEDED)"}.get(grpc_code)
        if isinstance(link, UnexpectedResponse):
            return f"HTTP {link.status_code}" if link.status_code in (502, 503, 504) else None
        if isinstance(link, (httpx.TimeoutException, TimeoutError)):
            return "timed out"
        if isinstance(link, (httpx.ConnectError, ConnectionRefusedError)):
            return "refused (could not connect)"
        if isinstance(link, (httpx.NetworkError, httpx.RemoteProtocolError, ConnectionError)):
            return "connection lost"
    return None


def _answer(exc: BaseException) -> str | None:
    """What a node answered, for an error that came from its answer; None for other errors
    (bad input caught by our own code, a bug) which are raised unchanged."""
    import pydantic
    from qdrant_client.common.client_exceptions import QdrantException
    from qdrant_client.http.exceptions import ApiException, UnexpectedResponse

    from_client = (ApiException, QdrantException)

    for link in _causes(exc):
        grpc_code = _grpc_code(link)
        if grpc_code is not None:
            details = getattr(link, "details", lambda: "")() or ""
            return f"gRPC {grpc_code}: {details[:300]}"
        if isinstance(link, UnexpectedResponse):
            body = link.content[:300].decode("utf-8", "replace")
            return f"HTTP {link.status_code} ({link.reason_phrase}): {body}"
        # qdrant-client raises a body that is not JSON as a bare JSONDecodeError, and a JSON body
        # that does not fit its models as a ValidationError wrapped in ResponseHandlingException
        if isinstance(link, json.JSONDecodeError) or isinstance(link, pydantic.ValidationError) and any(
                isinstance(e, from_client) for e in _causes(exc)):
            text = " ".join(str(link).split())
            return f"a body the client could not read ({type(link).__name__}: {text[:300]})"
        if isinstance(link, QdrantException):  # ResourceExhaustedResponse: the node answered 429
            return " ".join(f"HTTP 429 {type(link).__name__}: {link}".split())[:400]
    # anything else wrapped in ResponseHandlingException ("the client has been closed", ...)
    # happened on our side: raised unchanged
    return None


def _is_unreachable(exc: Exception) -> bool:
    """True for errors that mean 'this node did not answer', where another node may."""
    return no_answer(exc) is not None


DEFAULT_GRPC_PORT = 6334
DEFAULT_PORT = 6333


def server_url(host: Any, port: Any) -> str:
    """qdrant-client's `host=`/`port=` as a node url (port 6333 unless given)."""
    if not isinstance(host, str) or not host or "/" in host:
        raise ValueError(f"host must be a host name like 'localhost' (port= apart), got {host!r}")
    port = DEFAULT_PORT if port is None else port
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"port must be an int from 1 to 65535, got {port!r}")
    return check_url(f"http://{host}:{port}")


def check_grpc(grpc_port: Any, prefer_grpc: Any) -> None:
    if not isinstance(grpc_port, int) or isinstance(grpc_port, bool) or not 0 < grpc_port < 65536:
        raise ValueError(f"grpc_port must be an int from 1 to 65535, got {grpc_port!r}")
    if not isinstance(prefer_grpc, bool):
        raise ValueError(f"prefer_grpc must be True or False, got {prefer_grpc!r}")


def warn_local_settings(**settings: Any) -> None:
    """Local mode has one in-process copy and no network: say so for each server setting given."""
    import warnings

    for key, value in settings.items():
        if value is not None:
            warnings.warn(f"{key}={value!r} has no effect in qdrant-client local mode (one in-process copy, no "
                          f"server): a Qdrant server or cluster honours it (make_router('qdrant', url=... or "
                          f"urls=[...] or host=...))", UserWarning, stacklevel=4)


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
        query_filter = qdrant_filter(flt)
        if text is None:
            result = self._call(lambda c: c.query_points(self.collection_name, query=vector.tolist(), limit=top_k,
                                                         query_filter=query_filter, with_payload=True,
                                                         search_params=self._search_params))
            return [(dict(p.payload or {}), float(p.score)) for p in result.points]
        from qdrant_client import models

        from .qdrant_edge import cosine

        limit = max(self.hybrid_params.prefetch, top_k)
        indices, values = self._bm25.query(text)
        prefetch = [models.Prefetch(query=vector.tolist(), filter=query_filter, limit=limit, params=self._search_params),
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

    def purge_expired(self, now: float | None = None) -> int:
        """Delete the packets expired at `now` inside Qdrant: a count, then a delete by filter."""
        from qdrant_client import models

        expired = models.Filter(must=[models.FieldCondition(key="expires_at",
                                                            range=models.Range(lte=self._purge_now(now)))])
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
