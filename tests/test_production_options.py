"""Index options (quantization, m, ef_construct, hnsw_ef), automatic indexing on qdrant-edge and
its segment bound, the planner options, the filters every store sends, expiry cleanup through
the router, and the router's trusted-payload path."""
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qis_lib import OutcomePacket, OutcomeRouter, QueryFilter, make_router
from qis_lib.core.router import PAYLOAD_MARKER, PAYLOAD_VERSION, router_payload, trusted_packet
from qis_lib.embedders import HashEmbedder
from qis_lib.stores.chroma import chroma_where
from qis_lib.stores.memory import MemoryStore
from qis_lib.stores.options import MAX_SEGMENT_POINTS, MAX_SEGMENT_POINTS_HYBRID, QUANTIZATIONS, IndexOptions
from qis_lib.stores.qdrant_edge import QdrantEdgeStore
from qis_lib.stores.qdrant_edge_params import EdgePlanner, edge_config, edge_filter, edge_search_params, vector_kb
from qis_lib.stores.qdrant_params import qdrant_filter

DIM = 32


def unit(rng, n, dim=DIM):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def payloads(n, now=1_800_000_000.0, ttl=1000.0):
    return [OutcomePacket(f"problem {i}", "resolved", 0.5, timestamp=now, ttl=ttl, agent_id=f"a{i % 3}").to_payload()
            for i in range(n)]


BAD = {"quantization": ["int4", "", 8], "m": [0, 3, 1.5, True, 1000], "ef_construct": [0, -1, "100"],
       "hnsw_ef": [0, -5, 2.0, 10**6], "oversampling": [0.5, "2", 1000]}


@pytest.mark.parametrize("option,value", [(k, v) for k, vs in BAD.items() for v in vs])
def test_a_bad_index_option_is_an_error_naming_it(option, value, tmp_path):
    with pytest.raises(ValueError, match=option):
        QdrantEdgeStore(path=str(tmp_path / "e"), dim=DIM, **{option: value})
    assert not (tmp_path / "e").exists()  # nothing was created
    with pytest.raises(ValueError, match=option):
        make_router("qdrant", embedder=HashEmbedder(DIM), location=":memory:", **{option: value})


def test_qdrant_client_names_the_quantization_it_lacks():
    with pytest.raises(ValueError, match="quantization='turbo'"):
        make_router("qdrant", embedder=HashEmbedder(DIM), location=":memory:", quantization="turbo")


@pytest.mark.parametrize("name,options", [("memory", {}), ("chroma", {}), ("qdrant", {"location": ":memory:"})])
def test_stores_that_cannot_honour_an_option_warn_naming_it(name, options):
    with pytest.warns(UserWarning, match="hnsw_ef=64"):
        router = make_router(name, embedder=HashEmbedder(DIM), hnsw_ef=64, **options)
    router.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no option given: no warning
        make_router(name, embedder=HashEmbedder(DIM), **options).close()


@pytest.mark.parametrize("quantization", [None, *QUANTIZATIONS])
def test_every_quantization_finds_the_nearest_point_after_indexing(quantization):
    rng = np.random.default_rng(3)
    vectors = unit(rng, 400)
    with QdrantEdgeStore(dim=DIM, quantization=quantization, m=8, ef_construct=32, hnsw_ef=64,
                         index_threshold=100) as store:
        ids = [OutcomePacket.from_payload(p).packet_id for p in payloads(400)]
        store.upsert(ids, vectors, payloads(400))
        store.optimize()
        assert store.shard.info().indexed_vectors_count == 400
        for j in (0, 17, 399):
            hits = store.query(vectors[j], 1, QueryFilter(now=0.0))
            assert hits[0][0]["problem_description"] == f"problem {j}"


def test_qdrant_edge_indexes_by_itself_once_enough_points_arrive():
    """Single deposits, never optimize(): the store builds its index in the background and every
    point stays findable while and after it does."""
    rng = np.random.default_rng(5)
    n, threshold = 1200, 400
    vectors = unit(rng, n)
    pays = payloads(n)
    ids = [OutcomePacket.from_payload(p).packet_id for p in pays]
    with QdrantEdgeStore(dim=DIM, index_threshold=threshold, m=8, ef_construct=32) as store:
        for i in range(n):
            store.upsert(ids[i:i + 1], vectors[i:i + 1], pays[i:i + 1])
            if i % 300 == 0:  # queries during builds answer, and exactly
                assert store.query(vectors[i], 1, QueryFilter(now=0.0))[0][0]["problem_description"] == f"problem {i}"
        store.wait_for_index()
        assert store.builds, "no automatic build ran"
        assert store.index_error is None
        assert store.shard.info().indexed_vectors_count >= threshold
        assert store.count() == n
        found = sum(store.query(vectors[j], 1, QueryFilter(now=0.0))[0][0]["problem_description"] == f"problem {j}"
                    for j in range(0, n, 20))
        assert found == len(range(0, n, 20))


