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
from dataclasses import fields as dataclass_fields
from typing import Any, Iterable, Sequence

from ..embedders import Embedder, get_embedder
from ..stores.contract import QueryFilter, Store, check_top_k
from ..stores.registry import STORES, open_store, store_spec
from .packet import OutcomePacket
from .urls import parse_store_url, url_forms

log = logging.getLogger(__name__)

Hit = tuple[OutcomePacket, float]

# Payloads this router writes carry this key: read back with it, and with exactly the
# packet's fields, a payload is rebuilt without validating it again (the packet was
# validated when it was built). Any other payload is validated in full. Whoever can write
# to a store can write the marker too, so a writer that takes payloads from others (the
# routing service's vector API) validates them first (`validated_packet`) and sets the
# marker itself. Version 2: payloads marked before that rule (version 1) are validated again.
PAYLOAD_MARKER = "qis_payload"
PAYLOAD_VERSION = 2
_PACKET_FIELDS = [f.name for f in dataclass_fields(OutcomePacket)]
_TRUSTED_KEYS = frozenset(_PACKET_FIELDS) | {"expires_at", PAYLOAD_MARKER}


def router_payload(packet: OutcomePacket) -> dict[str, Any]:
    """The payload the router stores for `packet`: `to_payload()` plus the router's marker."""
    payload = packet.to_payload()
    payload[PAYLOAD_MARKER] = PAYLOAD_VERSION
    return payload


def trusted_packet(payload: dict) -> OutcomePacket | None:
    """The packet of a payload this router wrote (marker and exactly its keys), built without
    re-validation; None for any other payload, which the caller validates."""
    if payload.get(PAYLOAD_MARKER) != PAYLOAD_VERSION or payload.keys() != _TRUSTED_KEYS:
        return None
    packet = object.__new__(OutcomePacket)
    values = {name: payload[name] for name in _PACKET_FIELDS}
    tags = values["domain_tags"]
    if type(tags) is list:
        values["domain_tags"] = tuple(tags)
    elif type(tags) is not tuple:
        return None
    packet.__dict__.update(values)
    return packet


def validated_packet(payload: Any) -> OutcomePacket:
    """The packet a payload from outside holds, checked as a deposit is: every field by the
    packet's rules, no key beyond the packet's, `expires_at` and the marker (if present)
    consistent. Raises ValueError or TypeError naming what is wrong."""
    packet = OutcomePacket.from_payload(payload)
    extra = sorted(map(str, set(payload) - _TRUSTED_KEYS))
    if extra:
        raise ValueError(f"payload has field(s) {extra} that a packet does not; a packet's are "
                         f"{_PACKET_FIELDS + ['expires_at']}")
    if "expires_at" in payload and payload["expires_at"] != packet.expires_at:
        raise ValueError(f"expires_at must be timestamp + ttl ({packet.expires_at}), got {payload['expires_at']!r}")
    if PAYLOAD_MARKER in payload and payload[PAYLOAD_MARKER] not in (1, PAYLOAD_VERSION):
        raise ValueError(f"{PAYLOAD_MARKER} must be {PAYLOAD_VERSION} (it is the library's own mark), "
                         f"got {payload[PAYLOAD_MARKER]!r}")
    return packet


