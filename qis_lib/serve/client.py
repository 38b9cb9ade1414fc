"""The agents' side of the routing service: a router whose work happens on the service.

    router = make_router("http://127.0.0.1:8080", api_key="...")   # a RemoteRouter
    router.deposit(OutcomePacket(...)); router.query("...", domain="hdfs")

It has the methods and return types of `OutcomeRouter` (packets come back as
`OutcomePacket`, queries as (packet, score) pairs, `synthesize` as a `Synthesis`); one
HTTP request per call, the text embedded on the service. It needs httpx only: no model,
no store client. The key (`api_key`, default $QIS_API_KEY) decides the agent it acts as:
a packet without an agent id takes it, another agent's is refused. Errors name the
service's address: a dead or silent service is a ConnectionError within `timeout` seconds,
a broken rule a ValueError naming the field, a refused request a PermissionError, a key over
its limits a ServiceBusyError (with `retry_after`).
The client holds no state beyond its connection pool, so after an outage the next call
simply works again; a deposit is safe to retry (same packet, same id).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import numpy as np

from ..core.packet import ANONYMOUS, OutcomePacket
from ..core.router import Hit, Synthesis, one_domain
from ..stores.http import MAX_BATCH, HttpStore, ServiceClient


def packet_body(packet: OutcomePacket) -> dict[str, Any]:
    """The JSON an agent sends for `packet` (its fields; the service rebuilds and checks it).
    A packet left with the default agent id ("anonymous") is sent without one, so it takes
    the agent the caller's key acts as."""
    return {k: v for k, v in packet.to_payload().items()
            if k != "expires_at" and not (k == "agent_id" and v == ANONYMOUS)}


def query_body(problem: str, top_k: int, domain: str | None, min_confidence: float, exclude_agent: str | None,
               now: float | None, domain_filter: str | None) -> dict[str, Any]:
    """The body of POST /v1/query (the sync and the async clients send the same)."""
    return {"problem": problem, "top_k": top_k, "domain": one_domain(domain, domain_filter),
            "min_confidence": min_confidence, "exclude_agent": exclude_agent, "now": now}


def synthesize_body(my_problem: str, my_outcome: OutcomePacket, top_k: int, filters: dict) -> dict[str, Any]:
    """The body of POST /v1/synthesize."""
    _check_packets([my_outcome])
    return {"problem": my_problem, "outcome": packet_body(my_outcome), "top_k": top_k, **filters}


def synthesis_of(out: dict) -> Synthesis:
    return Synthesis(matches=_hits(out["matches"]), outcome_counts=out["outcome_counts"],
                     consensus=out["consensus"], support=out["support"])


def _packet(body: dict) -> OutcomePacket:
    return OutcomePacket.from_payload(body)


def _hits(hits: list[dict]) -> list[Hit]:
    return [(_packet(h["packet"]), h["score"]) for h in hits]


def _check_packets(packets: Iterable[OutcomePacket]) -> list[OutcomePacket]:
    packets = list(packets)
    for i, packet in enumerate(packets):
        if not isinstance(packet, OutcomePacket):
            raise TypeError(f"deposit takes OutcomePacket objects, item {i} is a {type(packet).__name__}")
    return packets


class RemoteEmbedder:
    """The service's embedder (`name`, `dim`, `encode`), one request per 1,000 texts."""

    def __init__(self, client: ServiceClient, name: str, dim: int):
        self.client, self.name, self.dim = client, name, dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        parts = [self.client.call("POST", "/v1/embed", {"texts": texts[i:i + MAX_BATCH]})["vectors"]
                 for i in range(0, len(texts), MAX_BATCH)]
        return np.asarray([v for part in parts for v in part], dtype=np.float32).reshape(len(texts), self.dim)


