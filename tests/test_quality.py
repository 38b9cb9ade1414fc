"""Routing-quality metrics: duplicate recall per store, the cold-start replay, BM25 +
dense fusion. Fast: the hash embedder over the hand-made GitBugs fixtures.

If the store-agreement test fails for one store, see that store's filter translation
(exclude_agent) in qis_lib/stores/; if the hybrid test fails, compare the store's
hybrid request (`_hybrid_request` in qis_lib/stores/) with `rrf` (Qdrant counts ranks from 0)."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import unique_name
from qis_lib.infra.datasets import load_gitbugs
from qis_lib.embedders import HashEmbedder
from qis_lib.experiments.quality import (agrees_with_exact, bootstrap_ci, cold_start_series, cold_start_curve,
                                        cold_start_replay, directed_queries, duplicate_ranks, exact_ranks,
                                        hybrid_search, load_store, mean_tokens, quality_table, recall_summary, rrf,
                                        rrf_scores, split_pairs, store_search, with_intervals)
from qis_lib.stores import QueryFilter, open_store

MINI = Path(__file__).parent / "fixtures" / "gitbugs_mini"
EMBEDDER = HashEmbedder()


@pytest.fixture(scope="module")
def jira():
    ds = load_gitbugs(MINI / "jira", text="summary+description", description_chars=80)
    vectors = EMBEDDER.encode([p.problem_description for p in ds.packets])
    return ds, vectors


def test_directed_queries_both_ways():
    assert directed_queries([("a", "b"), ("b", "c")]) == [("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")]
    with pytest.raises(ValueError, match="two different reports"):
        directed_queries([("a", "a")])


def test_recall_summary_by_hand():
    ranks = pd.Series([1, 3, np.nan, 10, 12])
    got = recall_summary(ranks, ks=(1, 5, 10), mrr_at=10)
    assert got["queries"] == 5
    assert got["recall@1"] == pytest.approx(1 / 5)
    assert got["recall@5"] == pytest.approx(2 / 5)
    assert got["recall@10"] == pytest.approx(3 / 5)
    assert got["MRR@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 5)
    with pytest.raises(ValueError, match="1-based"):
        recall_summary(pd.Series([0, 1]))
    with pytest.raises(ValueError, match="no ranks"):
        recall_summary(pd.Series([], dtype=float))


@pytest.mark.parametrize("store", ["memory", "qdrant-edge", "chroma"])
def test_stores_agree_with_exact_ranks(jira, store):
    ds, vectors = jira
    options = {"collection": unique_name()} if store == "chroma" else {}
    transport = open_store(store, dim=EMBEDDER.dim, **options)
    try:
        load_store(transport, ds.packets, vectors)
        assert transport.count() == len(ds.packets)
        got = duplicate_ranks(store_search(transport, ds.packets, vectors), ds.packets, ds.duplicate_pairs, top_k=5)
    finally:
        transport.close()
    exact = exact_ranks(vectors, ds.packets, ds.duplicate_pairs)
    assert (exact["ties"] == 0).all()  # no identical texts here, so the order is unambiguous
    expected = exact["rank"].where(exact["rank"] <= 5)
    assert got["rank"].tolist() == pytest.approx(expected.tolist(), nan_ok=True)
    assert (got["top_hit"] != got["query"]).all()  # the query's own packet is excluded
    assert (got["rank"] <= 3).mean() >= 0.5  # paraphrases share words: the hash embedder finds most
    assert agrees_with_exact(got, exact, top_k=5).all()
    assert not agrees_with_exact(got.assign(rank=got["rank"] + 1), exact, top_k=5).all()
    with pytest.raises(ValueError, match="same queries"):
        agrees_with_exact(got.iloc[::-1], exact)


def test_ranks_reject_missing_packets(jira):
    ds, vectors = jira
    with pytest.raises(ValueError, match="has no packet"):
        duplicate_ranks(lambda i, k: [], ds.packets, [("1001", "nope")])
    ranks = duplicate_ranks(lambda i, k: ["x"], ds.packets, ds.duplicate_pairs)
    assert ranks["rank"].isna().all() and (ranks["top_hit"] == "x").all()


def test_quality_table_rows(jira):
    ds, vectors = jira
    exact = exact_ranks(vectors, ds.packets, ds.duplicate_pairs)
    table = quality_table({("exact", "s+d"): exact, ("none", "s+d"): exact.assign(rank=np.nan)}, ["store", "text"])
    assert list(table["store"]) == ["exact", "none"]
    assert table.loc[1, "recall@10"] == 0 and table.loc[0, "recall@10"] > 0


def test_cold_start_replay(jira):
    ds, vectors = jira
    transport = open_store("memory", dim=EMBEDDER.dim)
    replay = cold_start_replay(transport, ds.packets, vectors, ds.duplicate_pairs, top_k=3, match_score=0.2)
    assert list(replay["deposited"]) == list(range(len(ds.packets)))
    assert transport.count() == len(ds.packets)
    times = {p.agent_id: p.timestamp for p in ds.packets}
    assert [times[a] for a in replay["agent"]] == sorted(times.values())
    # the later member of each pair has an earlier duplicate; 1005's partner 1006 came after it
    assert set(replay.loc[replay["has_earlier"], "agent"]) == {"1003", "1006", "1007"}
    first = replay.iloc[0]
    assert math.isnan(first["best_score"]) and not first["matched"]
    assert replay.loc[~replay["has_earlier"], "rank"].isna().all()
    assert replay.loc[replay["agent"] == "1003", "rank"].item() == 1  # the NameNode upgrade paraphrase
    with pytest.raises(ValueError, match="empty store"):
        cold_start_replay(transport, ds.packets, vectors, ds.duplicate_pairs)

    every, dup = cold_start_series(replay, k=1, window=2)
    assert len(every) == len(ds.packets) and list(dup["agent"]) == ["1003", "1006", "1007"]
    assert dup["hit_running"].iloc[-1] == pytest.approx(dup["hit"].mean())
    assert every["matched_rolling"].iloc[1] == pytest.approx(every["matched"].iloc[:2].mean())

    curve = cold_start_curve(replay, bins=[0, 3, 6, 10], ks=(1, 3))
    assert curve["arrivals"].sum() == len(ds.packets)
    assert curve["with_earlier_duplicate"].sum() == 3
    assert curve.loc[0, "arrivals"] == 3 and curve.loc[0, "matched_share"] < 1


def test_replay_respects_ttl(jira):
    """A packet that expired before a later agent arrives is not delivered to it."""
    ds, vectors = jira
    short = ds.make_packets("summary+description", description_chars=80, ttl=3600.0)
    replay = cold_start_replay(open_store("memory", dim=EMBEDDER.dim), short, vectors, ds.duplicate_pairs,
                               top_k=3)
    # every report in the fixture comes more than an hour after the previous one
    assert replay["best_score"].isna().all() and replay["rank"].isna().all()


def test_rrf_by_hand():
    assert rrf([["a", "b", "c"], ["c", "b"]], k=0) == ["c", "a", "b"]  # c: 1/3+1, a: 1, b: 1/2+1/2
    assert rrf([["a", "b"], ["b", "a"]], k=60) == ["a", "b"]  # tie: first seen wins
    assert rrf_scores([["a", "b"], ["b"]], k=1) == {"a": 1 / 2, "b": 1 / 3 + 1 / 2}
    assert rrf([["a", "b"], ["b", "a"]], k=60, weights=[1.0, 2.0]) == ["b", "a"]
    with pytest.raises(ValueError, match="weights"):
        rrf([["a"]], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="k must be"):
        rrf([["a"]], k=-1)


@pytest.mark.parametrize("store_name", ["qdrant-edge", "qdrant"])
def test_hybrid_store_fuses_like_rrf(jira, store_name):
    """The store's one-request fusion equals RRF over its own dense and BM25 rankings."""
    ds, _ = jira
    n = len(ds.packets)
    # random dense vectors: no tied cosines, so the dense order is unambiguous
    vectors = np.random.default_rng(7).normal(size=(n, EMBEDDER.dim)).astype(np.float32)
    store = open_store(store_name, dim=EMBEDDER.dim, hybrid=True, rrf_k=60, prefetch=n,
                       bm25_avg_len=mean_tokens(p.problem_description for p in ds.packets))
    try:
        load_store(store, ds.packets, vectors)
        searches = {mode: hybrid_search(store, ds.packets, vectors, mode) for mode in ("dense", "hybrid")}
        for i, packet in enumerate(ds.packets):
            me = packet.agent_id
            dense = searches["dense"](i, n)
            flt = QueryFilter(now=packet.timestamp + 1e6, exclude_agent=me)
            # BM25 branch: qdrant-edge has it alone; both stores index the same sparse vectors
            lexical = [p["agent_id"] for p, _ in (store.lexical_query(packet.problem_description, n, flt)
                                                  if store_name == "qdrant-edge" else [])]
            fused = searches["hybrid"](i, n)
            assert me not in dense + lexical + fused
            assert len(dense) == len(fused) == n - 1 and set(fused) == set(dense)
            if store_name == "qdrant-edge":
                # Qdrant counts ranks from 0: Rrf(k=60) scores are rrf_scores(k=59); compare as sets of
                # equal-score groups, since equal fused scores come back in no fixed order
                expected = rrf_scores([dense, lexical], k=59)
                assert [round(expected[a], 9) for a in fused] == sorted((round(v, 9) for v in expected.values()),
                                                                      reverse=True)
        with pytest.raises(ValueError, match="mode must be"):
            hybrid_search(store, ds.packets, vectors, "sparse")
    finally:
        store.close()


