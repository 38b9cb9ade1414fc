"""A local three-node Qdrant cluster, started two ways behind one interface.

    with DockerComposeCluster() as cluster:        # docker compose, the repo's docker-compose.yml
        ...
    with ProcessCluster() as cluster:              # a `qdrant` executable (QDRANT_BIN or PATH)
        cluster.kill("node2"); cluster.start("node2")
        cluster.placement("outcomes")              # which peer holds which shard replica, and its state

How a Qdrant cluster forms (Qdrant's distributed deployment docs): every node runs with
QDRANT__CLUSTER__ENABLED=true and talks to its peers on the p2p port (6335); the first
node announces itself with `--uri`, the others join with `--bootstrap FIRST --uri SELF`.
Health comes from Qdrant's REST API (`qis_lib.infra.qdrant_http`): a node is up when
GET /readyz answers 200, and a collection is settled when every replica of every shard
is Active (GET /collections/{name}/cluster). /readyz alone is not enough: once true it
stays true for the life of the node's process, whatever its peers do.

`cluster_available()` (in `qis_lib.infra.availability`) says whether either launcher
can run here, and why not.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .availability import cluster_available, qdrant_executable
from .launcher import ClusterLauncher

REPO_ROOT = Path(__file__).resolve().parents[2]  # a clone's root: the compose file lives there
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
P2P_PORT = 6335  # Qdrant's default peer-to-peer port, inside a container
HTTP_PORT = 6333
GRPC_PORT = 6334


def open_cluster(launcher: str | None = None, **options) -> ClusterLauncher:
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
        """Start `node`'s process (nothing if it runs); returns at once, before it is ready."""
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
        """Start every node, the entry node first, and wait until the cluster has formed."""
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


def compose_spec(compose_file: str | os.PathLike = COMPOSE_FILE) -> dict:
    import yaml

    with open(compose_file, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def compose_services(compose_file: str | os.PathLike = COMPOSE_FILE) -> dict[str, dict]:
    """The Qdrant services of a compose file: name -> {"http": host port, "grpc": host port}."""
    spec = compose_spec(compose_file)
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


DEFAULT_PROJECT = "qis-qdrant"  # docker-compose.yml's `name:`; used if a compose file has none


class DockerComposeCluster(ClusterLauncher):
    """The cluster of docker-compose.yml, driven with `docker compose` (up, kill, stop, start, down).

    One compose project: the one already running this compose file if there is one (say,
    started by hand with `docker compose up -d`, whatever its name), else the file's `name:`.
    A cluster that was running before `with DockerComposeCluster() as c:` is reused and left
    running afterwards; one that this object started is brought down (`down -v`).
    """

    def __init__(self, compose_file: str | os.PathLike | None = None, project: str | None = None,
                 host: str = "127.0.0.1", start_timeout: float = 180.0, docker: str = "docker"):
        # default: $QIS_COMPOSE_FILE (how `make cluster-test` hands its file to the tests it runs), else the repo's
        self.compose_file = Path(compose_file or os.environ.get("QIS_COMPOSE_FILE") or COMPOSE_FILE).resolve()
        self.host = host
        self.docker = docker
        self.start_timeout = start_timeout
        self.services = compose_services(self.compose_file)
        self.nodes = list(self.services)
        self.entry = self.nodes[0]
        self._project = project

    @property
    def project(self) -> str:
        """The compose project: as given, else the one running this file, else the file's `name:`."""
        if self._project is None:
            try:
                running = self.running_project()
            except (OSError, RuntimeError, ValueError):  # no docker here: the name is still the file's
                running = None
            self._project = running or compose_spec(self.compose_file).get("name") or DEFAULT_PROJECT
        return self._project

    def running_project(self) -> str | None:
        """The name of a running compose project made from this compose file (`docker compose ls`), or None."""
        done = subprocess.run([self.docker, "compose", "ls", "--format", "json"], capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"`{self.docker} compose ls` failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        for entry in json.loads(done.stdout or "[]"):
            files = [Path(f.strip()).resolve() for f in str(entry.get("ConfigFiles", "")).split(",") if f.strip()]
            if self.compose_file in files:
                return entry["Name"]
        return None

    def already_up(self) -> bool:
        """True when this compose file's project runs and its entry node answers /readyz."""
        from .qdrant_http import is_ready

        return self.running_project() is not None and is_ready(self.url(self.entry))

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

    def busy_ports(self) -> list[int]:
        """Host ports of this file's nodes that something already holds."""
        return [port for ports in self.services.values() for port in ports.values() if not _port_free(port, self.host)]

    def up(self, timeout: float | None = None) -> "DockerComposeCluster":
        """`docker compose up` node 1, then the others once it is ready; wait until the cluster has formed.

        On a project that already runs, `up` starts only what is stopped. Host ports held by
        anything else (another compose project, another Qdrant) are an OSError naming them."""
        timeout = self.start_timeout if timeout is None else timeout
        if self.running_project() is None:
            busy = self.busy_ports()
            if busy:
                raise OSError(f"host port(s) {busy} of {self.compose_file.name} are in use, and not by a compose "
                              f"project of this file (`docker compose ls` lists none): stop what holds them "
                              f"(`docker ps --filter publish={busy[0]}`) and run again")
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


__all__ = ["DEFAULT_PROJECT", "ClusterLauncher", "DockerComposeCluster", "NodePorts", "ProcessCluster",
           "compose_services", "compose_spec", "nodes_table", "open_cluster", "port_plan"]
