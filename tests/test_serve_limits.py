"""What one caller cannot do to the others: per-key rate and concurrency limits (429 with
Retry-After, the store unchanged), connections that never finish a request (closed, and 503
past the bound), the audit file, keys reloaded without a restart, TLS, and the agents' client
acting as its key's agent against a live service."""
import asyncio
import hashlib
import json
import os
import signal
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from qis_lib import OutcomePacket, make_router
from qis_lib.embedders import HashEmbedder
from qis_lib.serve.app import create_app
from qis_lib.serve.audit import Audit
from qis_lib.serve.auth import Credential, Credentials, KeyLimiter, Limits
from qis_lib.serve.namespaces import Namespaces
from qis_lib.serve.process import RoutingService
from qis_lib.stores.http import ServiceBusyError
from qis_lib.infra.servers import wait_until

ALICE, BOB, READER, ADMIN = ("alice-secret-0123456789", "bob-secret-0123456789ab", "reader-secret-0123456789",
                             "admin-secret-0123456789")


def keys_file(path, extra=(), alice_limits=None):
    entries = [{"id": "alice-laptop", "role": "agent", "agent": "alice", "key": ALICE, **(alice_limits or {})},
               {"id": "bob-laptop", "role": "agent", "agent": "bob",
                "key_sha256": hashlib.sha256(BOB.encode()).hexdigest()},
               {"id": "dashboard", "role": "reader", "key": READER}, {"id": "ops", "role": "admin", "key": ADMIN},
               *extra]
    path.write_text(json.dumps({"keys": entries}))
    return path


def cred(**limits) -> Credential:
    return Credential("k", "agent", "a", b"x" * 32, Limits(**limits))


def test_the_token_bucket_admits_its_burst_then_its_rate():
    clock = [0.0]
    limiter = KeyLimiter(clock=lambda: clock[0])
    key = cred(rate_per_s=2.0, burst=3)
    admitted = [limiter.admit(key) for _ in range(4)]
    for _ in admitted[:3]:
        limiter.release(key)
    assert admitted[:3] == [None, None, None] and admitted[3] == pytest.approx(0.5)
    clock[0] += 0.5  # one token back
    assert limiter.admit(key) is None
    assert limiter.admit(key) == pytest.approx(0.5)
    other = Credential("other", "agent", "b", b"y" * 32, Limits(rate_per_s=2.0, burst=3))
    assert limiter.admit(other) is None  # a key's bucket is its own


def test_concurrent_requests_of_one_key_are_bounded():
    limiter = KeyLimiter()
    key = cred(max_concurrent=2)
    assert [limiter.admit(key), limiter.admit(key), limiter.admit(key)] == [None, None, 1.0]
    limiter.release(key)
    assert limiter.admit(key) is None


def test_a_key_over_its_rate_gets_429_with_retry_after_and_changes_nothing(tmp_path):
    namespaces = Namespaces("memory://", HashEmbedder(), limit=2)
    limits = {"rate_per_s": 0.5, "burst": 2}
    creds = Credentials.parse(json.loads(keys_file(tmp_path / "k.json", alice_limits=limits).read_text()))
    audit = Audit(tmp_path / "audit.jsonl")
    client = TestClient(create_app(namespaces, auth=creds, audit=audit))
    body = {"problem_description": "disk full", "outcome_type": "resolved", "confidence": 0.5}
    for i in range(2):
        assert client.post("/v1/packets", json={**body, "timestamp": 1000.0 + i},
                           headers={"X-API-Key": ALICE}).status_code == 200
    refused = client.post("/v1/packets", json={**body, "timestamp": 2000.0}, headers={"X-API-Key": ALICE})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "alice-laptop" in refused.json()["detail"] and ALICE not in refused.text
    assert namespaces.default.store.count() == 2
    assert client.post("/v1/packets", json={**body, "timestamp": 3000.0}, headers={"X-API-Key": BOB}).status_code == 200
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(l["key"], l["action"], l["status"]) for l in lines] == [
        ("alice-laptop", "deposit", 200), ("alice-laptop", "deposit", 200), ("alice-laptop", "POST /v1/packets", 429),
        ("bob-laptop", "deposit", 200)]
    assert lines[0]["agent"] == "alice" and len(lines[0]["ids"]) == 1
    assert not any(secret in (tmp_path / "audit.jsonl").read_text() for secret in (ALICE, BOB, READER, ADMIN))