@dataclass
class Synthesis:
    """What the agents who met a similar problem found, weighted by similarity x confidence."""

    matches: list[Hit]
    outcome_counts: dict[str, int] = field(default_factory=dict)
    consensus: str | None = None  # the outcome type with the most weight, None with no matches
    support: float = 0.0  # its share of the total weight, 0..1

    def __iter__(self):
        """The matches as (packet, score) pairs, best first: `for packet, score in router.synthesize(...)`."""
        return iter(self.matches)

    def __len__(self) -> int:
        return len(self.matches)

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

    def __init__(self, store: Store, embedder: Embedder | None = None, *, hybrid: bool | None = None,
                 purge_every: int | None = None, purge_interval: float | None = None):
        """`hybrid`: send the problem text with each query so the store fuses BM25 with the
        dense search (None: what the store was opened for). `purge_every` (deposits) and
        `purge_interval` (seconds): delete expired packets from the store after that many
        deposits or once that much time has passed, whichever comes first (checked on
        deposit); None for neither. `purge_expired()` does it now."""
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
        if purge_every is not None and (isinstance(purge_every, bool) or not isinstance(purge_every, int)
                                        or purge_every < 1):
            raise ValueError(f"purge_every must be None or a positive int (deposits), got {purge_every!r}")
        if purge_interval is not None and (isinstance(purge_interval, bool)
                                           or not isinstance(purge_interval, (int, float)) or not purge_interval > 0):
            raise ValueError(f"purge_interval must be None or a positive number of seconds, got {purge_interval!r}")
        self.purge_every, self.purge_interval = purge_every, purge_interval
        self._since_purge = 0
        self._last_purge = time.monotonic()
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
            self.store.upsert([p.packet_id for p in unique], vectors, [router_payload(p) for p in unique])
            self._count("deposits", len(unique))
            if self.purge_every is not None or self.purge_interval is not None:
                self._purge_if_due(len(unique))
        return ids

    def purge_expired(self, now: float | None = None, agent_id: str | None = None) -> int:
        """Delete every packet expired at `now` (default: the clock) from the store, only
        `agent_id`'s if given; returns how many. Queries never return expired packets; this
        frees the room they take."""
        removed = self.store.purge_expired(now, agent_id=agent_id)
        self._count("purged", removed)
        self._count("purges")
        return removed

    def _purge_if_due(self, deposited: int) -> None:
        with self._counts_lock:
            self._since_purge += deposited
            due = (self.purge_every is not None and self._since_purge >= self.purge_every) or \
                  (self.purge_interval is not None and time.monotonic() - self._last_purge >= self.purge_interval)
            if due:
                self._since_purge, self._last_purge = 0, time.monotonic()
        if due:
            try:
                self.purge_expired()
            except Exception as exc:  # the deposit is acknowledged; a failed cleanup is retried next time
                self._count("purge_errors")
                log.warning("purging expired packets failed: %s", exc)

    def query(self, problem: str, top_k: int = 10, domain: str | None = None, min_confidence: float = 0.0,
              exclude_agent: str | None = None, now: float | None = None, *,
              domain_filter: str | None = None) -> list[Hit]:
        """The live packets whose problems are most similar to `problem`, best first.

        Every filter runs inside the store, so expired or filtered-out packets never take
        a place in the top k. `domain_filter` is another name for `domain`.
        """
        if not isinstance(problem, str) or not problem.strip():
            raise ValueError(f"problem must be a non-empty string, got {problem!r}")
        domain = one_domain(domain, domain_filter)
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
            packet = trusted_packet(payload)
            if packet is not None:
                out.append((packet, score))
                continue
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

    def delete(self, packet_ids: Sequence[str]) -> list[str]:
        """Remove the packets `packet_ids` from the store; returns the ids that were stored
        (ids not stored are ignored)."""
        found = list(self.store.get(list(packet_ids)))
        if found:
            self.store.delete(found)
            self._count("deleted", len(found))
        return found

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
            "purged": counts.get("purged", 0),
            "deleted": counts.get("deleted", 0),
            "hybrid_queries": self.hybrid,
            **{k: v for k, v in vars(self.store.capabilities).items()},
            "store_info": self.store.info(),
        }

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "OutcomeRouter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def one_domain(domain: str | None, domain_filter: str | None) -> str | None:
    """`domain`, or the article's name for it, `domain_filter`; both given must agree."""
    if domain_filter is None:
        return domain
    if domain is not None and domain != domain_filter:
        raise ValueError(f"domain={domain!r} and domain_filter={domain_filter!r} disagree: "
                         "they are two names for one filter, give one")
    return domain_filter


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
    sentence-transformers; the choice is logged once). A routing service url
    ("http://host:port") with no embedder gives a router whose work, embedding included,
    happens on the service; with one, this process embeds and uses the service's store.
    `purge_every` / `purge_interval` go to the router (automatic purge of expired packets);
    every other option goes to the store.

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
    if STORES[name].router is not None and embedder is None:  # a routing service: it embeds for its agents
        return STORES[name].load_router()(**options)
    if embedder is None or isinstance(embedder, str):
        embedder = get_embedder(embedder)
    options.setdefault("dim", embedder.dim)
    cadence = {key: options.pop(key) for key in ("purge_every", "purge_interval") if key in options}
    if store_spec(name).hybrid:
        options.setdefault("hybrid", hybrid)
    elif hybrid or any(k in options for k in ("rrf_k", "prefetch", "bm25_avg_len")):
        raise ValueError(f"hybrid search (hybrid=True, rrf_k, prefetch, bm25_avg_len) needs a store that fuses BM25 and "
                         f"dense search in its engine: {hybrid_stores()}; the {name!r} store has no BM25 index. "
                         "Leave hybrid out (or False) for dense search")
    return OutcomeRouter(open_store(name, **options), embedder,
                         hybrid=None if hybrid is None else bool(hybrid), **cadence)
