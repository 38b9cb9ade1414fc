"""In-memory store: one numpy matrix, exact cosine search. The reference for the others."""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Sequence

import numpy as np

from .contract import QueryFilter, Store, check_dim
from .exact import top_k_rows
from .options import warn_ignored


class MemoryStore(Store):
    """Packets in numpy arrays, searched exactly: one matrix-vector product over the rows the
    filter keeps (found through per-tag and per-agent row sets, not a Python loop over N)."""

    name = "memory"

    def __init__(self, dim: int = 384, capacity: int = 1024, *, quantization: str | None = None,
                 m: int | None = None, ef_construct: int | None = None, hnsw_ef: int | None = None):
        warn_ignored("memory (exact search)", "qdrant or qdrant-edge", quantization=quantization, m=m,
                     ef_construct=ef_construct, hnsw_ef=hnsw_ef)
        self.dim = check_dim(dim)
        self._lock = threading.RLock()
        # Arrays grow by doubling, so n inserts copy O(n) rows in all, not O(n^2).
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._confidence = np.zeros(capacity, dtype=np.float64)
        self._expires_at = np.zeros(capacity, dtype=np.float64)
        self._live = np.zeros(capacity, dtype=bool)  # False for deleted rows
        self._agents: list[str] = []
        self._tags: list[frozenset[str]] = []
        # value -> rows holding it, so a domain or agent filter costs the matching rows, not N
        self._tag_rows: dict[str, set[int]] = defaultdict(set)
        self._agent_rows: dict[str, set[int]] = defaultdict(set)
        self._payloads: list[dict] = []
        self._row: dict[str, int] = {}
        self._free: list[int] = []  # rows of deleted packets, reused first
        self._size = 0

    def _grow(self, needed: int) -> None:
        capacity = len(self._vectors)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        for attr in ("_vectors", "_confidence", "_expires_at", "_live"):
            old = getattr(self, attr)
            new = np.zeros((capacity,) + old.shape[1:], dtype=old.dtype)
            new[: self._size] = old[: self._size]
            setattr(self, attr, new)

    def _unindex(self, row: int) -> None:
        self._agent_rows[self._agents[row]].discard(row)
        for tag in self._tags[row]:
            self._tag_rows[tag].discard(row)

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        with self._lock:
            self._grow(self._size + len(ids))
            for pid, vector, payload in zip(ids, vectors, payloads):
                row = self._row.get(pid)
                if row is None:
                    if self._free:
                        row = self._free.pop()
                    else:
                        row = self._size
                        self._size += 1
                        self._agents.append("")
                        self._tags.append(frozenset())
                        self._payloads.append({})
                    self._row[pid] = row
                self._unindex(row)
                self._vectors[row] = vector
                self._confidence[row] = payload["confidence"]
                self._expires_at[row] = payload["expires_at"]
                self._live[row] = True
                self._agents[row] = payload["agent_id"]
                self._tags[row] = frozenset(payload["domain_tags"])
                self._agent_rows[payload["agent_id"]].add(row)
                for tag in self._tags[row]:
                    self._tag_rows[tag].add(row)
                self._payloads[row] = payload

    def mask(self, flt: QueryFilter) -> np.ndarray:
        """Which rows `flt` keeps, as a boolean array over the rows in use."""
        n = self._size
        keep = self._live[:n] & (self._expires_at[:n] > flt.now) & (self._confidence[:n] >= flt.min_confidence)
        if flt.domain is not None:
            in_domain = np.zeros(n, dtype=bool)
            in_domain[list(self._tag_rows.get(flt.domain, ()))] = True
            keep &= in_domain
        if flt.exclude_agent is not None:
            keep[list(self._agent_rows.get(flt.exclude_agent, ()))] = False
        return keep

    def _query(self, vector: np.ndarray, top_k: int, flt: QueryFilter) -> list[tuple[dict, float]]:
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        with self._lock:
            rows, scores = top_k_rows(self._vectors[: self._size], vector, np.flatnonzero(self.mask(flt)), top_k)
            return [(dict(self._payloads[r]), float(s)) for r, s in zip(rows, scores)]

    def _get(self, ids: list[str]) -> dict[str, dict]:
        with self._lock:
            return {pid: dict(self._payloads[self._row[pid]]) for pid in ids if pid in self._row}

    def _delete(self, ids: list[str]) -> None:
        with self._lock:
            for pid in ids:
                row = self._row.pop(pid, None)
                if row is None:
                    continue
                self._unindex(row)
                self._live[row] = False
                self._agents[row], self._tags[row], self._payloads[row] = "", frozenset(), {}
                self._free.append(row)

    def count(self) -> int:
        return len(self._row)

    def _purge_expired(self, now: float, agent_id: str | None) -> int:
        """Delete the packets expired at `now` (of `agent_id` only, if given): one vectorised test."""
        with self._lock:
            expired = self._live[: self._size] & (self._expires_at[: self._size] <= now)
            if agent_id is not None:
                mine = np.zeros(self._size, dtype=bool)
                mine[list(self._agent_rows.get(agent_id, ()))] = True
                expired &= mine
            ids = [pid for pid, row in self._row.items() if expired[row]]
            self._delete(ids)
        return len(ids)

    def scroll_ids(self, page: int = 1000) -> list[str]:
        with self._lock:
            return list(self._row)

    def native_query_fn(self, vectors: np.ndarray, filters: Sequence[QueryFilter], k: int):
        """Exact numpy on this store's own matrix, the filter's rows found beforehand: the
        memory store has no client, so this is its engine call (and the exact floor)."""
        with self._lock:
            matrix = self._vectors[: self._size]
            distinct = {f: np.flatnonzero(self.mask(f)) for f in set(filters)}  # queries share few filters
        rows = [distinct[f] for f in filters]
        return lambda j: top_k_rows(matrix, vectors[j], rows[j], k)

    def close(self) -> None:
        pass