def test_bm25_finds_a_rare_word(jira):
    ds, vectors = jira
    store = open_store("qdrant-edge", dim=EMBEDDER.dim, hybrid=True)
    try:
        load_store(store, ds.packets, vectors)
        hits = store.lexical_query("Frobnicate the shell error message", 3, QueryFilter(now=0.0))
    finally:
        store.close()
    assert hits[0][0]["agent_id"] == "1008"  # "Improve shell error message"


def test_dense_store_refuses_hybrid_modes(jira):
    ds, vectors = jira
    with open_store("memory", dim=EMBEDDER.dim) as store:
        with pytest.raises(ValueError, match="hybrid=True"):
            hybrid_search(store, ds.packets, vectors, "hybrid")


def test_split_pairs_keeps_order_and_holds_out_the_last_third():
    pairs = [(str(i), str(i + 100)) for i in range(66)]
    train, test = split_pairs(pairs)
    assert train + test == pairs and len(test) == 22
    with pytest.raises(ValueError, match="test_share"):
        split_pairs(pairs, 1.5)
    with pytest.raises(ValueError, match="at least 2"):
        split_pairs(pairs[:1])


def test_bootstrap_interval_resamples_pairs():
    # 10 pairs, both directions; 5 pairs found at rank 1 both ways, 5 never: recall@10 = 0.5
    rows = [{"query": q, "target": t, "rank": 1.0 if i < 5 else np.nan}
            for i in range(10) for q, t in ((f"a{i}", f"b{i}"), (f"b{i}", f"a{i}"))]
    ranks = pd.DataFrame(rows)
    low, high = bootstrap_ci(ranks, "recall@10", n=500)
    assert low < 0.5 < high and 0.0 <= low and high <= 1.0
    # a pair's two directions move together, so every resampled recall is a multiple of 1/10
    same = pd.DataFrame([{"query": "a", "target": "b", "rank": 1.0}, {"query": "b", "target": "a", "rank": 1.0}])
    assert bootstrap_ci(same, "recall@10", n=50) == (1.0, 1.0)
    table = with_intervals({("x",): ranks}, ["name"], n=200)
    assert table.loc[0, "recall@10"] == 0.5 and "-" in table.loc[0, "recall@10 95% CI"]


def test_real_data_stores_agree_with_exact():
    ds = load_gitbugs(download=False)  # $QIS_GITBUGS_DIR, else the Hadoop copy shipped in data/gitbugs/
    vectors = EMBEDDER.encode([p.problem_description for p in ds.packets])
    transport = open_store("qdrant-edge", dim=EMBEDDER.dim)
    try:
        load_store(transport, ds.packets, vectors)
        got = duplicate_ranks(store_search(transport, ds.packets, vectors), ds.packets, ds.duplicate_pairs)
    finally:
        transport.close()
    exact = exact_ranks(vectors, ds.packets, ds.duplicate_pairs)
    clear = (exact["ties"] == 0).to_numpy()  # identical texts may be ordered either way
    expected = exact["rank"].where(exact["rank"] <= 10)
    assert got["rank"][clear].tolist() == pytest.approx(expected[clear].tolist(), nan_ok=True)
