"""A short reconstruction of the calls the article series' Qdrant router makes, to run
them on today's qdrant-client and show where they fail.

Source: "QIS Outcome Routing with Qdrant: Scaling to a Distributed Multi-Node Backend"
(dev.to, roryqis, Understanding QIS part 65). This is not the article's code: it
makes the same client calls in the same order, enough to run them:

- connect with `QdrantClient(host=, port=, grpc_port=, prefer_grpc=True)`;
- `create_collection` with a vectors config, `replication_factor` and `shard_number`;
- deposit: one `PointStruct` per packet with a fresh `uuid4()` id;
- synthesize: `client.search(...)` with a domain filter and `limit=top_k`, then drop the
  expired packets from those top k, and return a list of (packet, score);
- `collection_stats()`: `get_collection` -> points, indexed vectors, status;
- packets with the article's default ttl of 3600 s.

`query_call="query_points"` swaps only the removed `client.search` for `query_points`
(what this library calls), so the rest of the article's behaviour can be run and seen.
The library's own answers: `OutcomeRouter`, `QdrantStore` (ids from content, every
filter inside the query).
"""
from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import pandas as pd

from ..core.packet import OutcomePacket

ARTICLES = {
    "qdrant": ("QIS Outcome Routing with Qdrant: Scaling to a Distributed Multi-Node Backend",
               "https://dev.to/roryqis/qis-outcome-routing-with-qdrant-scaling-to-a-distributed-multi-node-backend-2agg"),
    "memory": ("Adding Outcome Routing to Your Multi-Agent App in Python",
               "https://dev.to/roryqis/adding-outcome-routing-to-your-multi-agent-app-in-python-83"),
    "chroma": ("QIS Outcome Routing with ChromaDB: Swapping the Transport Layer in Practice",
               "https://dev.to/roryqis/qis-outcome-routing-with-chromadb-swapping-the-transport-layer-in-practice-4ag2"),
}
ARTICLE_TTL = 3600.0  # the article's packet default, in seconds


class ArticleQdrantRouter:
    """The article's router, reconstructed (see the module docstring). `location=":memory:"`
    runs it on qdrant-client local mode; `host=` on a server."""

    def __init__(self, embedder, host: str | None = None, port: int = 6333, grpc_port: int = 6334,
                 prefer_grpc: bool = True, location: str | None = None, collection: str = "qis_outcomes",
                 replication_factor: int = 2, shard_number: int = 2, query_call: str = "search"):
        from qdrant_client import QdrantClient, models

        self.embedder, self.collection, self.query_call = embedder, collection, query_call
        self.client = (QdrantClient(location=location) if location is not None else
                       QdrantClient(host=host, port=port, grpc_port=grpc_port, prefer_grpc=prefer_grpc))
        if not self.client.collection_exists(collection):
            self.client.create_collection(
                collection_name=collection,
                vectors_config=models.VectorParams(size=embedder.dim, distance=models.Distance.COSINE),
                replication_factor=replication_factor, shard_number=shard_number)

    def deposit(self, packet: OutcomePacket) -> str:
        from qdrant_client import models

        point_id = str(uuid.uuid4())  # a new id on every call: a retried deposit is a second point
        vector = self.embedder.encode([packet.problem_description])[0].tolist()
        self.client.upsert(collection_name=self.collection,
                           points=[models.PointStruct(id=point_id, vector=vector, payload=packet.to_payload())])
        return point_id

    def synthesize(self, query_text: str, domain_filter: str | None = None, top_k: int = 5,
                   now: float | None = None) -> list[tuple[OutcomePacket, float]]:
        from qdrant_client import models

        vector = self.embedder.encode([query_text])[0].tolist()
        flt = None if domain_filter is None else models.Filter(must=[
            models.FieldCondition(key="domain_tags", match=models.MatchValue(value=domain_filter))])
        if self.query_call == "search":
            hits = self.client.search(collection_name=self.collection, query_vector=vector, query_filter=flt,
                                      limit=top_k)  # gone from qdrant-client 1.20: AttributeError
        else:
            hits = self.client.query_points(collection_name=self.collection, query=vector, query_filter=flt,
                                            limit=top_k).points
        now = time.time() if now is None else now
        packets = [(OutcomePacket.from_payload(h.payload), float(h.score)) for h in hits]
        return [(p, s) for p, s in packets if not p.is_expired(now=now)]  # expiry after top-k

    def collection_stats(self) -> dict[str, Any]:
        info = self.client.get_collection(self.collection)
        return {"points_count": info.points_count, "indexed_vectors_count": info.indexed_vectors_count,
                "status": getattr(info.status, "value", info.status)}

    def close(self) -> None:
        self.client.close()


def starving_packets(now: float, n_expired: int = 5, n_live: int = 5,
                     problem: str = "Postgres connection pool exhausted under load") -> list[OutcomePacket]:
    """`n_expired` packets that expired an hour ago and `n_live` live ones, all about `problem`
    (the expired ones word for word, so they rank first)."""
    old = [OutcomePacket(problem, "resolved", 0.9, f"old fix {i}", ["database"], timestamp=now - 2 * ARTICLE_TTL,
                         ttl=ARTICLE_TTL, agent_id=f"old-{i}") for i in range(n_expired)]
    live = [OutcomePacket(f"{problem}, seen again ({i})", "resolved", 0.8, f"current fix {i}", ["database"],
                          timestamp=now, ttl=ARTICLE_TTL, agent_id=f"live-{i}") for i in range(n_live)]
    return old + live


def nearest_ids(vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    """Indexes of the k rows of `vectors` most similar to `query` (cosine; rows normalised)."""
    return [int(i) for i in np.argsort(-(vectors @ query))[:k]]


DEMO_SENTENCE = "Database connection pool exhausted under peak load"  # one text for every agent


def literal_demo(router, sentence: str = DEMO_SENTENCE, n_agents: int = 20, top_k: int = 5,
                 now: float | None = None) -> pd.DataFrame:
    """The in-memory article's demo as it runs: `n_agents` agents, all with the same
    `sentence`, each deposits and then queries top `top_k`, and the results are counted
    as matches with the agent's own packet included. Beside it, the same query with the
    agent's own packet left out (what `synthesize` does here). One row per agent."""

    now = time.time() if now is None else now
    rows = []
    for i in range(n_agents):
        agent = f"agent_{i:02d}"
        router.deposit(OutcomePacket(sentence, "resolved", 0.8, f"what {agent} did", ["demo"], timestamp=now,
                                     ttl=ARTICLE_TTL, agent_id=agent))
        counted = router.query(sentence, top_k=top_k, now=now)  # the article's count: own packet included
        others = router.query(sentence, top_k=top_k, exclude_agent=agent, now=now)
        rows.append({"arrival": i + 1, "agent": agent, "article_matches": len(counted),
                     "own_packet_counted": any(p.agent_id == agent for p, _ in counted),
                     "matches_from_others": len(others),
                     "distinct_scores": len({round(s, 4) for _, s in counted})})
    return pd.DataFrame(rows)
