"""Who may do what on the routing service: the authorization matrix (every endpoint x every
role x own/another agent's packet), forged payloads on every write path, identity, and the
keys file's rules. In-process app (memory store, hash embedder); the store is compared
before and after every refused request."""
import json

import pytest
from fastapi.testclient import TestClient

from qis_lib import OutcomePacket
from qis_lib.core.router import PAYLOAD_MARKER, router_payload, validated_packet
from qis_lib.embedders import HashEmbedder
from qis_lib.serve.app import create_app
from qis_lib.serve.auth import Credentials
from qis_lib.serve.namespaces import Namespaces

NOW = 1_800_000_000.0
KEYS = {"alice": "alice-secret-0123456789", "bob": "bob-secret-0123456789ab",
        "reader": "reader-secret-0123456789", "admin": "admin-secret-0123456789"}
FILE = {"keys": [
    {"id": "alice-laptop", "role": "agent", "agent": "alice", "key": KEYS["alice"], "rate_per_s": None,
     "max_concurrent": None},
    {"id": "bob-laptop", "role": "agent", "agent": "bob", "key": KEYS["bob"], "rate_per_s": None,
     "max_concurrent": None},
    {"id": "dashboard", "role": "reader", "key": KEYS["reader"], "rate_per_s": None, "max_concurrent": None},
    {"id": "ops", "role": "admin", "key": KEYS["admin"]},
]}


def packet(agent: str, text: str = "namenode heap exhausted", **kw) -> OutcomePacket:
    return OutcomePacket(text, "resolved", 0.8, "raised the heap", ["hdfs"], timestamp=NOW - 10, agent_id=agent, **kw)


def body(p: OutcomePacket, agent: bool = True) -> dict:
    out = {k: v for k, v in p.to_payload().items() if k != "expires_at"}
    if not agent:
        out.pop("agent_id")
    return out


class Service:
    """An app with two stored packets, alice's and bob's, and its store to compare."""

    def __init__(self, keys=FILE):
        self.namespaces = Namespaces("memory://", HashEmbedder(), limit=4)
        self.app = create_app(self.namespaces, auth=Credentials.parse(keys))
        self.client = TestClient(self.app)
        self.store = self.namespaces.default.store
        self.mine, self.theirs = packet("alice", "alice's disk full"), packet("bob", "bob's yarn stuck")
        self.namespaces.default.deposit_many([self.mine, self.theirs])

    def snapshot(self):
        return self.store.count(), sorted(self.store.scroll_ids()), sorted(map(str, self.store.get(
            self.store.scroll_ids()).values()))

    def call(self, who: str | None, method: str, path: str, json_body=None, header: str = "x"):
        headers = {}
        if who is not None:
            key = KEYS.get(who, "not-a-key-of-this-service")
            headers = {"X-API-Key": key} if header == "x" else {"Authorization": f"Bearer {key}"}
        return self.client.request(method, path, json=json_body, headers=headers)


VECTOR = [1.0] + [0.0] * 383


def requests(s: Service, target: str) -> dict[str, tuple]:
    """Every endpoint, its request for a caller acting on `target`'s packet ("own" is alice's)."""
    agent = "alice" if target == "own" else "bob"
    mine = s.mine if target == "own" else s.theirs
    fresh = packet(agent, f"{agent} hits a new problem")
    return {
        "deposit": ("POST", "/v1/packets", body(fresh)),
        "deposit-batch": ("POST", "/v1/packets/batch", {"packets": [body(packet("alice", "x1")), body(fresh)]}),
        "synthesize": ("POST", "/v1/synthesize", {"problem": "disk full", "outcome": body(fresh), "now": NOW}),
        "query": ("POST", "/v1/query", {"problem": "disk full", "now": NOW}),
        "get-one": ("GET", f"/v1/packets/{mine.packet_id}", None),
        "get": ("POST", "/v1/get", {"ids": [mine.packet_id]}),
        "delete-one": ("DELETE", f"/v1/packets/{mine.packet_id}", None),
        "delete": ("POST", "/v1/packets/delete", {"ids": [mine.packet_id]}),
        "purge": ("POST", "/v1/purge", {"now": NOW + 1e9, "agent_id": agent}),
        "embed": ("POST", "/v1/embed", {"texts": ["disk full"]}),
        "stats": ("GET", "/v1/stats", None),
        "whoami": ("GET", "/v1/whoami", None),
        "vectors-info": ("GET", "/v1/vectors/default/info", None),
        "vectors-ids": ("GET", "/v1/vectors/default/ids", None),
        "vectors-upsert": ("POST", "/v1/vectors/default/upsert",
                           {"ids": [fresh.packet_id], "vectors": [VECTOR], "payloads": [router_payload(fresh)]}),
        "vectors-query": ("POST", "/v1/vectors/default/query", {"vector": VECTOR, "filter": {"now": NOW}}),
        "vectors-get": ("POST", "/v1/vectors/default/get", {"ids": [mine.packet_id]}),
        "vectors-delete": ("POST", "/v1/vectors/default/delete", {"ids": [mine.packet_id]}),
        "vectors-drop": ("DELETE", "/v1/vectors/scratch", None),
    }


