"""What every local Qdrant cluster launcher shares: node names and urls, waiting for the
cluster to form and for replicas to settle, and where each shard replica lives.

The launchers themselves (`ProcessCluster`, `DockerComposeCluster`) are in
`qis_lib.infra.cluster`.
"""
from __future__ import annotations

import pandas as pd

from .qdrant_http import READY_STATES, cluster_peers, collection_names, is_ready, shard_replicas
from .servers import wait_until


class ClusterLauncher:
    """What both launchers share: node names, their HTTP urls, waiting and health."""

    nodes: list[str]
    entry: str  # the node clients talk to first

    def url(self, node: str) -> str:
        raise NotImplementedError

    def p2p_uri(self, node: str) -> str:
        """The uri the node announces to its peers (its --uri)."""
        raise NotImplementedError

    # lifecycle, per launcher
    def up(self, timeout: float = 120.0) -> "ClusterLauncher":
        raise NotImplementedError

    def kill(self, node: str) -> None:
        """SIGKILL: the node gets no chance to flush or say goodbye."""
        raise NotImplementedError

    def stop(self, node: str) -> None:
        raise NotImplementedError

    def start(self, node: str) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def running(self, node: str) -> bool:
        raise NotImplementedError

    # shared
    def _check_node(self, node: str) -> str:
        if node not in self.nodes:
            raise ValueError(f"unknown node {node!r}; this cluster has {self.nodes}")
        return node

    @property
    def urls(self) -> list[str]:
        return [self.url(n) for n in self.nodes]

    def url_list(self, first: str | None = None) -> list[str]:
        """All node urls, `first` (default: the entry node) first: what a client fails over along."""
        first = self._check_node(first or self.entry)
        return [self.url(first)] + [self.url(n) for n in self.nodes if n != first]

    def others(self, node: str | None = None) -> list[str]:
        node = self._check_node(node or self.entry)
        return [n for n in self.nodes if n != node]

    def wait_ready(self, node: str, timeout: float = 120.0) -> None:
        """Wait until `node` answers GET /readyz with 200 (its process is up and caught up)."""
        url = self.url(self._check_node(node))
        wait_until(lambda: is_ready(url), timeout, f"{node} ready (GET {url}/readyz)")

    def wait_formed(self, timeout: float = 120.0) -> pd.DataFrame:
        """Wait until every node answers /readyz and the entry node knows all peers."""
        for node in self.nodes:
            self.wait_ready(node, timeout)
        want = len(self.nodes)

        def formed():
            peers = cluster_peers(self.url(self.entry))
            # a 1-tuple: wait_until wants a truthy value, and a DataFrame has no truth value
            return (peers,) if len(peers) == want else None

        return wait_until(formed, timeout, f"{want} peers in GET {self.url(self.entry)}/cluster")[0]

    def _live_url(self) -> str:
        for node in [self.entry] + self.others():
            if is_ready(self.url(node)):  # a dead node's port refuses at once
                return self.url(node)
        raise ConnectionError(f"no node of {self.nodes} answers /readyz")

    def peers(self) -> pd.DataFrame:
        """Peers as a live node sees them, with our node names."""
        frame = cluster_peers(self._live_url())
        by_uri = {self.p2p_uri(n).rstrip("/"): n for n in self.nodes}
        frame.insert(1, "node", [by_uri.get(str(u).rstrip("/")) for u in frame["uri"]])
        return frame

    def placement(self, collection: str) -> pd.DataFrame:
        """One row per shard replica: shard_id, node, peer_id, state (as a live node sees it)."""
        replicas = shard_replicas(self._live_url(), collection)
        peers = self.peers().set_index("peer_id")["node"]
        replicas.insert(1, "node", [peers.get(p) for p in replicas["peer_id"]])
        return replicas

    def wait_replicas_active(self, collection: str, timeout: float = 120.0) -> pd.DataFrame:
        """Wait until every replica of every shard is Active and no shard transfer runs:
        only then may a read anywhere be expected to see every acknowledged write.

        This, not /readyz, is what says a restarted node serves again: /readyz stays true
        once it has been, and says nothing about replicas on other nodes.
        """
        def settled():
            frame = self.placement(collection)
            ok = len(frame) and frame["state"].isin(READY_STATES).all() and not frame.attrs.get("shard_transfers")
            return (frame,) if ok else None  # a DataFrame has no truth value: wait_until gets a 1-tuple

        return wait_until(settled, timeout, f"all replicas of {collection!r} Active")[0]

    def wait_all_replicas_active(self, timeout: float = 120.0) -> dict[str, pd.DataFrame]:
        """wait_replicas_active for every collection the cluster holds: collection -> placement."""
        return {name: self.wait_replicas_active(name, timeout) for name in collection_names(self._live_url())}

    def delete_collection(self, collection: str, timeout: float = 30.0) -> None:
        """Delete `collection` through a live node (HTTP error if it does not exist)."""
        import httpx

        httpx.delete(f"{self._live_url()}/collections/{collection}", timeout=timeout).raise_for_status()

    def already_up(self) -> bool:
        """True when this cluster was running before we were asked to start it (reused, and
        then left running); launchers that cannot tell say False."""
        return False

    def __enter__(self) -> "ClusterLauncher":
        self.reused = self.already_up()
        return self.up()  # on a running cluster: starts what is stopped, waits until formed

    def __exit__(self, *exc) -> None:
        if not getattr(self, "reused", False):
            self.down()


__all__ = ["ClusterLauncher"]
