"""The one interface every store implements, and the checks they all share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

# Payload fields every transport indexes and filters on inside the store.
FILTER_FIELDS = ("domain_tags", "confidence", "expires_at", "agent_id")


@dataclass(frozen=True)
class Capabilities:
    persistent: bool = False  # data survives closing the client
    shared: bool = False  # several processes may open the same store at once
    server: bool = False  # talks to a separate server process


@dataclass(frozen=True)
class QueryFilter:
    """What a query keeps: applied inside the store, before top-k, by every transport."""

    now: float
    domain: str | None = None
    min_confidence: float = 0.0
    exclude_agent: str | None = None

    def matches(self, payload: dict[str, Any]) -> bool:
        """The reference semantics, in plain Python (used by tests and the memory store)."""
        return (
            payload["expires_at"] > self.now
            and payload["confidence"] >= self.min_confidence
            and (self.domain is None or self.domain in payload["domain_tags"])
            and (self.exclude_agent is None or payload["agent_id"] != self.exclude_agent)
        )


@runtime_checkable
class Transport(Protocol):
    """A vector store holding packet payloads, keyed by packet id.

    Hits are (payload, score) with score the cosine similarity, best first.
    """

    name: str
    capabilities: Capabilities
    dim: int

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]) -> None: ...

    def query(self, vector: np.ndarray, top_k: int, flt: QueryFilter) -> list[tuple[dict, float]]: ...

    def get(self, ids: Sequence[str]) -> dict[str, dict]: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


def check_dim(dim: Any) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    return dim


def check_upsert(dim: int, ids: Sequence[str], vectors: Any, payloads: Sequence[dict]) -> np.ndarray:
    """Validate a whole batch before any of it is written, so a bad batch writes nothing."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}), got {vectors.shape}")
    if not (len(ids) == len(vectors) == len(payloads)):
        raise ValueError(f"ids, vectors and payloads differ in length: {len(ids)}, {len(vectors)}, {len(payloads)}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinite values")
    if len(set(ids)) != len(ids):
        raise ValueError("ids in one batch must be unique")
    for pid, payload in zip(ids, payloads):
        if not isinstance(pid, str) or not pid:
            raise ValueError(f"ids must be non-empty strings, got {pid!r}")
        missing = [f for f in FILTER_FIELDS if f not in payload]
        if missing:
            raise ValueError(f"payload of {pid} lacks filter field(s) {missing}")
    return vectors


MAX_TOP_K = 10_000  # stores take a C long or less; no router needs more


def check_top_k(top_k: Any) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be an int from 1 to {MAX_TOP_K}, got {top_k!r}")


def check_query(dim: int, vector: Any, top_k: Any) -> np.ndarray:
    check_top_k(top_k)
    vector = np.asarray(vector, dtype=np.float32)
    if vector.shape != (dim,):
        raise ValueError(f"query vector must have shape ({dim},), got {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError("query vector contains NaN or infinite values")
    return vector


class StoreBusyError(RuntimeError):
    """The store is opened by another client that holds it exclusively."""


def check_uuid_ids(ids: Sequence[str]) -> None:
    """Qdrant takes only UUIDs or integers as point ids (packet ids are UUIDs)."""
    import uuid

    for pid in ids:
        try:
            uuid.UUID(pid)
        except (ValueError, TypeError, AttributeError):
            raise ValueError(f"Qdrant point ids must be UUID strings, got {pid!r}") from None


def lock_folder(path: str, store: str):
    """Take an exclusive lock on a store folder, or raise StoreBusyError naming who may share it.

    Chroma does not guard a path against a second process (several writers on one
    SQLite file read stale data or wait on its busy timeout), so we refuse at open time.
    """
    import fcntl
    import os

    os.makedirs(path, exist_ok=True)
    handle = open(os.path.join(path, ".qis-lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreBusyError(
            f"{path} is already open in another {store} client; an embedded store has one opener at a time. "
            f"Close the other one, or share the store through a server (chroma run)") from None
    return handle
