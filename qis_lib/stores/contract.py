"""The contract every store keeps, written once and enforced once.

A store holds packet payloads (flat dicts, see `OutcomePacket.to_payload`) with one
vector each, keyed by packet id. Every store subclasses `Store`: its public methods
validate their arguments and then call the store's own `_upsert`, `_query`, `_get`,
`_delete`, so no store can skip a check, and a store module contains only what is
particular to its engine.

The guarantees (checked on every store by `tests/store_suite.py`):

- **Filter before top-k.** `query` applies the whole `QueryFilter` inside the store,
  before the k best are chosen: a packet that fails the filter never takes a place.
- **A bad batch writes nothing.** `upsert` and `delete` check the whole batch before
  writing any of it, and raise `ValueError` naming what was wrong.
- **Upserts by id.** Writing an id again replaces its vector and payload (a retried
  deposit never duplicates); the payload comes back exactly as written.
- **Acknowledged means stored.** When `upsert` returns, the write survives a crash
  of this process (for persistent stores, also a reopen by a new process).
"""
from __future__ import annotations

import abc
import math
import uuid
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from .folders import FolderManifest, StoreBusyError, StoreDamagedError, lock_folder, opening_error  # noqa: F401 (re-exported)

# Payload fields every store indexes and filters on inside the store.
FILTER_FIELDS = ("domain_tags", "confidence", "expires_at", "agent_id")
MAX_TOP_K = 10_000  # stores take a C long or less; no router needs more

Hit = tuple[dict, float]


@dataclass(frozen=True)
class Capabilities:
    """What a store can do, read by the router, the tests and the benchmark (never by name)."""

    persistent: bool = False  # data survives closing the client
    shared: bool = False  # several processes may open the same store at once
    server: bool = False  # talks to a separate server process
    hybrid: bool = False  # query(..., text=) fuses BM25 over the stored problem texts with the dense search


