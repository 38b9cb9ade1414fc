"""OutcomeRouter: deposit packets, route a problem to the outcomes of similar problems.

The router is the same whatever store sits underneath; `make_router` picks the store
from a name or a URL-like string.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..embedders import Embedder, get_embedder
from ..stores.contract import QueryFilter, Store, check_top_k
from ..stores.registry import STORES, open_store, store_spec
from .packet import OutcomePacket
from .urls import parse_store_url, url_forms

log = logging.getLogger(__name__)

Hit = tuple[OutcomePacket, float]


@dataclass
class Synthesis:
    """What the agents who met a similar problem found, weighted by similarity x confidence."""

    matches: list[Hit]
    outcome_counts: dict[str, int] = field(default_factory=dict)
    consensus: str | None = None  # the outcome type with the most weight, None with no matches
    support: float = 0.0  # its share of the total weight, 0..1

    @classmethod
    def of(cls, matches: list[Hit]) -> "Synthesis":
        """Weigh each outcome type by the sum of similarity x confidence of its matches."""
        weights: dict[str, float] = defaultdict(float)
        for packet, score in matches:
            weights[packet.outcome_type] += max(score, 0.0) * packet.confidence
        total = sum(weights.values())
        consensus = max(weights, key=weights.get) if weights else None
        return cls(
            matches=matches,
            outcome_counts=dict(Counter(p.outcome_type for p, _ in matches)),
            consensus=consensus,
            support=weights[consensus] / total if consensus is not None and total > 0 else 0.0,
        )


class OutcomeRouter:
    """Deposits packets into one store and routes problems to the outcomes stored there.

    The same class runs on every store: all it asks of one is the `Store` contract.
    Safe to call from many threads.
    """

    def __init__(self, store: Store, embedder: Embedder | None = None, *, hybrid: bool | None = None):
        if not isinstance(store, Store):
            raise TypeError(f"OutcomeRouter takes a Store, got {type(store).__name__}")
        if hybrid not in (None, True, False):
            raise ValueError(f"hybrid must be True, False or None (what the store does), got {hybrid!r}")
        if hybrid and not store.capabilities.hybrid:
            raise ValueError(f"hybrid=True needs a store opened for hybrid search; this {store.name} store is not "
                             f"(hybrid stores: {hybrid_stores()})")
        # hybrid: send the problem text with each query, so the store fuses BM25 with the dense search
        self.hybrid = store.capabilities.hybrid if hybrid is None else hybrid
        self.store = store
        self.embedder = embedder if embedder is not None else get_embedder()
        if self.embedder.dim != store.dim:
            raise ValueError(f"embedder {self.embedder.name} gives {self.embedder.dim}-d vectors but the "
                             f"{store.name} store holds {store.dim}-d vectors")
        self._counts: Counter = Counter()
        self._counts_lock = threading.Lock()

    def _count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[key] += n

    def deposit(self, packet: OutcomePacket) -> str:
        """Store one packet; returns its id. Depositing the same packet again overwrites it."""
        return self.deposit_many([packet])[0]

    def deposit_many(self, packets: Iterable[OutcomePacket]) -> list[str]:
        """One batched encode and one batched write; returns the ids in the order given."""
        packets = list(packets)
        for i, packet in enumerate(packets):
            if not isinstance(packet, OutcomePacket):
                raise TypeError(f"deposit takes OutcomePacket objects, item {i} is a {type(packet).__name__}")
        ids = [p.packet_id for p in packets]
        unique = list({pid: p for pid, p in zip(ids, packets)}.values())  # a packet twice in a batch is one write
        if unique:
            vectors = self.embedder.encode([p.problem_description for p in unique])
            self.store.upsert([p.packet_id for p in unique], vectors, [p.to_payload() for p in unique])
            self._count("deposits", len(unique))
        return ids

    def query(self, problem: str, top_k: int = 10, domain: str | None = None, min_confidence: float = 0.0,
              exclude_agent: str | None = None, now: float | None = None) -> list[Hit]:
        """The live packets whose problems are most similar to `problem`, best first.

        Every filter runs inside the store, so expired or filtered-out packets never take
        a place in the top k.
        """
        if not isinstance(problem, str) or not problem.strip():
            raise ValueError(f"problem must be a non-empty string, got {problem!r}")
        check_top_k(top_k)
        flt = QueryFilter(now=time.time() if now is None else now, domain=domain, min_confidence=min_confidence,
                          exclude_agent=exclude_agent)  # checks each value, naming the one that is wrong
        vector = self.embedder.encode([problem])[0]
        hits = self.store.query(vector, top_k, flt, text=problem) if self.hybrid else self.store.query(vector, top_k, flt)
        self._count("queries")
        return self._packets(hits)

    def _packets(self, hits: Sequence[tuple[dict, float]]) -> list[Hit]:
        out = []
        for payload, score in hits:
            try:
                out.append((OutcomePacket.from_payload(payload), score))
            except (ValueError, TypeError) as exc:
                # Written by an older or foreign writer: skip it, do not fail the query.
                self._count("skipped_payloads")
                log.warning("skipping a stored payload that is not a valid packet: %s", exc)
        return out

    def synthesize(self, my_problem: str, my_outcome: OutcomePacket, top_k: int = 10, **filters) -> Synthesis:
        """Deposit my outcome, then learn what other agents found for a similar problem."""
        self.deposit(my_outcome)
        matches = self.query(my_problem, top_k=top_k, exclude_agent=my_outcome.agent_id, **filters)
        return Synthesis.of(matches)

    def get(self, packet_ids: Sequence[str]) -> dict[str, OutcomePacket]:
        """The stored packets among `packet_ids` (missing ids are left out)."""
        found = self.store.get(list(packet_ids))
        return {pid: packet for pid, payload in found.items()
                for packet, _ in self._packets([(payload, 0.0)])}

    def stats(self) -> dict[str, Any]:
        """Counts of this router's work and the store's size and capabilities."""
        with self._counts_lock:
            counts = dict(self._counts)
        return {
            "store": self.store.name,
            "embedder": self.embedder.name,
            "packets": self.store.count(),
            "deposits": counts.get("deposits", 0),
            "queries": counts.get("queries", 0),
            "skipped_payloads": counts.get("skipped_payloads", 0),
            "hybrid_queries": self.hybrid,
            **{k: v for k, v in vars(self.store.capabilities).items()},
        }

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "OutcomeRouter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def hybrid_stores() -> list[str]:
    """The registered stores that can fuse BM25 and dense search in their engine."""
    return sorted(name for name, spec in STORES.items() if spec.hybrid)


# The default of make_router's `hybrid` (None: hybrid where the store's engine can fuse,
# dense elsewhere), chosen in notebook 06 from the Hadoop duplicate pairs.
DEFAULT_HYBRID: bool | None = None


def make_router(name_or_url: str = "memory", embedder: Embedder | str | None = None, *,
                hybrid: bool | None = DEFAULT_HYBRID, **options) -> OutcomeRouter:
    """A router over the named store: make_router("qdrant-edge", path="data/store") or
    make_router("qdrant://localhost:6333"). `embedder` is an Embedder, a backend name
    for `get_embedder`, or None for the fastest installed backend (onnx, else
    sentence-transformers; the choice is logged once).

    `hybrid`: True adds BM25 beside the dense vector and fuses both inside the store
    (qdrant-edge, qdrant; other stores refuse it by name); False is dense only; None
    (the default) is hybrid on the stores that can do it (an existing store keeps
    what it was created with) and dense elsewhere. Fusion options (`rrf_k`,
    `prefetch`, `bm25_avg_len`) go to the store with the other options."""
    if not isinstance(name_or_url, str):
        raise TypeError(f"make_router takes a store name or url, got {type(name_or_url).__name__}")
    if "://" in name_or_url:
        name, url_options = parse_store_url(name_or_url)
        options = {**url_options, **options}
    else:
        name = name_or_url
        if name not in STORES:
            raise ValueError(f"unknown store {name!r}; choose one of {sorted(STORES)} "
                             f"or a url: {', '.join(url_forms())}")
    if embedder is None or isinstance(embedder, str):
        embedder = get_embedder(embedder)
    options.setdefault("dim", embedder.dim)
    if store_spec(name).hybrid:
        options.setdefault("hybrid", hybrid)
    elif hybrid or any(k in options for k in ("rrf_k", "prefetch", "bm25_avg_len")):
        raise ValueError(f"hybrid search (hybrid=True, rrf_k, prefetch, bm25_avg_len) needs a store that fuses BM25 and "
                         f"dense search in its engine: {hybrid_stores()}; the {name!r} store has no BM25 index. "
                         "Leave hybrid out (or False) for dense search")
    return OutcomeRouter(open_store(name, **options), embedder, hybrid=None if hybrid is None else bool(hybrid))
