"""A local three-node Qdrant cluster, started two ways behind one interface, and its health.

    with DockerComposeCluster() as cluster:        # docker compose, the repo's docker-compose.yml
        ...
    with ProcessCluster() as cluster:              # a `qdrant` executable (QDRANT_BIN or PATH)
        cluster.kill("node2"); cluster.start("node2")
        cluster.placement("outcomes")              # which peer holds which shard replica, and its state

How a Qdrant cluster forms (Qdrant's distributed deployment docs): every node runs with
QDRANT__CLUSTER__ENABLED=true and talks to its peers on the p2p port (6335); the first
node announces itself with `--uri`, the others join with `--bootstrap FIRST --uri SELF`.
Health comes from Qdrant's REST API: GET /readyz (the node caught up with the cluster's
consensus and its shard replicas are Active), GET /cluster (peers and Raft state) and
GET /collections/{name}/cluster (shard replicas and their states).

`cluster_available()` says whether either launcher can run here, and why not.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[2]  # a clone's root: the compose file lives there
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
P2P_PORT = 6335  # Qdrant's default peer-to-peer port, inside a container
HTTP_PORT = 6333
GRPC_PORT = 6334
# Replica states in which a replica serves reads and takes writes (Qdrant's own /readyz
# treats Listener as ready too; we only see Listener if we configure one).
READY_STATES = ("Active",)


# ---------------------------------------------------------------------------- health (httpx)

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
    """True when GET /readyz answers 200: the node is up, has caught up with the cluster's
    consensus, and every shard replica it holds is Active."""
    import httpx

    try:
        if client is not None:
            return client.get(url.rstrip("/") + "/readyz", timeout=timeout).status_code == 200
        return httpx.get(url.rstrip("/") + "/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def cluster_peers(url: str, timeout: float = 2.0, client=None) -> pd.DataFrame:
    """The peers the node at `url` knows (GET /cluster): peer_id, uri, is_self, is_leader."""
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
    (GET /collections/{name}/cluster, as seen by the node at `url`)."""
    result = _get(url, f"/collections/{collection}/cluster", timeout, client)
    rows = [{"shard_id": s["shard_id"], "peer_id": int(result["peer_id"]), "state": s.get("state"),
             "points_count": s.get("points_count"), "local": True} for s in result.get("local_shards", [])]
    rows += [{"shard_id": s["shard_id"], "peer_id": int(s["peer_id"]), "state": s.get("state"),
              "points_count": None, "local": False} for s in result.get("remote_shards", [])]
    frame = pd.DataFrame(rows, columns=["shard_id", "peer_id", "state", "points_count", "local"])
    frame.attrs["shard_transfers"] = result.get("shard_transfers", [])
    return frame.sort_values(["shard_id", "peer_id"], ignore_index=True)


