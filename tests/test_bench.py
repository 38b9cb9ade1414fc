"""The latency benchmark: recall against brute force, the data recipe, the raw calls, the CLI.

Small N and random vectors or the hash embedder, so the whole file runs in seconds.
Speed is never asserted: only that the harness measures the right thing and writes it.
If a recall test fails, check `qis_lib.bench.data.recall_at_k` against the hand-worked
cases here before suspecting a store.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qis_lib.bench import data, raw
from qis_lib.bench.__main__ import main
from qis_lib.bench.latency import run, targets
from qis_lib.embedders import CachedEmbedder
from qis_lib.stores.exact import top_k_rows
from qis_lib.embedders import HashEmbedder
from qis_lib.stores import open_store

MINI = Path(__file__).parent / "fixtures" / "gitbugs_mini" / "jira"
QUERY_COLUMNS = ["store", "config", "hybrid", "n", "filtered", "p50_ms", "p95_ms", "p99_ms", "recall_at_10",
                 "dense_overlap_at_10", "dense_overlap_min", "raw_p50_ms", "raw_p99_ms", "router_added_us",
                 "router_added_ratio", "raw_reads_payloads", "router_overhead", "store_overhead", "router_p99_ms",
                 "numpy_p99_ms", "vectors", "target", "rrf_k", "prefetch", "deposit_per_s", "deposit_single_p50_ms",
                 "deposit_single_p99_ms", "load_1min"]
KEYS = ["target", "config", "n", "filtered"]


# --- recall against exact search ------------------------------------------------------------

def known_case():
    """Five points on a quarter circle; the query is point 0's direction, so the exact order is 0,1,2,3,4."""
    angles = np.array([0.0, 0.2, 0.4, 0.6, 1.5])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    return vectors, vectors[:1].copy()


def test_recall_of_hand_worked_results():
    vectors, query = known_case()
    every = [np.ones(5, bool)]
    assert data.recall_at_k([[0, 1]], vectors, query, every, k=2).tolist() == [1.0]
    assert data.recall_at_k([[1, 0]], vectors, query, every, k=2).tolist() == [1.0]  # order does not matter
    assert data.recall_at_k([[0, 4]], vectors, query, every, k=2).tolist() == [0.5]
    assert data.recall_at_k([[3, 4]], vectors, query, every, k=2).tolist() == [0.0]
    assert data.recall_at_k([[0, 0]], vectors, query, every, k=2).tolist() == [0.5]  # a point twice counts once
    assert data.recall_at_k([[0]], vectors, query, every, k=2).tolist() == [0.5]  # too few results


def test_recall_uses_the_same_filter_as_the_store():
    vectors, query = known_case()
    without_0 = [np.array([False, True, True, True, True])]
    # The true top 2 among the points the filter keeps is {1, 2}; point 0 is filtered out.
    assert data.recall_at_k([[1, 2]], vectors, query, without_0, k=2).tolist() == [1.0]
    assert data.recall_at_k([[0, 1]], vectors, query, without_0, k=2).tolist() == [0.5]
    only_4 = [np.array([False, False, False, False, True])]  # fewer passing points than k
    assert data.recall_at_k([[4]], vectors, query, only_4, k=2).tolist() == [1.0]
    none = [np.zeros(5, bool)]
    assert data.recall_at_k([[]], vectors, query, none, k=2).tolist() == [1.0]
    assert data.recall_at_k([[1]], vectors, query, none, k=2).tolist() == [0.0]


def test_recall_does_not_hold_ties_against_a_store():
    vectors, query = known_case()
    tied = np.vstack([vectors, vectors[1:2]])  # point 5 equals point 1
    every = [np.ones(6, bool)]
    assert data.recall_at_k([[0, 5]], tied, query, every, k=2).tolist() == [1.0]
    assert data.recall_at_k([[0, 1]], tied, query, every, k=2).tolist() == [1.0]


def test_recall_needs_one_result_per_query():
    vectors, query = known_case()
    with pytest.raises(ValueError, match="one result list per query"):
        data.recall_at_k([[0], [1]], vectors, query, [np.ones(5, bool)], k=2)


