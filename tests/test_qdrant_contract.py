"""The Qdrant store and the cluster helpers against recording nodes
that check every request with Qdrant's OpenAPI document (tests/qdrant_fake.py): what a
user's Qdrant server will receive, proved here with no server. (The failover harness and
`make cluster-test` run on the same nodes in tests/test_cluster_check.py, the live cluster
tests in tests/test_cluster.py.)

And node failover, REST and gRPC: a node that does not answer (refused, reset, timed out,
502/503/504, gRPC UNAVAILABLE or DEADLINE_EXCEEDED) is left for the next one; a node that
answers something bad (a 4xx, a body the client cannot read, another gRPC status) fails
the call at once, naming the node and what it answered.

A failure here names the request that did not fit the document ("<operationId> body
<path>: <what>"): compare it with the operation in tests/fixtures/qdrant/.
"""
import time
from concurrent import futures

import grpc
import httpx
import pytest

from qdrant_fake import FakeCluster, RecordingQdrant, openapi, silent_port
from qis_lib import OutcomePacket, make_router
from qis_lib.experiments.failover import classify
from qis_lib.infra.qdrant_http import cluster_peers, is_ready, shard_replicas
from qis_lib.infra.servers import free_port
from qis_lib.stores.qdrant import NoNodeAnswered, QdrantNodeError, QdrantStore, no_answer


def packets(n, start=0, agent="agent-1"):
    return [OutcomePacket(f"connection pool exhausted under load, report {i}", "resolved", 0.8,
                          f"raised the pool size ({i})", ["database"], agent_id=agent) for i in range(start, start + n)]


@pytest.fixture
def node():
    with RecordingQdrant() as n:
        yield n


@pytest.fixture
def two_nodes():
    with FakeCluster(nodes=2) as c:
        yield c


# ------------------------------------------------------------------ the fake itself checks


def test_the_recording_node_flags_requests_outside_the_document(node):
    with httpx.Client(base_url=node.url) as http:
        http.put("/collections/c", json={"vectors": {"size": 4, "distance": "Cosine"}})
        http.put("/collections/c/points", params={"wait": "true", "flush": "1"},
                 json={"points": [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4], "payload": {}}]})
        http.put("/collections/c/points", params={"wait": "maybe"}, json={"points": [{"id": "x", "vectors": 3}]})
        http.post("/collections/c/points/search/everything", json={})
        http.post("/collections/c/points/query", json={"query": [0.1, 0.2, 0.3, 0.4], "limit": "five"})
    problems = node.problems()
    assert any("'flush' is not declared" in p for p in problems)
    assert any("wait='maybe' does not fit" in p for p in problems)
    assert any(p.startswith("upsert_points body") for p in problems)
    assert any("no such operation" in p for p in problems)
    assert any(p.startswith("query_points body limit") for p in problems)
    assert node.recorded[0].problems == [] and node.recorded[1].problems == [node.problems()[0]]


def test_the_document_is_qdrants_and_knows_every_operation_we_use():
    doc = openapi()
    assert doc.version == "v1.19.x" and doc.doc["info"]["license"]["name"] == "Apache 2.0"
    ids = {op["operationId"] for _, _, _, op in doc.routes}
    assert {"collection_exists", "create_collection", "get_collection", "create_field_index", "upsert_points",
            "query_points", "get_points", "delete_points", "count_points", "delete_collection", "cluster_status",
            "collection_cluster_info", "readyz"} <= ids


# ------------------------------------------------------------------ the store's requests