def test_a_refusal_is_answered_after_the_refusal_delay(tmp_path, monkeypatch):
    import qis_lib.serve.access as access

    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(access.anyio, "sleep", sleep)
    creds = Credentials.parse(json.loads(keys_file(tmp_path / "k.json",
                                                   alice_limits={"rate_per_s": 0.1, "burst": 1}).read_text()))
    for delay in (0.25, 3.0):
        slept.clear()
        client = TestClient(create_app(Namespaces("memory://", HashEmbedder(), limit=2), auth=creds,
                                       refusal_delay=delay))
        statuses = [client.get("/v1/whoami", headers={"X-API-Key": ALICE}).status_code for _ in range(2)]
        assert statuses == [200, 429]
        assert slept == [delay]  # whatever the wait the key needs (one token per 10 s): Retry-After says that


class BlockingEmbedder(HashEmbedder):
    """Blocks on the text "block" until released: a request that stays in flight."""

    def __init__(self):
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def encode(self, texts):
        if "block" in texts:
            self.entered.set()
            self.release.wait(30)
        return super().encode(texts)


def test_a_key_at_its_concurrency_limit_gets_429_while_another_key_is_served(tmp_path):
    embedder = BlockingEmbedder()
    creds = Credentials.parse(json.loads(keys_file(tmp_path / "k.json", alice_limits={"max_concurrent": 1}).read_text()))
    app = create_app(Namespaces("memory://", embedder, limit=2), auth=creds)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            slow = asyncio.create_task(client.post("/v1/embed", json={"texts": ["block"]}, headers={"X-API-Key": ALICE}))
            await asyncio.to_thread(embedder.entered.wait, 10)
            second = await client.post("/v1/embed", json={"texts": ["x"]}, headers={"X-API-Key": ALICE})
            other = await client.post("/v1/embed", json={"texts": ["x"]}, headers={"X-API-Key": BOB})
            embedder.release.set()
            return (await slow).status_code, second.status_code, other.status_code

    assert asyncio.run(scenario()) == (200, 429, 200)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    auth = keys_file(folder / "keys.json")
    with RoutingService("memory://", embedder="hash", folder=folder, auth=auth, audit=folder / "audit.jsonl",
                        args=("--max-connections", "20", "--header-timeout", "1", "--body-timeout", "1")) as svc:
        yield svc


def raw(url: str) -> socket.socket:
    host, port = url.split("//")[1].split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_connections_that_never_finish_a_request_are_closed_and_bounded(live):
    """20 connections sending half a request's headers: past the bound of 20 a connection is
    answered 503 at once; each of the 20 is answered 408 and closed after the 1 s header
    deadline; then the service answers as before."""
    held = []
    for _ in range(20):
        s = raw(live.url)
        s.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nX-API-")
        held.append(s)
    time.sleep(0.3)
    extra = raw(live.url)
    assert extra.recv(200).startswith(b"HTTP/1.1 503")
    extra.close()
    started = time.monotonic()
    for s in held:
        assert s.recv(200).startswith(b"HTTP/1.1 408")
        assert s.recv(200) == b""  # closed
        s.close()
    assert time.monotonic() - started < 5
    assert httpx.get(f"{live.url}/health", timeout=5).status_code == 200


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_stores_nothing(live):
    with make_router(live.url, api_key=ADMIN) as router:
        before = router.stats()["packets"]
        s = raw(live.url)
        s.sendall(b"POST /v1/packets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-API-Key: " + ADMIN.encode() + b"\r\nContent-Length: 200\r\n\r\n{\"problem")
        s.settimeout(10)
        assert s.recv(200).startswith(b"HTTP/1.1 408")
        s.close()
        assert router.stats()["packets"] == before


def test_the_agents_client_acts_as_its_keys_agent(live):
    alice = make_router(live.url, api_key=ALICE)
    assert alice.whoami == {"key": "alice-laptop", "role": "agent", "agent": "alice", "may": alice.whoami["may"]}
    pid = alice.deposit(OutcomePacket("alice's namenode heap", "resolved", 0.9, domain_tags=["hdfs"]))
    assert alice.get([pid])[pid].agent_id == "alice"
    with pytest.raises(PermissionError, match="'bob'"):
        alice.deposit(OutcomePacket("pretend", "resolved", 0.9, agent_id="bob"))
    with make_router(live.url, api_key=BOB) as bob:
        theirs = bob.deposit(OutcomePacket("bob's namenode heap", "resolved", 0.9, domain_tags=["hdfs"]))
        with pytest.raises(PermissionError, match="own packets only"):
            bob.delete([pid, theirs])
        assert alice.get([pid, theirs]).keys() == {pid, theirs}
        assert bob.delete([theirs]) == [theirs]
    with make_router(live.url, api_key=READER) as reader:
        assert [p.agent_id for p, _ in reader.query("namenode heap")] == ["alice"]
        with pytest.raises(PermissionError, match="reader"):
            reader.deposit(OutcomePacket("a reader cannot", "resolved", 0.5))
        with pytest.raises(PermissionError, match="admin"):
            _ = reader.store
    alice.close()


