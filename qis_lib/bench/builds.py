"""Indexing without being asked, measured (`python -m qis_lib.bench.production autoindex`).

N packets deposited one at a time through an `OutcomeRouter` into a qdrant-edge store that
builds its own index (`index_threshold`), never calling `optimize()`, once per value of
`max_segment_points` (the largest segment a build makes from smaller ones). qdrant-edge-py
keeps Python's GIL for the whole of a build, so a build stalls every thread of the process;
the stall is measured three ways: a thread that wakes every 5 ms (the longest gap between
its wake-ups), each deposit's time, and a probe query every `probe_every` deposits. Then
the store is queried (p50/p99/recall@10, the expiry check alone and the benchmark's domain
filter, each timed after one untimed pass over the same queries), then `optimize()` is called
and it is queried again, and a store bulk-loaded with the same points (one build at the end,
as the benchmark loads) is queried as the reference: `p99_ratio_bulk_*` is the target (<= 1.5).
`build_cpu_s_*` is the process's CPU time during each build (the GIL leaves it almost all to
the build): on a shared machine a steadier measure of a build's work than its wall time.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.router import OutcomeRouter
from ..stores.options import DEFAULT
from ..stores.qdrant_edge import QdrantEdgeStore
from . import data
from .edge_tools import Ticker, latency_row, load_store, machine, time_queries, vector_set
from .latency import K

VECTOR_KINDS = ("clustered", "random", "real")


def clustered_set(n: int, queries: int, seed: int = 0) -> data.VectorSet:
    """Points near 2,000 random centres (noise 0.03 a dimension), queries near stored points:
    the structured synthetic set the committed autoindex runs used."""
    rng = np.random.default_rng([seed, 40])
    centres = data.unit_rows(rng.standard_normal((2000, 384), dtype=np.float32))
    vectors = data.unit_rows(centres[rng.integers(0, 2000, n)] + 0.03 * rng.standard_normal((n, 384), dtype=np.float32))
    asked = data.unit_rows(vectors[rng.integers(0, n, queries)] + 0.03 * rng.standard_normal(
        (queries, 384), dtype=np.float32))
    return data.VectorSet("clustered", vectors, asked, [f"clustered point {i}" for i in range(n)],
                          [f"clustered query {j}" for j in range(queries)])


class LookupEmbedder:
    """Hands the router the benchmark's own vector of each packet text (so a deposit goes the
    router's whole way without a model)."""

    name = "lookup"

    def __init__(self, texts: Sequence[str], vectors: np.ndarray):
        self.dim = vectors.shape[1]
        self._rows = {text: i for i, text in enumerate(texts)}
        self._vectors = vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectors[[self._rows[t] for t in texts]]


def _query_rows(store, vset: data.VectorSet, points: data.Points, filters: dict, label: str, texts=None) -> dict:
    row = {}
    for name, flts in filters.items():
        # a whole untimed pass first: the first queries after a build find its files cold
        seconds, found = time_queries(store, vset, flts, range(len(flts)), texts=texts, warmup=len(flts))
        recall = data.recall_at_k(found, vset.vectors, vset.queries, data.filter_masks(points, flts), K)
        row.update(latency_row(f"{label}_{name}", seconds, recall))
    return row


