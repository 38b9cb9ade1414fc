"""One suite, every transport: the same assertions for each store and mode.

Each test gets a factory `open_store()` that opens the store under test, empty at
first; calling it again opens the same store anew (a new client), which is how
persistence is checked. The in-memory numpy transport is the reference: results are
compared with exact brute force over the same vectors and filters.

If a test fails for one transport only, that transport's module under
qis_lib/transports/ is where to look: the filter translation (`*_filter`/`chroma_where`)
for filter tests, `upsert` for duplicate and bad-input tests.
"""
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest

from conftest import qdrant_url, unique_name
from qis_lib import OutcomePacket, OutcomeRouter
from qis_lib.embeddings import HashEmbedder
from qis_lib.transports import QueryFilter, open_transport

DIM = 384
NOW = 1_800_000_000.0

# name -> (transport name, options builder(tmp_path, collection, request))
MODES = {
    "memory": lambda tmp, col, req: ("memory", {}),
    "chroma-ephemeral": lambda tmp, col, req: ("chroma", {"collection": col}),
    "chroma-path": lambda tmp, col, req: ("chroma", {"path": str(tmp / "chroma"), "collection": col}),
    "chroma-server": lambda tmp, col, req: ("chroma", {"url": req.getfixturevalue("chroma_server").url,
                                                       "collection": col}),
    "qdrant-memory": lambda tmp, col, req: ("qdrant", {"location": ":memory:", "collection": col}),
    "qdrant-path": lambda tmp, col, req: ("qdrant", {"path": str(tmp / "qdrant"), "collection": col}),
    "qdrant-edge": lambda tmp, col, req: ("qdrant-edge", {"path": str(tmp / "edge")}),
    "qdrant-server": lambda tmp, col, req: ("qdrant", {"url": qdrant_url(), "collection": col}),
}
PERSISTENT = {"chroma-path", "chroma-server", "qdrant-path", "qdrant-edge", "qdrant-server"}


@pytest.fixture(params=list(MODES))
def open_store(request, tmp_path):
    mode = request.param
    if mode == "qdrant-server" and not qdrant_url():
        pytest.skip("no Qdrant server: set QDRANT_URL (e.g. docker compose up -d, then QDRANT_URL=http://localhost:6333)")
    name, options = MODES[mode](tmp_path, unique_name(), request)
    opened = []

    def open_(**extra):
        # Stores that allow one opener at a time are closed before reopening.
        for t in opened:
            t.close()
        opened.clear()
        transport = open_transport(name, dim=DIM, **options, **extra)
        opened.append(transport)
        return transport

    open_.mode = mode
    open_.name = name
    open_.options = options
    yield open_
    for t in opened:
        t.close()


def unit(rng, n, dim=DIM):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def random_payloads(rng, n, now=NOW):
    payloads = []
    for i in range(n):
        tags = [t for t in ("hdfs", "yarn", "mapreduce") if rng.random() < 0.4]
        packet = OutcomePacket(
            problem_description=f"problem {i}", outcome_type=["resolved", "partial", "contradicted", "open"][i % 4],
            confidence=round(float(rng.random()), 3), domain_tags=tags, timestamp=now - 100,
            agent_id=f"agent-{i % 7}", ttl=float(rng.choice([50.0, 1000.0])),  # about half expired at NOW
        )
        payloads.append(packet.to_payload())
    return payloads


def load(store, rng, n=200):
    ids = [str(uuid.uuid4()) for _ in range(n)]
    vectors = unit(rng, n)
    payloads = random_payloads(rng, n)
    store.upsert(ids, vectors, payloads)
    return ids, vectors, payloads


def brute_force(ids, vectors, payloads, query, k, flt):
    keep = [i for i, p in enumerate(payloads) if flt.matches(p)]
    scores = vectors[keep] @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[keep[i]] for i in order], [float(scores[i]) for i in order]


def hit_ids(hits, payload_to_id):
    return [payload_to_id[(h["agent_id"], h["problem_description"])] for h, _ in hits]


def test_starts_empty(open_store):
    """A fresh store holds nothing: if this fails, the fixture leaks state between tests."""
    assert open_store().count() == 0


FILTERS = {
    "none": QueryFilter(now=0.0),
    "not-expired": QueryFilter(now=NOW),
    "domain": QueryFilter(now=NOW, domain="yarn"),
    "confidence": QueryFilter(now=NOW, min_confidence=0.5),
    "exclude-agent": QueryFilter(now=NOW, exclude_agent="agent-3"),
    "all": QueryFilter(now=NOW, domain="hdfs", min_confidence=0.3, exclude_agent="agent-1"),
    "nothing-matches": QueryFilter(now=NOW, domain="no-such-domain"),
}