class RemoteRouter:
    """An `OutcomeRouter` whose store and embedder live in a routing service at `url`.

    `timeout` (seconds) bounds every request; `max_connections` is the pool size (one
    connection per thread calling at once); `ca_file`: the certificate authority of an
    https:// service. `whoami`: the key's id, role and agent, as the service sees them. Thread-safe.
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0, max_connections: int = 100,
                 ca_file: str | os.PathLike | None = None):
        self.client = ServiceClient(url, api_key=api_key, timeout=timeout, max_connections=max_connections,
                                    ca_file=ca_file)
        self.url, self._api_key, self._ca_file = self.client.url, api_key, ca_file
        try:
            health = self.client.call("GET", "/health")
            self.whoami = self.client.call("GET", "/v1/whoami")  # checks the key
        except BaseException:
            self.client.close()
            raise
        self.embedder = RemoteEmbedder(self.client, health["embedder"], health["dim"])
        self.backend = health["store"]
        self._store: HttpStore | None = None

    @property
    def store(self) -> HttpStore:
        """The service's store through its vector API (admin keys only: the same packets the agents see)."""
        if self._store is None:
            self._store = HttpStore(self.url, dim=self.embedder.dim, api_key=self._api_key,
                                    timeout=self.client.timeout, ca_file=self._ca_file)
        return self._store

    def deposit(self, packet: OutcomePacket) -> str:
        """Store one packet; returns its id once the service's store has acknowledged it."""
        _check_packets([packet])
        return self.client.call("POST", "/v1/packets", packet_body(packet))["id"]

    def deposit_many(self, packets: Iterable[OutcomePacket]) -> list[str]:
        """Batches of up to 1,000 packets, one request each; ids in the order given."""
        packets = _check_packets(packets)
        ids: list[str] = []
        for start in range(0, len(packets), MAX_BATCH):
            body = {"packets": [packet_body(p) for p in packets[start:start + MAX_BATCH]]}
            ids += self.client.call("POST", "/v1/packets/batch", body)["ids"]
        return ids

    def query(self, problem: str, top_k: int = 10, domain: str | None = None, min_confidence: float = 0.0,
              exclude_agent: str | None = None, now: float | None = None, *,
              domain_filter: str | None = None) -> list[Hit]:
        """As `OutcomeRouter.query`: every filter runs in the service's store, before top-k."""
        body = query_body(problem, top_k, domain, min_confidence, exclude_agent, now, domain_filter)
        return _hits(self.client.call("POST", "/v1/query", body)["hits"])

    def synthesize(self, my_problem: str, my_outcome: OutcomePacket, top_k: int = 10, **filters) -> Synthesis:
        """Deposit my outcome (as the key's agent), then what other agents found for a similar problem."""
        body = synthesize_body(my_problem, my_outcome, top_k, filters)
        return synthesis_of(self.client.call("POST", "/v1/synthesize", body))

    def get(self, packet_ids: Sequence[str]) -> dict[str, OutcomePacket]:
        """The stored packets among `packet_ids` (missing ids are left out)."""
        ids = list(packet_ids)
        found: dict[str, OutcomePacket] = {}
        for start in range(0, len(ids), 10 * MAX_BATCH):
            out = self.client.call("POST", "/v1/get", {"ids": ids[start:start + 10 * MAX_BATCH]})
            found.update({pid: _packet(p) for pid, p in out["packets"].items()})
        return found

    def delete(self, packet_ids: Sequence[str]) -> list[str]:
        """Remove the packets `packet_ids` (an agent key: its own only; one of another agent's
        among them is a PermissionError and nothing is removed); returns the ids that were stored."""
        ids = list(packet_ids)
        deleted: list[str] = []
        for start in range(0, len(ids), 10 * MAX_BATCH):
            deleted += self.client.call("POST", "/v1/packets/delete", {"ids": ids[start:start + 10 * MAX_BATCH]})["deleted"]
        return deleted

    def stats(self) -> dict[str, Any]:
        """The service's router stats (its counts cover every agent it serves)."""
        return self.client.call("GET", "/v1/stats")

    def purge_expired(self, now: float | None = None, agent_id: str | None = None) -> int:
        """Remove expired packets from the service's store (an agent key: its own only)."""
        return self.client.call("POST", "/v1/purge", {"now": now, "agent_id": agent_id})["purged"]

    def close(self) -> None:
        """Close this client's connections (the service and its store keep running)."""
        if self._store is not None:
            self._store.close()
        self.client.close()

    def __enter__(self) -> "RemoteRouter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