def test_every_store_request_fits_the_document(node):
    router = make_router("qdrant", embedder="hash", url=node.url, collection="contract", shard_number=2,
                         replication_factor=1, write_consistency_factor=1)
    ids = router.deposit_many(packets(6) + packets(2, 6, agent="agent-2"))
    hits = router.query("pool exhausted", top_k=3, domain="database", exclude_agent="agent-2")
    assert len(hits) == 3 and all(p.agent_id == "agent-1" for p, _ in hits)
    assert set(router.store.get(ids)) == set(ids)
    router.store.delete(ids[:2])
    assert router.store.count() == 6
    router.store.after_bulk_load(timeout=5)
    router.store.drop_collection()
    router.close()
    assert node.problems() == []
    assert {"collection_exists", "create_collection", "get_collection", "create_field_index", "upsert_points",
            "query_points", "get_points", "delete_points", "count_points", "delete_collection"} <= set(node.operations())
    create = next(r for r in node.recorded if r.operation == "create_collection")
    assert create.body["shard_number"] == 2 and create.body["vectors"] == {"size": 384, "distance": "Cosine"}
    upsert = next(r for r in node.recorded if r.operation == "upsert_points")
    assert ("wait", "true") in upsert.query  # acknowledged = applied
    assert not node.state.collections  # drop_collection removed it
    # one payload index per filter field; extra HNSW links only for the domain (they slow a build)
    indexes = {r.body["field_name"]: r.body["field_schema"] for r in node.recorded
               if r.operation == "create_field_index"}
    assert {f: (s["type"], s["enable_hnsw"]) for f, s in indexes.items()} == {
        "domain_tags": ("keyword", True), "agent_id": ("keyword", False), "confidence": ("float", False),
        "expires_at": ("float", False)}


def test_the_server_modes_cleanup_deletes_what_it_created(node, tmp_path):
    """The qdrant-server conformance mode drops its collection when the suite closes the store."""
    import contextlib

    from qis_lib.bench.modes import ModeContext
    from qis_lib.stores import all_modes
    from store_suite import store_factory

    spec, mode = all_modes()["qdrant-server"]
    with contextlib.ExitStack() as stack:
        ctx = ModeContext(tmp_path, stack)
        options = {**mode.options(ctx), "url": node.url}
        factory = store_factory(spec.name, options, cleanup=mode.cleanup)
        store = factory()
        packet = packets(1)[0]
        store.upsert([packet.packet_id], store_vector(), [packet.to_payload()])
        store = factory()  # reopened: still there
        assert ctx.collection in node.state.collections
        store.close()  # as the reopen test does: the cleanup must not need the store's own clients
        factory.close()
    assert node.state.collections == {} and node.problems() == []


def store_vector():
    import numpy as np

    v = np.zeros((1, 384), dtype=np.float32)
    v[0, 0] = 1.0
    return v


# ------------------------------------------------------------------ did not answer: the next node


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_node_answering_502_503_504_is_left_for_the_next(two_nodes, status):
    router = make_router("qdrant", embedder="hash", urls=two_nodes.url_list(), collection="c")
    first, second = (two_nodes.servers[n] for n in two_nodes.nodes)
    first.fail("upsert_points", status=status)
    router.deposit_many(packets(3))
    assert router.store.active_url == second.url
    assert [r.status for r in first.recorded if r.operation == "upsert_points"] == [status]
    assert [r.status for r in second.recorded if r.operation == "upsert_points"] == [200]
    assert two_nodes.problems() == []


def test_dead_ports_name_every_node_and_were_never_sent_the_request():
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    with pytest.raises(NoNodeAnswered) as info:
        QdrantStore(urls=urls, timeout=1)
    err = info.value
    assert [(u, why) for u, why, _ in err.failures] == [(u, "refused (could not connect)") for u in urls]
    assert not err.timed_out and not err.may_have_been_applied
    assert classify(err) == "error" and isinstance(err, ConnectionError)


def test_a_silent_node_times_out_and_the_next_one_answers(node):
    sock, port = silent_port()
    try:
        silent = f"http://127.0.0.1:{port}"
        start = time.monotonic()
        store = QdrantStore(urls=[silent, node.url], collection="c", timeout=1)
        assert store.active_url == node.url and time.monotonic() - start < 5
        with pytest.raises(NoNodeAnswered) as info:
            QdrantStore(urls=[silent], timeout=1)
        assert info.value.timed_out and info.value.may_have_been_applied
        assert classify(info.value) == "timeout"
        store.close()
    finally:
        sock.close()


