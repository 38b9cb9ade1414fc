"""A Qdrant node's health, read from its REST API with httpx.

- GET /readyz: 200 once the node has caught up with the cluster's Raft commit index
  (the highest that its peers report; it asks until at least half as many peers as the
  cluster has answer, or is ready at once if it knows no other peer) and its own shard
  replicas are Active (or Listener). The answer latches: once a node has been ready it
  stays ready for the life of its process, and answers 200 while its peers do not
  answer or replicas on other nodes are Dead (Qdrant v1.19.0, src/common/health.rs: an
  AtomicBool set to true once, never reset). So "ready" means "this process has
  started and caught up once", not "the cluster serves every shard"; for that, read
  the replica states below.
- GET /cluster: the peers the node knows, and the Raft leader.
- GET /collections/{name}/cluster: every shard replica of a collection and its state,
  plus the shard transfers under way.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

# Replica states in which we count a replica as serving reads and taking writes. Qdrant's
# /readyz counts Listener too; we only see Listener if we configure one.
READY_STATES = ("Active",)


def _get(url: str, path: str, timeout: float = 2.0, client=None) -> Any:
    """GET url+path and return the `result` field of Qdrant's answer."""
    import httpx

    own = client is None
    client = client if client is not None else httpx.Client(timeout=timeout)
    try:
        response = client.get(url.rstrip("/") + path, timeout=timeout)
        response.raise_for_status()
        return response.json()["result"]
    finally:
        if own:
            client.close()


def is_ready(url: str, timeout: float = 2.0, client=None) -> bool:
    """True when GET /readyz answers 200; False when it answers otherwise or not at all.

    A node is ready once its process has caught up with the cluster's consensus and its
    own replicas were Active when it last checked; the answer then stays true for the
    life of the process (see the module docstring). Callers that need every replica
    serving wait for the replica states too (`ClusterLauncher.wait_replicas_active`).
    """
    import httpx

    try:
        if client is not None:
            return client.get(url.rstrip("/") + "/readyz", timeout=timeout).status_code == 200
        return httpx.get(url.rstrip("/") + "/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def collection_names(url: str, timeout: float = 2.0, client=None) -> list[str]:
    """The collections of the node at `url` (GET /collections)."""
    return sorted(c["name"] for c in _get(url, "/collections", timeout, client).get("collections", []))


def cluster_peers(url: str, timeout: float = 2.0, client=None) -> pd.DataFrame:
    """The peers the node at `url` knows (GET /cluster): peer_id, uri, is_self, is_leader.

    Raises RuntimeError if the node does not run in cluster mode.
    """
    result = _get(url, "/cluster", timeout, client)
    if result.get("status") != "enabled":
        raise RuntimeError(f"the Qdrant node at {url} does not run in cluster mode "
                           f"(GET /cluster status: {result.get('status')!r}); set QDRANT__CLUSTER__ENABLED=true")
    leader = (result.get("raft_info") or {}).get("leader")
    rows = [{"peer_id": int(pid), "uri": info.get("uri"), "is_self": int(pid) == result["peer_id"],
             "is_leader": int(pid) == leader}
            for pid, info in (result.get("peers") or {}).items()]
    return pd.DataFrame(rows, columns=["peer_id", "uri", "is_self", "is_leader"]).sort_values("peer_id",
                                                                                              ignore_index=True)


def shard_replicas(url: str, collection: str, timeout: float = 2.0, client=None) -> pd.DataFrame:
    """Which peer holds which replica of each shard of `collection`, and its state
    (GET /collections/{name}/cluster, as seen by the node at `url`).

    One row per replica: shard_id, peer_id, state, points_count (local replicas only),
    local. The shard transfers under way are in `frame.attrs["shard_transfers"]`.
    """
    result = _get(url, f"/collections/{collection}/cluster", timeout, client)
    rows = [{"shard_id": s["shard_id"], "peer_id": int(result["peer_id"]), "state": s.get("state"),
             "points_count": s.get("points_count"), "local": True} for s in result.get("local_shards", [])]
    rows += [{"shard_id": s["shard_id"], "peer_id": int(s["peer_id"]), "state": s.get("state"),
              "points_count": None, "local": False} for s in result.get("remote_shards", [])]
    frame = pd.DataFrame(rows, columns=["shard_id", "peer_id", "state", "points_count", "local"])
    frame.attrs["shard_transfers"] = result.get("shard_transfers", [])
    return frame.sort_values(["shard_id", "peer_id"], ignore_index=True)


__all__ = ["READY_STATES", "cluster_peers", "collection_names", "is_ready", "shard_replicas"]