def test_a_bulk_load_holds_the_automatic_builds_until_it_ends():
    """Between before_bulk_load() and after_bulk_load() nothing is built on the way; the end
    builds once over everything, and later deposits build on their own again."""
    rng = np.random.default_rng(6)
    n, threshold = 900, 200
    vectors, pays = unit(rng, n), payloads(n)
    ids = [OutcomePacket.from_payload(p).packet_id for p in pays]
    with QdrantEdgeStore(dim=DIM, index_threshold=threshold, m=8, ef_construct=32) as store:
        store.before_bulk_load()
        for s in range(0, 600, 100):
            store.upsert(ids[s:s + 100], vectors[s:s + 100], pays[s:s + 100])
        assert store.builds == [] and store.indexer.thread is None
        assert store.shard.info().indexed_vectors_count == 0
        store.after_bulk_load()
        assert store.shard.info().indexed_vectors_count == 600
        for i in range(600, n):
            store.upsert(ids[i:i + 1], vectors[i:i + 1], pays[i:i + 1])
        store.wait_for_index()
        assert store.builds, "automatic builds did not resume after the bulk load"
        assert store.count() == n


def test_only_the_domain_gets_hnsw_links_of_its_own(tmp_path):
    """Every filter field has a payload index; only domain_tags adds graph links (the others
    would multiply the build time), in a new folder and in one opened again."""
    for _ in range(2):
        with QdrantEdgeStore(dim=DIM, path=tmp_path / "shard") as store:
            schema = store.shard.info().payload_schema
            assert {f: schema[f].params.enable_hnsw for f in schema} == {
                "domain_tags": True, "agent_id": False, "confidence": False, "expires_at": False}


def test_index_threshold_none_leaves_indexing_to_optimize():
    with QdrantEdgeStore(dim=DIM, index_threshold=None) as store:
        store.upsert([OutcomePacket.from_payload(p).packet_id for p in payloads(50)], unit(np.random.default_rng(1), 50),
                     payloads(50))
        assert store.builds == [] and store.indexer.thread is None
    with pytest.raises(ValueError, match="index_threshold"):
        QdrantEdgeStore(dim=DIM, index_threshold=0)


def single_deposits(store, n, seed):
    rng = np.random.default_rng(seed)
    vectors, pays = unit(rng, n), payloads(n)
    ids = [OutcomePacket.from_payload(p).packet_id for p in pays]
    for i in range(n):
        store.upsert(ids[i:i + 1], vectors[i:i + 1], pays[i:i + 1])
    store.wait_for_index()
    return vectors, ids, pays


def test_a_segment_bound_keeps_every_build_small_and_every_point_found():
    """Single deposits, never optimize(): with max_segment_points the builds stop merging at the
    bound (more segments, each built from at most that many points); without one the engine
    merges everything into one segment. Both find what exact search finds; a bulk load under the
    bound is still indexed whole, in one segment."""
    n, threshold, bound = 1800, 300, 600
    with QdrantEdgeStore(dim=DIM, index_threshold=threshold, max_segment_points=bound, m=8, ef_construct=32) as store:
        vectors, ids, pays = single_deposits(store, n, 8)
        segments = store.info()["segments"]
        assert n // bound <= segments < n // threshold, segments  # bounded, and merged up to the bound
        assert n // threshold - 1 <= len(store.builds) <= n // threshold and store.index_error is None
        assert store.count() == n and store.info()["indexed_vectors"] >= n - threshold
        exact = MemoryStore(dim=DIM)
        exact.upsert(ids, vectors, pays)
        queries = unit(np.random.default_rng(9), 20)
        found = [{h["problem_description"] for h, _ in store.query(q, 10, QueryFilter(now=0.0))} for q in queries]
        truth = [{h["problem_description"] for h, _ in exact.query(q, 10, QueryFilter(now=0.0))} for q in queries]
        assert np.mean([len(f & t) / 10 for f, t in zip(found, truth)]) >= 0.95
    with QdrantEdgeStore(dim=DIM, index_threshold=threshold, max_segment_points=None, m=8, ef_construct=32) as store:
        single_deposits(store, n, 8)
        assert store.info()["segments"] <= 2 and store.count() == n
    with QdrantEdgeStore(dim=DIM, index_threshold=threshold, max_segment_points=bound, m=8, ef_construct=32) as store:
        store.before_bulk_load()
        for s in range(0, n, 300):
            store.upsert(ids[s:s + 300], vectors[s:s + 300], pays[s:s + 300])
        store.after_bulk_load()
        assert store.info()["segments"] <= 2 and store.info()["indexed_vectors"] == n


