"""The async client (`make_async_router`) against a live service: RemoteRouter's methods as
coroutines, the same answers as the in-process router, the same errors, TLS with a CA file,
and many agents as tasks in one process with exact counts."""
import asyncio
import inspect
import socket
import threading
import time

import httpx
import pytest
from hypothesis import given, settings

import qis_lib
from qis_lib import OutcomePacket, OutcomeRouter
from qis_lib.embedders import HashEmbedder
from qis_lib.experiments.http import bench
from qis_lib.experiments.http.load import loss_of, run_over_http_async
from qis_lib.serve.aclient import AsyncRemoteRouter, make_async_router
from qis_lib.serve.client import RemoteRouter
from qis_lib.serve.process import RoutingService
from qis_lib.stores.http import HttpStore, ServiceError, answer_of
from qis_lib.stores.memory import MemoryStore
from test_serve import GOOD, KEY, NOW, QUERIES

PACKETS = [OutcomePacket(f"{['namenode heap', 'yarn scheduler', 'datanode disk', 'block report'][i % 4]} case {i}",
                         ["resolved", "partial", "open"][i % 3], round((i % 10) / 10, 1), f"fix {i}",
                         [["hdfs"], ["yarn"], ["hdfs", "yarn"], []][i % 4], timestamp=NOW - 100,
                         agent_id=f"a{i % 3}", ttl=[50.0, 1000.0, 10_000.0][i % 3]) for i in range(60)]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with RoutingService("memory://", embedder="hash", api_key=KEY, folder=tmp_path_factory.mktemp("aserve")) as svc:
        yield svc


@pytest.fixture
def runner():
    """One event loop for the whole test: the router's connection pool belongs to it."""
    with asyncio.Runner() as loop:
        yield loop


async def at_once(calls):
    return await asyncio.gather(*calls)


def test_it_has_the_remote_routers_methods_as_coroutines():
    assert qis_lib.make_async_router is make_async_router
    public = [name for name, _ in inspect.getmembers(RemoteRouter, inspect.isfunction) if not name.startswith("_")]
    assert {"deposit", "deposit_many", "query", "synthesize", "get", "stats", "purge_expired", "close"} <= set(public)
    for name in public:
        method = getattr(AsyncRemoteRouter, name)
        assert inspect.iscoroutinefunction(method), name
        assert inspect.signature(method) == inspect.signature(getattr(RemoteRouter, name)), name
    assert inspect.iscoroutinefunction(AsyncRemoteRouter.__aenter__)
    assert inspect.iscoroutinefunction(AsyncRemoteRouter.__aexit__)


def test_same_answers_as_the_in_process_router(service, runner):
    local = OutcomeRouter(MemoryStore(), HashEmbedder())
    router = runner.run(make_async_router(service.url, api_key=KEY).connect())
    assert (router.embedder_name, router.dim, router.backend) == ("hash:384", 384, "memory")
    assert runner.run(router.deposit_many(PACKETS[:40])) == local.deposit_many(PACKETS[:40])
    assert runner.run(router.deposit(PACKETS[40])) == local.deposit(PACKETS[40])
    assert runner.run(router.deposit_many(PACKETS[41:])) == local.deposit_many(PACKETS[41:])
    assert runner.run(router.get([p.packet_id for p in PACKETS] + ["no-such-id"])) == \
        {p.packet_id: p for p in PACKETS}

    @settings(max_examples=25, deadline=None)
    @given(q=QUERIES)
    def agree(q):
        want = local.query(**q)
        got = runner.run(router.query(**q))
        assert [p for p, _ in got] == [p for p, _ in want], q
        assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(got, want))

    agree()
    # many tasks at once on the one pool, the article's name for the domain filter among them
    problems = ["namenode heap", "yarn scheduler stuck", "disk full on datanode", "block report"] * 5
    answers = runner.run(at_once(router.query(text, domain_filter="hdfs", now=NOW) for text in problems))
    assert [[p for p, _ in hits] for hits in answers] == \
        [[p for p, _ in local.query(text, domain="hdfs", now=NOW)] for text in problems]
    mine = OutcomePacket("namenode heap again", "open", 0.5, agent_id="a1", timestamp=NOW)
    want = local.synthesize(mine.problem_description, mine, top_k=5, now=NOW)
    got = runner.run(router.synthesize(mine.problem_description, mine, top_k=5, now=NOW))
    assert (got.consensus, got.outcome_counts, got.support, [p for p, _ in got.matches]) == \
        (want.consensus, want.outcome_counts, want.support, [p for p, _ in want.matches])
    assert runner.run(router.stats())["packets"] == len(PACKETS) + 1
    expired = sum(p.is_expired(now=NOW + 5000) for p in PACKETS)
    assert runner.run(router.purge_expired(now=NOW + 5000)) == local.purge_expired(now=NOW + 5000) == expired > 0
    runner.run(router.close())
    assert router.client._http.is_closed


def test_errors_name_the_field_the_id_and_the_service(service, runner):
    async def calls():
        async with make_async_router(service.url, api_key=KEY) as router:
            with pytest.raises(ValueError, match=f"{service.url}.*top_k"):
                await router.query("x", top_k=0)
            with pytest.raises(ValueError, match="min_confidence"):
                await router.query("x", min_confidence=2)
            with pytest.raises(KeyError, match="no-such-id"):
                await router.client.call("GET", "/v1/packets/no-such-id")
            with pytest.raises(TypeError, match="item 0 is a dict"):
                await router.deposit(GOOD)
            assert await router.stats()  # the router still works after each refusal

    runner.run(calls())


