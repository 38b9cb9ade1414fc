"""The conformance suite every store must pass, as a class to subclass.

A store plugs in with one fixture, `open_store`: a factory that opens the store under
test, empty on the first call; calling it again closes the previous client and opens
the same store anew (a new client), which is how persistence is checked. Results are
compared with exact brute force over the same vectors and filters.

    class TestMyStore(StoreSuite):
        @pytest.fixture
        def open_store(self, tmp_path):
            return store_factory("my-store", {"path": str(tmp_path / "s")})

If a test fails for one store only, that store's module is where to look: its
filter translation for filter tests, `_upsert` for duplicate and round-trip tests,
`_delete` for delete tests. Bad-input tests are the contract's (`Store`), which no
store can skip.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qis_lib import OutcomePacket, OutcomeRouter, QueryFilter
from qis_lib.embedders import HashEmbedder
from qis_lib.stores import store_spec

DIM = 384
NOW = 1_800_000_000.0
DOMAINS = ("hdfs", "yarn", "mapreduce")
AGENTS = tuple(f"agent-{i}" for i in range(7))


def store_factory(name: str, options: dict, cleanup=None):
    """An `open_store` factory for the store registered as `name`, opened with `options`.
    Close every client it opened with `factory.close()` (pytest fixtures: yield it, then close)."""
    opened = []

    def open_():
        # Stores that allow one opener at a time are closed before reopening.
        for store in opened:
            store.close()
        opened.clear()
        store = store_spec(name).load()(dim=DIM, **options)
        opened.append(store)
        return store

    def close():
        for store in opened:
            if cleanup is not None:
                cleanup(store)
            store.close()
        opened.clear()

    open_.store, open_.options, open_.close, open_.cleanup = name, options, close, cleanup
    return open_


def unit(rng, n, dim=DIM):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def random_payloads(rng, n, now=NOW):
    payloads = []
    for i in range(n):
        tags = [t for t in DOMAINS if rng.random() < 0.4]
        packet = OutcomePacket(
            problem_description=f"problem {i}", outcome_type=["resolved", "partial", "contradicted", "open"][i % 4],
            confidence=round(float(rng.random()), 3), domain_tags=tags, timestamp=now - 100,
            agent_id=AGENTS[i % len(AGENTS)], ttl=float(rng.choice([50.0, 1000.0])),  # about half expired at NOW
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


FILTERS = {
    "none": QueryFilter(now=0.0),
    "not-expired": QueryFilter(now=NOW),
    "domain": QueryFilter(now=NOW, domain="yarn"),
    "confidence": QueryFilter(now=NOW, min_confidence=0.5),
    "exclude-agent": QueryFilter(now=NOW, exclude_agent="agent-3"),
    "all": QueryFilter(now=NOW, domain="hdfs", min_confidence=0.3, exclude_agent="agent-1"),
    "nothing-matches": QueryFilter(now=NOW, domain="no-such-domain"),
}

GENERATED_FILTERS = st.builds(
    QueryFilter,
    now=st.sampled_from([0.0, NOW - 100, NOW, NOW + 949.5, NOW + 2000]),
    domain=st.one_of(st.none(), st.sampled_from(DOMAINS + ("no-such-domain",))),
    min_confidence=st.one_of(st.just(0.0), st.floats(0.0, 1.0).map(lambda x: round(x, 3))),
    exclude_agent=st.one_of(st.none(), st.sampled_from(AGENTS)),
)

BAD_UPSERTS = {
    "wrong-dim": lambda ids, v, p: (ids, v[:, :100], p),
    "nan-vector": lambda ids, v, p: (ids, np.where(np.arange(DIM) == 5, np.nan, v).astype(np.float32), p),
    "length-mismatch": lambda ids, v, p: (ids[:-1], v, p),
    "missing-filter-field": lambda ids, v, p: (ids, v, p[:-1] + [{k: x for k, x in p[-1].items() if k != "expires_at"}]),
    "duplicate-ids": lambda ids, v, p: ([ids[0]] * len(ids), v, p),
    "empty-id": lambda ids, v, p: (ids[:-1] + [""], v, p),
}

REOPEN_SCRIPT = textwrap.dedent("""
    import importlib, json, sys
    module, cls, options, ids = json.loads(sys.argv[1])
    store = getattr(importlib.import_module(module), cls)(dim=%d, **options)
    print(json.dumps({"count": store.count(), "got": store.get(ids)}))
    store.close()