def test_points_written_during_a_build_start_the_next_one_when_it_ends():
    rng = np.random.default_rng(4)
    threshold = 150
    vectors, pays = unit(rng, 2 * threshold), payloads(2 * threshold)
    ids = [OutcomePacket.from_payload(p).packet_id for p in pays]
    with QdrantEdgeStore(dim=DIM, index_threshold=threshold, m=8, ef_construct=32) as store:
        with store.indexer.build_lock:  # as a long build would: the first build waits
            for i in range(2 * threshold):
                store.upsert(ids[i:i + 1], vectors[i:i + 1], pays[i:i + 1])
            assert store.builds == [] and store.indexer.thread.is_alive()
        store.wait_for_index()
        assert [b["points"] for b in store.builds] == [threshold, threshold]
        assert store.info()["indexed_vectors"] == 2 * threshold


def test_optimize_does_not_hold_the_store_lock():
    """A build, automatic or asked for, leaves the store's query lock alone: the engine keeps
    queries correct during a build, so a query waits only for what the GIL makes it wait."""
    import threading

    with QdrantEdgeStore(dim=DIM, index_threshold=100, m=8, ef_construct=32) as store:
        store.before_bulk_load()
        store.upsert([OutcomePacket.from_payload(p).packet_id for p in payloads(500)],
                     unit(np.random.default_rng(2), 500), payloads(500))
        with store._lock:  # as a query under way would hold it
            builder = threading.Thread(target=store.after_bulk_load)  # optimize() and the bulk path's end
            builder.start()
            builder.join(timeout=120)
            assert not builder.is_alive(), "optimize() waited for the query lock"
        assert store.info()["indexed_vectors"] == 500


@pytest.mark.parametrize("option,value", [("max_segment_points", 0), ("max_segment_points", 2.5),
                                          ("planner", "tenant")])
def test_a_bad_build_or_planner_option_is_an_error_naming_it(option, value, tmp_path):
    with pytest.raises(ValueError, match=option):
        QdrantEdgeStore(path=str(tmp_path / "e"), dim=DIM, **{option: value})
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("field,value", [("full_scan_points", 0), ("full_scan_points", True),
                                         ("tenant_domain", 1), ("acorn", 0.0), ("acorn", 1.5), ("acorn", "on")])
def test_a_bad_planner_value_is_an_error_naming_it(field, value):
    with pytest.raises(ValueError, match=field):
        EdgePlanner(**{field: value})


def test_the_planner_and_the_segment_bound_reach_the_engine(tmp_path):
    import qdrant_edge as qe

    planner = EdgePlanner(full_scan_points=1000, tenant_domain=True, acorn=0.3)
    config = edge_config(qe, 384, IndexOptions(), planner, 5000, 20_000, False)
    assert config.hnsw_config.full_scan_threshold == vector_kb(1000, 384) == 1501
    assert config.optimizers.max_segment_size == vector_kb(20_000, 384)
    assert config.optimizers.indexing_threshold == 7500
    assert edge_search_params(IndexOptions(), planner).acorn.max_selectivity == pytest.approx(0.3)
    assert edge_search_params(IndexOptions(), EdgePlanner(acorn=None)).acorn is None
    # the default bound is smaller for a hybrid store (its builds rebuild the BM25 index too)
    with QdrantEdgeStore(dim=DIM, path=tmp_path / "h", hybrid=True) as store:
        assert store.max_segment_points == MAX_SEGMENT_POINTS_HYBRID < MAX_SEGMENT_POINTS
    with QdrantEdgeStore(dim=DIM, path=tmp_path / "h", hybrid=None) as store:  # as the folder holds it
        assert store.capabilities.hybrid and store.max_segment_points == MAX_SEGMENT_POINTS_HYBRID
    with QdrantEdgeStore(dim=DIM, hybrid=True, max_segment_points=None) as store:
        assert store.max_segment_points is None
    with QdrantEdgeStore(dim=DIM, path=tmp_path / "t", planner=planner) as store:
        assert store.max_segment_points == MAX_SEGMENT_POINTS
        schema = store.shard.info().payload_schema
        assert schema["domain_tags"].params.is_tenant is True and not schema["agent_id"].params.is_tenant
        store.set_acorn(None)
        assert store.planner.acorn is None and store.planner.tenant_domain
        with pytest.raises(ValueError, match="acorn"):
            store.set_acorn(2.0)