def test_over_the_limits_the_client_raises_service_busy_with_retry_after(live, tmp_path):
    flood = {"id": "flood", "role": "agent", "agent": "f", "key": "flood-secret-0123456789", "rate_per_s": 1,
             "burst": 1}
    path = keys_file(live.auth, extra=[flood])
    os.kill(live.process.pid, signal.SIGHUP)
    wait_until(lambda: httpx.get(f"{live.url}/v1/whoami", headers={"X-API-Key": flood["key"]}).status_code != 401,
               10, "the flood key loaded")  # that took the bucket's one token
    with pytest.raises(ServiceBusyError, match="'flood' is over its limits") as busy:
        make_router(live.url, api_key=flood["key"])
    assert busy.value.status == 429 and busy.value.retry_after >= 1
    keys_file(path)


def test_keys_are_reloaded_on_sighup_and_a_broken_file_keeps_the_old_ones(live):
    new_key = "carol-secret-0123456789"
    keys_file(live.auth, extra=[{"id": "carol", "role": "agent", "agent": "carol", "key": new_key}])
    os.kill(live.process.pid, signal.SIGHUP)
    whoami = lambda key: httpx.get(f"{live.url}/v1/whoami", headers={"X-API-Key": key}, timeout=5).status_code
    wait_until(lambda: whoami(new_key) == 200, 10, "carol's key loaded on SIGHUP")
    live.auth.write_text('{"keys": [{"id": "x", "role": "owner"')  # broken: the old keys stay
    os.kill(live.process.pid, signal.SIGHUP)
    wait_until(lambda: "keeping the" in open(live.log_path).read(), 10, "the log says the file is broken")
    assert whoami(new_key) == 200 and whoami(ALICE) == 200
    keys_file(live.auth)  # changed on disk, no signal: picked up within a second or two of a request
    wait_until(lambda: whoami(new_key) == 401, 10, "carol's key dropped when the file changed")
    assert whoami(ALICE) == 200


def test_the_audit_file_has_every_write_and_refusal_and_no_key(live):
    with make_router(live.url, api_key=ALICE) as alice:
        pid = alice.deposit(OutcomePacket("audited deposit", "open", 0.4))
    assert httpx.get(f"{live.url}/v1/stats", headers={"X-API-Key": "wrong-key"}).status_code == 401
    text = open(live.audit).read()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(l["action"] == "deposit" and l["ids"] == [pid] and l["key"] == "alice-laptop" and l["status"] == 200
               for l in lines)
    assert any(l["status"] == 401 and l["key"] is None for l in lines)
    assert any(l["status"] == 403 and l["agent"] == "alice" for l in lines)  # the deposit as bob, above
    assert not any(secret in text for secret in (ALICE, BOB, READER, ADMIN, "wrong-key"))


def test_tls_with_a_certificate_the_test_makes(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with RoutingService("memory://", embedder="hash", folder=tmp_path, api_key=ADMIN, ca_file=tmp_path / "ca.pem",
                        tls=(str(tmp_path / "server.pem"), str(tmp_path / "server.key"))) as svc:
        assert svc.url.startswith("https://")
        with make_router(svc.url, api_key=ADMIN, ca_file=str(tmp_path / "ca.pem")) as router:
            pid = router.deposit(OutcomePacket("over tls", "resolved", 0.7))
            assert router.get([pid])[pid].problem_description == "over tls"
        with pytest.raises(ConnectionError, match=f"{svc.url}.*CERTIFICATE_VERIFY_FAILED"):
            make_router(svc.url, api_key=ADMIN)  # the system's authorities do not know the test's CA
        with pytest.raises(ConnectionError, match="cannot reach"):
            make_router(svc.url.replace("https", "http"), api_key=ADMIN, timeout=2)
