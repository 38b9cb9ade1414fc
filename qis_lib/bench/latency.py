"""Query latency and recall of every store, against N, in one run.

    table = run(["memory", "qdrant-edge"], sizes=[1000, 10000], vectors=["real"])
    print_overhead(table)  # the router's paired per-query overhead, row by row

For each vector set ("real": MiniLM embeddings of GitBugs report texts; "random": unit
Gaussian vectors, with synthetic words for texts; see `qis_lib.bench.data`), each size N, each
target and each configuration, a fresh store is loaded and measured. Configurations
(`config`): the router's default, the store opened as `make_router` opens it ("default
(hybrid)" on a store whose `StoreSpec.hybrid` is set and that opened with BM25, so queries
send their text; "default (dense)" elsewhere), and, on the hybrid stores only, "dense"
(`hybrid=False`). `hybrid` says whether the row's queries were hybrid. Per row:

- deposit: bulk `store.upsert` in batches of `BATCH` with the vectors given
  (`deposit_per_s`: the store's write rate, BM25 encoding included on a hybrid store;
  embedding is measured apart), then the index build where the store has an explicit one
  (`index_s`: qdrant-edge `optimize()`; a Qdrant server's background indexing is waited for);
- query, unfiltered and filtered, after `warmup` untimed queries, over `queries` timed
  ones; three calls per query, back to back, before the next query (`ORDERS`: the
  router and the raw call adjacent, which goes first alternating query by query, the
  store call first or last), so a burst of load from elsewhere hits all three alike:
  - `p50_ms` / `p95_ms` / `p99_ms`: `store.query(vector, k, QueryFilter)` (with
    `text=` the query's text on a hybrid row), qis_lib's store call with the vector given;
  - `router_p*_ms`: `OutcomeRouter.query(text, ...)` over that store, the router
    `make_router` builds, with an embedder whose cache already holds every query text
    (embedding costs a cache hit, as for a repeated question);
  - `raw_p*_ms`: the engine's own call with its request built before timing, the same
    fused request on a hybrid row, and every hit's payload read (`qis_lib.bench.raw`); for
    memory, exact numpy on the same matrix; NaN for a store with no such call;
    `raw_reads_payloads` False where raw.py cannot read a store's payloads;
  - `router_added_us`: the median over queries of (router - raw) for the same query, µs;
    `router_added_ratio`: the median over queries of (router - raw) / raw, so 0.08 means
    the router takes 8% longer than the engine on the median query (the target: <= 0.10,
    `ROUTER_GOAL`; `overhead_summary` and `print_overhead` show it). What the store does per
    query around the engine counts in it: the filter, the request (on a hybrid row, the BM25
    vector of the text too) and, on a hybrid row, each hit's cosine from its returned vector;
  - `store_overhead` = p99_ms / raw_p99_ms and `router_overhead` = router_p99_ms /
    raw_p99_ms: ratios of separately ranked tails, so noisy where the difference is small;
- `numpy_p50_ms` / `numpy_p99_ms`: exact numpy search of the same matrix and filter
  (the floor), timed once per (vectors, N, filtered);
- `dense_overlap_at_10`: mean over the timed queries of the share of the exact dense top 10
  (same vectors, same filter) that `store.query` returned; `dense_overlap_min` the
  worst query. On a dense row that is the index's recall, also given as `recall_at_10`
  and `recall_min`. A hybrid row reorders by fusion with BM25 on purpose, so its overlap
  with exact dense search is a different quantity (how far fusion moved the answer, not
  neighbours lost): its `recall_at_10` and `recall_min` are NaN;
- `rrf_k`, `prefetch`: the fusion's parameters on a hybrid row (else empty), and the
  store's index options (quantization, m, ef_construct, hnsw_ef);
- single deposit: `OutcomeRouter.deposit(packet)` one packet at a time (cache-hit
  embedding), after the queries so the new points do not change what was queried.

Embedding cost (one text alone, and batched) is measured once per run with the text
cache off (`embed_single_p50_ms`, `embed_batch_per_s`): add it to a deposit or a new
question. Absolute times move with the load on the machine (`load_1min` per row);
ratios measured in one run are the result. `raw` (see `run`) receives every timed query:
its three times in ms, `router_first` (whether the router ran before the raw call) and
`recall` (its share of the exact dense top 10), from which every summary column derives.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from ..core.router import OutcomeRouter, router_payload
from ..embedders import CachedEmbedder
from ..stores import Store, all_modes, open_store
from .modes import ModeContext
from ..stores.options import INDEX_OPTIONS
from . import data
from .plots import plot_latency_vs_n, plot_recall_vs_latency  # noqa: F401 (notebook 04 imports them from here)
from .raw import engine_call, numpy_query_fn, reads_payloads
from .timing import paired_difference, summarise, time_calls, time_interleaved

BATCH = 1000  # points per bulk upsert
K = 10
PACKAGES = ("numpy", "pandas", "chromadb", "qdrant-client", "qdrant-edge-py", "onnxruntime")
CONFIGS = ("default", "dense")  # the router's default (as make_router opens the store), and dense only
# Per query t, the calls in the order ORDERS[t % 4]: router and raw adjacent, each first every other query.
ORDERS = (("store", "router", "raw"), ("store", "raw", "router"),
          ("router", "raw", "store"), ("raw", "router", "store"))
ROUTER_GOAL = 0.10  # the router's paired overhead at the median query, as a share of the engine's call


@dataclass(frozen=True)
class Target:
    """One way of running a store, from a registry mode that names a benchmark target."""

    name: str  # the target's name on the command line
    store: str  # the store's make_router name
    mode: str  # what the mode is, in words
    mode_name: str  # the registry mode it runs
    max_n: int | None = None  # larger N are skipped, for the reason below
    why_capped: str = ""

    def unavailable(self) -> str | None:
        """Why this target cannot run here, or None."""
        return all_modes()[self.mode_name][1].needs()


def targets() -> dict[str, Target]:
    """Every benchmark target of every registered store (modes with a `bench` name)."""
    return {mode.bench: Target(mode.bench, spec.name, mode.description or mode.name, mode.name, mode.bench_max_n,
                               mode.bench_why_capped)
            for spec, mode in all_modes().values() if mode.bench}


def stored_payloads(points: data.Points) -> list[dict]:
    """The payloads a router's own deposits store (marked as the router's), so the router's
    query takes the path it takes in use: its own payloads rebuilt without re-validation."""
    return [router_payload(p) for p in points.packets]


def configs_of(target: Target, configs: Sequence[str] = CONFIGS) -> list[str]:
    """The configurations of `configs` that `target` runs: both on a store with a hybrid mode,
    else its default alone (which is dense) if either was asked."""
    if all_modes()[target.mode_name][0].hybrid:
        return [c for c in CONFIGS if c in configs]
    return ["default"] if configs else []


@contextlib.contextmanager
def opened(target: Target, dim: int, config: str = "default") -> Iterator[Store]:
    """A fresh, empty store for `target`, opened as `make_router` opens it ("default": a
    hybrid store's `hybrid=None`, so a new one holds BM25) or dense only ("dense"); closed
    and removed afterwards."""
    spec, mode = all_modes()[target.mode_name]
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {CONFIGS}, got {config!r}")
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qis-bench-")))
        ctx = ModeContext(folder, stack, collection=f"bench-{uuid.uuid4().hex[:8]}")
        options = mode.options(ctx)
        if spec.hybrid:
            options.setdefault("hybrid", None)  # as make_router opens it
            if config == "dense":
                options["hybrid"] = False
        store = open_store(spec.name, dim=dim, **options)
        stack.callback(store.close)
        if mode.cleanup is not None:  # runs before close (last in, first out)
            stack.callback(mode.cleanup, store)
        yield store


def build_index(store: Store) -> float:
    """Seconds the store's post-load hook takes (0 where the index is built on write)."""
    start = time.perf_counter()
    store.after_bulk_load()
    return time.perf_counter() - start


def percentiles(prefix: str, times: np.ndarray | None) -> dict[str, float]:
    """p50/p95/p99 in ms under `prefix`; NaN where nothing was timed (a store with no native call)."""
    summary = {} if times is None else summarise(times, "ms")
    return {f"{prefix}{key}": summary.get(key, float("nan")) for key in ("p50_ms", "p95_ms", "p99_ms")}


def paired(times: dict[str, np.ndarray]) -> dict[str, float]:
    """`router_added_us` and `router_added_ratio` (see the module docstring); NaN with no raw call."""
    if "raw" not in times:
        return {"router_added_us": float("nan"), "router_added_ratio": float("nan")}
    diff = paired_difference(times["router"], times["raw"], "us")
    return {"router_added_us": diff["median_diff_us"], "router_added_ratio": diff["median_ratio"]}


def measure_target(target: Target, vset: data.VectorSet, points: data.Points, filters: dict[bool, list],
                   masks: dict[bool, list], floors: dict[bool, dict], warmup: int, queries: int, k: int = K,
                   single_deposits: int = 200, progress: bool = False, raw: list | None = None,
                   config: str = "default") -> list[dict]:
    """Rows (unfiltered, filtered) for one target in one configuration on one vector set of one
    size. If `raw` is a list, one DataFrame per filter setting is appended to it: every timed
    query's three latencies and its share of the exact dense top 10."""
    from tqdm.auto import tqdm

    n, dim = vset.n, vset.vectors.shape[1]
    ids = [p.packet_id for p in points.packets]
    payloads = stored_payloads(points)
    row_of = {p.agent_id: i for i, p in enumerate(points.packets)}
    warm, timed = range(warmup), range(warmup, warmup + queries)
    rows = []
    load_before = os.getloadavg()[0]
    with opened(target, dim, config) as store:
        store.before_bulk_load()
        start = time.perf_counter()
        for s in tqdm(range(0, n, BATCH), desc=f"{target.name} n={n} {vset.name}: deposit", unit="batch",
                      disable=not progress, leave=False):
            store.upsert(ids[s:s + BATCH], vset.vectors[s:s + BATCH], payloads[s:s + BATCH])
        load_s = time.perf_counter() - start
        index_s = build_index(store)
        if store.count() != n:
            raise RuntimeError(f"{target.name} holds {store.count()} points after loading {n}")
        # hybrid=None, as make_router builds it: the text goes with each query where the store holds BM25
        router = OutcomeRouter(store, CachedEmbedder(texts=vset.query_texts, vectors=vset.queries, strict=True,
                                                     name="cache-hit"))
        hybrid, texts = router.hybrid, vset.query_texts
        label = "dense" if config == "dense" else f"default ({'hybrid' if hybrid else 'dense'})"
        fusion = getattr(store, "hybrid_params", None) if hybrid else None
        for filtered in (False, True):
            flts = filters[filtered]
            found: list = [None] * len(flts)

            def through_store(j, flts=flts, found=found):
                found[j] = (store.query(vset.queries[j], k, flts[j], text=texts[j]) if hybrid
                            else store.query(vset.queries[j], k, flts[j]))

            def through_router(j, flts=flts):
                f = flts[j]
                router.query(texts[j], top_k=k, domain=f.domain, min_confidence=f.min_confidence, now=f.now)

            fns = {"store": through_store, "router": through_router}
            native = engine_call(store, vset.queries, flts, k, texts if hybrid else None, payloads)
            orders = ORDERS
            if native is None:
                orders = tuple(tuple(c for c in order if c != "raw") for order in ORDERS[::2])
            else:
                fns["raw"] = native
            with tqdm(total=queries, desc=f"{target.name} {label} n={n} {vset.name} filtered={filtered}",
                      unit="query", disable=not progress, leave=False) as bar:
                if warmup:
                    time_interleaved(fns, warm, orders)
                times = time_interleaved(fns, timed, orders, progress=bar.update)
            found_rows = [[row_of[payload["agent_id"]] for payload, _ in found[j]] for j in timed]
            overlap = data.recall_at_k(found_rows, vset.vectors, vset.queries[warmup:], masks[filtered][warmup:], k)
            row = {"store": target.store, "target": target.name, "mode": target.mode, "config": label,
                   "hybrid": hybrid, "vectors": vset.name, "n": n, "filtered": filtered,
                   "pass_share": float(np.mean([m.mean() for m in masks[filtered][warmup:]])),
                   **percentiles("", times["store"]), **percentiles("raw_", times.get("raw")),
                   **percentiles("router_", times["router"]), **paired(times), **floors[filtered],
                   "raw_reads_payloads": native is not None and reads_payloads(store),
                   "recall_at_10": float("nan") if hybrid else float(overlap.mean()),
                   "recall_min": float("nan") if hybrid else float(overlap.min()),
                   "dense_overlap_at_10": float(overlap.mean()), "dense_overlap_min": float(overlap.min()),
                   "rrf_k": getattr(fusion, "rrf_k", None), "prefetch": getattr(fusion, "prefetch", None),
                   **{k: getattr(getattr(store, "options", None), k, None) for k in INDEX_OPTIONS}}
            row["store_overhead"] = row["p99_ms"] / row["raw_p99_ms"]
            row["router_overhead"] = row["router_p99_ms"] / row["raw_p99_ms"]
            rows.append(row)
            if raw is not None:
                first = [orders[t % len(orders)] for t in range(queries)]
                raw.append(pd.DataFrame({
                    "target": target.name, "config": label, "vectors": vset.name, "n": n, "filtered": filtered,
                    "query": np.asarray(timed), "ms": times["store"] * 1e3, "router_ms": times["router"] * 1e3,
                    "raw_ms": times["raw"] * 1e3 if "raw" in times else np.nan,
                    "router_first": [o.index("router") < o.index("raw") for o in first] if "raw" in times else None,
                    "recall": overlap}))
        single = np.array([np.nan])
        if single_deposits:
            # New packets, with query texts the embedder holds; the first few are the warm-up.
            fresh = data.make_points(vset.query_texts[:single_deposits + 10], agent_prefix="single-").packets
            for packet in fresh[:10]:
                router.deposit(packet)
            if len(fresh) > 10:
                single = time_calls(router.deposit, fresh[10:], warmup=0)
    for row in rows:
        row.update({"deposit_per_s": n / load_s, "load_s": load_s, "index_s": index_s,
                    "deposit_single_p50_ms": float(np.percentile(single, 50) * 1e3),
                    "deposit_single_p99_ms": float(np.percentile(single, 99) * 1e3),
                    "queries": queries, "warmup": warmup, "k": k, "load_1min": round(load_before, 2)})
    return rows


def floor_times(vset: data.VectorSet, masks: list, warmup: int, queries: int, k: int = K) -> dict[str, float]:
    fn = numpy_query_fn(vset.vectors, masks, vset.queries, k)
    for j in range(warmup):
        fn(j)
    summary = summarise(time_calls(fn, range(warmup, warmup + queries), warmup=0), "ms")
    return {"numpy_p50_ms": summary["p50_ms"], "numpy_p99_ms": summary["p99_ms"]}


def embedding_cost(embedder, texts: Sequence[str], singles: int = 100) -> dict[str, float]:
    """One text alone (p50 over `singles` texts) and batched texts/s, with the text cache off."""
    from .embedding import make_embedder

    name = embedder.name
    backend = "onnx-int8" if name.startswith("onnx") and name.endswith("int8") else name.split(":")[0]
    fresh = make_embedder(backend, cache_size=0)
    texts = list(texts)
    for text in texts[:5]:
        fresh.encode([text])
    single = time_calls(lambda t: fresh.encode([t]), texts[:singles], warmup=0)
    start = time.perf_counter()
    fresh.encode(texts)
    return {"embedder": fresh.name, "embed_single_p50_ms": float(np.percentile(single, 50) * 1e3),
            "embed_batch_per_s": len(texts) / (time.perf_counter() - start)}


def check_targets(names: Sequence[str]) -> list[Target]:
    """The targets named, or a ValueError naming the unknown ones and those that cannot run here."""
    known = targets()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown store target(s) {unknown}; choose from {', '.join(known)}")
    missing = [f"{n}: {known[n].unavailable()}" for n in names if known[n].unavailable()]
    if missing:
        raise ValueError("; ".join(missing))
    return [known[n] for n in names]


def run(targets: Sequence[str] = ("memory", "qdrant-edge"), sizes: Sequence[int] = (1000,),
        vectors: Sequence[str] = ("real",), queries: int = 1000, warmup: int = 100, k: int = K, seed: int = 0,
        single_deposits: int = 200, embedder=None, gitbugs_path=None, cache=None, progress: bool = False,
        skipped: list | None = None, caps: dict[str, int | None] | None = None,
        on_rows: Callable[[pd.DataFrame], object] | None = None, raw: list | None = None,
        configs: Sequence[str] = CONFIGS) -> pd.DataFrame:
    """The query table: one row per (target, config, vectors, n, filtered). `configs`: of
    "default" (the store as `make_router` opens it) and "dense" (a hybrid store opened with
    hybrid=False), which to run (`configs_of`). Sizes over a target's cap (`Target.max_n`,
    or `caps[name]`; None: no cap) are skipped and, if `skipped` is a list, noted in it with
    the reason. `on_rows(table so far)` is called after each target at each size, so a long
    run that is stopped keeps what it finished. `raw`: a list that receives every timed
    query's latencies and recall (see `measure_target`)."""
    chosen = check_targets(list(targets))
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        raise ValueError(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    caps = {t.name: t.max_n for t in chosen} | dict(caps or {})
    sizes = sorted({data.check_count("size", s) for s in sizes})
    bad = [v for v in vectors if v not in data.VECTOR_SETS]
    if bad or not vectors:
        raise ValueError(f"unknown vector set(s) {bad}; choose from {data.VECTOR_SETS}")
    queries, warmup = data.check_count("queries", queries), int(warmup)
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    pool = warmup + queries
    rows, extra = [], {}
    for name in vectors:
        if name == "real":
            from ..embedders import get_embedder

            embedder = get_embedder() if embedder is None else embedder
            full = data.real_set(max(sizes), pool, seed, embedder, gitbugs_path, cache, progress)
            extra = embedding_cost(embedder, full.query_texts[:256]) if hasattr(embedder, "name") and \
                not embedder.name.startswith("hash") else {}
        else:
            full = data.random_set(max(sizes), pool, seed=seed)
        all_points = data.make_points(full.texts, seed)
        filters = {f: data.make_filters(pool, f, seed) for f in (False, True)}
        for n in sizes:
            vset = full.head(n)
            points = data.Points(all_points.packets[:n], all_points.domain[:n], all_points.confidence[:n],
                                 all_points.expires_at[:n])
            masks = {f: data.filter_masks(points, filters[f]) for f in (False, True)}
            floors = {f: floor_times(vset, masks[f], warmup, queries, k) for f in (False, True)}
            for target in chosen:
                if caps.get(target.name) is not None and n > caps[target.name]:
                    if skipped is not None:
                        skipped.append({"target": target.name, "vectors": name, "n": n, "cap": caps[target.name],
                                        "why": target.why_capped if caps[target.name] == target.max_n
                                        else "capped on the command line"})
                    continue
                for config in configs_of(target, configs):
                    rows += measure_target(target, vset, points, filters, masks, floors, warmup, queries, k,
                                           single_deposits, progress, raw, config=config)
                if on_rows is not None:
                    on_rows(pd.DataFrame(rows).assign(**extra))
    return pd.DataFrame(rows).assign(**extra)


OVERHEAD_COLUMNS = ["target", "config", "vectors", "n", "filtered", "raw_p50_ms", "router_p50_ms", "router_added_us",
                    "router_added_ratio"]


def overhead_summary(table: pd.DataFrame, goal: float = ROUTER_GOAL) -> pd.DataFrame:
    """The router's paired overhead per row of a query table: the median per-query difference
    (`router_added_us`) and ratio (`router_added_ratio`, see the module docstring), and `met`:
    the ratio <= `goal`. Rows with no raw call are left out."""
    missing = [c for c in OVERHEAD_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"the table has no {', '.join(missing)}: it predates the paired measurement of the "
                         "router's overhead; run python -m qis_lib.bench again")
    out = table.loc[table["router_added_ratio"].notna(), OVERHEAD_COLUMNS].reset_index(drop=True)
    return out.assign(met=out["router_added_ratio"] <= goal)


def print_overhead(table: pd.DataFrame, goal: float = ROUTER_GOAL, file=None) -> pd.DataFrame:
    """One line per row of `overhead_summary(table, goal)`; returns that summary."""
    summary = overhead_summary(table, goal)
    for r in summary.itertuples():
        print(f"{r.target}, {r.config}, {r.vectors} vectors, N={r.n:,}, {'filtered' if r.filtered else 'unfiltered'}: "
              f"the router adds {r.router_added_us:.0f} µs to the median query, {r.router_added_ratio:.1%} of the "
              f"engine's call (p50 {r.raw_p50_ms:.3f} ms): {'met' if r.met else 'missed'} (goal <= {goal:.0%})",
              file=file if file is not None else sys.stdout)
    return summary