def wait_until(check, timeout: float, what: str, interval: float = 0.25):
    """Call check() until it returns something truthy; TimeoutError naming `what` if it never does."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # a node still starting answers with all sorts of errors
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s{detail}")
        time.sleep(interval)


# ---------------------------------------------------------------------------- availability

@dataclass(frozen=True)
class Availability:
    """Whether a local cluster can be started here; truthy when it can."""

    available: bool
    launcher: str | None  # "docker" or "process"
    reason: str

    def __bool__(self) -> bool:
        return self.available


def qdrant_executable(qdrant_bin: str | os.PathLike | None = None) -> str | None:
    """The qdrant executable: the argument, else $QDRANT_BIN, else `qdrant` on PATH; None if none."""
    candidate = qdrant_bin or os.environ.get("QDRANT_BIN")
    if candidate:
        return str(candidate) if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None
    return shutil.which("qdrant")


def docker_status(timeout: float = 15.0) -> tuple[bool, str]:
    """(usable, why): the docker CLI, a docker engine that answers, and the compose plugin."""
    docker = shutil.which("docker")
    if docker is None:
        return False, "no `docker` command on PATH"
    try:
        info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"`docker info` did not answer within {timeout:.0f}s"
    if info.returncode != 0 or not info.stdout.strip():
        detail = (info.stderr or info.stdout).strip().splitlines()
        return False, "the docker CLI is installed but no docker engine answers" + (f" ({detail[-1]})" if detail else "")
    compose = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=timeout)
    if compose.returncode != 0:
        return False, f"docker engine {info.stdout.strip()} answers, but `docker compose` is missing"
    return True, f"docker engine {info.stdout.strip()} with compose"


def cluster_available() -> Availability:
    """Can a local Qdrant cluster start here? A qdrant executable named by QDRANT_BIN wins,
    then a docker engine with compose, then `qdrant` on PATH."""
    if os.environ.get("QDRANT_BIN"):
        found = qdrant_executable()
        if found:
            return Availability(True, "process", f"qdrant executable {found} (QDRANT_BIN)")
        reasons = [f"QDRANT_BIN={os.environ['QDRANT_BIN']} is not an executable file"]
    else:
        reasons = []
    ok, why = docker_status()
    if ok:
        return Availability(True, "docker", why)
    reasons.append(why)
    found = shutil.which("qdrant")
    if found:
        return Availability(True, "process", f"qdrant executable {found} on PATH")
    if not os.environ.get("QDRANT_BIN"):
        reasons.append("no `qdrant` executable (set QDRANT_BIN or put it on PATH)")
    return Availability(False, None, "; ".join(reasons))


def open_cluster(launcher: str | None = None, **options) -> "ClusterLauncher":
    """The launcher that can run here ("docker" or "process"; None: whichever is available)."""
    if launcher is None:
        status = cluster_available()
        if not status:
            raise RuntimeError(f"no local Qdrant cluster can start here: {status.reason}")
        launcher = status.launcher
    if launcher == "docker":
        return DockerComposeCluster(**options)
    if launcher == "process":
        return ProcessCluster(**options)
    raise ValueError(f"launcher must be 'docker' or 'process', got {launcher!r}")


# ---------------------------------------------------------------------------- launchers

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

    def restart(self, node: str, timeout: float = 120.0) -> None:
        self.stop(node)
        self.start(node)
        self.wait_ready(node, timeout)

    def wait_ready(self, node: str, timeout: float = 120.0) -> None:
        url = self.url(self._check_node(node))
        wait_until(lambda: is_ready(url), timeout, f"{node} ready (GET {url}/readyz)")

    def wait_formed(self, timeout: float = 120.0) -> pd.DataFrame:
        """Wait until every node answers /readyz and the entry node knows all peers."""
        for node in self.nodes:
            self.wait_ready(node, timeout)
        want = len(self.nodes)
        return wait_until(lambda: (lambda p: p if len(p) == want else None)(cluster_peers(self.url(self.entry))),
                          timeout, f"{want} peers in GET {self.url(self.entry)}/cluster")

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
        only then may a read anywhere be expected to see every acknowledged write."""
        def settled():
            frame = self.placement(collection)
            ok = len(frame) and frame["state"].isin(READY_STATES).all() and not frame.attrs.get("shard_transfers")
            return frame if ok else None

        return wait_until(settled, timeout, f"all replicas of {collection!r} Active")

    def delete_collection(self, collection: str, timeout: float = 30.0) -> None:
        import httpx

        httpx.delete(f"{self._live_url()}/collections/{collection}", timeout=timeout).raise_for_status()

    def __enter__(self) -> "ClusterLauncher":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


@dataclass(frozen=True)
class NodePorts:
    http: int
    grpc: int
    p2p: int


def port_plan(nodes: int = 3, base_port: int = 6333, step: int = 10) -> list[NodePorts]:
    """http/grpc/p2p ports per node: node i gets base+step*i, +1, +2 (6333/6334/6335, 6343/..., 6353/...)."""
    if not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes must be a positive int, got {nodes!r}")
    if not isinstance(step, int) or step < 3:
        raise ValueError(f"step must be an int >= 3 (each node needs 3 ports), got {step!r}")
    if not isinstance(base_port, int) or not 1024 <= base_port <= 65535 - step * nodes:
        raise ValueError(f"base_port must be an int in 1024..{65535 - step * nodes}, got {base_port!r}")
    return [NodePorts(base_port + step * i, base_port + step * i + 1, base_port + step * i + 2) for i in range(nodes)]


