"""The routing service: bad input, access, limits (in-process app), and the agents' client
against a live service process (same answers as the in-process router, clear errors when
the service is dead or silent)."""
import inspect
import json
import socket
import time

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from qis_lib import OutcomePacket, OutcomeRouter, make_router
from qis_lib.embedders import HashEmbedder
from qis_lib.serve.app import create_app
from qis_lib.serve.client import RemoteRouter, packet_body
from qis_lib.serve.namespaces import Namespaces
from qis_lib.serve.process import RoutingService
from qis_lib.stores import open_store
from qis_lib.stores.memory import MemoryStore

KEY = "s3cret-key"
NOW = 1_800_000_000.0
GOOD = {"problem_description": "namenode heap exhausted", "outcome_type": "resolved", "confidence": 0.8,
        "domain_tags": ["hdfs"], "agent_id": "a1", "timestamp": NOW - 10}

# (field, a value breaking its rule): each must be a 422 naming the field, nothing stored.
BAD_FIELDS = [
    ("confidence", 1.5), ("confidence", -0.1), ("confidence", "0.5"), ("confidence", True), ("confidence", None),
    ("outcome_type", "maybe"), ("problem_description", "   "), ("problem_description", 7),
    ("delta_summary", "x" * 201), ("domain_tags", "hdfs"), ("domain_tags", [""]), ("domain_tags", [1]),
    ("agent_id", ""), ("ttl", 0), ("ttl", -5.0), ("timestamp", -1.0), ("unknown_field", 1),
]


def make_app(**options):
    namespaces = Namespaces("memory://", HashEmbedder(), limit=4)
    return TestClient(create_app(namespaces, **options)), namespaces.default


@pytest.fixture
def app():
    client, router = make_app()
    with client:
        yield client, router


@pytest.mark.parametrize("field,value", BAD_FIELDS)
def test_bad_packet_is_422_naming_field_and_rule(app, field, value):
    client, router = app
    response = client.post("/v1/packets", json={**GOOD, field: value})
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(field in e["loc"] for e in errors), errors
    assert all(e["msg"] for e in errors)
    assert router.store.count() == 0


def test_the_rule_in_the_answer_is_the_librarys(app):
    client, _ = app
    error = client.post("/v1/packets", json={**GOOD, "confidence": 1.5}).json()["detail"][0]
    with pytest.raises(ValueError) as raised:
        OutcomePacket(**{**GOOD, "confidence": 1.5})
    assert (error["loc"], error["msg"]) == (["body", "confidence"], str(raised.value))


def test_one_bad_packet_in_a_batch_stores_nothing(app):
    client, router = app
    packets = [{**GOOD, "problem_description": f"problem {i}"} for i in range(5)]
    packets[3]["ttl"] = 0
    response = client.post("/v1/packets/batch", json={"packets": packets})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "packets", 3, "ttl"]
    assert router.store.count() == 0


@pytest.mark.parametrize("body,field", [({"problem": "x", "top_k": 0}, "top_k"), ({"problem": "x", "top_k": 2.5}, "top_k"),
                                        ({"problem": "  "}, "problem"), ({"problem": "x", "min_confidence": 2}, "min_confidence"),
                                        ({"problem": "x", "domain": ""}, "domain"), ({"problem": "x", "now": "soon"}, "now")])
def test_bad_query_is_422_naming_field(app, body, field):
    client, _ = app
    response = client.post("/v1/query", json=body)
    assert response.status_code == 422
    assert any(e["loc"][-1] == field for e in response.json()["detail"])


def test_synthesize_with_a_bad_problem_deposits_nothing(app):
    client, router = app
    response = client.post("/v1/synthesize", json={"problem": " ", "outcome": GOOD})
    assert response.status_code == 422
    assert router.store.count() == 0