@pytest.mark.parametrize("filter_name", list(FILTERS))
def test_top_k_equals_brute_force(open_store, filter_name):
    """Top-k ids in the same order as exact search, filters applied inside the store."""
    store = open_store()
    rng = np.random.default_rng(7)
    ids, vectors, payloads = load(store, rng)
    key = {(p["agent_id"], p["problem_description"]): i for i, p in zip(ids, payloads)}
    flt = FILTERS[filter_name]
    for query in unit(rng, 5):
        want_ids, want_scores = brute_force(ids, vectors, payloads, query, 10, flt)
        hits = store.query(query, 10, flt)
        assert hit_ids(hits, key) == want_ids
        np.testing.assert_allclose([s for _, s in hits], want_scores, atol=1e-4)
        assert all(flt.matches(h) for h, _ in hits)


def test_expired_never_crowd_out_live(open_store):
    """50 expired packets right next to the query, 5 live ones far away: top-5 is the live five."""
    store = open_store()
    rng = np.random.default_rng(1)
    query = unit(rng, 1)[0]
    near = query + 0.05 * unit(rng, 50)
    far = unit(rng, 5)
    dead = [OutcomePacket(f"old {i}", "resolved", 0.9, timestamp=NOW - 1000, ttl=10, agent_id="old").to_payload()
            for i in range(50)]
    live = [OutcomePacket(f"new {i}", "resolved", 0.9, timestamp=NOW - 1000, ttl=10_000, agent_id="new").to_payload()
            for i in range(5)]
    store.upsert([str(uuid.uuid4()) for _ in range(55)], np.vstack([near, far]), dead + live)
    hits = store.query(query, 5, QueryFilter(now=NOW))
    assert sorted(h["problem_description"] for h, _ in hits) == sorted(p["problem_description"] for p in live)


def test_upsert_same_id_overwrites(open_store):
    store = open_store()
    rng = np.random.default_rng(2)
    ids, vectors, payloads = load(store, rng, n=20)
    store.upsert(ids[:1], vectors[:1], [dict(payloads[0], domain_tags=["hdfs", "yarn"])])
    changed = dict(payloads[0], delta_summary="second write", domain_tags=[])
    store.upsert(ids[:1], vectors[:1], [changed])
    store.upsert(ids, vectors, [changed] + payloads[1:])  # a retried batch
    assert store.count() == 20
    stored = store.get(ids[:1])[ids[0]]
    assert (stored["delta_summary"], stored["domain_tags"]) == ("second write", [])
    hits = store.query(vectors[0], 20, QueryFilter(now=0.0, domain="hdfs"))
    assert payloads[0]["problem_description"] not in [h["problem_description"] for h, _ in hits]
    assert hits, "other packets tagged hdfs should still match"


def test_get_returns_stored_payloads(open_store):
    store = open_store()
    rng = np.random.default_rng(3)
    ids, _, payloads = load(store, rng, n=10)
    missing = str(uuid.uuid4())
    got = store.get(ids[:3] + [missing])
    assert set(got) == set(ids[:3])
    for pid, payload in zip(ids[:3], payloads[:3]):
        assert OutcomePacket.from_payload(got[pid]) == OutcomePacket.from_payload(payload)


BAD_UPSERTS = {
    "wrong-dim": lambda ids, v, p: (ids, v[:, :100], p),
    "nan-vector": lambda ids, v, p: (ids, np.where(np.arange(DIM) == 5, np.nan, v).astype(np.float32), p),
    "length-mismatch": lambda ids, v, p: (ids[:-1], v, p),
    "missing-filter-field": lambda ids, v, p: (ids, v, p[:-1] + [{k: x for k, x in p[-1].items() if k != "expires_at"}]),
    "duplicate-ids": lambda ids, v, p: ([ids[0]] * len(ids), v, p),
}


@pytest.mark.parametrize("bad", list(BAD_UPSERTS))
def test_bad_upsert_raises_and_writes_nothing(open_store, bad):
    store = open_store()
    rng = np.random.default_rng(4)
    load(store, rng, n=5)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    args = BAD_UPSERTS[bad](ids, unit(rng, 3), random_payloads(rng, 3))
    with pytest.raises(ValueError):
        store.upsert(*args)
    assert store.count() == 5


@pytest.mark.parametrize("top_k", [0, -1, True, 2.5, None, 10_001, 2**63])
def test_bad_top_k_raises(open_store, top_k):
    store = open_store()
    with pytest.raises(ValueError, match="top_k"):
        store.query(unit(np.random.default_rng(0), 1)[0], top_k, QueryFilter(now=NOW))


def test_wrong_query_dimension_raises(open_store):
    store = open_store()
    with pytest.raises(ValueError, match="shape"):
        store.query(np.ones(DIM + 1, dtype=np.float32), 5, QueryFilter(now=NOW))