class ProcessCluster(ClusterLauncher):
    """Local `qdrant` processes on loopback ports, each with its own storage directory.

    The executable is `qdrant_bin`, else $QDRANT_BIN, else `qdrant` on PATH (as unpacked
    from a release archive of github.com/qdrant/qdrant). Node 1 starts with `--uri`, the
    others with `--bootstrap NODE1 --uri SELF`, as Qdrant's distributed deployment docs
    describe; restarting a node uses the same command (a node that already has cluster
    state ignores --bootstrap and rejoins from its own storage).
    """

    def __init__(self, qdrant_bin: str | os.PathLike | None = None, nodes: int = 3, base_port: int = 6333,
                 port_step: int = 10, workdir: str | os.PathLike | None = None, host: str = "127.0.0.1",
                 start_timeout: float = 120.0):
        self.qdrant_bin = str(qdrant_bin or os.environ.get("QDRANT_BIN") or shutil.which("qdrant") or "qdrant")
        self.host = host
        self.ports = port_plan(nodes, base_port, port_step)
        self.nodes = [f"node{i + 1}" for i in range(nodes)]
        self.entry = self.nodes[0]
        self._tmpdir = None
        self.workdir = Path(workdir) if workdir is not None else None
        self.start_timeout = start_timeout
        self.processes: dict[str, subprocess.Popen] = {}

    def _ports(self, node: str) -> NodePorts:
        return self.ports[self.nodes.index(self._check_node(node))]

    def url(self, node: str) -> str:
        return f"http://{self.host}:{self._ports(node).http}"

    def p2p_uri(self, node: str) -> str:
        return f"http://{self.host}:{self._ports(node).p2p}"

    def node_dir(self, node: str) -> Path:
        if self.workdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="qis-qdrant-cluster-")
            self.workdir = Path(self._tmpdir)
        return self.workdir / self._check_node(node)

    def command(self, node: str) -> list[str]:
        """The command line of one node (the first announces itself, the others bootstrap from it)."""
        args = [self.qdrant_bin, "--disable-telemetry"]
        if node != self.entry:
            args += ["--bootstrap", self.p2p_uri(self.entry)]
        return args + ["--uri", self.p2p_uri(node)]

    def environment(self, node: str) -> dict[str, str]:
        """The QDRANT__* settings of one node (added to the caller's environment)."""
        ports, home = self._ports(node), self.node_dir(node)
        return {
            "QDRANT__CLUSTER__ENABLED": "true",
            "QDRANT__CLUSTER__P2P__PORT": str(ports.p2p),
            "QDRANT__SERVICE__HOST": self.host,
            "QDRANT__SERVICE__HTTP_PORT": str(ports.http),
            "QDRANT__SERVICE__GRPC_PORT": str(ports.grpc),
            "QDRANT__STORAGE__STORAGE_PATH": str(home / "storage"),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(home / "snapshots"),
            "QDRANT__TELEMETRY_DISABLED": "true",
        }

    def log_path(self, node: str) -> Path:
        return self.node_dir(node) / "qdrant.log"

    def running(self, node: str) -> bool:
        process = self.processes.get(self._check_node(node))
        return process is not None and process.poll() is None

    def start(self, node: str) -> None:
        if self.running(node):
            return
        if qdrant_executable(self.qdrant_bin) is None and shutil.which(self.qdrant_bin) is None:
            raise FileNotFoundError(f"no qdrant executable at {self.qdrant_bin!r}: download a release from "
                                    "github.com/qdrant/qdrant/releases and set QDRANT_BIN to its path")
        home = self.node_dir(node)
        home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(node), "ab") as log:
            self.processes[node] = subprocess.Popen(
                self.command(node), cwd=home, env={**os.environ, **self.environment(node)},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def up(self, timeout: float | None = None) -> "ProcessCluster":
        timeout = self.start_timeout if timeout is None else timeout
        busy = [p for ports in self.ports for p in (ports.http, ports.grpc, ports.p2p) if not _port_free(p, self.host)]
        if busy and not any(self.running(n) for n in self.nodes):
            raise OSError(f"port(s) {busy} on {self.host} are in use; pick another base_port")
        self.start(self.entry)
        self.wait_ready(self.entry, timeout)  # the others bootstrap from it: it must answer first
        for node in self.others():
            self.start(node)
        self.wait_formed(timeout)
        return self

    def kill(self, node: str) -> None:
        process = self.processes.get(self._check_node(node))
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(30)

    def stop(self, node: str, timeout: float = 30.0) -> None:
        process = self.processes.get(self._check_node(node))
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(node)

    def down(self) -> None:
        for node in self.nodes:
            self.stop(node)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir, self.workdir = None, None


def compose_services(compose_file: str | os.PathLike = COMPOSE_FILE) -> dict[str, dict]:
    """The Qdrant services of a compose file: name -> {"http": host port, "grpc": host port}."""
    import yaml

    with open(compose_file, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    services = {}
    for name, service in (spec.get("services") or {}).items():
        if "qdrant" not in str(service.get("image", "")):
            continue
        ports = {}
        for mapping in service.get("ports", []):
            host, _, container = str(mapping).rpartition(":")
            ports[{str(HTTP_PORT): "http", str(GRPC_PORT): "grpc"}.get(container.split("/")[0], container)] = int(
                host.rpartition(":")[2])
        services[name] = ports
    if not services:
        raise ValueError(f"{compose_file} defines no qdrant services")
    return services


class DockerComposeCluster(ClusterLauncher):
    """The cluster of docker-compose.yml, driven with `docker compose` (up, kill, stop, start, down)."""

    def __init__(self, compose_file: str | os.PathLike = COMPOSE_FILE, project: str = "qis-qdrant",
                 host: str = "127.0.0.1", start_timeout: float = 180.0, docker: str = "docker"):
        self.compose_file = Path(compose_file)
        self.project = project
        self.host = host
        self.docker = docker
        self.start_timeout = start_timeout
        self.services = compose_services(self.compose_file)
        self.nodes = list(self.services)
        self.entry = self.nodes[0]

    def url(self, node: str) -> str:
        return f"http://{self.host}:{self.services[self._check_node(node)]['http']}"

    def p2p_uri(self, node: str) -> str:
        return f"http://{self._check_node(node)}:{P2P_PORT}"  # service name = hostname on the compose network

    def compose_command(self, *args: str) -> list[str]:
        return [self.docker, "compose", "-f", str(self.compose_file), "-p", self.project, *args]

    def _compose(self, *args: str, timeout: float = 300.0) -> str:
        done = subprocess.run(self.compose_command(*args), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(self.compose_command(*args))}` failed ({done.returncode}): "
                               f"{done.stderr.strip()[-2000:]}")
        return done.stdout

    def running(self, node: str) -> bool:
        return bool(self._compose("ps", "-q", "--status", "running", self._check_node(node)).strip())

    def up(self, timeout: float | None = None) -> "DockerComposeCluster":
        timeout = self.start_timeout if timeout is None else timeout
        # Node 1 first and ready: the others bootstrap from it (compose's depends_on only orders starts).
        self._compose("up", "-d", self.entry)
        self.wait_ready(self.entry, timeout)
        self._compose("up", "-d", *self.others())
        self.wait_formed(timeout)
        return self

    def kill(self, node: str) -> None:
        # `docker kill` marks the container as stopped by hand, so no restart policy revives it.
        self._compose("kill", "-s", "SIGKILL", self._check_node(node))

    def stop(self, node: str) -> None:
        self._compose("stop", self._check_node(node))

    def start(self, node: str) -> None:
        self._compose("start", self._check_node(node))

    def down(self, volumes: bool = True) -> None:
        """Remove the containers and (by default) their volumes: the next `up` forms a new cluster."""
        self._compose("down", *(["-v"] if volumes else []))


def nodes_table(cluster: ClusterLauncher) -> pd.DataFrame:
    """One row per node: name, url, p2p uri, and (for ProcessCluster) its command line."""
    rows: list[dict] = []
    for node in cluster.nodes:
        row = {"node": node, "url": cluster.url(node), "p2p_uri": cluster.p2p_uri(node)}
        if isinstance(cluster, ProcessCluster):
            row["command"] = " ".join(cluster.command(node)[1:])
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = [
    "Availability", "ClusterLauncher", "DockerComposeCluster", "ProcessCluster", "NodePorts", "cluster_available",
    "cluster_peers", "compose_services", "docker_status", "is_ready", "nodes_table", "open_cluster", "port_plan",
    "qdrant_executable", "shard_replicas", "wait_until",
]
