"""Qdrant Edge: the Qdrant engine itself, in-process (package qdrant-edge-py, module qdrant_edge).

HNSW and payload indexes as in a Qdrant server, no network hop. The engine has no
background optimizer of its own: points written since the last `optimize()` are
searched by brute force. So this store plays the server's optimizer (`IndexBuilder`,
qdrant_edge_builds.py): once `index_threshold` points have been written since the last
build, it builds the index in a background thread (the deposit that crossed the threshold
is acknowledged first). qdrant-edge-py's `optimize()` holds Python's GIL while it runs, so
every other thread of the process waits for a build; so no build makes a segment above
`max_segment_points` points out of smaller ones, which bounds how long one takes (see the
README, "Qdrant's production options"). A build never holds the store's own lock: queries
go on during one (the engine's locks keep them correct) as soon as the GIL lets them.

Hybrid search (`hybrid=True`): each point also holds a BM25 sparse vector of its
problem text ("bm25", IDF modifier), and a query with `text=` is one request: a dense
and a BM25 prefetch, each under the router's filter, fused by `Fusion.Rrf` in the engine.

Durability: an upsert is acknowledged once `update()` has appended it to the
write-ahead log. That survives a crash of the process (SIGKILL), not a power loss;
`flush()` (done on close) syncs to disk.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import tempfile
import threading
from typing import Sequence

import numpy as np

from .bm25 import SPARSE_NAME, TEXT_FIELD, Bm25Encoder, HybridParams
from .contract import (Capabilities, FolderManifest, QueryFilter, Store, StoreBusyError, StoreDamagedError, check_dim,
                       check_uuid_ids, opening_error)
from .options import DEFAULT, INDEX_THRESHOLD, MAX_SEGMENT_POINTS, MAX_SEGMENT_POINTS_HYBRID, resolve
from .qdrant_edge_builds import IndexBuilder
from .qdrant_edge_params import (EdgePlanner, cosine, cosines, edge_config, edge_filter, edge_payload_indexes,  # noqa: F401
                                 edge_quantization, edge_search_params)  # (re-exported)

log = logging.getLogger(__name__)

# qdrant-edge writes through memory-mapped files: a write that finds the disk full kills the
# process with SIGBUS (measured on a full tmpfs) instead of raising. So we refuse an upsert
# while less than this much space is free: its write-ahead log grows in 32 MiB segments.
MIN_FREE_BYTES = 96 << 20


def free_space_problem(path: str, needed: int = MIN_FREE_BYTES) -> str | None:
    """None if the file system of `path` has `needed` bytes free, else what is wrong."""
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    if free >= needed:
        return None
    return (f"only {free / 2**20:.1f} MiB free on the disk of {path}; qdrant-edge needs {needed / 2**20:.0f} MiB free "
            f"to write (its files are memory-mapped: a write into a full disk would kill the process)")


DEFAULT_INDEX_THRESHOLD = INDEX_THRESHOLD  # points written since the last build that start the next one


def _points_option(name: str, value, meaning: str):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be None ({meaning}) or a positive int, got {value!r}")
    return value


class QdrantEdgeStore(Store):
    """The Qdrant engine in-process: one shard in `path` (a temporary one if None), payload
    indexes on the filter fields, HNSW built by `optimize()` (or `after_bulk_load()`).

    hybrid: True keeps a BM25 sparse vector beside the dense one (see the module
    docstring); False, dense only; None, what an existing folder holds (a new one: hybrid).
    rrf_k, prefetch, bm25_avg_len: the fusion's parameters (`HybridParams`).
    index_threshold: points written since the last build that start the next one (None: only
    `optimize()` builds). max_segment_points: the largest segment a build makes out of smaller
    ones (DEFAULT: options.py's, smaller for a hybrid store, whose builds also rebuild the BM25
    index; None: the engine's own, 256 MB of vectors per indexing thread, so each build merges
    into one segment that grows with the store). planner: how filtered queries are answered (`EdgePlanner`)."""

    name = "qdrant-edge"

    def __init__(self, path: str | None = None, dim: int = 384, payload_index: bool = True,
                 hnsw_ef: int | None = DEFAULT, *, quantization: str | None = DEFAULT, m: int | None = DEFAULT,
                 ef_construct: int | None = DEFAULT, rescore: bool = True, oversampling: float | None = DEFAULT,
                 index_threshold: int | None = DEFAULT_INDEX_THRESHOLD,
                 max_segment_points: int | None = DEFAULT, planner: EdgePlanner | None = None,
                 hybrid: bool | None = False, rrf_k: int = HybridParams.rrf_k, prefetch: int = HybridParams.prefetch,
                 bm25_avg_len: float = HybridParams.avg_len):
        import qdrant_edge as qe

        self.dim = check_dim(dim)
        # Checks every value, naming a bad one; DEFAULT: the project's default (options.py).
        self.options, _ = resolve(quantization, m, ef_construct, hnsw_ef, rescore, oversampling)
        self.index_threshold = _points_option("index_threshold", index_threshold, "build only on optimize()")
        self._max_segment = max_segment_points if max_segment_points is DEFAULT else _points_option(
            "max_segment_points", max_segment_points, "the engine's default")
        if planner is not None and not isinstance(planner, EdgePlanner):
            raise ValueError(f"planner must be an EdgePlanner or None, got {planner!r}")
        self.planner = EdgePlanner() if planner is None else planner
        self._tmpdir = None
        if path is None:  # a throwaway store, removed on close
            self._tmpdir = tempfile.mkdtemp(prefix="qis-edge-")
            path = os.path.join(self._tmpdir, "shard")
        self.path = str(path)
        if hybrid not in (None, True, False):
            raise ValueError(f"hybrid must be True, False or None (follow the stored folder), got {hybrid!r}")
        self.hybrid_params = HybridParams(rrf_k=rrf_k, prefetch=prefetch, avg_len=bm25_avg_len)
        exists = os.path.isdir(os.path.join(self.path, "wal"))
        if not exists and os.path.isdir(os.path.join(self.path, "segments")):
            raise opening_error("qdrant-edge", self.path, FileNotFoundError("segments/ without the wal/ folder"))
        with_bm25 = self._open(qe, dim, hybrid, exists)
        self.capabilities = Capabilities(persistent=self._tmpdir is None, hybrid=with_bm25)
        self._bm25 = Bm25Encoder(bm25_avg_len) if with_bm25 else None
        self.max_segment_points = self._segment_bound(with_bm25)
        self._lock = threading.RLock()  # close() must not race a query
        # A folder whose write-ahead log is gone opens as an empty shard: our manifest notices.
        self._manifest = FolderManifest(self.path, "qdrant-edge") if self._tmpdir is None else None
        try:
            stored = self.shard.info()
            if payload_index:
                for field, kind in edge_payload_indexes(tenant_domain=self.planner.tenant_domain).items():
                    if field not in stored.payload_schema:
                        self.shard.update(qe.UpdateOperation.create_field_index(field, kind))
            count = self.count()
        except Exception as exc:
            self.shard.close()
            raise opening_error("qdrant-edge", self.path, exc) from exc
        if self._manifest is not None:
            try:
                self._manifest.check(count)
            except Exception:
                self.shard.close()
                raise
        # after the damage check: an empty folder (or one that lost its files) loads under any
        # config, so it says nothing about BM25: it takes the one asked for
        if hybrid is not None and hybrid != with_bm25 and count == 0:
            self.shard.close()
            self.shard = qe.EdgeShard.load(self.path, self._config(qe, hybrid))
            with_bm25 = hybrid
            self.capabilities = Capabilities(persistent=self._tmpdir is None, hybrid=with_bm25)
            self._bm25 = Bm25Encoder(bm25_avg_len) if with_bm25 else None
            self.max_segment_points = self._segment_bound(with_bm25)
        if hybrid is not None and hybrid != with_bm25:
            self.shard.close()
            raise ValueError(f"qdrant-edge store {self.path} was created with{'' if with_bm25 else 'out'} a BM25 sparse "
                             f"vector, but hybrid={hybrid}; open it with hybrid={with_bm25} or hybrid=None")
        self._params = edge_search_params(self.options, self.planner)
        self.indexer = IndexBuilder(self, self.index_threshold, stored.points_count - stored.indexed_vectors_count)

    def _config(self, qe, with_bm25: bool = False):
        return edge_config(qe, self.dim, self.options, self.planner, self.index_threshold,
                           self._segment_bound(with_bm25), with_bm25)

    def _segment_bound(self, with_bm25: bool) -> int | None:
        if self._max_segment is not DEFAULT:
            return self._max_segment
        return MAX_SEGMENT_POINTS_HYBRID if with_bm25 else MAX_SEGMENT_POINTS

    def _open(self, qe, dim: int, hybrid: bool | None, exists: bool) -> bool:
        """Create or load the shard (hybrid=None: as the folder holds it, a new one hybrid). Returns hybrid."""
        # A shard loads under a config without its sparse vector, not under one with a sparse vector
        # it lacks: so an existing folder is tried with BM25 first, and that says what it holds.
        for with_bm25 in ([hybrid is not False] if not exists else [True, False]):
            try:
                # load() with a config checks that the stored vectors have our size.
                self.shard = qe.EdgeShard.load(self.path, self._config(qe, with_bm25)) if exists \
                    else qe.EdgeShard.create(self.path, self._config(qe, with_bm25))
                break
            except Exception as exc:
                if "WouldBlock" in str(exc):
                    raise StoreBusyError(f"{self.path} is open in another qdrant-edge shard (one opener per folder)") from None
                if "incompatible" not in str(exc):
                    raise opening_error("qdrant-edge", self.path, exc) from exc
                if with_bm25 and exists:
                    continue
                raise ValueError(f"qdrant-edge store {self.path} does not hold {dim}-d cosine vectors: {exc}") from None
        return with_bm25

    def check_store_ids(self, ids: list[str]) -> None:
        check_uuid_ids(ids)

    def _request(self, vector: np.ndarray, top_k: int, flt: QueryFilter):
        import qdrant_edge as qe

        return qe.QueryRequest(limit=top_k, query=qe.Query.Nearest(vector.tolist()), filter=edge_filter(flt),
                               with_payload=True, params=self._params)

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        import qdrant_edge as qe

        problem = free_space_problem(self.path)
        if problem is not None:
            raise OSError(errno.ENOSPC, problem)
        if self._bm25 is None:
            points = [qe.Point(pid, v.tolist(), p) for pid, v, p in zip(ids, vectors, payloads)]
        else:
            points = [qe.Point(pid, {"": v.tolist(), SPARSE_NAME: self._bm25.document_edge(str(p.get(TEXT_FIELD, "")))}, p)
                      for pid, v, p in zip(ids, vectors, payloads)]
        with self._lock:
            self.shard.update(qe.UpdateOperation.upsert_points(points))
            if self._manifest is not None:
                self._manifest.after_write(self.count)
        self.indexer.written(len(points))

    def set_hnsw_ef(self, hnsw_ef: int | None) -> None:
        """Change the query-time `hnsw_ef` (no rebuild needed: it is a search parameter)."""
        self.options = dataclasses.replace(self.options, hnsw_ef=hnsw_ef)  # checked again
        self._params = edge_search_params(self.options, self.planner)

    def set_acorn(self, acorn: float | None) -> None:
        """Change ACORN's largest filter share for queries (`EdgePlanner.acorn`; no rebuild needed)."""
        self.planner = dataclasses.replace(self.planner, acorn=acorn)  # checked again
        self._params = edge_search_params(self.options, self.planner)

    @property
    def builds(self) -> list[dict]:
        """One entry per automatic build (`IndexBuilder`): points, started, seconds, cpu_seconds, segments after it."""
        return self.indexer.builds

    @property
    def index_error(self) -> Exception | None:
        """The last automatic build's failure, if any (the points stay searchable by brute force)."""
        return self.indexer.error

    def wait_for_index(self) -> None:
        """Return once no automatic build is running."""
        self.indexer.wait()

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
            return [(h.payload or {}, float(h.score)) for h in hits]  # each read of .payload is a new dict
        request = self._hybrid_request(vector, text, top_k, flt)
        with self._lock:
            hits = self.shard.query(request)
        return list(zip([h.payload or {} for h in hits], cosines(vector, [h.vector[""] for h in hits])))

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
            if self._manifest is not None:
                self._manifest.before_delete(len(ids))
            self.shard.update(qe.UpdateOperation.delete_points(ids))

    def native_query_fn(self, vectors: np.ndarray, filters: Sequence[QueryFilter], k: int):
        """`shard.query(request)` with every request built beforehand."""
        requests = [self._request(v, k, f) for v, f in zip(vectors, filters)]
        shard = self.shard
        return lambda j: shard.query(requests[j])

    def before_bulk_load(self) -> None:
        """No automatic build until `after_bulk_load()`: each build re-indexes what the engine
        merges, so builds every `index_threshold` points of a large load would cost far more
        than one build at the end (Qdrant's advice for a server: indexing off while uploading)."""
        self.indexer.hold()

    def after_bulk_load(self) -> None:
        """Build the HNSW and payload indexes over everything now (waiting for a build under way)."""
        try:
            self.optimize()
        finally:
            self.indexer.resume()  # a failed build leaves the automatic builds on, not held for ever

    def _purge_expired(self, now: float, agent_id: str | None) -> int:
        """Delete every packet expired at `now` (of `agent_id` only, if given) inside the engine
        (one delete by filter)."""
        import qdrant_edge as qe

        must = [qe.FieldCondition("expires_at", range=qe.RangeFloat(lte=now))]
        if agent_id is not None:
            must.append(qe.FieldCondition("agent_id", match=qe.MatchValue(agent_id)))
        expired = qe.Filter(must=must)
        with self._lock:
            n = self.shard.count(qe.CountRequest(exact=True, filter=expired))
            if n:
                if self._manifest is not None:
                    self._manifest.before_delete(n)
                self.shard.update(qe.UpdateOperation.delete_points_by_filter(expired))
        return n

    def count(self) -> int:
        import qdrant_edge as qe

        with self._lock:
            return self.shard.count(qe.CountRequest(exact=True))

    def scroll_ids(self, page: int = 1000) -> list[str]:
        import qdrant_edge as qe

        ids: list[str] = []
        offset = None
        with self._lock:
            while True:
                records, offset = self.shard.scroll(qe.ScrollRequest(offset=offset, limit=page, with_payload=False,
                                                                     with_vector=False))
                ids.extend(str(r.id) for r in records)
                if offset is None:
                    return ids

    def info(self) -> dict:
        """The engine's own view of the shard: points, HNSW-indexed vectors, segments, payload
        indexes. It has no status: no background optimizer (see `optimize()`)."""
        with self._lock:
            info = self.shard.info()
        return {"points": info.points_count, "indexed_vectors": info.indexed_vectors_count,
                "segments": info.segments_count, "payload_indexes": sorted(info.payload_schema or {}),
                "mode": "in-process engine"}

    def optimize(self) -> bool:
        """Build HNSW and payload indexes over everything written so far (synchronous).
        Queries and writes from other threads are not held by the store meanwhile (the GIL
        holds them: see the module docstring)."""
        return self.indexer.build_now()

    def flush(self) -> None:
        with self._lock:
            self.shard.flush()

    def close(self) -> None:
        """Flush the write-ahead log and segments to disk, then release the folder."""
        import qdrant_edge as qe

        self.wait_for_index()
        with self.indexer.build_lock, self._lock:
            if self.shard is not None:
                shard, self.shard = self.shard, None
                try:
                    if self._manifest is not None:
                        self._manifest.record(shard.count(qe.CountRequest(exact=True)))
                    shard.flush()
                except Exception as exc:
                    raise StoreDamagedError(f"could not flush the qdrant-edge store at {self.path} on close: its "
                                            f"files are damaged ({type(exc).__name__}: {' '.join(str(exc).split())[:600]})"
                                            ) from exc
                finally:
                    shard.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