def test_exact_top_k_matches_a_full_sort_and_memory_recall_is_one():
    vset = data.random_set(500, 20, dim=16, seed=3)
    points = data.make_points(vset.texts)
    flts = data.make_filters(20, True)
    masks = data.filter_masks(points, flts)
    found, store = [], open_store("memory", dim=16)
    store.upsert([p.packet_id for p in points.packets], vset.vectors, [p.to_payload() for p in points.packets])
    row_of = {p.agent_id: i for i, p in enumerate(points.packets)}
    for j, q in enumerate(vset.queries):
        rows = np.flatnonzero(masks[j])
        full = rows[np.argsort(-(vset.vectors[rows] @ q))][:10]
        best, scores = top_k_rows(vset.vectors, q, rows, 10)
        assert best.tolist() == full.tolist()
        assert np.allclose(scores, vset.vectors[best] @ q)
        found.append([row_of[payload["agent_id"]] for payload, _ in store.query(q, 10, flts[j])])
    assert data.recall_at_k(found, vset.vectors, vset.queries, masks).tolist() == [1.0] * 20
    # and a store that answers at random is caught (10 of about 440 passing points: recall about 0.02)
    rng = np.random.default_rng(0)
    loose = data.filter_masks(points, data.make_filters(20, False))
    wrong = [rng.choice(np.flatnonzero(m), 10, replace=False) for m in loose]
    assert data.recall_at_k(wrong, vset.vectors, vset.queries, loose).mean() < 0.2


# --- the data recipe ------------------------------------------------------------------------

def test_masks_follow_the_reference_filter_semantics():
    points = data.make_points([f"text {i}" for i in range(400)])
    for flt in data.make_filters(5, True) + data.make_filters(1, False):
        expected = [flt.matches(p.to_payload()) for p in points.packets]
        assert points.mask(flt).tolist() == expected


def test_filtered_queries_keep_the_stated_share():
    points = data.make_points([f"text {i}" for i in range(20_000)])
    filtered = np.mean([points.mask(f).mean() for f in data.make_filters(50, True)])
    unfiltered = points.mask(data.make_filters(1, False)[0]).mean()
    assert filtered == pytest.approx(0.1 * 0.5 * 0.9, abs=0.01)
    assert unfiltered == pytest.approx(1 - data.EXPIRED_SHARE, abs=0.01)


def test_smaller_sets_are_the_head_of_larger_ones():
    small, large = data.random_set(50, 7, dim=8), data.random_set(120, 7, dim=8)
    assert np.array_equal(small.vectors, large.vectors[:50]) and np.array_equal(small.queries, large.queries)
    assert small.texts == large.texts[:50] and small.query_texts == large.query_texts
    assert len(set(large.texts)) == 120 and all(len(t.split()) == data.TEXT_WORDS for t in large.texts)
    few, many = data.make_points(large.texts[:50]), data.make_points(large.texts)
    assert [p.packet_id for p in few.packets] == [p.packet_id for p in many.packets[:50]]
    summaries, descriptions = ["alpha beta gamma delta", "one two three"], ["d1 d2 d3 d4 d5", ""]
    texts_5, asked_5 = data.report_texts(summaries, descriptions, 5, 3)
    texts_9, asked_9 = data.report_texts(summaries, descriptions, 9, 3)
    assert texts_9[:5] == texts_5 and asked_5 == asked_9
    assert texts_5[:2] == summaries  # the reports themselves come first


def test_real_set_caches_the_points_by_recipe_and_embeds_the_queries(tmp_path):
    class Counting(HashEmbedder):
        texts = 0

        def encode(self, texts):
            Counting.texts += len(texts)
            return super().encode(texts)

    first = data.real_set(12, 4, embedder=Counting(), gitbugs_path=MINI, cache=tmp_path)
    assert Counting.texts >= 12 + 4 - 2  # points and queries (duplicate texts are embedded once)
    before = Counting.texts
    again = data.real_set(8, 4, embedder=Counting(), gitbugs_path=MINI, cache=tmp_path)
    assert Counting.texts - before == 4  # the queries only: the points are the head of the cached 12
    assert np.array_equal(again.vectors, first.vectors[:8]) and again.texts == first.texts[:8]
    assert np.array_equal(again.queries, first.queries)
    assert np.allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)
    before = Counting.texts
    other_queries = data.real_set(8, 5, embedder=Counting(), gitbugs_path=MINI, cache=tmp_path)
    assert Counting.texts - before == 5 and len(other_queries.queries) == 5  # same points, new queries
    assert np.array_equal(other_queries.vectors, first.vectors[:8])
    before = Counting.texts
    data.real_set(20, 4, embedder=Counting(), gitbugs_path=MINI, cache=tmp_path)
    assert Counting.texts - before >= 20  # more points than cached: embedded again