@pytest.mark.parametrize("code,error", [(401, PermissionError), (404, KeyError), (409, ValueError), (422, ValueError),
                                        (501, NotImplementedError), (500, ServiceError), (503, ServiceError)])
def test_one_mapping_from_status_to_exception(code, error):
    response = httpx.Response(code, json={"detail": [{"loc": ["body", "confidence"], "msg": "out of range"}]})
    with pytest.raises(error, match=rf"http://h:1 answered POST /v1/x with HTTP {code}: confidence: out of range"):
        answer_of(response, "http://h:1", "POST", "/v1/x", 1.0)
    assert answer_of(httpx.Response(200, json={"ok": 1}), "http://h:1", "GET", "/", 1.0) == {"ok": 1}


def test_without_the_key_nothing_changes(service, runner):
    async def calls():
        with pytest.raises(PermissionError, match="X-API-Key"):
            async with make_async_router(service.url):
                pass
        keyless = make_async_router(service.url)
        with pytest.raises(PermissionError, match=service.url):
            await keyless.deposit(OutcomePacket(**{**GOOD, "agent_id": "keyless"}))
        await keyless.close()
        async with make_async_router(service.url, api_key=KEY) as router:
            return await router.stats()

    keyed = runner.run(make_async_router(service.url, api_key=KEY).connect())
    count = runner.run(keyed.stats())["packets"]
    assert runner.run(calls())["packets"] == count
    runner.run(keyed.close())


def test_dead_service_is_a_clear_error(dead_url, runner):
    async def call():
        async with make_async_router(dead_url, timeout=1.0):
            pass

    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach the routing service at {dead_url}"):
        runner.run(call())
    assert time.monotonic() - started < 5


def test_hung_service_is_an_error_within_the_timeout(runner):
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        router = make_async_router(url, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=f"{url} did not answer POST /v1/query within 0.5s"):
            runner.run(router.query("anything"))
        assert time.monotonic() - started < 3
        runner.run(router.close())


@pytest.mark.parametrize("options,error,match", [
    ({"url": "ftp://h:1"}, ValueError, "http://host:port"), ({"url": "http://h:1", "timeout": 0}, ValueError, "timeout"),
    ({"url": "http://h:1", "ca_file": "ca.pem"}, ValueError, "https"),
    ({"url": "https://h:1", "ca_file": "/no/such/ca.pem"}, FileNotFoundError, "ca_file='/no/such/ca.pem'"),
])
def test_bad_options_are_refused_by_name(options, error, match):
    with pytest.raises(error, match=match):
        make_async_router(**options)


@pytest.fixture(scope="module")
def tls_service(tmp_path_factory):
    """The service's app behind uvicorn's TLS (a certificate for 127.0.0.1 from a throwaway CA)."""
    import trustme
    import uvicorn

    from qis_lib.infra.servers import free_port, wait_until
    from qis_lib.serve.app import create_app
    from qis_lib.serve.namespaces import Namespaces

    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    port = free_port()
    app = create_app(Namespaces("memory://", HashEmbedder(), limit=4), api_key=KEY)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ssl_certfile=str(folder / "server.pem")))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "uvicorn with TLS")
    yield f"https://127.0.0.1:{port}", folder / "ca.pem"
    server.should_exit = True
    thread.join(10)


def test_https_with_the_services_ca(tls_service, runner, tmp_path):
    url, ca_file = tls_service

    async def calls():
        async with make_async_router(url, api_key=KEY, ca_file=ca_file) as router:
            packet = OutcomePacket(**GOOD)
            assert await router.deposit(packet) == packet.packet_id
            assert [p for p, _ in await router.query(GOOD["problem_description"], now=NOW)] == [packet]
        with pytest.raises(ConnectionError, match=f"cannot reach the routing service at {url}.*CERTIFICATE_VERIFY"):
            async with make_async_router(url, api_key=KEY):  # the system's CAs do not know this one
                pass

    runner.run(calls())
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="junk.pem"):
        make_async_router(url, ca_file=tmp_path / "junk.pem")


def test_fifty_agents_as_tasks_in_one_process_exact_counts(tmp_path):
    """50 agents, 2 deposits and 2 queries each, all in flight at once on one async client:
    every deposit acknowledged and stored once, every question answered with its target."""
    with RoutingService("memory://", embedder="hash", folder=tmp_path) as service:
        results = run_over_http_async(service.url, "t", 50, 2, 2, timeout=60)
        with HttpStore(service.url) as reader:
            check = bench.checks_of(results, loss_of(results, reader), "http-async", 50, queries_per_agent=2)
    assert check["ok"], check
    assert (check["sent"], check["acknowledged"], check["store_count"], check["answers"]) == (100, 100, 100, 100)
    assert check["target_in_top5"] == 100
    assert len(results.server_ms["deposit"]) == len(results.server_ms["query"]) == 100  # each task's own answer


def test_the_load_command_runs_agents_as_tasks(tmp_path, monkeypatch):
    from qis_lib.experiments.http.__main__ import main

    monkeypatch.setitem(bench.WORK, 50, (1, 1))  # one deposit and one query each, as at 1,000
    assert main(["load", "--agents", "50", "--clients", "async", "--embedder", "hash", "--out", str(tmp_path)]) == 0
    saved = bench.load_results(tmp_path)
    assert saved["clients"] == "async"
    checks = {c["mode"]: c for c in saved["checks"]}
    assert set(checks) == {"http-async", "in-process"} and all(c["ok"] for c in checks.values())
    deposits, queries = bench.work_for(50)
    assert (checks["http-async"]["store_count"], checks["http-async"]["answers"]) == (50 * deposits, 50 * queries)
    assert {r["processes"] for r in saved["rows"] if r["mode"] == "http-async"} == {1}