@pytest.mark.parametrize("min_confidence", [0.0, 0.25])
def test_a_condition_that_keeps_every_packet_is_left_out_of_every_filter(min_confidence):
    """confidence >= 0.0 keeps every packet, so no store sends it; any higher minimum is sent.
    (The conformance suite checks that the answers stay the same.)"""
    flt = QueryFilter(now=5.0, domain="hdfs", min_confidence=min_confidence, exclude_agent="a1")
    edge = edge_filter(flt)
    client = qdrant_filter(flt)
    where = chroma_where(flt)
    wanted = {"expires_at", "domain_tags"} | ({"confidence"} if min_confidence else set())
    assert {c.key for c in edge.must} == {c.key for c in client.must} == wanted
    assert {key for clause in where["$and"] for key in clause} == wanted | {"agent_id"}
    if min_confidence:
        assert [c.range.gte for c in edge.must if c.key == "confidence"] == [0.25]
        assert [c.range.gte for c in client.must if c.key == "confidence"] == [0.25]
        assert {"confidence": {"$gte": 0.25}} in where["$and"]
    # the expiry check alone is one clause (Chroma's $and takes two or more)
    assert chroma_where(QueryFilter(now=5.0)) == {"expires_at": {"$gt": 5.0}}
    assert [c.key for c in edge_filter(QueryFilter(now=5.0)).must] == ["expires_at"]


def test_router_purges_on_its_cadence_and_on_demand():
    now = time.time()
    router = OutcomeRouter(MemoryStore(dim=DIM), HashEmbedder(DIM), purge_every=4)
    old = [OutcomePacket(f"old {i}", "resolved", 0.5, timestamp=now - 100, ttl=10, agent_id="x") for i in range(3)]
    router.deposit_many(old)  # 3 deposits: not due yet
    assert router.store.count() == 3
    fresh = OutcomePacket("fresh", "resolved", 0.5, agent_id="y")
    router.deposit(fresh)  # the 4th deposit: purge
    assert set(router.get([p.packet_id for p in old + [fresh]])) == {fresh.packet_id}
    assert router.stats()["purged"] == 3
    assert router.purge_expired(now=fresh.expires_at) == 1
    with pytest.raises(ValueError, match="purge_every"):
        OutcomeRouter(MemoryStore(dim=DIM), HashEmbedder(DIM), purge_every=0)
    with pytest.raises(ValueError, match="purge_interval"):
        make_router("memory", embedder=HashEmbedder(DIM), purge_interval=-1)


texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(str.strip)


@settings(max_examples=60, deadline=None)
@given(problem=texts, outcome=st.sampled_from(["resolved", "partial", "contradicted", "open"]),
       confidence=st.floats(0, 1), tags=st.lists(texts, max_size=3), ttl=st.floats(0.001, 1e9))
def test_a_payload_the_router_wrote_comes_back_as_the_same_packet(problem, outcome, confidence, tags, ttl):
    packet = OutcomePacket(problem, outcome, confidence, domain_tags=tags, ttl=ttl)
    payload = router_payload(packet)
    assert payload[PAYLOAD_MARKER] == PAYLOAD_VERSION
    assert trusted_packet(payload) == packet == OutcomePacket.from_payload(payload)


@pytest.mark.parametrize("change", [
    lambda p: p.pop(PAYLOAD_MARKER),  # a foreign writer
    lambda p: p.update({PAYLOAD_MARKER: 99}),  # another version
    lambda p: p.update({PAYLOAD_MARKER: 1}),  # marked before writers from outside were validated
    lambda p: p.update(extra="x"),  # more keys than the router writes
    lambda p: p.update(domain_tags=None),  # wrong type where the marker is forged
])
def test_anything_but_the_routers_own_payload_is_validated(change):
    payload = router_payload(OutcomePacket("disk full", "resolved", 0.5))
    change(payload)
    assert trusted_packet(payload) is None


def test_a_forged_invalid_payload_is_skipped_not_returned():
    store = MemoryStore(dim=DIM)
    router = OutcomeRouter(store, HashEmbedder(DIM))
    good = OutcomePacket("namenode out of heap", "resolved", 0.9)
    router.deposit(good)
    bad = dict(router_payload(OutcomePacket("namenode out of heap!", "resolved", 0.9)), confidence=7.0)
    bad.pop(PAYLOAD_MARKER)  # written by someone else, and invalid
    store.upsert(["foreign"], HashEmbedder(DIM).encode(["namenode out of heap"]), [bad])
    assert [p for p, _ in router.query("namenode out of heap")] == [good]
    assert router.stats()["skipped_payloads"] == 1
