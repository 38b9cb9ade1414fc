"""Index options (quantization, m, ef_construct, hnsw_ef), automatic indexing on qdrant-edge,
expiry cleanup through the router, and the router's trusted-payload path."""
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qis_lib import OutcomePacket, OutcomeRouter, QueryFilter, make_router
from qis_lib.core.router import PAYLOAD_MARKER, PAYLOAD_VERSION, router_payload, trusted_packet
from qis_lib.embedders import HashEmbedder
from qis_lib.stores.memory import MemoryStore
from qis_lib.stores.options import QUANTIZATIONS
from qis_lib.stores.qdrant_edge import QdrantEdgeStore

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
        assert store.builds == [] and store._builder is None
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
        assert store.builds == [] and store._builder is None
    with pytest.raises(ValueError, match="index_threshold"):
        QdrantEdgeStore(dim=DIM, index_threshold=0)


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
