"""Cluster launchers and health: command lines, port plan and parsing run here; the live
cluster tests run only where a docker engine or a qdrant executable is present.

A live test that fails: look at the node logs (ProcessCluster.log_path(node), or
`docker compose logs`) and at GET /cluster on each node.
"""
import stat

import httpx
import pytest

from qis_lib.infra import cluster as cl
from qis_lib.infra.availability import cluster_available, docker_status
from qis_lib.infra.cluster import DockerComposeCluster, ProcessCluster, port_plan
from qis_lib.infra.launcher import ClusterLauncher
from qis_lib.infra.qdrant_http import cluster_peers, is_ready, shard_replicas
from qis_lib.infra.servers import free_port, wait_until

# ------------------------------------------------------------------ ProcessCluster, nothing started


def test_port_plan_matches_the_compose_host_ports():
    plan = port_plan(3, 6333, 10)
    assert [(p.http, p.grpc, p.p2p) for p in plan] == [(6333, 6334, 6335), (6343, 6344, 6345), (6353, 6354, 6355)]
    compose = cl.compose_services()
    assert [(s["http"], s["grpc"]) for s in compose.values()] == [(p.http, p.grpc) for p in plan]


@pytest.mark.parametrize("kwargs", [{"nodes": 0}, {"step": 2}, {"base_port": 80}, {"base_port": 65530}])
def test_port_plan_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        port_plan(**{"nodes": 3, "base_port": 6333, "step": 10, **kwargs})


def test_process_cluster_command_lines(tmp_path):
    c = ProcessCluster(qdrant_bin="/opt/qdrant/qdrant", base_port=7333, workdir=tmp_path)
    assert c.nodes == ["node1", "node2", "node3"] and c.entry == "node1"
    first, second, third = (c.command(n) for n in c.nodes)
    assert first[0] == "/opt/qdrant/qdrant"
    assert "--bootstrap" not in first
    assert first[first.index("--uri") + 1] == "http://127.0.0.1:7335"
    for node, command, p2p in (("node2", second, 7345), ("node3", third, 7355)):
        assert command[command.index("--bootstrap") + 1] == "http://127.0.0.1:7335", node
        assert command[command.index("--uri") + 1] == f"http://127.0.0.1:{p2p}", node


def test_process_cluster_environment_gives_each_node_its_ports_and_storage(tmp_path):
    c = ProcessCluster(qdrant_bin="qdrant", base_port=7333, workdir=tmp_path)
    envs = [c.environment(n) for n in c.nodes]
    assert all(e["QDRANT__CLUSTER__ENABLED"] == "true" and e["QDRANT__SERVICE__HOST"] == "127.0.0.1" for e in envs)
    ports = [int(e[k]) for e in envs for k in ("QDRANT__SERVICE__HTTP_PORT", "QDRANT__SERVICE__GRPC_PORT",
                                               "QDRANT__CLUSTER__P2P__PORT")]
    assert len(set(ports)) == 9
    storage = [e["QDRANT__STORAGE__STORAGE_PATH"] for e in envs]
    assert len(set(storage)) == 3 and all(s.startswith(str(tmp_path)) for s in storage)
    assert c.urls == ["http://127.0.0.1:7333", "http://127.0.0.1:7343", "http://127.0.0.1:7353"]
    assert c.url_list("node2") == ["http://127.0.0.1:7343", "http://127.0.0.1:7333", "http://127.0.0.1:7353"]
    assert not any(c.running(n) for n in c.nodes)


def test_both_launchers_share_the_launcher_base():
    assert issubclass(ProcessCluster, ClusterLauncher) and issubclass(DockerComposeCluster, ClusterLauncher)


def test_process_cluster_rejects_unknown_nodes(tmp_path):
    c = ProcessCluster(qdrant_bin="qdrant", workdir=tmp_path)
    with pytest.raises(ValueError, match="unknown node 'node9'"):
        c.kill("node9")


def test_process_cluster_without_executable_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv("QDRANT_BIN", raising=False)
    c = ProcessCluster(qdrant_bin=str(tmp_path / "no-such-qdrant"), base_port=port_plan_base(), workdir=tmp_path)
    with pytest.raises(FileNotFoundError, match="QDRANT_BIN"):
        c.up(timeout=5)