@pytest.mark.parametrize("raw", [b"{not json", b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe", b""])
def test_unreadable_json_is_4xx_and_stores_nothing(app, raw):
    client, router = app
    response = client.post("/v1/packets", content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert router.store.count() == 0


def test_oversized_body_is_413_before_it_is_read():
    client, router = make_app(max_body_bytes=2000)
    with client:
        big = {**GOOD, "delta_summary": "x" * 5000}
        assert client.post("/v1/packets", json=big).status_code == 413
        body = json.dumps(big).encode()
        chunked = client.post("/v1/packets", content=iter([body[:1500], body[1500:]]),
                              headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        assert router.store.count() == 0
        assert client.post("/v1/packets", json=GOOD).status_code == 200


def test_api_key_required_and_a_refused_request_changes_nothing():
    client, router = make_app(api_key=KEY)
    with client:
        for headers in ({}, {"X-API-Key": "wrong"}):
            for method, path, body in [("POST", "/v1/packets", GOOD), ("POST", "/v1/query", {"problem": "x"}),
                                       ("GET", "/v1/stats", None), ("POST", "/v1/vectors/other/delete", {"ids": []})]:
                response = client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (path, response.text)
        assert router.store.count() == 0
        assert router.stats()["queries"] == 0
        assert client.get("/health").status_code == 200  # no data in it: open to health checks
        assert client.post("/v1/packets", json=GOOD, headers={"X-API-Key": KEY}).status_code == 200
        assert client.post("/v1/query", json={"problem": "x"},
                           headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
        assert {"APIKeyHeader", "HTTPBearer"} <= set(schemes)


def test_openapi_document_and_docs_page(app):
    client, _ = app
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/packets", "/v1/packets/batch", "/v1/query", "/v1/synthesize", "/v1/packets/{packet_id}", "/v1/get",
            "/v1/stats", "/v1/purge", "/health", "/v1/vectors/{namespace}/query"} <= set(paths)
    assert "swagger" in client.get("/docs").text.lower()


def test_get_by_id_and_404(app):
    client, _ = app
    pid = client.post("/v1/packets", json=GOOD).json()["id"]
    assert client.get(f"/v1/packets/{pid}").json()["packet_id"] == pid
    assert client.get("/v1/packets/no-such-id").status_code == 404


def test_purge_removes_expired_packets_through_the_router(app):
    client, router = app
    router.deposit_many([OutcomePacket(**{**GOOD, "problem_description": f"old {i}"}, ttl=5) for i in range(3)])
    router.deposit(OutcomePacket(**GOOD))
    assert client.post("/v1/purge", json={"now": NOW}).json() == {"purged": 3}
    assert router.store.count() == 1 and router.stats()["purged"] == 3


def test_namespaces_are_separate_and_limited(app):
    client, router = app
    vector = [1.0] + [0.0] * 383
    payload = {**GOOD, "expires_at": NOW + 100}
    assert client.post("/v1/vectors/ns-a/upsert", json={"ids": ["1"], "vectors": [vector], "payloads": [payload]}).status_code == 200
    assert client.get("/v1/vectors/ns-a/info").json()["count"] == 1
    assert client.get("/v1/vectors/default/info").json()["count"] == 0
    for name in ("ns-b", "ns-c"):  # limit 4: default + 3
        assert client.get(f"/v1/vectors/{name}/info").status_code == 200
    assert client.get("/v1/vectors/ns-d/info").status_code == 409
    assert client.delete("/v1/vectors/ns-a").status_code == 200
    assert client.get("/v1/vectors/ns-a/info").json()["count"] == 0
    assert client.delete("/v1/vectors/default").status_code == 422
    assert client.get("/v1/vectors/bad%20name/info").status_code == 422


# --- a live service process ----------------------------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with RoutingService("memory://", embedder="hash", api_key=KEY, folder=tmp_path_factory.mktemp("serve")) as svc:
        yield svc


def test_service_binds_loopback_and_says_so(service):
    log = open(service.log_path).read()
    assert "http://127.0.0.1:" in log and "this machine only" in log
    from qis_lib.serve.__main__ import parse_args

    assert parse_args([]).host == "127.0.0.1"


def test_remote_router_has_the_routers_methods(service):
    router = make_router(service.url, api_key=KEY)
    assert isinstance(router, RemoteRouter)
    for name, method in inspect.getmembers(OutcomeRouter, inspect.isfunction):
        if not name.startswith("_") or name in ("__enter__", "__exit__"):
            params = inspect.signature(getattr(RemoteRouter, name, None) or (lambda: None)).parameters
            assert list(params.items()) == list(inspect.signature(method).parameters.items()), name
    assert (router.embedder.name, router.embedder.dim, router.store.name) == ("hash:384", 384, "http")
    router.close()
    with make_router(service.url, embedder="hash", api_key=KEY) as local:  # this process embeds, the service stores
        assert isinstance(local, OutcomeRouter) and local.store.name == "http"


def test_a_service_client_used_in_a_with_block_closes_its_connections(service):
    from qis_lib.stores.http import ServiceClient

    with ServiceClient(service.url, api_key=KEY) as client:
        assert client.call("GET", "/v1/vectors/default/info")["dim"] == 384
    assert client._http.is_closed


QUERIES = st.fixed_dictionaries({
    "problem": st.sampled_from(["namenode heap", "yarn scheduler stuck", "disk full on datanode", "block report"]),
    "top_k": st.integers(1, 12),
    "domain": st.one_of(st.none(), st.sampled_from(["hdfs", "yarn", "none-such"])),
    "min_confidence": st.sampled_from([0.0, 0.3, 0.75]),
    "exclude_agent": st.one_of(st.none(), st.sampled_from(["a0", "a1"])),
    "now": st.sampled_from([NOW, NOW + 500, NOW + 5000]),
})


def test_same_answers_as_the_in_process_router(service):
    """Deposit the same packets over HTTP and in-process; every query and filter agrees."""
    ns = f"eq-{time.time_ns()}"
    packets = [OutcomePacket(f"{['namenode heap', 'yarn scheduler', 'datanode disk', 'block report'][i % 4]} case {i}",
                             ["resolved", "partial", "open"][i % 3], round((i % 10) / 10, 1), f"fix {i}",
                             [["hdfs"], ["yarn"], ["hdfs", "yarn"], []][i % 4], timestamp=NOW - 100,
                             agent_id=f"a{i % 3}", ttl=[50.0, 1000.0, 10_000.0][i % 3]) for i in range(60)]
    local = OutcomeRouter(MemoryStore(), HashEmbedder())
    remote = make_router(service.url, api_key=KEY)
    # A namespace of its own, with the service's router on top: the text API is on "default".
    store = open_store("http", url=service.url, namespace=ns, api_key=KEY)
    over_http = OutcomeRouter(store, HashEmbedder())
    assert over_http.deposit_many(packets) == local.deposit_many(packets)
    remote.deposit_many(packets[:30])
    remote.deposit(packets[30])
    remote.deposit_many(packets[31:])
    assert remote.get([p.packet_id for p in packets]) == {p.packet_id: p for p in packets}

    @settings(max_examples=25, deadline=None)
    @given(q=QUERIES)
    def agree(q):
        want = local.query(**q)
        for router in (over_http, remote):  # the module's service holds only these packets on "default"
            got = router.query(**q)
            assert [p for p, _ in got] == [p for p, _ in want], (router, q)
            assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(got, want))

    agree()
    mine = OutcomePacket("namenode heap again", "open", 0.5, agent_id="a1", timestamp=NOW)
    want = local.synthesize(mine.problem_description, mine, top_k=5, now=NOW)
    got = over_http.synthesize(mine.problem_description, mine, top_k=5, now=NOW)
    assert (got.consensus, got.outcome_counts, [p for p, _ in got.matches]) == \
        (want.consensus, want.outcome_counts, [p for p, _ in want.matches])
    store.drop()
    remote.close()


def test_without_the_key_nothing_changes(service):
    with pytest.raises(PermissionError, match="X-API-Key"):
        make_router(service.url)
    router = make_router(service.url, api_key=KEY)
    before = router.stats()["packets"]
    router.client._http.headers.pop("X-API-Key")
    with pytest.raises(PermissionError, match=service.url):
        router.deposit(OutcomePacket(**{**GOOD, "agent_id": "keyless"}))
    router.client._http.headers["X-API-Key"] = KEY
    assert router.stats()["packets"] == before


def test_dead_service_is_a_clear_error(dead_url):
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach the routing service at {dead_url}"):
        make_router(dead_url, timeout=1.0)
    with pytest.raises(ConnectionError, match=dead_url):
        open_store("http", url=dead_url, timeout=1.0)
    assert time.monotonic() - started < 5


def test_hung_service_is_an_error_within_the_timeout():
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        for opener in (lambda: make_router(url, timeout=0.5), lambda: open_store("http", url=url, timeout=0.5)):
            started = time.monotonic()
            with pytest.raises(ConnectionError, match=f"{url} did not answer .* within 0.5s"):
                opener()
            assert time.monotonic() - started < 3


def test_packet_body_is_what_the_service_takes():
    packet = OutcomePacket(**GOOD)
    client, router = make_app()
    with client:
        assert client.post("/v1/packets", json=packet_body(packet)).json()["id"] == packet.packet_id
        assert router.get([packet.packet_id]) == {packet.packet_id: packet}


def test_compose_runs_the_service_in_front_of_the_cluster():
    """docker-compose.yml's `router` (no Docker here: checked by reading it)."""
    from pathlib import Path

    import yaml

    from qis_lib.core.urls import parse_store_url
    from qis_lib.serve.__main__ import parse_args

    root = Path(__file__).resolve().parents[1]
    services = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    router = services["router"]
    command = router["command"]
    assert command[:3] == ["python", "-m", "qis_lib.serve"]
    args = parse_args(command[3:])
    name, options = parse_store_url(args.store)
    hosts = {u.split("//")[1].split(":")[0] for u in options["urls"]}
    assert name == "qdrant" and hosts == {"qdrant_node1", "qdrant_node2", "qdrant_node3"}
    assert options["replication_factor"] == 2
    assert set(router["depends_on"]) == hosts
    assert all(p.startswith("127.0.0.1:") for p in router["ports"])  # the host's loopback unless changed
    assert "QIS_API_KEY" in router["environment"]
    assert (root / "Dockerfile").read_text().count("qis_lib.serve") >= 1


def test_the_service_opens_its_stores_as_make_router_does(tmp_path):
    """Hybrid where the store can fuse BM25 with the dense search, as make_router's default;
    a url's own hybrid=false wins; a store without BM25 stays dense."""
    cases = [(f"qdrant-edge://{tmp_path / 'a'}", True), (f"qdrant-edge://{tmp_path / 'b'}?hybrid=false", False),
             ("memory://", False)]
    for url, hybrid in cases:
        with make_router(url.replace("/a", "/a2").replace("/b", "/b2"), embedder=HashEmbedder()) as router:
            assert router.hybrid is hybrid, url
        namespaces = Namespaces(url, HashEmbedder(), limit=2)
        assert namespaces.default.hybrid is hybrid, url
        namespaces.close()