def autoindex(n: int, probe_every: int = 100, queries: int = 500, seed: int = 0, progress: bool = False,
              index_threshold: int | None = None, max_segment_points=DEFAULT, vectors: str = "clustered",
              gitbugs_path=None, reference: bool = True, hybrid: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, raw) of N single router deposits into a qdrant-edge store that indexes by itself.
    index_threshold: the store's (None: its default); max_segment_points: the store's (None: the
    engine's own limit, DEFAULT: the store's default for a dense or a hybrid store); hybrid: a
    hybrid store and hybrid queries.
    summary: one row (the module docstring says what); raw: one row per deposit, its time, and
    for a deposit during which a build started, how long the build took and the segments after."""
    from tqdm.auto import tqdm

    if vectors not in VECTOR_KINDS:
        raise ValueError(f"vectors must be one of {', '.join(VECTOR_KINDS)}, got {vectors!r}")
    vset = clustered_set(n, queries, seed) if vectors == "clustered" else vector_set(
        vectors, n, queries, seed, gitbugs_path, progress)
    points = data.make_points(vset.texts, seed)
    options = {"hybrid": hybrid, "max_segment_points": max_segment_points}
    if index_threshold is not None:
        options["index_threshold"] = index_threshold
    store = QdrantEdgeStore(dim=vset.vectors.shape[1], **options)
    texts = vset.query_texts if hybrid else None
    router = OutcomeRouter(store, LookupEmbedder([p.problem_description for p in points.packets], vset.vectors))
    rng = np.random.default_rng([seed, 41])
    probe_flt = data.make_filters(1, False)[0]
    started, deposit_s, probe_s = np.empty(n), np.empty(n), []
    filters = {"expiry": data.make_filters(queries, False, seed), "domain": data.make_filters(queries, True, seed)}
    try:
        with Ticker() as ticker:
            for i in tqdm(range(n), desc="single deposits", disable=not progress, mininterval=5):
                started[i] = time.perf_counter()
                router.deposit(points.packets[i])
                deposit_s[i] = time.perf_counter() - started[i]
                if i % probe_every == probe_every - 1:
                    start = time.perf_counter()
                    j = int(rng.integers(0, i + 1))
                    store.query(vset.vectors[j], K, probe_flt, text=vset.texts[j] if hybrid else None)
                    probe_s.append(time.perf_counter() - start)
            store.wait_for_index()
        builds = list(store.builds)
        info = store.info()
        auto = _query_rows(store, vset, points, filters, "auto", texts)
        start = time.perf_counter()
        store.optimize()
        optimize_s = time.perf_counter() - start
        optimized = _query_rows(store, vset, points, filters, "optimized", texts)
        segments_optimized = store.info()["segments"]
    finally:
        router.close()
    bulk = _bulk_reference(vset, points, filters, options, texts) if reference else {}
    seconds = np.array([b["seconds"] for b in builds]) if builds else np.zeros(0)
    cpu = np.array([b["cpu_seconds"] for b in builds]) if builds else np.zeros(0)
    summary = {
        "n": n, "vectors": vectors, "hybrid": hybrid, "index_threshold": store.index_threshold,
        "max_segment_points": store.max_segment_points, "builds": len(builds),
        "build_s_total": seconds.sum(), "build_s_max": seconds.max(initial=0.0),
        "build_s_p50": float(np.median(seconds)) if len(seconds) else 0.0, "build_cpu_s_total": cpu.sum(),
        "build_cpu_s_max": cpu.max(initial=0.0), **ticker.summary(),
        "deposit_p50_ms": np.percentile(deposit_s, 50) * 1e3, "deposit_p99_ms": np.percentile(deposit_s, 99) * 1e3,
        "deposit_max_ms": deposit_s.max() * 1e3,
        **(latency_row("probe", np.array(probe_s)) if probe_s else {}),
        "indexed_before_optimize": info["indexed_vectors"], "segments_before_optimize": info["segments"],
        **auto, "optimize_s": optimize_s, "segments_after_optimize": segments_optimized, **optimized, **bulk}
    # the names the first version of this benchmark wrote (notebook 04 reads them): the expiry check alone
    summary.update({"query_p50_ms_auto": auto["auto_expiry_p50_ms"], "query_p99_ms_auto": auto["auto_expiry_p99_ms"],
                    "query_p50_ms_optimized": optimized["optimized_expiry_p50_ms"],
                    "query_p99_ms_optimized": optimized["optimized_expiry_p99_ms"],
                    "p99_ratio": auto["auto_expiry_p99_ms"] / optimized["optimized_expiry_p99_ms"]})
    for name in filters if reference else ():
        summary[f"p99_ratio_bulk_{name}"] = auto[f"auto_{name}_p99_ms"] / bulk[f"bulk_{name}_p99_ms"]
    raw = pd.DataFrame({"deposit": np.arange(1, n + 1), "deposit_ms": deposit_s * 1e3})
    if builds:  # each build at the deposit under way (or last begun) when it started; two there are summed
        at = np.maximum(np.searchsorted(started, [b["started"] for b in builds], side="right") - 1, 0)
        table = pd.DataFrame({"at": at, "builds_started": 1, "build_s": seconds, "build_cpu_s": cpu,
                              "build_segments": [b["segments"] for b in builds]})
        raw = raw.join(table.groupby("at").agg({"builds_started": "sum", "build_s": "sum", "build_cpu_s": "sum",
                                                 "build_segments": "last"}))
    else:
        raw = raw.assign(builds_started=np.nan, build_s=np.nan, build_cpu_s=np.nan, build_segments=np.nan)
    return (pd.DataFrame([{**summary, **machine()}]),
            raw.assign(index_threshold=store.index_threshold, max_segment_points=store.max_segment_points))


def _bulk_reference(vset: data.VectorSet, points: data.Points, filters: dict, options: dict, texts) -> dict:
    """The same points bulk-loaded (builds held, one at the end) into a store with the same options."""
    with QdrantEdgeStore(dim=vset.vectors.shape[1], **options) as store:
        load_store(store, vset, points)
        start = time.perf_counter()
        store.after_bulk_load()
        row = {"bulk_index_s": time.perf_counter() - start, "bulk_segments": store.info()["segments"]}
        row.update(_query_rows(store, vset, points, filters, "bulk", texts))
    return row


def autoindex_sweep(n: int, max_segments: Sequence[int | None], thresholds: Sequence[int | None] = (None,),
                    **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`autoindex` once per index_threshold (None: the store's) and max_segment_points (None: the
    engine's own limit, DEFAULT: the store's)."""
    runs = [autoindex(n, index_threshold=t, max_segment_points=m, **options) for t in thresholds for m in max_segments]
    return (pd.concat([s for s, _ in runs], ignore_index=True), pd.concat([r for _, r in runs], ignore_index=True))