def port_plan_base():
    return 20000 + free_port() % 20000


def test_docker_compose_cluster_commands_and_urls():
    c = DockerComposeCluster(cl.COMPOSE_FILE, project="qis-test")
    assert c.nodes == ["qdrant_node1", "qdrant_node2", "qdrant_node3"] and c.entry == "qdrant_node1"
    assert c.urls == ["http://127.0.0.1:6333", "http://127.0.0.1:6343", "http://127.0.0.1:6353"]
    assert c.p2p_uri("qdrant_node2") == "http://qdrant_node2:6335"
    command = c.compose_command("kill", "-s", "SIGKILL", "qdrant_node2")
    assert command[:2] == ["docker", "compose"] and command[-4:] == ["kill", "-s", "SIGKILL", "qdrant_node2"]
    assert command[command.index("-p") + 1] == "qis-test"
    assert command[command.index("-f") + 1].endswith("docker-compose.yml")


# ------------------------------------------------------------------ availability


def test_cluster_available_says_why_not(monkeypatch, tmp_path):
    monkeypatch.delenv("QDRANT_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker, no qdrant
    status = cluster_available()
    assert not status and status.launcher is None
    assert "docker" in status.reason and "qdrant" in status.reason


def test_cluster_available_accepts_a_qdrant_bin(monkeypatch, tmp_path):
    fake = tmp_path / "qdrant"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("QDRANT_BIN", str(fake))
    status = cluster_available()
    assert status and status.launcher == "process" and str(fake) in status.reason


def test_cluster_available_reports_a_bad_qdrant_bin(monkeypatch, tmp_path):
    monkeypatch.setenv("QDRANT_BIN", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    status = cluster_available()
    assert not status and "QDRANT_BIN" in status.reason


def test_docker_cli_without_engine_is_not_available(monkeypatch, tmp_path):
    fake = tmp_path / "docker"  # a docker CLI whose engine does not answer, as on our machines
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    ok, why = docker_status()
    assert not ok and "no docker engine answers" in why and "Cannot connect" in why


# ------------------------------------------------------------------ health parsing (httpx mock)

CLUSTER_ANSWER = {"result": {
    "status": "enabled", "peer_id": 11,
    "peers": {"11": {"uri": "http://qdrant_node1:6335/"}, "22": {"uri": "http://qdrant_node2:6335/"},
              "33": {"uri": "http://qdrant_node3:6335/"}},
    "raft_info": {"term": 2, "commit": 40, "pending_operations": 0, "leader": 22, "role": "Follower",
                  "is_voter": True},
}, "status": "ok", "time": 0.0}
COLLECTION_ANSWER = {"result": {
    "peer_id": 11, "shard_count": 2,
    "local_shards": [{"shard_id": 0, "points_count": 12, "state": "Active"}],
    "remote_shards": [{"shard_id": 0, "peer_id": 22, "state": "Dead"},
                      {"shard_id": 1, "peer_id": 22, "state": "Active"},
                      {"shard_id": 1, "peer_id": 33, "state": "Partial"}],
    "shard_transfers": [{"shard_id": 1, "from": 22, "to": 33, "sync": False}],
}, "status": "ok", "time": 0.0}


def mock_client(answers):
    def handler(request):
        if request.url.path in answers:
            return httpx.Response(200, json=answers[request.url.path])
        return httpx.Response(404, json={"status": {"error": "not found"}})
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_cluster_peers_parses_get_cluster():
    peers = cluster_peers("http://node", client=mock_client({"/cluster": CLUSTER_ANSWER}))
    assert peers["peer_id"].tolist() == [11, 22, 33]
    assert peers.loc[peers["is_self"], "peer_id"].tolist() == [11]
    assert peers.loc[peers["is_leader"], "peer_id"].tolist() == [22]


def test_cluster_peers_refuses_a_node_without_cluster_mode():
    answer = {"result": {"status": "disabled"}, "status": "ok"}
    with pytest.raises(RuntimeError, match="QDRANT__CLUSTER__ENABLED"):
        cluster_peers("http://node", client=mock_client({"/cluster": answer}))


def test_shard_replicas_lists_every_replica_with_its_state():
    frame = shard_replicas("http://node", "c", client=mock_client({"/collections/c/cluster": COLLECTION_ANSWER}))
    assert list(zip(frame["shard_id"], frame["peer_id"], frame["state"])) == [
        (0, 11, "Active"), (0, 22, "Dead"), (1, 22, "Active"), (1, 33, "Partial")]
    assert frame["local"].tolist() == [True, False, False, False]
    assert len(frame.attrs["shard_transfers"]) == 1


def test_is_ready_is_false_on_a_dead_port():
    assert is_ready(f"http://127.0.0.1:{free_port()}", timeout=1) is False


def test_wait_until_names_what_it_waited_for():
    with pytest.raises(TimeoutError, match="the moon"):
        wait_until(lambda: False, 0.3, "the moon", interval=0.05)


# ------------------------------------------------------------------ client failover over node urls


def test_qdrant_client_failover_over_dead_ports_gives_a_clear_connection_error():
    from qis_lib import make_router

    ports = [free_port(), free_port()]
    with pytest.raises(ConnectionError, match="no Qdrant node answered") as info:
        make_router(f"qdrant://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}", embedder="hash")
    for port in ports:  # both nodes were tried, and the message says so
        assert f"127.0.0.1:{port}" in str(info.value)


# ------------------------------------------------------------------ a live cluster, and its stand-in
# The same tests run on recording nodes that check every request against Qdrant's OpenAPI
# document (tests/qdrant_fake.py), and on a real cluster where docker or a qdrant executable is
# found (a cluster already running from docker-compose.yml is reused and left running).

AVAILABLE = cluster_available()


@pytest.fixture(scope="module", params=["stand-in", "live"])
def running_cluster(request, tmp_path_factory):
    if request.param == "stand-in":
        from qdrant_fake import FakeCluster

        with FakeCluster(names=list(cl.compose_services())) as cluster:
            yield cluster
        assert cluster.problems() == []
        return
    if not AVAILABLE:
        pytest.skip(f"no local Qdrant cluster can start: {AVAILABLE.reason}")
    with cl.open_cluster(AVAILABLE.launcher, **({"workdir": tmp_path_factory.mktemp("qdrant")}
                                                 if AVAILABLE.launcher == "process" else {})) as cluster:
        yield cluster


def test_live_cluster_forms_with_every_peer(running_cluster):
    peers = running_cluster.peers()
    assert len(peers) == 3 and peers["node"].notna().all()
    assert peers["is_leader"].sum() == 1


def test_live_replicas_spread_and_survive_a_kill(running_cluster):
    from qis_lib import make_router
    from qis_lib.experiments.failover import make_packet, seed_texts

    c = running_cluster
    collection = "test_live_replicas"
    try:
        c.delete_collection(collection)
    except Exception:
        pass
    router = make_router("qdrant", embedder="hash", urls=c.url_list(), collection=collection, shard_number=3,
                         replication_factor=2)
    placement = c.wait_replicas_active(collection)
    assert len(placement) == 6 and placement.groupby("shard_id")["node"].nunique().eq(2).all()
    seeds = seed_texts()
    before = router.deposit_many([make_packet(i, 1.0e9, seeds) for i in range(50)])
    victim = c.others()[-1]
    c.kill(victim)
    during = router.deposit_many([make_packet(i, 1.0e9, seeds) for i in range(50, 100)])
    c.start(victim)
    c.wait_ready(victim)
    c.wait_replicas_active(collection)
    for node in c.nodes:  # every node answers for every acknowledged id
        check = make_router("qdrant", embedder="hash", url=c.url(node), collection=collection)
        assert set(check.get(before + during)) == set(before + during), node
        check.close()
    router.close()


def test_live_entry_node_failover(running_cluster):
    from qis_lib import make_router

    c = running_cluster
    router = make_router("qdrant", embedder="hash", urls=c.url_list(), collection="test_live_failover",
                         shard_number=3, replication_factor=2)
    c.wait_replicas_active("test_live_failover")
    c.kill(c.entry)
    try:
        router.query("connection pool exhausted")  # must move on to the next url
        assert router.store.urls[router.store._active] != c.url(c.entry)
    finally:
        c.start(c.entry)
        c.wait_ready(c.entry)
        router.close()