def test_cached_embedder_answers_known_texts_only():
    vectors = data.unit_rows(np.eye(3, 4))
    embedder = CachedEmbedder(texts=["a", "b", "c"], vectors=vectors, strict=True)
    assert np.array_equal(embedder.encode(["c", "a"]), vectors[[2, 0]])
    with pytest.raises(KeyError, match="not embedded beforehand"):
        embedder.encode(["d"])


# --- the engines' own calls do the same work as the stores ---------------------------------------

@pytest.mark.parametrize("name", ["memory", "qdrant-edge", "qdrant", "chroma"])
def test_native_call_returns_what_the_store_returns(name):
    vset = data.random_set(300, 6, dim=32, seed=1)
    points = data.make_points(vset.texts)
    store = open_store(name, dim=32)
    try:
        store.upsert([p.packet_id for p in points.packets], vset.vectors, [p.to_payload() for p in points.packets])
        for filtered in (False, True):
            flts = data.make_filters(6, filtered)
            native = store.native_query_fn(vset.queries, flts, 10)
            for j in range(6):
                answer = native(j)
                if name == "memory":
                    raw_ids = [points.packets[r].packet_id for r in answer[0]]
                elif name == "chroma":
                    raw_ids = answer["ids"][0]
                else:
                    raw_ids = [str(p.id) for p in (answer.points if name == "qdrant" else answer)]
                mine = [data.OutcomePacket.from_payload(payload).packet_id
                        for payload, _ in store.query(vset.queries[j], 10, flts[j])]
                assert raw_ids == mine
    finally:
        store.close()


@pytest.mark.parametrize("name, hybrid", [("memory", False), ("qdrant-edge", False), ("qdrant-edge", True),
                                          ("qdrant", False), ("qdrant", True), ("chroma", False)])
def test_engine_call_answers_as_the_store_and_reads_its_payloads(name, hybrid, monkeypatch):
    """The raw call of the overhead figures: the store's own answer (the fused one for a hybrid
    query), every hit's payload read, the payloads the store returns."""
    vset = data.random_set(300, 6, dim=32, seed=1)
    texts = [f"pump valve report{i}" for i in range(300)]
    points = data.make_points(texts)
    payloads = [p.to_payload() for p in points.packets]
    store = open_store(name, dim=32, **({"hybrid": hybrid} if hybrid else {}))
    read_back = []
    reader = raw.HIT_PAYLOADS[name]
    monkeypatch.setitem(raw.HIT_PAYLOADS, name, lambda answer, loaded: read_back.append(list(reader(answer, loaded)))
                        or read_back[-1])
    try:
        store.upsert([p.packet_id for p in points.packets], vset.vectors, payloads)
        assert raw.reads_payloads(store)
        for filtered in (False, True):
            flts = data.make_filters(6, filtered)
            # Each query's text names one stored text alone (by its report number): the sixth nearest
            # under the filter. Fused, it comes first, and no two points tie (RRF leaves ties unordered).
            keyword_row = [rows[np.argsort(-(vset.vectors[rows] @ q))][5] for q, rows in
                           zip(vset.queries, map(np.flatnonzero, data.filter_masks(points, flts)))]
            asked = [f"heater report{r}" for r in keyword_row]
            call = raw.engine_call(store, vset.queries, flts, 10, asked if hybrid else None, payloads)
            for j in range(6):
                answer = call(j)
                hits = store.query(vset.queries[j], 10, flts[j], **({"text": asked[j]} if hybrid else {}))
                mine = [data.OutcomePacket.from_payload(payload).packet_id for payload, _ in hits]
                assert len(read_back) == 1 and len(read_back[0]) == len(hits)  # read once per hit
                seen = read_back.pop()
                if name == "chroma":  # its metadata is the flattened payload: same packets
                    assert answer["ids"][0] == mine
                    assert [m["agent_id"] for m in seen] == [p["agent_id"] for p, _ in hits]
                else:
                    assert [dict(p) for p in seen] == [p for p, _ in hits]
                top = f"agent-{keyword_row[j]}"
                assert (seen[0]["agent_id"] == top) == hybrid  # the fused request, or the dense one
    finally:
        store.close()


