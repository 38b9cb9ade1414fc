"""In-memory transport: one numpy matrix, exact cosine search. The reference for the others."""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Sequence

import numpy as np

from .base import Capabilities, QueryFilter, check_dim, check_query, check_upsert


class MemoryTransport:
    name = "memory"
    capabilities = Capabilities()

    def __init__(self, dim: int = 384, capacity: int = 1024):
        self.dim = check_dim(dim)
        self._lock = threading.RLock()
        # Arrays grow by doubling, so n inserts copy O(n) rows in all, not O(n^2).
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._confidence = np.zeros(capacity, dtype=np.float64)
        self._expires_at = np.zeros(capacity, dtype=np.float64)
        self._agents: list[str] = []
        self._tags: list[frozenset[str]] = []
        # value -> rows holding it, so a domain or agent filter costs the matching rows, not N
        self._tag_rows: dict[str, set[int]] = defaultdict(set)
        self._agent_rows: dict[str, set[int]] = defaultdict(set)
        self._payloads: list[dict] = []
        self._row: dict[str, int] = {}
        self._size = 0

    def _grow(self, needed: int) -> None:
        capacity = len(self._vectors)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        for attr in ("_vectors", "_confidence", "_expires_at"):
            old = getattr(self, attr)
            new = np.zeros((capacity,) + old.shape[1:], dtype=old.dtype)
            new[: self._size] = old[: self._size]
            setattr(self, attr, new)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]) -> None:
        vectors = check_upsert(self.dim, ids, vectors, payloads)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        with self._lock:
            self._grow(self._size + len(ids))
            for pid, vector, payload in zip(ids, vectors, payloads):
                row = self._row.get(pid)
                if row is None:
                    row = self._size
                    self._size += 1
                    self._row[pid] = row
                    self._agents.append("")
                    self._tags.append(frozenset())
                    self._payloads.append({})
                self._agent_rows[self._agents[row]].discard(row)
                for tag in self._tags[row]:
                    self._tag_rows[tag].discard(row)
                self._vectors[row] = vector
                self._confidence[row] = payload["confidence"]
                self._expires_at[row] = payload["expires_at"]
                self._agents[row] = payload["agent_id"]
                self._tags[row] = frozenset(payload["domain_tags"])
                self._agent_rows[payload["agent_id"]].add(row)
                for tag in self._tags[row]:
                    self._tag_rows[tag].add(row)
                self._payloads[row] = dict(payload)

    def mask(self, flt: QueryFilter) -> np.ndarray:
        n = self._size
        keep = (self._expires_at[:n] > flt.now) & (self._confidence[:n] >= flt.min_confidence)
        if flt.domain is not None:
            in_domain = np.zeros(n, dtype=bool)
            in_domain[list(self._tag_rows.get(flt.domain, ()))] = True
            keep &= in_domain
        if flt.exclude_agent is not None:
            keep[list(self._agent_rows.get(flt.exclude_agent, ()))] = False
        return keep

    def query(self, vector: np.ndarray, top_k: int, flt: QueryFilter) -> list[tuple[dict, float]]:
        vector = check_query(self.dim, vector, top_k)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        with self._lock:
            n = self._size
            if n == 0:
                return []
            scores = self._vectors[:n] @ vector
            rows = np.flatnonzero(self.mask(flt))
            if len(rows) == 0:
                return []
            sub = scores[rows]
            k = min(top_k, len(rows))
            best = np.argpartition(-sub, k - 1)[:k]
            best = best[np.argsort(-sub[best], kind="stable")]
            return [(dict(self._payloads[rows[i]]), float(sub[i])) for i in best]

    def get(self, ids: Sequence[str]) -> dict[str, dict]:
        with self._lock:
            return {pid: dict(self._payloads[self._row[pid]]) for pid in ids if pid in self._row}

    def count(self) -> int:
        return self._size

    def close(self) -> None:
        pass