def test_router_round_trip_and_synthesize(open_store):
    """The router on top: packets come back equal, own agent excluded, nothing expired."""
    router = OutcomeRouter(open_store(), HashEmbedder(DIM))
    now = time.time()
    packets = [
        OutcomePacket("namenode runs out of heap during block report", "resolved", 0.9, "raised heap",
                      ["hdfs"], timestamp=now, agent_id="a1"),
        OutcomePacket("namenode heap exhausted by block reports", "partial", 0.6, "tuned gc",
                      ["hdfs"], timestamp=now, agent_id="a2"),
        OutcomePacket("namenode heap out of memory block report storm", "resolved", 0.99, "",
                      ["hdfs"], timestamp=now - 3600, ttl=60, agent_id="a4"),  # expired
        OutcomePacket("yarn resource manager fails over slowly", "open", 0.3, "", ["yarn"], timestamp=now,
                      agent_id="a3"),
    ]
    router.deposit_many(packets)
    hits = router.query("namenode heap block report", top_k=3)
    assert {p for p, _ in hits[:2]} == set(packets[:2])
    assert all(not p.is_expired() for p, _ in hits)
    mine = OutcomePacket("namenode heap problem with block reports", "open", 0.5, agent_id="a1", timestamp=now + 1)
    result = router.synthesize(mine.problem_description, mine, top_k=3)
    assert all(p.agent_id != "a1" for p, _ in result.matches)
    assert packets[1] in [p for p, _ in result.matches]
    assert router.stats()["packets"] == 5


def test_router_bad_input_leaves_store_unchanged(open_store):
    router = OutcomeRouter(open_store(), HashEmbedder(DIM))
    good = OutcomePacket("disk full", "resolved", 0.5)
    router.deposit(good)
    with pytest.raises(TypeError, match="item 1"):
        router.deposit_many([OutcomePacket("other", "open", 0.1), {"problem_description": "not a packet"}])
    with pytest.raises(ValueError, match="top_k"):
        router.query("disk", top_k=0)
    with pytest.raises(ValueError, match="min_confidence"):
        router.query("disk", min_confidence=1.5)
    with pytest.raises(ValueError, match="problem"):
        router.query("   ")
    assert router.stats()["packets"] == 1
    assert router.get([good.packet_id]) == {good.packet_id: good}


REOPEN_SCRIPT = textwrap.dedent("""
    import json, sys
    from qis_lib.transports import open_transport
    name, options, ids = json.loads(sys.argv[1])
    store = open_transport(name, dim=%d, **options)
    got = store.get(ids)
    print(json.dumps({"count": store.count(), "got": got}))
    store.close()
""" % DIM)


def test_reopened_store_has_every_packet(open_store):
    """Persistent stores: a new process opening the same store sees every packet written before."""
    if open_store.mode not in PERSISTENT:
        pytest.skip(f"{open_store.mode} keeps nothing after close")
    import json

    store = open_store()
    rng = np.random.default_rng(5)
    ids, _, payloads = load(store, rng, n=300)
    store.close()
    out = subprocess.run([sys.executable, "-c", REOPEN_SCRIPT, json.dumps([open_store.name, open_store.options, ids])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["count"] == 300
    assert {pid: OutcomePacket.from_payload(p) for pid, p in result["got"].items()} == \
        {pid: OutcomePacket.from_payload(p) for pid, p in zip(ids, payloads)}


def test_unreachable_server_is_a_clear_error(dead_url):
    with pytest.raises(ConnectionError, match="Chroma server"):
        open_transport("chroma", url=dead_url)
    with pytest.raises(ConnectionError, match="no Qdrant node answered"):
        open_transport("qdrant", urls=[dead_url, dead_url.replace("127.0.0.1", "127.0.0.2")], timeout=1)


def test_packets_come_back_exactly(open_store):
    """Awkward floats (17-digit timestamps, long confidences) survive the store's JSON layer.

    If this fails, packet ids computed from a read-back packet no longer match the stored id.
    """
    router = OutcomeRouter(open_store(), HashEmbedder(DIM))
    rng = np.random.default_rng(11)
    packets = [OutcomePacket(f"problem {i}", "partial", float(rng.random()), timestamp=1_795_680_911.4187121 + i / 7,
                             ttl=3600 + float(rng.random()), agent_id="a") for i in range(50)]
    ids = router.deposit_many(packets)
    got = router.get(ids)
    assert [got[pid] for pid in ids] == packets
    assert all(pid == got[pid].packet_id for pid in ids)


def test_new_store_shows_nothing_of_a_deleted_one(open_store):
    """chromadb 1.5.9 showed array metadata of a deleted collection on a new collection's items."""
    store = open_store()
    rng = np.random.default_rng(12)
    load(store, rng, n=10)
    if open_store.mode == "chroma-ephemeral":
        store.close()  # deletes its collection
        store = open_store()
    payloads = random_payloads(rng, 5)
    payloads = [dict(p, domain_tags=[]) for p in payloads]
    ids = [str(uuid.uuid4()) for _ in payloads]
    store.upsert(ids, unit(rng, 5), payloads)
    assert all(p["domain_tags"] == [] for p in store.get(ids).values())


def test_hung_server_is_a_clear_error_not_a_hang():
    """A server that accepts connections but never answers: an error after the timeout."""
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        with pytest.raises(ConnectionError, match="timed out"):
            open_transport("chroma", url=url, timeout=1.0)
        with pytest.raises(ConnectionError, match="no Qdrant node answered"):
            open_transport("qdrant", url=url, timeout=1)