def test_engine_call_has_no_hybrid_call_for_a_dense_store():
    vset = data.random_set(50, 2, dim=8)
    store = open_store("qdrant-edge", dim=8, hybrid=False)
    try:
        assert raw.engine_call(store, vset.queries, data.make_filters(2, False), 10, ["a", "b"]) is None
    finally:
        store.close()


# --- the harness and the command line ------------------------------------------------------

@pytest.fixture(scope="module")
def small_run():
    """One run of memory (no hybrid mode) and qdrant-edge (hybrid by default), every timed query kept."""
    skipped, per_query = [], []
    table = run(["memory", "qdrant-edge"], sizes=[150, 300], vectors=["random"], queries=25, warmup=3,
                single_deposits=5, skipped=skipped, caps={"qdrant-edge": 150}, raw=per_query)
    return table, pd.concat(per_query, ignore_index=True), skipped


def test_run_measures_every_target_config_filter_and_size(small_run):
    table, _, skipped = small_run
    assert set(QUERY_COLUMNS) <= set(table.columns)
    cells = [("memory", "default (dense)", 150), ("memory", "default (dense)", 300),
             ("qdrant-edge", "default (hybrid)", 150), ("qdrant-edge", "dense", 150)]
    assert sorted(map(tuple, table[KEYS].values.tolist())) == sorted(
        [(t, c, n, f) for t, c, n in cells for f in (False, True)])
    assert skipped == [{"target": "qdrant-edge", "vectors": "random", "n": 300, "cap": 150,
                        "why": "capped on the command line"}]
    assert (table["hybrid"] == (table["config"] == "default (hybrid)")).all()
    hybrid, dense = table[table["hybrid"]], table[~table["hybrid"]]
    assert (table.loc[table["target"] == "memory", "recall_at_10"] == 1.0).all()
    # recall@10 is the dense rows' alone; the overlap with exact dense search is every row's
    assert hybrid["recall_at_10"].isna().all() and hybrid["recall_min"].isna().all()
    assert np.array_equal(dense["recall_at_10"], dense["dense_overlap_at_10"])
    assert table["dense_overlap_at_10"].between(0, 1).all()
    assert (table["dense_overlap_min"] <= table["dense_overlap_at_10"]).all()
    assert (hybrid["rrf_k"] == 60).all() and (hybrid["prefetch"] == 20).all() and dense["rrf_k"].isna().all()
    assert table["raw_reads_payloads"].all() and table["router_added_ratio"].notna().all()
    assert np.allclose(table["router_overhead"], table["router_p99_ms"] / table["raw_p99_ms"])
    assert (table["p50_ms"] <= table["p99_ms"]).all() and (table["queries"] == 25).all()
    assert table.loc[table["filtered"], "pass_share"].between(0.01, 0.2).all()


def test_the_paired_overhead_derives_from_the_timed_queries(small_run):
    table, per_query, _ = small_run
    assert len(per_query) == len(table) * 25 and per_query["raw_ms"].notna().all()
    groups = per_query.groupby(KEYS)
    summary = table.set_index(KEYS).sort_index()
    diff = groups.apply(lambda g: np.median(g["router_ms"] - g["raw_ms"]) * 1e3).sort_index()
    ratio = groups.apply(lambda g: np.median((g["router_ms"] - g["raw_ms"]) / g["raw_ms"])).sort_index()
    assert np.allclose(diff.values, summary["router_added_us"].values)
    assert np.allclose(ratio.values, summary["router_added_ratio"].values)
    assert np.allclose(groups["recall"].mean().sort_index().values, summary["dense_overlap_at_10"].values)
    assert np.allclose(groups["raw_ms"].median().sort_index().values, summary["raw_p50_ms"].values)
    for _, g in groups:  # the router and the raw call take turns at going first, query by query
        assert g.sort_values("query")["router_first"].tolist() == [t % 2 == 0 for t in range(25)]


def test_overhead_summary_and_its_printout(small_run, capsys):
    from qis_lib.bench.latency import ROUTER_GOAL, overhead_summary, print_overhead

    table, _, _ = small_run
    summary = print_overhead(table)
    lines = capsys.readouterr().out.splitlines()
    assert len(summary) == len(lines) == len(table)
    assert summary["met"].tolist() == (table["router_added_ratio"] <= ROUTER_GOAL).tolist()
    first = summary.iloc[0]
    assert lines[0].startswith(f"{first['target']}, {first['config']}, random vectors, N={first['n']:,}")
    assert f"{first['router_added_us']:.0f} µs" in lines[0] and ("met" if first["met"] else "missed") in lines[0]
    loose = overhead_summary(table, goal=1e9)
    assert loose["met"].all()
    with pytest.raises(ValueError, match="predates the paired measurement"):
        overhead_summary(table.drop(columns=["router_added_us", "config"]))


