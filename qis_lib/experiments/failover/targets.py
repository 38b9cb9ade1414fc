"""What a failover run puts load on, kills and restarts: a `chroma run` server, or one node
of a local Qdrant cluster."""
from __future__ import annotations

from typing import Any, Protocol

import pandas as pd

from ...infra.servers import wait_until
from ...stores.contract import Store


class FailoverTarget(Protocol):
    """Something to put load on, kill and restart."""

    name: str

    def open_store(self) -> Store:
        """A new client connection (each load thread gets its own)."""

    def answered_by(self, store: Store) -> str:
        """Which node answered this store client's last call."""

    def kill(self) -> None:
        """SIGKILL the victim."""

    def restart(self) -> None:
        """Start the victim again (may return before it is ready)."""

    def wait_recovered(self, timeout: float) -> None:
        """Return once the store can be expected to serve every acknowledged write."""

    def verify_stores(self) -> list[tuple[str, Store]]:
        """(label, store client) pairs through which to check for loss (one per node)."""

    def describe(self) -> dict[str, Any]:
        """The target's settings, for the records."""


class ChromaTarget:
    """One `chroma run` server (`qis_lib.infra.servers.ChromaServer`): no replication, so
    while it is down every operation fails."""

    name = "chroma"

    def __init__(self, server, collection: str = "failover", dim: int = 384):
        self.server = server
        self.collection = collection
        self.dim = dim

    def open_store(self) -> Store:
        from ...stores.chroma import ChromaStore

        return ChromaStore(url=self.server.url, collection=self.collection, dim=self.dim)

    def answered_by(self, store: Store) -> str:
        return "chroma"

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        self.server.start()  # returns once the heartbeat answers

    def wait_recovered(self, timeout: float) -> None:
        wait_until(self.server.heartbeat, timeout, "chroma heartbeat")

    def verify_stores(self) -> list[tuple[str, Store]]:
        return [("chroma", self.open_store())]

    def describe(self) -> dict[str, Any]:
        import chromadb

        return {"target": "chroma", "chromadb": chromadb.__version__, "collection": self.collection,
                "replication": "none (single server)"}


class QdrantClusterTarget:
    """A collection on a local Qdrant cluster (`qis_lib.infra.cluster`); kills one node.

    victim "other": a node that is not the client's entry point; "entry": the node every
    client talks to first, so clients must fail over to the next url.
    """

    name = "qdrant-cluster"

    def __init__(self, cluster, collection: str = "failover", dim: int = 384, replication_factor: int = 2,
                 write_consistency_factor: int = 1, shard_number: int = 3, victim: str = "other",
                 timeout: int = 3, recreate: bool = True):
        from ...stores.qdrant import collection_params

        collection_params(dim, shard_number, replication_factor, write_consistency_factor)  # validate now
        if victim not in ("other", "entry") and victim not in cluster.nodes:
            raise ValueError(f"victim must be 'other', 'entry' or one of {cluster.nodes}, got {victim!r}")
        self.cluster = cluster
        self.collection = collection
        self.dim = dim
        self.replication_factor = replication_factor
        self.write_consistency_factor = write_consistency_factor
        self.shard_number = shard_number
        self.timeout = timeout
        self.entry = cluster.entry
        self.victim = {"entry": cluster.entry, "other": cluster.others()[-1]}.get(victim, victim)
        self.placement_before: pd.DataFrame | None = None
        if recreate:
            try:
                cluster.delete_collection(collection)
            except Exception:  # absent is fine; a dead cluster shows up on the first write
                pass

    def open_store(self) -> Store:
        """A client over every node url, entry first (the first one opened creates the collection
        and waits for its replicas)."""
        from ...stores.qdrant import QdrantStore

        store = QdrantStore(urls=self.cluster.url_list(self.entry), collection=self.collection, dim=self.dim,
                            shard_number=self.shard_number, replication_factor=self.replication_factor,
                            write_consistency_factor=self.write_consistency_factor, timeout=self.timeout)
        if self.placement_before is None:
            self.placement_before = self.cluster.wait_replicas_active(self.collection)
        return store

    def answered_by(self, store: Store) -> str:
        url = store.active_url
        return next((n for n in self.cluster.nodes if self.cluster.url(n) == url), url)

    def kill(self) -> None:
        self.cluster.kill(self.victim)

    def restart(self) -> None:
        self.cluster.start(self.victim)

    def wait_recovered(self, timeout: float) -> None:
        """The victim answers /readyz and every replica of the collection is Active again
        (/readyz alone says only that the victim's process is up)."""
        self.cluster.wait_ready(self.victim, timeout)
        self.cluster.wait_replicas_active(self.collection, timeout)

    def verify_stores(self) -> list[tuple[str, Store]]:
        """One client per node, each talking to that node only."""
        from ...stores.qdrant import QdrantStore

        return [(node, QdrantStore(url=self.cluster.url(node), collection=self.collection, dim=self.dim,
                                   timeout=max(self.timeout, 10)))
                for node in self.cluster.nodes]

    def describe(self) -> dict[str, Any]:
        return {"target": "qdrant-cluster", "launcher": type(self.cluster).__name__, "nodes": self.cluster.nodes,
                "collection": self.collection, "shard_number": self.shard_number,
                "replication_factor": self.replication_factor,
                "write_consistency_factor": self.write_consistency_factor, "entry": self.entry,
                "victim": self.victim}