@dataclass(frozen=True)
class QueryFilter:
    """What a query keeps: applied inside the store, before top-k, by every store."""

    now: float
    domain: str | None = None
    min_confidence: float = 0.0
    exclude_agent: str | None = None

    def __post_init__(self) -> None:
        for name in ("now", "min_confidence"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be a number between 0.0 and 1.0, got {self.min_confidence!r}")
        for name in ("domain", "exclude_agent"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be None or a non-empty string, got {value!r}")

    def matches(self, payload: dict[str, Any]) -> bool:
        """The reference semantics, in plain Python (used by tests and the reference store)."""
        return (
            payload["expires_at"] > self.now
            and payload["confidence"] >= self.min_confidence
            and (self.domain is None or self.domain in payload["domain_tags"])
            and (self.exclude_agent is None or payload["agent_id"] != self.exclude_agent)
        )


def check_dim(dim: Any) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    return dim


def check_top_k(top_k: Any) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be an int from 1 to {MAX_TOP_K}, got {top_k!r}")


def check_ids(ids: Any) -> list[str]:
    """A list of non-empty string ids (a single str is refused: it would be read as characters)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"ids must be a sequence of ids, got a single {type(ids).__name__}: {ids!r}")
    ids = list(ids)
    for pid in ids:
        if not isinstance(pid, str) or not pid:
            raise ValueError(f"ids must be non-empty strings, got {pid!r}")
    return ids


def check_uuid_ids(ids: Sequence[str]) -> None:
    """For stores whose engine takes only UUIDs as point ids (packet ids are UUIDs)."""
    for pid in ids:
        try:
            uuid.UUID(pid)
        except (ValueError, TypeError, AttributeError):
            raise ValueError(f"this store takes UUID strings as ids, got {pid!r}") from None


def check_upsert(dim: int, ids: Any, vectors: Any,
                 payloads: Sequence[dict]) -> tuple[list[str], np.ndarray, list[dict]]:
    """Validate a whole batch before any of it is written, so a bad batch writes nothing.
    Returns the ids, the vectors as float32 and copies of the payloads."""
    ids = check_ids(ids)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}), got {vectors.shape}")
    payloads = list(payloads)
    if not (len(ids) == len(vectors) == len(payloads)):
        raise ValueError(f"ids, vectors and payloads differ in length: {len(ids)}, {len(vectors)}, {len(payloads)}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinite values")
    if len(set(ids)) != len(ids):
        raise ValueError("ids in one batch must be unique")
    for pid, payload in zip(ids, payloads):
        if not isinstance(payload, dict):
            raise ValueError(f"payload of {pid} must be a dict, got {type(payload).__name__}")
        missing = [f for f in FILTER_FIELDS if f not in payload]
        if missing:
            raise ValueError(f"payload of {pid} lacks filter field(s) {missing}")
    return ids, vectors, [dict(p) for p in payloads]


def check_query(dim: int, vector: Any, top_k: Any, flt: Any) -> np.ndarray:
    """The query vector as float32 of shape (dim,), after checking it, top_k and the filter."""
    check_top_k(top_k)
    if not isinstance(flt, QueryFilter):
        raise TypeError(f"flt must be a QueryFilter, got {type(flt).__name__}")
    vector = np.asarray(vector, dtype=np.float32)
    if vector.shape != (dim,):
        raise ValueError(f"query vector must have shape ({dim},), got {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError("query vector contains NaN or infinite values")
    return vector


class Store(abc.ABC):
    """A vector store holding packet payloads, keyed by packet id.

    Subclass it, set `name`, `capabilities` and `dim`, and write the underscored
    methods; the public ones check every argument first. Scores are cosine
    similarities, best first. A store is safe to call from many threads of one process.
    """

    name: ClassVar[str]
    capabilities: Capabilities = Capabilities()
    dim: int

    def check_store_ids(self, ids: list[str]) -> None:
        """Ids this engine cannot hold raise ValueError here (before anything is written)."""

    # --- the contract --------------------------------------------------------------

    def upsert(self, ids: Sequence[str], vectors: Any, payloads: Sequence[dict]) -> None:
        """Write the batch: each id's vector and payload replace any stored under that id.

        The whole batch is checked first (shapes, finite values, unique ids, the filter
        fields in every payload): a bad batch raises ValueError and writes nothing. On
        return the write is acknowledged: it survives a crash of this process.
        """
        ids, vectors, payloads = check_upsert(self.dim, ids, vectors, payloads)
        self.check_store_ids(ids)
        if ids:
            self._upsert(ids, vectors, payloads)

    def query(self, vector: Any, top_k: int, flt: QueryFilter, *, text: str | None = None) -> list[Hit]:
        """The `top_k` stored payloads most similar to `vector` among those `flt` keeps.

        Returns (payload, cosine similarity) pairs, best first; fewer than top_k when
        fewer match. The filter runs inside the store, before the top k are chosen.

        `text` (the query's problem text) asks a hybrid store (`capabilities.hybrid`)
        to fuse BM25 over the stored problem texts with the dense search, the filter
        applied to both; the order is then the fused one and the score still the cosine.
        A store without hybrid search refuses it rather than silently ignoring it.
        """
        vector = check_query(self.dim, vector, top_k, flt)
        if text is None:
            return self._query(vector, top_k, flt)
        if not self.capabilities.hybrid:
            raise ValueError(f"query(text=...) asks for hybrid search, which this {self.name} store does not do: "
                             "open a qdrant-edge or qdrant store with hybrid=True, or leave text out")
        from .bm25 import check_text

        return self._query(vector, top_k, flt, text=check_text(text))

    def get(self, ids: Sequence[str]) -> dict[str, dict]:
        """The stored payloads of `ids`, by id; ids not stored are left out."""
        ids = check_ids(ids)
        self.check_store_ids(ids)
        return self._get(ids) if ids else {}

    def delete(self, ids: Sequence[str]) -> None:
        """Remove `ids` (ids not stored are ignored). A bad id raises before anything is removed."""
        ids = check_ids(ids)
        self.check_store_ids(ids)
        if ids:
            self._delete(list(dict.fromkeys(ids)))

    @abc.abstractmethod
    def count(self) -> int:
        """How many packets are stored (expired ones included)."""

    def purge_expired(self, now: float | None = None, agent_id: str | None = None) -> int:
        """Delete every packet whose `expires_at` is at or before `now` (default: the clock),
        only those of `agent_id` if given; return how many were deleted. A live packet
        (expires_at > now) is never touched, nor another agent's when `agent_id` is given.
        Stores override `_purge_expired` (one delete by filter inside the engine, where it has one).
        """
        now = self._purge_now(now)
        if agent_id is not None and (not isinstance(agent_id, str) or not agent_id.strip()):
            raise ValueError(f"agent_id must be None or a non-empty string, got {agent_id!r}")
        return self._purge_expired(now, agent_id)

    def _purge_expired(self, now: float, agent_id: str | None) -> int:
        """The default purge, on any store through the contract, for packets stored under their
        packet id (as the router stores them): one query whose filter keeps everything reads
        every payload, the expired ids are read back with `get` (so a payload naming another id
        can never get a live packet deleted) and deleted. It reads at most MAX_TOP_K packets; a
        larger store that does not override it raises NotImplementedError."""
        total = self.count()
        if total == 0:
            return 0
        if total > MAX_TOP_K:
            raise NotImplementedError(f"{type(self).__name__} holds {total} packets, more than the {MAX_TOP_K} "
                                      f"the default purge_expired reads in one query: override _purge_expired")
        probe = np.full(self.dim, 1.0 / math.sqrt(self.dim), dtype=np.float32)
        hits = self._query(probe, total, QueryFilter(now=-1e308))  # every expires_at is above -1e308
        from ..core.packet import OutcomePacket  # the packet id is derived from the payload's fields

        named = []
        for payload, _ in hits:
            try:
                named.append(OutcomePacket.from_payload(payload).packet_id)
            except (ValueError, TypeError):
                continue  # not a packet's payload: its id cannot be known here
        stored = self.get(named) if named else {}
        expired = [pid for pid, p in stored.items()
                   if p["expires_at"] <= now and (agent_id is None or p["agent_id"] == agent_id)]
        if expired:
            self.delete(expired)
        return len(expired)

    @staticmethod
    def _purge_now(now: Any) -> float:
        """`now` checked (a finite number), or the clock if None."""
        if now is None:
            import time

            return time.time()
        return QueryFilter(now=now).now  # names the argument when it is not a finite number

    def scroll_ids(self, page: int = 1000) -> list[str]:
        """Every stored id, read page by page from the engine (a full scroll, expired ones included).

        Crash checks compare it with `count()` and look in it for ids nobody wrote. A store
        that cannot list its ids raises NotImplementedError (the default).
        """
        raise NotImplementedError(f"the {self.name!r} store cannot list its ids")

    def before_bulk_load(self) -> None:
        """Called by the benchmark before a bulk load; a store that indexes as it goes may hold
        its index builds until `after_bulk_load()`. Nothing by default."""

    def after_bulk_load(self) -> None:
        """Make the store ready to answer fast after a bulk load (build an index, wait for one).

        Called by the benchmark after loading; a store that indexes on write does nothing.
        """

    def info(self) -> dict[str, Any]:
        """The store's own view of its data, where it has one (Qdrant: points, indexed
        vectors, status, cluster settings); {} by default."""
        return {}

    def native_query_fn(self, vectors: np.ndarray, filters: Sequence[QueryFilter],
                        k: int) -> Callable[[int], Any] | None:
        """fn(j): the engine's own query call for vectors[j] under filters[j], its request
        built beforehand, for measuring what this library adds. None if there is no client call."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release the client (and, for a throwaway store, its data). Safe to call twice."""

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- what each store writes ----------------------------------------------------

    @abc.abstractmethod
    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None: ...

    @abc.abstractmethod
    def _query(self, vector: np.ndarray, top_k: int, flt: QueryFilter) -> list[Hit]:
        """Dense search; a hybrid store also takes the keyword `text` (called only when given)."""

    @abc.abstractmethod
    def _get(self, ids: list[str]) -> dict[str, dict]: ...

    @abc.abstractmethod
    def _delete(self, ids: list[str]) -> None: ...
