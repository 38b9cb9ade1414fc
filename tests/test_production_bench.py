"""The production-options benchmark (`python -m qis_lib.bench.production`): what each command
measures and writes, at sizes that run in seconds. Speed is never asserted; the shape of the
results, the recall of exact search, and the counts of what was done are."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qis_lib.bench import production
from qis_lib.stores.options import FILTER_FIELDS, HNSW_LINKED_FIELDS

SUMMARY = ["store", "n", "filtered", "p50_ms", "p95_ms", "p99_ms", "recall_at_10", "raw_p99_ms"]


def test_frontier_has_one_row_per_option_and_filter_and_keeps_every_query():
    summary, raw = production.frontier([300], ["random"], [None, "int8"], [16, 64], queries=20)
    assert set(SUMMARY + ["quantization", "hnsw_ef", "m", "ef_construct", "index_s", "ram_mb", "disk_mb", "cpu",
                          "cores", "qdrant-edge-py", "load_1min"]) <= set(summary.columns)
    keys = sorted(map(tuple, summary[["store", "quantization", "hnsw_ef", "filtered"]].fillna(0).values.tolist()))
    assert keys == sorted([("memory", "none", 0, f) for f in (False, True)]
                          + [("qdrant-edge", q, ef, f) for q in ("none", "int8") for ef in (16, 64) for f in (False, True)])
    assert (summary.loc[summary["store"] == "memory", "recall_at_10"] == 1.0).all()
    assert len(raw) == len(summary) * 20  # every query's latency and recall
    merged = raw.groupby(["store", "quantization", "hnsw_ef", "filtered"], dropna=False)["recall"].mean()
    assert np.allclose(sorted(merged.values), sorted(summary["recall_at_10"].values))


def test_autoindex_times_every_deposit_and_builds_on_its_own():
    summary, raw = production.autoindex(600, probe_every=100, queries=30, index_threshold=200)
    row = summary.iloc[0]
    assert len(raw) == 600 and raw["deposit"].tolist() == list(range(1, 601))
    assert row["builds"] >= 1 and row["indexed_before_optimize"] >= 200
    assert row["p99_ratio"] == pytest.approx(row["query_p99_ms_auto"] / row["query_p99_ms_optimized"])
    # each build is placed at the deposit that started it, and they add up
    assert raw["builds_started"].sum() == row["builds"]
    assert raw["build_s"].sum() == pytest.approx(row["build_s_total"])
    assert raw["build_s"].max() == pytest.approx(row["build_s_max"])
    assert raw["build_cpu_s"].sum() == pytest.approx(row["build_cpu_s_total"]) and row["build_cpu_s_max"] > 0
    # the slowest deposit waited for a build, which held the ticking thread up too
    assert row["tick_gap_max_ms"] >= 0.5 * row["deposit_max_ms"]
    for label in ("auto", "optimized", "bulk"):
        for name in ("expiry", "domain"):
            assert row[f"{label}_{name}_recall_at_10"] == 1.0  # 600 points: below the full-scan threshold
    assert row["p99_ratio_bulk_domain"] == pytest.approx(row["auto_domain_p99_ms"] / row["bulk_domain_p99_ms"])


def test_the_segment_sweep_runs_once_per_bound_and_the_bound_shows_in_the_segments():
    summary, raw = production.autoindex_sweep(1200, [400, None], [200], probe_every=200, queries=20, reference=False)
    assert summary["max_segment_points"].tolist() == [400, None]
    assert len(raw) == 2400 and raw.groupby("max_segment_points", dropna=False).size().tolist() == [1200, 1200]
    bounded, unbounded = summary.iloc[0], summary.iloc[1]
    assert bounded["segments_before_optimize"] > unbounded["segments_before_optimize"]
    assert 1200 // 200 - 1 <= min(bounded["builds"], unbounded["builds"])
    assert max(bounded["builds"], unbounded["builds"]) <= 1200 // 200
    assert "bulk_expiry_p99_ms" not in summary.columns  # no reference asked


def test_the_planner_times_each_config_acorn_mode_and_filter():
    table = production.planner(1500, "random", queries=20, configs=["qdrant", "tenant"])
    assert set(table["config"]) == {"qdrant", "tenant"} and set(table["mode"]) == {"dense", "hybrid"}
    assert set(table["filter"]) == {"expiry only", "domain", "domain, confidence >= 0.5", "confidence >= 0.95"}
    # per config: 4 filters x 2 acorn settings x 2 modes, and the old condition for the 2 kinds without a minimum
    assert len(table) == 2 * (4 * 2 * 2 + 2 * 2)
    sent = table[table["filter"].isin(["expiry only", "domain"])].groupby(["config", "filter", "mode"])
    assert (sent["confidence_sent"].nunique() == 2).all()
    share = table.groupby("filter")["pass_share"].first()
    assert share["domain, confidence >= 0.5"] == pytest.approx(0.045, abs=0.02)
    assert share["domain"] == pytest.approx(0.09, abs=0.03)
    dense = table[table["mode"] == "dense"]
    assert (dense.loc[dense["filter"] != "expiry only", "recall_at_10"] == 1.0).all()  # 1,500 points: exact
    assert set(table.loc[table["config"] == "tenant", "tenant_domain"]) == {True}


def test_throughput_counts_queries_per_thread_setting():
    table = production.throughput(300, threads=[1, 2], seconds=0.3)
    assert table["threads"].tolist() == [1, 2]
    assert (table["queries"] > 0).all()
    assert np.allclose(table["queries_per_s"], table["queries"] / table["seconds"])


def test_links_compares_the_linked_field_choices_under_three_filters():
    table = production.payload_links(2000, "random", queries=40)
    assert sorted(set(table["linked"])) == ["all", "domain", "none"]
    assert set(table["filter"]) == {"expiry only", "domain", "confidence >= 0.95"}
    assert len(table) == 9
    linked = table.drop_duplicates("linked").set_index("linked")["linked_fields"]
    assert linked["domain"] == " ".join(HNSW_LINKED_FIELDS) and linked["all"] == " ".join(FILTER_FIELDS)
    assert linked["none"] == "-"
    share = table.groupby("filter")["pass_share"].first()
    assert share["expiry only"] == pytest.approx(0.9, abs=0.03)
    assert share["confidence >= 0.95"] == pytest.approx(0.045, abs=0.015)
    # under the engine's full-scan threshold a filtered search is exact
    assert (table.loc[table["filter"] != "expiry only", "recall_at_10"] == 1.0).all()


def test_the_command_line_writes_each_result_with_its_command(tmp_path, capsys):
    out = tmp_path / "prod"
    argv = ["links", "--n", "500", "--queries", "15", "--out", str(out), "--no-progress"]
    production.main(argv)
    table = pd.read_csv(out / "links.csv")
    assert table["command"].iloc[0] == "python -m qis_lib.bench.production " + " ".join(argv)
    assert "confidence >= 0.95" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        production.main(["links", "--vectors", "real,random", "--out", str(out)])
    assert "links takes one vector set" in capsys.readouterr().err
    for bad in (["links", "--n", "0"], ["frontier", "--queries", "-3"], ["autoindex", "--n", "many"]):
        with pytest.raises(SystemExit):
            production.main(bad + ["--out", str(out)])
        assert "expected an integer >= 1" in capsys.readouterr().err
    for bad, said in ((["autoindex", "--max-segment", "0"], "positive integers or none"),
                      (["autoindex", "--vectors", "real,random"], "autoindex takes one vector set"),
                      (["planner", "--vectors", "clustered"], "planner takes one vector set")):
        with pytest.raises(SystemExit):
            production.main(bad + ["--out", str(out)])
        assert said in capsys.readouterr().err


def test_the_autoindex_command_writes_one_row_per_bound(tmp_path):
    out = tmp_path / "auto"
    production.main(["autoindex", "--n", "400", "--queries", "15", "--index-threshold", "100,200", "--max-segment",
                     "200,none", "--out", str(out), "--no-progress"])
    summary = pd.read_csv(out / "autoindex.csv")
    assert summary["index_threshold"].tolist() == [100, 100, 200, 200]
    assert summary["max_segment_points"].isna().tolist() == [False, True, False, True]
    assert summary["builds"].between(3, 4).iloc[:2].all() and summary["builds"].between(1, 2).iloc[2:].all()
    raw = pd.read_csv(out / "autoindex_raw.csv.gz")
    assert len(raw) == 1600 and raw.groupby(["index_threshold"]).size().tolist() == [800, 800]