""" % DIM)


KEYWORD = "zebrafish"  # a word no random payload holds


def keyword_load(store, rng, n=200, marked=(0, 1, 2, 3, 4, 5)):
    """`load`, with KEYWORD in the problem text of the `marked` packets (some of them filtered
    out by FILTERS: expired, other domains, low confidence, agent-1 and agent-3)."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    vectors = unit(rng, n)
    payloads = random_payloads(rng, n)
    for i in marked:
        payloads[i]["problem_description"] = f"{KEYWORD} {payloads[i]['problem_description']}"
    store.upsert(ids, vectors, payloads)
    return ids, vectors, payloads


class StoreSuite:
    """The guarantees of the `Store` contract, on the store `open_store` opens."""

    @pytest.fixture
    def open_hybrid(self, open_store):
        """The same store opened with hybrid=True; skipped for stores without hybrid search."""
        spec = store_spec(open_store.store)
        if not spec.hybrid:
            pytest.skip(f"{spec.name} has no hybrid search (its StoreSpec.hybrid is False)")
        factory = store_factory(open_store.store, {**open_store.options, "hybrid": True}, cleanup=open_store.cleanup)
        yield factory
        factory.close()

    def test_text_query_needs_a_hybrid_store(self, open_store):
        """A store without hybrid search refuses query(text=) by name instead of ignoring the text."""
        store = open_store()
        if store.capabilities.hybrid:
            pytest.skip(f"{store.name} was opened for hybrid search")
        rng = np.random.default_rng(21)
        load(store, rng, n=5)
        with pytest.raises(ValueError, match="hybrid"):
            store.query(unit(rng, 1)[0], 3, QueryFilter(now=NOW), text="disk full")

    @pytest.mark.parametrize("filter_name", list(FILTERS))
    def test_hybrid_filters_apply_to_both_branches(self, open_hybrid, filter_name):
        """Hybrid top-k: only packets the filter keeps (from either branch), as many as exact search
        would give, the keyword's packets that pass the filter among them, scores = cosines."""
        store = open_hybrid()
        assert store.capabilities.hybrid
        rng = np.random.default_rng(17)
        ids, vectors, payloads = keyword_load(store, rng)
        key = {(p["agent_id"], p["problem_description"]): i for i, p in zip(ids, payloads)}
        flt = FILTERS[filter_name]
        keyword_ok = {ids[i] for i in range(6) if flt.matches(payloads[i])}
        for query in unit(rng, 3):
            hits = store.query(query, 15, flt, text=f"{KEYWORD} problem")
            got = hit_ids(hits, key)
            assert all(flt.matches(h) for h, _ in hits), f"a filtered-out packet came back under {flt}"
            assert len(got) == len(set(got)) == len(brute_force(ids, vectors, payloads, query, 15, flt)[0])
            assert keyword_ok <= set(got)
            cosines = [float(vectors[ids.index(pid)] @ query) for pid in got]
            np.testing.assert_allclose([s for _, s in hits], cosines, atol=1e-4)

    def test_hybrid_generated_filters(self, open_hybrid):
        """Random filters and k (hypothesis): hybrid hits all pass the filter, as many as exact search gives."""
        store = open_hybrid()
        rng = np.random.default_rng(19)
        ids, vectors, payloads = keyword_load(store, rng)
        key = {(p["agent_id"], p["problem_description"]): i for i, p in zip(ids, payloads)}
        queries = unit(rng, 4)

        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
        @given(flt=GENERATED_FILTERS, k=st.integers(1, 30), q=st.integers(0, len(queries) - 1))
        def check(flt, k, q):
            hits = store.query(queries[q], k, flt, text=KEYWORD)
            assert all(flt.matches(h) for h, _ in hits), f"filter {flt}, k={k}"
            want = brute_force(ids, vectors, payloads, queries[q], k, flt)[0]
            assert len(set(hit_ids(hits, key))) == len(want), f"filter {flt}, k={k}"

        check()

    def test_hybrid_finds_a_keyword_only_match(self, open_hybrid):
        """A packet sharing only a rare word with the query, its vector the farthest from it:
        dense search misses it, hybrid search returns it, as a valid stored packet."""
        store = open_hybrid()
        rng = np.random.default_rng(23)
        ids, vectors, payloads = load(store, rng, n=100)
        query = unit(rng, 1)[0]
        lone = OutcomePacket(f"{KEYWORD} tank heater trips the breaker", "resolved", 0.9, timestamp=NOW - 100,
                             ttl=10_000, agent_id="agent-lone")
        store.upsert([lone.packet_id], -query[None, :], [lone.to_payload()])
        flt = QueryFilter(now=NOW)
        dense = [h["agent_id"] for h, _ in store.query(query, 5, flt)]
        hybrid = store.query(query, 5, flt, text=f"why does my {KEYWORD} heater trip")
        assert "agent-lone" not in dense
        packets = [OutcomePacket.from_payload(h) for h, _ in hybrid]
        assert lone in packets
        known = {OutcomePacket.from_payload(p).packet_id for p in payloads} | {lone.packet_id}
        assert all(p.packet_id in known for p in packets)
        with pytest.raises(ValueError, match="text"):
            store.query(query, 5, flt, text="   ")

    def test_hybrid_router_sends_the_problem_text(self, open_hybrid):
        """A router over a hybrid store queries with its problem text: the keyword finds its packet."""
        router = OutcomeRouter(open_hybrid(), HashEmbedder(DIM))
        assert router.hybrid
        others = [OutcomePacket(f"unrelated report number {i} about disks", "open", 0.5, agent_id=f"o{i}")
                  for i in range(30)]
        wanted = OutcomePacket(f"{KEYWORD} crashes on start", "resolved", 0.9, agent_id="w")
        router.deposit_many(others + [wanted])
        assert wanted in [p for p, _ in router.query(f"the {KEYWORD}", top_k=3)]

    def test_starts_empty(self, open_store):
        """A fresh store holds nothing: if this fails, the fixture leaks state between tests."""
        assert open_store().count() == 0

    @pytest.mark.parametrize("filter_name", list(FILTERS))
    def test_top_k_equals_brute_force(self, open_store, filter_name):
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

    def test_generated_filters_match_brute_force(self, open_store):
        """Random filters and k (hypothesis), each checked id by id against exact search.
        A failure prints the filter: reproduce it with test_top_k_equals_brute_force's pattern."""
        store = open_store()
        rng = np.random.default_rng(13)
        ids, vectors, payloads = load(store, rng)
        key = {(p["agent_id"], p["problem_description"]): i for i, p in zip(ids, payloads)}
        queries = unit(rng, 8)

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(flt=GENERATED_FILTERS, k=st.integers(1, 30), q=st.integers(0, len(queries) - 1))
        def check(flt, k, q):
            want_ids, want_scores = brute_force(ids, vectors, payloads, queries[q], k, flt)
            hits = store.query(queries[q], k, flt)
            assert hit_ids(hits, key) == want_ids, f"filter {flt}, k={k}"
            np.testing.assert_allclose([s for _, s in hits], want_scores, atol=1e-4)

        check()

    def test_expired_never_crowd_out_live(self, open_store):
        """50 expired packets right next to the query, 5 live ones far away: top-5 is the live five."""
        store = open_store()
        rng = np.random.default_rng(1)
        query = unit(rng, 1)[0]
        near = query + 0.05 * unit(rng, 50)
        far = unit(rng, 5)
        dead = [OutcomePacket(f"old {i}", "resolved", 0.9, timestamp=NOW - 1000, ttl=10, agent_id="old").to_payload()
                for i in range(50)]
        live = [OutcomePacket(f"new {i}", "resolved", 0.9, timestamp=NOW - 1000, ttl=10_000,
                              agent_id="new").to_payload() for i in range(5)]
        store.upsert([str(uuid.uuid4()) for _ in range(55)], np.vstack([near, far]), dead + live)
        hits = store.query(query, 5, QueryFilter(now=NOW))
        assert sorted(h["problem_description"] for h, _ in hits) == sorted(p["problem_description"] for p in live)

    @pytest.mark.parametrize("step", [0.0, 0.001])
    def test_purge_removes_every_expired_packet_and_no_live_one(self, open_store, step):
        """purge_expired(now) deletes exactly the packets with expires_at <= now, stored under
        their packet ids as the router stores them; a packet expiring `step` s after now stays."""
        store = open_store()
        rng = np.random.default_rng(23)
        payloads = random_payloads(rng, 60)  # ttl 50 or 1000 from NOW - 100: about half expired at NOW
        edge = OutcomePacket("expires exactly at the purge time", "resolved", 0.5, timestamp=NOW - 100,
                             ttl=100 + step, agent_id="edge").to_payload()
        payloads.append(edge)
        ids = [OutcomePacket.from_payload(p).packet_id for p in payloads]
        store.upsert(ids, unit(rng, len(ids)), payloads)
        assert store.purge_expired(now=NOW - 100) == 0  # nothing had expired then
        expired = {pid for pid, p in zip(ids, payloads) if p["expires_at"] <= NOW}
        assert 0 < len(expired) < len(ids)
        assert (ids[-1] in expired) == (step == 0.0)
        assert store.purge_expired(now=NOW) == len(expired)
        assert set(store.get(ids)) == set(ids) - expired
        assert store.count() == len(ids) - len(expired)
        assert store.purge_expired(now=NOW) == 0
        with pytest.raises(ValueError, match="now"):
            store.purge_expired(now=float("nan"))
        assert store.count() == len(ids) - len(expired)

    def test_purge_of_one_agent_leaves_every_other_agents_packets(self, open_store):
        """purge_expired(now, agent_id=A) deletes A's expired packets only: another agent's
        expired packets and A's live ones stay; a blank agent id is refused and deletes nothing."""
        store = open_store()
        rng = np.random.default_rng(29)
        payloads = [OutcomePacket(f"case {i}", "resolved", 0.5, timestamp=NOW - 100, ttl=[50, 1000][i % 2],
                                  agent_id=["alice", "bob", "carol"][i % 3]).to_payload() for i in range(30)]
        ids = [OutcomePacket.from_payload(p).packet_id for p in payloads]
        store.upsert(ids, unit(rng, len(ids)), payloads)
        with pytest.raises(ValueError, match="agent_id"):
            store.purge_expired(now=NOW, agent_id=" ")
        assert store.count() == len(ids)
        alices = {pid for pid, p in zip(ids, payloads) if p["agent_id"] == "alice" and p["expires_at"] <= NOW}
        assert store.purge_expired(now=NOW, agent_id="alice") == len(alices) > 0
        assert set(store.get(ids)) == set(ids) - alices
        assert store.purge_expired(now=NOW, agent_id="nobody") == 0
        others = {pid for pid, p in zip(ids, payloads) if p["expires_at"] <= NOW} - alices
        assert store.purge_expired(now=NOW) == len(others)

    def test_upsert_same_id_overwrites(self, open_store):
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

    def test_get_returns_stored_payloads(self, open_store):
        store = open_store()
        rng = np.random.default_rng(3)
        ids, _, payloads = load(store, rng, n=10)
        missing = str(uuid.uuid4())
        got = store.get(ids[:3] + [missing])
        assert set(got) == set(ids[:3])
        for pid, payload in zip(ids[:3], payloads[:3]):
            assert OutcomePacket.from_payload(got[pid]) == OutcomePacket.from_payload(payload)
        assert store.get([]) == {}

    def test_delete_removes_only_those_ids(self, open_store):
        """Deleted packets are gone from count, get and every query; the rest are untouched."""
        store = open_store()
        rng = np.random.default_rng(9)
        ids, vectors, payloads = load(store, rng, n=30)
        gone = ids[:10]
        store.delete(gone + [str(uuid.uuid4())])  # an id never stored is ignored
        assert store.count() == 20
        assert store.get(ids).keys() == set(ids[10:])
        key = {(p["agent_id"], p["problem_description"]): i for i, p in zip(ids, payloads)}
        for query in vectors[:10]:  # each deleted packet's own vector
            hits = store.query(query, 30, QueryFilter(now=0.0))
            assert not set(hit_ids(hits, key)) & set(gone)
            want_ids, _ = brute_force(ids[10:], vectors[10:], payloads[10:], query, 30, QueryFilter(now=0.0))
            assert hit_ids(hits, key) == want_ids
        store.upsert(gone[:1], vectors[:1], payloads[:1])  # a deleted id can be written again
        assert store.count() == 21

    def test_full_scroll_lists_every_stored_id_once(self, open_store):
        """scroll_ids, read in small pages, lists each stored id once and agrees with count."""
        store = open_store()
        ids, _, _ = load(store, np.random.default_rng(12), n=25)
        store.delete(ids[:3])
        try:
            scrolled = store.scroll_ids(page=7)
        except NotImplementedError:
            pytest.skip(f"{store.name} cannot list its ids")
        assert sorted(scrolled) == sorted(ids[3:])
        assert len(scrolled) == store.count() == 22

    def test_bad_delete_removes_nothing(self, open_store):
        store = open_store()
        ids, _, _ = load(store, np.random.default_rng(10), n=5)
        for bad in (ids[0], [ids[0], ""], [ids[1], None]):
            with pytest.raises((ValueError, TypeError)):
                store.delete(bad)
        assert store.count() == 5

    @pytest.mark.parametrize("bad", list(BAD_UPSERTS))
    def test_bad_upsert_raises_and_writes_nothing(self, open_store, bad):
        store = open_store()
        rng = np.random.default_rng(4)
        load(store, rng, n=5)
        ids = [str(uuid.uuid4()) for _ in range(3)]
        args = BAD_UPSERTS[bad](ids, unit(rng, 3), random_payloads(rng, 3))
        with pytest.raises(ValueError):
            store.upsert(*args)
        assert store.count() == 5

    @pytest.mark.parametrize("top_k", [0, -1, True, 2.5, None, 10_001, 2**63])
    def test_bad_top_k_raises(self, open_store, top_k):
        store = open_store()
        with pytest.raises(ValueError, match="top_k"):
            store.query(unit(np.random.default_rng(0), 1)[0], top_k, QueryFilter(now=NOW))

    def test_wrong_query_dimension_raises(self, open_store):
        store = open_store()
        with pytest.raises(ValueError, match="shape"):
            store.query(np.ones(DIM + 1, dtype=np.float32), 5, QueryFilter(now=NOW))

    def test_router_round_trip_and_synthesize(self, open_store):
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
        mine = OutcomePacket("namenode heap problem with block reports", "open", 0.5, agent_id="a1",
                             timestamp=now + 1)
        result = router.synthesize(mine.problem_description, mine, top_k=3)
        assert all(p.agent_id != "a1" for p, _ in result.matches)
        assert packets[1] in [p for p, _ in result.matches]
        assert router.stats()["packets"] == 5

    def test_router_bad_input_leaves_store_unchanged(self, open_store):
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

    def test_reopened_store_has_every_packet(self, open_store):
        """Persistent stores: a new process opening the same store sees every packet written before."""
        store = open_store()
        if not store.capabilities.persistent:
            shown = {k: "***" if k == "api_key" else v for k, v in open_store.options.items()}
            pytest.skip(f"{store.name} with {shown} keeps nothing after close")
        rng = np.random.default_rng(5)
        ids, _, payloads = load(store, rng, n=300)
        store.close()
        spec = store_spec(open_store.store)
        out = subprocess.run([sys.executable, "-c", REOPEN_SCRIPT,
                              json.dumps([spec.module, spec.cls, open_store.options, ids])],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["count"] == 300
        assert {pid: OutcomePacket.from_payload(p) for pid, p in result["got"].items()} == \
            {pid: OutcomePacket.from_payload(p) for pid, p in zip(ids, payloads)}

    def test_packets_come_back_exactly(self, open_store):
        """Awkward floats (17-digit timestamps, long confidences) survive the store's JSON layer.

        If this fails, packet ids computed from a read-back packet no longer match the stored id.
        """
        router = OutcomeRouter(open_store(), HashEmbedder(DIM))
        rng = np.random.default_rng(11)
        packets = [OutcomePacket(f"problem {i}", "partial", float(rng.random()),
                                 timestamp=1_795_680_911.4187121 + i / 7, ttl=3600 + float(rng.random()),
                                 agent_id="a") for i in range(50)]
        ids = router.deposit_many(packets)
        got = router.get(ids)
        assert [got[pid] for pid in ids] == packets
        assert all(pid == got[pid].packet_id for pid in ids)

    def test_new_store_shows_nothing_of_a_deleted_one(self, open_store):
        """chromadb 1.5.9 showed array metadata of a deleted collection on a new collection's items."""
        store = open_store()
        rng = np.random.default_rng(12)
        load(store, rng, n=10)
        if not store.capabilities.persistent:
            store.close()  # a throwaway store frees (for chroma: deletes) its collection
            store = open_store()
        payloads = [dict(p, domain_tags=[]) for p in random_payloads(rng, 5)]
        ids = [str(uuid.uuid4()) for _ in payloads]
        store.upsert(ids, unit(rng, 5), payloads)
        assert all(p["domain_tags"] == [] for p in store.get(ids).values())