def test_the_bench_opens_stores_as_make_router_does():
    """The default row is what make_router gives: hybrid on the Qdrant stores, dense elsewhere."""
    from qis_lib import make_router
    from qis_lib.bench.latency import configs_of, opened

    known = targets()
    assert configs_of(known["memory"]) == ["default"] and configs_of(known["chroma"]) == ["default"]
    assert configs_of(known["qdrant-edge"]) == ["default", "dense"] and configs_of(known["qdrant"]) == ["default", "dense"]
    assert configs_of(known["qdrant-edge"], ["dense"]) == ["dense"] and configs_of(known["memory"], ["dense"]) == ["default"]
    for name in ("qdrant-edge", "qdrant", "memory"):
        with make_router(name, embedder=HashEmbedder(16)) as router:
            expected = router.hybrid
        assert expected == (name != "memory")
        with opened(known[name], 16) as store:
            assert store.capabilities.hybrid == expected
        if name != "memory":
            with opened(known[name], 16, "dense") as store:
                assert not store.capabilities.hybrid
    with pytest.raises(ValueError, match="config must be one of"):
        with opened(known["memory"], 16, "fast"):
            pass


def test_plots_draw_old_tables_and_new_ones(small_run, tmp_path):
    """A table from before the config column is drawn one series per target; a new one, per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qis_lib.bench.plots import plot_latency_vs_n, plot_recall_vs_latency, plot_recall_vs_n, series

    table, _, _ = small_run
    assert sorted(label for label, *_ in series(table)) == ["memory", "qdrant-edge, default (hybrid)",
                                                          "qdrant-edge, dense"]
    old = table[~table["hybrid"]].drop(columns=["config", "hybrid", "dense_overlap_at_10"])
    assert sorted(label for label, *_ in series(old)) == ["memory", "qdrant-edge"]
    for plot in (plot_latency_vs_n, plot_recall_vs_n, plot_recall_vs_latency):  # new tables: test_cli_end_to_end
        path = tmp_path / f"{plot.__name__}.png"
        plt.close(plot(old, path))
        assert path.read_bytes()[:4] == b"\x89PNG"
    fig = plot_recall_vs_n(table)  # hybrid rows have no recall@10: the dense series only
    labels = fig.legends[0].get_texts()
    assert not any("hybrid" in t.get_text() for t in labels) and any("qdrant-edge, dense" in t.get_text() for t in labels)
    plt.close(fig)


def test_run_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown store target"):
        run(["nosuch"])
    with pytest.raises(ValueError, match="unknown vector set"):
        run(["memory"], vectors=["words"])
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        run(["memory"], sizes=[0], vectors=["random"])
    with pytest.raises(ValueError, match="unknown config"):
        run(["memory"], vectors=["random"], configs=["hybrid"])


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--stores", "memory,qdrant-edge", "--sizes", "120,240", "--vectors", "random", "--queries", "15",
            "--warmup", "2", "--single-deposits", "3", "--out", str(out), "--no-progress"]
    main(argv)
    table = pd.read_csv(out / "query.csv")
    assert set(QUERY_COLUMNS + ["command", "cores", "openblas_coretype", "qdrant-edge-py", "chromadb"]) <= set(table.columns)
    assert len(table) == 3 * 2 * 2  # memory, qdrant-edge hybrid (its default) and dense; 2 sizes, 2 filters
    assert table["command"].iloc[0] == "python -m qis_lib.bench " + " ".join(argv)
    assert table.groupby("target")["config"].apply(set).to_dict() == {
        "memory": {"default (dense)"}, "qdrant-edge": {"default (hybrid)", "dense"}}
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["skipped"] == [] and run_info["data_credit"] is None
    for png in ("latency_vs_n.png", "recall_vs_n.png", "recall_vs_latency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    per_query = pd.read_csv(out / "query_raw.csv.gz")  # every timed query, from which the summary derives
    assert len(per_query) == 3 * 2 * 2 * 15
    groups, summary = per_query.groupby(KEYS), table.set_index(KEYS).sort_index()
    assert np.allclose(groups["recall"].mean().sort_index().values, summary["dense_overlap_at_10"].values)
    assert np.allclose(groups["ms"].quantile(0.99).sort_index().values, summary["p99_ms"].values)
    diff = groups.apply(lambda g: np.median(g["router_ms"] - g["raw_ms"]) * 1e3).sort_index()
    assert np.allclose(diff.values, summary["router_added_us"].values)
    printed = capsys.readouterr().out
    assert "wrote" in printed and printed.count("the router adds") == len(table)
    for png in out.glob("*.png"):  # --replot draws them again from query.csv, measuring nothing
        png.unlink()
    main(["--out", str(out), "--replot"])
    assert sorted(p.name for p in out.glob("*.png")) == ["latency_vs_n.png", "recall_vs_latency.png", "recall_vs_n.png"]
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "nothing-here"), "--replot"])
    assert "--replot needs" in capsys.readouterr().err


def test_a_run_stopped_midway_keeps_the_sizes_it_finished(tmp_path, monkeypatch):
    import qis_lib.bench.latency as latency

    real_measure = latency.measure_target

    def measure(target, vset, *args, **kwargs):
        if vset.n == 240:
            raise KeyboardInterrupt  # the run is stopped during its second size
        return real_measure(target, vset, *args, **kwargs)

    monkeypatch.setattr(latency, "measure_target", measure)
    out = tmp_path / "bench"
    argv = ["--stores", "memory,qdrant-edge", "--sizes", "120,240", "--vectors", "random", "--queries", "10",
            "--warmup", "1", "--single-deposits", "0", "--out", str(out), "--no-progress", "--no-plots"]
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert not (out / "query.csv").exists()
    kept = pd.read_csv(out / "query.partial.csv")
    assert sorted(map(tuple, kept[["target", "n", "filtered"]].values.tolist())) == sorted(
        [(t, 120, f) for t in ("memory", "qdrant-edge", "qdrant-edge") for f in (False, True)])
    assert kept["command"].iloc[0] == "python -m qis_lib.bench " + " ".join(argv)
    monkeypatch.setattr(latency, "measure_target", real_measure)
    main(argv + ["--configs", "default"])  # a run that ends writes query.csv and removes the partial file
    done = pd.read_csv(out / "query.csv")
    assert not (out / "query.partial.csv").exists()
    assert sorted(map(tuple, done[["target", "config"]].drop_duplicates().values.tolist())) == [
        ("memory", "default (dense)"), ("qdrant-edge", "default (hybrid)")]  # --configs default: no dense row
    assert len(done) == 2 * 2 * 2


@pytest.mark.parametrize("argv, message", [
    (["--transports", "memory,nosuch"], "unknown 'nosuch'; choose from memory"),
    (["--sizes", "1000,abc"], "expected comma-separated positive integers"),
    (["--sizes", "0"], "expected comma-separated positive integers"),
    (["--vectors", "words"], "choose from real, random"),
    (["--queries", "0"], "expected an integer >= 1"),
    (["--warmup", "-1"], "expected an integer >= 0"),
    (["--cap", "qdrant"], "expected TARGET=N"),
    (["--configs", "hybrid"], "unknown 'hybrid'; choose from default, dense"),
])
def test_cli_bad_arguments_say_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_qdrant_server_needs_its_url(monkeypatch, capsys):
    monkeypatch.delenv("QDRANT_URL", raising=False)
    with pytest.raises(SystemExit):
        main(["--transports", "qdrant-server"])
    assert "qdrant-server: no Qdrant server: set QDRANT_URL" in capsys.readouterr().err


def test_cli_help_lists_the_transports():
    result = subprocess.run([sys.executable, "-m", "qis_lib.bench", "--help"], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).parents[1])
    assert result.returncode == 0
    for name in targets():
        assert name in result.stdout


def test_the_benchmark_stores_what_a_router_writes():
    """The router's cost is measured on its own payloads (rebuilt without re-validation), as in use."""
    from qis_lib.bench.latency import stored_payloads
    from qis_lib.core.router import trusted_packet

    points = data.make_points([f"text {i}" for i in range(20)])
    payloads = stored_payloads(points)
    assert [trusted_packet(p) for p in payloads] == list(points.packets)