def test_a_timed_out_write_may_have_been_applied_and_the_retry_is_safe(two_nodes):
    """node1 applies the upsert, then answers nothing until the client gives up: the store sends
    the same upsert to node2. Same ids, same payloads: the write is stored once."""
    router = make_router("qdrant", embedder="hash", urls=two_nodes.url_list(), collection="c", timeout=1)
    first, second = (two_nodes.servers[n] for n in two_nodes.nodes)
    first.fail("upsert_points", hang=3.0, apply=True)
    ids = router.deposit_many(packets(4))
    sent = [r.body for s in (first, second) for r in s.recorded if r.operation == "upsert_points"]
    assert len(sent) == 2 and sent[0] == sent[1]  # the retry is the same write
    assert router.store.count() == 4 and set(router.store.get(ids)) == set(ids)
    # and when no node is left to retry on, the caller learns the write may be stored
    only_first = make_router("qdrant", embedder="hash", url=first.url, collection="c", timeout=1)
    first.fail("upsert_points", hang=3.0, apply=True)
    with pytest.raises(NoNodeAnswered) as info:
        only_first.deposit_many(packets(1, 10))
    assert info.value.may_have_been_applied and classify(info.value) == "timeout"
    assert only_first.store.count() == 5  # it was applied: a timeout is indeterminate, not failed
    assert two_nodes.problems() == []


# ------------------------------------------------------------------ answered something bad: fail at once


@pytest.mark.parametrize("how, said", [
    ({"raw": b"{this is not json"}, "a body the client could not read"),
    ({"raw": b'{"result": {"operation_id": "seven"}, "status": "ok", "time": 0}'}, "a body the client could not read"),
    ({"status": 400}, "HTTP 400"),
    ({"status": 404}, "HTTP 404"),
    ({"status": 500}, "HTTP 500"),
])
def test_a_node_answering_something_bad_fails_at_once_naming_it(two_nodes, how, said):
    router = make_router("qdrant", embedder="hash", urls=two_nodes.url_list(), collection="c")
    first, second = (two_nodes.servers[n] for n in two_nodes.nodes)
    first.fail("upsert_points", **how)
    before = len(second.recorded)
    with pytest.raises(QdrantNodeError) as info:
        router.deposit_many(packets(2))
    message = str(info.value)
    assert message.startswith(f"Qdrant node {first.url} answered {said}")
    assert "no Qdrant node answered" not in message
    assert len(second.recorded) == before  # the other node was not asked
    assert classify(info.value) == "error"


def test_a_closed_client_is_our_error_not_the_nodes(node):
    store = QdrantStore(url=node.url, collection="c")
    store.close()
    with pytest.raises(Exception) as info:
        store.count()
    assert not isinstance(info.value, (QdrantNodeError, NoNodeAnswered)) and "closed" in str(info.value)


def test_a_node_answering_429_fails_at_once(two_nodes):
    store = QdrantStore(urls=two_nodes.url_list(), collection="c")
    two_nodes.servers["node1"].fail("count_points", status=429)
    with pytest.raises(QdrantNodeError, match="answered HTTP 429"):
        store.count()
    store.close()


# ------------------------------------------------------------------ gRPC


class _Abort(grpc.GenericRpcHandler):
    """A gRPC server whose every method answers `code`."""

    def __init__(self, code):
        self.code = code

    def service(self, details):
        def answer(request, context):
            context.abort(self.code, f"scripted {self.code.name}")
        return grpc.unary_unary_rpc_method_handler(answer)


