"""Qdrant Edge: the Qdrant engine itself, in-process (package qdrant-edge-py, module qdrant_edge).

HNSW and payload indexes as in a Qdrant server, no network hop. The engine has no
background optimizer: points written since the last `optimize()` are searched by
brute force, which is exact but slower, so call `optimize()` after bulk loads.

Durability: an upsert is acknowledged once `update()` has appended it to the
write-ahead log. That survives a crash of the process (SIGKILL), not a power loss;
`flush()` (done on close) syncs to disk.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from typing import Sequence

import numpy as np

from .contract import (Capabilities, FolderManifest, QueryFilter, Store, StoreBusyError, StoreDamagedError, check_dim,
                       check_uuid_ids, opening_error)


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


class QdrantEdgeStore(Store):
    """The Qdrant engine in-process: one shard in `path` (a temporary one if None), payload
    indexes on the filter fields, HNSW built by `optimize()` (or `after_bulk_load()`)."""

    name = "qdrant-edge"

    def __init__(self, path: str | None = None, dim: int = 384, payload_index: bool = True, hnsw_ef: int | None = None):
        import qdrant_edge as qe

        self.dim = check_dim(dim)
        self._tmpdir = None
        if path is None:  # a throwaway store, removed on close
            self._tmpdir = tempfile.mkdtemp(prefix="qis-edge-")
            path = os.path.join(self._tmpdir, "shard")
        self.path = str(path)
        self.capabilities = Capabilities(persistent=self._tmpdir is None)
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine))
        exists = os.path.isdir(os.path.join(self.path, "wal"))
        if not exists and os.path.isdir(os.path.join(self.path, "segments")):
            raise opening_error("qdrant-edge", self.path, FileNotFoundError("segments/ without the wal/ folder"))
        try:
            # load() with a config checks that the stored vectors have our size.
            self.shard = qe.EdgeShard.load(self.path, config) if exists else qe.EdgeShard.create(self.path, config)
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreBusyError(f"{self.path} is open in another qdrant-edge shard (one opener per folder)") from None
            if "incompatible" in str(exc):
                raise ValueError(f"qdrant-edge store {self.path} does not hold {dim}-d cosine vectors: {exc}") from None
            raise opening_error("qdrant-edge", self.path, exc) from exc
        self._lock = threading.RLock()  # close() must not race a query
        # A folder whose write-ahead log is gone opens as an empty shard: our manifest notices.
        self._manifest = FolderManifest(self.path, "qdrant-edge") if self._tmpdir is None else None
        try:
            stored = self.shard.info()
            if payload_index:
                schema = {"domain_tags": qe.PayloadSchemaType.Keyword, "agent_id": qe.PayloadSchemaType.Keyword,
                          "confidence": qe.PayloadSchemaType.Float, "expires_at": qe.PayloadSchemaType.Float}
                for field, kind in schema.items():
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
        self._params = qe.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None

    def check_store_ids(self, ids: list[str]) -> None:
        check_uuid_ids(ids)

    def _request(self, vector: np.ndarray, top_k: int, flt: QueryFilter):
        import qdrant_edge as qe

        return qe.QueryRequest(limit=top_k, query=qe.Query.Nearest(vector.tolist()), filter=edge_filter(flt),
                               with_payload=True, params=self._params)

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        import qdrant_edge as qe

        points = [qe.Point(pid, v.tolist(), p) for pid, v, p in zip(ids, vectors, payloads)]
        problem = free_space_problem(self.path)
        if problem is not None:
            raise OSError(errno.ENOSPC, problem)
        with self._lock:
            self.shard.update(qe.UpdateOperation.upsert_points(points))
            if self._manifest is not None:
                self._manifest.after_write(self.count)

    def _query(self, vector: np.ndarray, top_k: int, flt: QueryFilter) -> list[tuple[dict, float]]:
        request = self._request(vector, top_k, flt)
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

    def after_bulk_load(self) -> None:
        """Build the HNSW and payload indexes: the engine has no background optimizer."""
        self.optimize()

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

    def optimize(self) -> bool:
        """Build HNSW and payload indexes over everything written so far (synchronous)."""
        with self._lock:
            return self.shard.optimize()

    def flush(self) -> None:
        with self._lock:
            self.shard.flush()

    def close(self) -> None:
        """Flush the write-ahead log and segments to disk, then release the folder."""
        import qdrant_edge as qe

        with self._lock:
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