READS = {"query", "get-one", "get", "stats", "whoami"}
AGENT_OWN_ONLY = {"deposit", "deposit-batch", "synthesize", "delete-one", "delete", "purge"}


def expected(role: str | None, endpoint: str, target: str) -> int:
    if role in (None, "stranger"):
        return 401
    if role == "admin":
        return 404 if endpoint == "vectors-drop" else 200  # no namespace "scratch" to drop
    if endpoint.startswith("vectors"):
        return 403
    if role == "reader":
        return 200 if endpoint in READS else 403
    return 403 if endpoint in AGENT_OWN_ONLY and target == "other" else 200


ENDPOINTS = [
    "deposit", "deposit-batch", "synthesize", "query", "get-one", "get", "delete-one", "delete", "purge", "embed",
    "stats", "whoami", "vectors-info", "vectors-ids", "vectors-upsert", "vectors-query", "vectors-get",
    "vectors-delete", "vectors-drop"]


@pytest.mark.parametrize("target", ["own", "other"])
@pytest.mark.parametrize("role", [None, "stranger", "reader", "alice", "admin"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_authorization_matrix(endpoint, role, target):
    """The status each role gets at each endpoint, for its own packet and another agent's; after
    every 401/403 the store holds exactly what it held (count, ids, payloads)."""
    s = Service()
    method, path, payload = requests(s, target)[endpoint]
    before = s.snapshot()
    response = s.call(role, method, path, payload)
    want = expected("agent" if role == "alice" else role, endpoint, target)
    assert response.status_code == want, (endpoint, role, target, response.text)
    if want in (401, 403):
        assert s.snapshot() == before
        assert response.json()["detail"]
    if want == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_bearer_token_is_the_same_key_and_two_different_keys_are_refused():
    s = Service()
    assert s.call("alice", "GET", "/v1/whoami", header="bearer").json()["agent"] == "alice"
    both = s.client.get("/v1/whoami", headers={"X-API-Key": KEYS["alice"], "Authorization": f"Bearer {KEYS['bob']}"})
    assert both.status_code == 401 and "two different keys" in both.json()["detail"]
    assert s.client.get("/v1/whoami", headers={"Authorization": "Basic abc"}).status_code == 401


def test_health_docs_and_openapi_need_no_key_and_declare_both_schemes():
    s = Service()
    assert s.client.get("/health").json()["dim"] == 384
    assert s.client.get("/docs").status_code == 200
    schemes = s.client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {v["type"] for v in schemes.values()} == {"apiKey", "http"}


def test_a_deposit_as_another_agent_is_a_403_naming_both_and_none_takes_the_callers():
    s = Service()
    response = s.call("alice", "POST", "/v1/packets", body(packet("bob", "pretending")))
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert "'alice'" in detail and "'bob'" in detail and "alice-laptop" in detail
    pid = s.call("alice", "POST", "/v1/packets", body(packet("x", "no agent given"), agent=False)).json()["id"]
    assert s.namespaces.default.get([pid])[pid].agent_id == "alice"
    pid = s.call("admin", "POST", "/v1/packets", body(packet("bob", "an admin may"))).json()["id"]
    assert s.namespaces.default.get([pid])[pid].agent_id == "bob"


def test_synthesize_leaves_out_the_callers_own_packets():
    s = Service()
    for i in range(3):
        s.namespaces.default.deposit(packet("alice", f"disk full on node {i}"))
    out = s.call("alice", "POST", "/v1/synthesize", {"problem": "disk full", "now": NOW,
                                                        "outcome": body(packet("x", "disk full again"), agent=False)})
    assert out.status_code == 200
    agents = {m["packet"]["agent_id"] for m in out.json()["matches"]}
    assert agents == {"bob"}


def test_an_agent_deletes_its_own_packets_and_nothing_when_one_is_another_agents():
    s = Service()
    mixed = s.call("alice", "POST", "/v1/packets/delete", {"ids": [s.mine.packet_id, s.theirs.packet_id]})
    assert mixed.status_code == 403 and s.theirs.packet_id in mixed.json()["detail"]
    assert s.store.count() == 2
    done = s.call("alice", "POST", "/v1/packets/delete", {"ids": [s.mine.packet_id, "not-stored"]})
    assert done.json() == {"deleted": [s.mine.packet_id]}
    assert list(s.store.get([s.mine.packet_id, s.theirs.packet_id])) == [s.theirs.packet_id]
    assert s.call("alice", "DELETE", f"/v1/packets/{s.mine.packet_id}").status_code == 404


def test_an_agents_purge_removes_its_own_expired_packets_only():
    s = Service()
    s.namespaces.default.deposit_many([packet("alice", "old a", ttl=5), packet("bob", "old b", ttl=5)])
    assert s.call("alice", "POST", "/v1/purge", {"now": NOW}).json() == {"purged": 1}
    assert s.call("alice", "POST", "/v1/purge", {"now": NOW, "agent_id": "bob"}).status_code == 403
    assert s.call("admin", "POST", "/v1/purge", {"now": NOW}).json() == {"purged": 1}
    assert s.call("admin", "POST", "/v1/purge", {"now": NOW, "agent_id": " "}).status_code == 422


FORGED = {**router_payload(packet("mallory", "totally legit fix")), "outcome_type": "HACKED", "confidence": 7.5,
          "delta_summary": "x" * 5000}


@pytest.mark.parametrize("endpoint,make", [
    ("/v1/packets", lambda: {**body(packet("alice")), PAYLOAD_MARKER: 2}),
    ("/v1/packets/batch", lambda: {"packets": [{**body(packet("alice")), PAYLOAD_MARKER: 2}]}),
    ("/v1/synthesize", lambda: {"problem": "p", "outcome": {**body(packet("alice")), PAYLOAD_MARKER: 2}}),
    ("/v1/vectors/default/upsert", lambda: {"ids": [packet("mallory", "totally legit fix").packet_id],
                                            "vectors": [VECTOR], "payloads": [FORGED]}),
    ("/v1/vectors/default/upsert", lambda: {"ids": ["0b6d9d43-0000-4000-8000-000000000000"], "vectors": [VECTOR],
                                            "payloads": [router_payload(packet("alice"))]}),  # not its own id
    ("/v1/vectors/default/upsert", lambda: {"ids": [packet("alice").packet_id], "vectors": [VECTOR],
                                            "payloads": [{**router_payload(packet("alice")), "extra": 1}]}),
    ("/v1/vectors/scratch/upsert", lambda: {"ids": ["f1"], "vectors": [VECTOR], "payloads": [FORGED]}),
])
def test_a_forged_payload_is_refused_on_every_write_path(endpoint, make):
    """The library's trust marker, or an invalid packet, through any write endpoint (as the most
    powerful key that may use it): a 422, nothing stored, and nothing invalid in the store after."""
    s = Service()
    who = "admin" if "vectors" in endpoint else "alice"
    before = s.snapshot()
    response = s.call(who, "POST", endpoint, make())
    assert response.status_code == 422, response.text
    assert s.snapshot() == before
    for store in (s.store, s.namespaces.get("scratch").store):
        for payload in store.get(store.scroll_ids()).values():
            validated_packet(payload)


def test_a_valid_packet_through_the_vector_api_is_stored_as_the_library_writes_it():
    s = Service()
    p = packet("carol", "written by an admin tool")
    mine = {**router_payload(p), PAYLOAD_MARKER: 1}  # an old mark is checked, then set again
    assert s.call("admin", "POST", "/v1/vectors/default/upsert",
                  {"ids": [p.packet_id], "vectors": [VECTOR], "payloads": [mine]}).status_code == 200
    assert s.store.get([p.packet_id])[p.packet_id] == router_payload(p)
    junk = {"problem_description": "not a packet", "confidence": 0.5, "expires_at": NOW + 5, "domain_tags": [],
            "agent_id": "x"}  # another namespace takes any payload, unmarked: no router trusts it
    assert s.call("admin", "POST", "/v1/vectors/scratch/upsert",
                  {"ids": ["j1"], "vectors": [VECTOR], "payloads": [junk]}).status_code == 200
    assert s.namespaces.get("scratch").get(["j1"]) == {}


def entries(*changes):
    keys = [dict(e) for e in FILE["keys"]]
    for index, change in changes:
        change(keys[index]) if index is not None else None
    return {"keys": keys}


@pytest.mark.parametrize("data,message", [
    ({"keys": []}, "no keys"),
    ([], 'a "keys" list'),
    ({"keys": [], "extra": 1}, "unknown top-level"),
    (entries((0, lambda e: e.update(role="owner"))), r"keys\[0\] \(id 'alice-laptop'\): role must be one of"),
    (entries((1, lambda e: e.update(key=KEYS["alice"]))), r"keys\[1\].*same key is listed at keys\[0\]"),
    (entries((1, lambda e: e.update(id="alice-laptop"))), r"keys\[1\].*used by keys\[0\]"),
    (entries((0, lambda e: e.pop("agent"))), r"keys\[0\].*an agent key needs \"agent\""),
    (entries((2, lambda e: e.update(agent="x"))), r"keys\[2\].*a reader key acts as no agent"),
    (entries((0, lambda e: (e.pop("key"), e.update(key_sha256="abc")))), r"keys\[0\].*key_sha256 must be 64 hex"),
    (entries((0, lambda e: e.update(key_sha256="0" * 64))), r'exactly one of "key" or "key_sha256"'),
    (entries((0, lambda e: e.update(key="short"))), r"at least 16 characters"),
    (entries((0, lambda e: e.update(rate_per_s=0))), r"rate_per_s must be a number > 0"),
    (entries((0, lambda e: e.update(max_concurrent=1.5))), r"max_concurrent must be an int >= 1"),
    (entries((0, lambda e: e.update(colour="red"))), r"unknown field\(s\) \['colour'\]"),
    ({"keys": FILE["keys"], "defaults": {"owner": {}}}, r"defaults\['owner'\]: unknown role"),
])
def test_a_broken_keys_file_is_an_error_naming_the_entry(data, message):
    with pytest.raises(ValueError, match=message):
        Credentials.parse(data)


def test_a_digest_in_the_file_is_the_same_key_and_the_file_holds_no_secret():
    import hashlib

    keys = [{"id": "a", "role": "agent", "agent": "alice",
             "key_sha256": hashlib.sha256(KEYS["alice"].encode()).hexdigest().upper()}]
    creds = Credentials.parse({"keys": keys, "defaults": {"agent": {"rate_per_s": 5}}})
    found = creds.find(KEYS["alice"])
    assert (found.id, found.agent, found.limits.rate_per_s, found.limits.burst) == ("a", "alice", 5.0, 10)
    assert creds.find(KEYS["alice"] + "x") is None
    assert KEYS["alice"] not in repr(found)


def test_the_service_does_not_start_on_a_broken_keys_file(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "keys.json"
    bad.write_text(json.dumps(entries((0, lambda e: e.update(role="owner")))))
    out = subprocess.run([sys.executable, "-m", "qis_lib.serve", "--store", "memory://", "--embedder", "hash",
                          "--auth", str(bad), "--port", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "not started" in out.stderr and "keys[0] (id 'alice-laptop'): role" in out.stderr