@pytest.fixture
def grpc_node(request):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((_Abort(request.param),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def grpc_error(port, timeout=1):
    from qdrant_client import QdrantClient

    client = QdrantClient(host="127.0.0.1", port=free_port(), grpc_port=port, prefer_grpc=True, timeout=timeout,
                          check_compatibility=False)
    try:
        client.collection_exists("c")
    except Exception as exc:
        return exc
    finally:
        client.close()
    raise AssertionError("the call succeeded")


def grpc_store(ports, fallback_url, timeout=1):
    """A QdrantStore whose node list is gRPC clients on `ports` then the REST node `fallback_url`."""
    from qdrant_client import QdrantClient

    store = QdrantStore(url=fallback_url, collection="c", timeout=timeout)
    grpc_clients = [QdrantClient(host="127.0.0.1", port=free_port(), grpc_port=p, prefer_grpc=True, timeout=timeout,
                                 check_compatibility=False) for p in ports]
    store._clients = grpc_clients + store._clients
    store.urls = [f"grpc://127.0.0.1:{p}" for p in ports] + store.urls
    return store


def test_grpc_dead_and_silent_ports_did_not_answer(node):
    dead = grpc_error(free_port())
    sock, port = silent_port()
    try:
        silent = grpc_error(port)
        assert no_answer(dead) == "gRPC UNAVAILABLE" and classify(dead) == "error"
        assert no_answer(silent) == "timed out (gRPC DEADLINE_EXCEEDED)" and classify(silent) == "timeout"
        store = grpc_store([free_port(), port], node.url)
        assert store.count() == 0 and store.active_url == node.url  # both gRPC nodes skipped
        store.close()
    finally:
        sock.close()


@pytest.mark.parametrize("grpc_node", [grpc.StatusCode.INVALID_ARGUMENT], indirect=True)
def test_grpc_node_answering_an_error_fails_at_once(grpc_node, node):
    exc = grpc_error(grpc_node)
    assert no_answer(exc) is None
    store = grpc_store([grpc_node], node.url)
    before = len(node.recorded)
    with pytest.raises(QdrantNodeError, match=rf"grpc://127.0.0.1:{grpc_node} answered gRPC INVALID_ARGUMENT"):
        store.count()
    assert len(node.recorded) == before
    store.close()


@pytest.mark.parametrize("grpc_node", [grpc.StatusCode.UNAVAILABLE], indirect=True)
def test_grpc_node_answering_unavailable_is_left_for_the_next(grpc_node, node):
    store = grpc_store([grpc_node], node.url)
    assert store.count() == 0 and store.active_url == node.url
    store.close()


# ------------------------------------------------------------------ cluster helpers


def test_cluster_helpers_read_peers_leader_and_replica_states():
    with FakeCluster() as c:
        router = make_router("qdrant", embedder="hash", urls=c.url_list(), collection="spread", shard_number=3,
                             replication_factor=2)
        placement = c.wait_replicas_active("spread")
        assert len(placement) == 6 and placement.groupby("shard_id")["node"].nunique().eq(2).all()
        peers = c.peers()
        assert peers["is_leader"].sum() == 1 and peers["node"].tolist() == c.nodes
        c.kill("node3")
        assert not is_ready(c.url("node3"), timeout=1)
        states = c.placement("spread").set_index(["shard_id", "node"])["state"]
        assert set(states.xs("node3", level="node")) == {"Dead"} and "Active" in set(states)
        c.start("node3")
        assert set(c.placement("spread")["state"]) == {"Active", "Partial"}  # catching up
        assert set(c.wait_replicas_active("spread", timeout=10)["state"]) == {"Active"}
        router.close()
        assert c.problems() == []


def test_cluster_peers_refuses_a_node_without_cluster_mode():
    with RecordingQdrant(cluster=False) as n:
        with pytest.raises(RuntimeError, match="QDRANT__CLUSTER__ENABLED"):
            cluster_peers(n.url)
        n.fail("collection_cluster_info", status=503)
        with pytest.raises(httpx.HTTPStatusError):
            shard_replicas(n.url, "nothing")
        assert n.problems() == []
