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

from qis_lib.bench import data
from qis_lib.bench.__main__ import main
from qis_lib.bench.latency import run, targets
from qis_lib.embedders import CachedEmbedder
from qis_lib.stores.exact import top_k_rows
from qis_lib.embedders import HashEmbedder
from qis_lib.stores import open_store

MINI = Path(__file__).parent / "fixtures" / "gitbugs_mini" / "jira"
QUERY_COLUMNS = ["transport", "n", "filtered", "p50_ms", "p95_ms", "p99_ms", "recall_at_10", "raw_p99_ms",
                 "router_overhead", "transport_overhead", "router_p99_ms", "numpy_p99_ms", "vectors", "target",
                 "deposit_per_s", "deposit_single_p50_ms", "deposit_single_p99_ms", "load_1min"]


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
            raw = store.native_query_fn(vset.queries, flts, 10)
            for j in range(6):
                answer = raw(j)
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


# --- the harness and the command line ------------------------------------------------------

def test_run_measures_every_target_filter_and_size():
    skipped = []
    table = run(["memory", "qdrant-edge"], sizes=[150, 300], vectors=["random"], queries=25, warmup=3,
                single_deposits=5, skipped=skipped, caps={"qdrant-edge": 150})
    assert set(QUERY_COLUMNS) <= set(table.columns)
    assert sorted(map(tuple, table[["target", "n", "filtered"]].values.tolist())) == sorted(
        [(t, n, f) for t, n in [("memory", 150), ("memory", 300), ("qdrant-edge", 150)] for f in (False, True)])
    assert skipped == [{"target": "qdrant-edge", "vectors": "random", "n": 300, "cap": 150,
                        "why": "capped on the command line"}]
    assert (table.loc[table["target"] == "memory", "recall_at_10"] == 1.0).all()
    assert np.allclose(table["router_overhead"], table["router_p99_ms"] / table["raw_p99_ms"])
    assert (table["p50_ms"] <= table["p99_ms"]).all() and (table["queries"] == 25).all()
    assert table.loc[table["filtered"], "pass_share"].between(0.01, 0.2).all()


def test_run_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown transport"):
        run(["nosuch"])
    with pytest.raises(ValueError, match="unknown vector set"):
        run(["memory"], vectors=["words"])
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        run(["memory"], sizes=[0], vectors=["random"])


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--transports", "memory,qdrant-edge", "--sizes", "120,240", "--vectors", "random", "--queries", "15",
            "--warmup", "2", "--single-deposits", "3", "--out", str(out), "--no-progress"]
    main(argv)
    table = pd.read_csv(out / "query.csv")
    assert set(QUERY_COLUMNS + ["command", "cores", "openblas_coretype", "qdrant-edge-py", "chromadb"]) <= set(table.columns)
    assert len(table) == 2 * 2 * 2
    assert table["command"].iloc[0] == "python -m qis_lib.bench " + " ".join(argv)
    assert set(table["transport"]) == {"memory", "qdrant-edge"}
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["skipped"] == [] and run_info["data_credit"] is None
    for png in ("latency_vs_n.png", "recall_vs_n.png", "recall_vs_latency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    per_query = pd.read_csv(out / "query_raw.csv.gz")  # every timed query, from which the summary derives
    assert len(per_query) == 2 * 2 * 2 * 15
    means = per_query.groupby(["target", "n", "filtered"])["recall"].mean()
    summary = table.set_index(["target", "n", "filtered"])["recall_at_10"]
    assert np.allclose(means.sort_index().values, summary.sort_index().values)
    p99 = per_query.groupby(["target", "n", "filtered"])["ms"].quantile(0.99)
    assert np.allclose(p99.sort_index().values, table.set_index(["target", "n", "filtered"])["p99_ms"].sort_index().values)
    assert "wrote" in capsys.readouterr().out
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
    argv = ["--transports", "memory,qdrant-edge", "--sizes", "120,240", "--vectors", "random", "--queries", "10",
            "--warmup", "1", "--single-deposits", "0", "--out", str(out), "--no-progress"]
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert not (out / "query.csv").exists()
    kept = pd.read_csv(out / "query.partial.csv")
    assert sorted(map(tuple, kept[["target", "n", "filtered"]].values.tolist())) == sorted(
        [(t, 120, f) for t in ("memory", "qdrant-edge") for f in (False, True)])
    assert kept["command"].iloc[0] == "python -m qis_lib.bench " + " ".join(argv)
    monkeypatch.setattr(latency, "measure_target", real_measure)
    main(argv)  # a run that ends writes query.csv and removes the partial file
    assert len(pd.read_csv(out / "query.csv")) == 8 and not (out / "query.partial.csv").exists()


@pytest.mark.parametrize("argv, message", [
    (["--transports", "memory,nosuch"], "unknown 'nosuch'; choose from memory"),
    (["--sizes", "1000,abc"], "expected comma-separated positive integers"),
    (["--sizes", "0"], "expected comma-separated positive integers"),
    (["--vectors", "words"], "choose from real, random"),
    (["--queries", "0"], "expected an integer >= 1"),
    (["--warmup", "-1"], "expected an integer >= 0"),
    (["--cap", "qdrant"], "expected TARGET=N"),
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
