"""Query latency and recall of every store, against N, in one run.

    table = run(["memory", "qdrant-edge"], sizes=[1000, 10000], vectors=["real"])

For each vector set ("real": MiniLM embeddings of GitBugs report texts; "random": unit
Gaussian vectors; see `qis_lib.bench.data`), each size N and each target, a fresh store
is loaded and measured:

- deposit: bulk `transport.upsert` in batches of `BATCH` with the vectors given
  (`deposit_per_s`: the store's write rate; embedding is measured apart), then the
  index build where the store has an explicit one (`index_s`: qdrant-edge `optimize()`;
  a Qdrant server's background indexing is waited for);
- query, unfiltered and filtered, after `warmup` untimed queries, over `queries` timed
  ones; three calls per query, taking turns in blocks of `BLOCK` queries so that a burst
  of load from elsewhere hits all three alike:
  - `p50_ms` / `p95_ms` / `p99_ms`: `transport.query(vector, k, QueryFilter)`, qis_lib's
    store call with the vector given (no embedding);
  - `router_p*_ms`: `OutcomeRouter.query(text, ...)` with an embedder whose cache already
    holds every query text (embedding costs a cache hit, as for a repeated question);
  - `raw_p*_ms`: the backend's own client call with its native request built before
    timing (`qis_lib.bench.raw`); for memory, exact numpy on the same matrix;
  - `transport_overhead` = p99_ms / raw_p99_ms and `router_overhead` = router_p99_ms /
    raw_p99_ms: 1.2 means qis_lib adds 20% to the backend's p99;
- `numpy_p50_ms` / `numpy_p99_ms`: exact numpy search of the same matrix and filter
  (the floor), timed once per (vectors, N, filtered);
- `recall_at_10`: mean over the timed queries of the share of the exact top 10 (same
  vectors, same filter) that `transport.query` returned; `recall_min` the worst query;
- single deposit: `OutcomeRouter.deposit(packet)` one packet at a time (cache-hit
  embedding), after the queries so the new points do not change what was queried.

Embedding cost (one text alone, and batched) is measured once per run with the text
cache off (`embed_single_p50_ms`, `embed_batch_per_s`): add it to a deposit or a new
question. Absolute times move with the load on the machine (`load_1min` per row);
ratios measured in one run are the result.
"""
from __future__ import annotations

import contextlib
import os
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
from .timing import summarise, time_calls
from . import data
from .plots import finish, panel_title, panels
from .raw import numpy_query_fn
from ..stores.options import INDEX_OPTIONS

BATCH = 1000  # points per bulk upsert
BLOCK = 100  # queries per turn when the three calls take turns
K = 10
PACKAGES = ("numpy", "pandas", "chromadb", "qdrant-client", "qdrant-edge-py", "onnxruntime")


@dataclass(frozen=True)
class Target:
    """One way of running a store, from a registry mode that names a benchmark target."""

    name: str  # the target's name on the command line
    transport: str  # the store's make_router name
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


@contextlib.contextmanager
def opened(target: Target, dim: int) -> Iterator[Store]:
    """A fresh, empty store for `target`; closed and removed afterwards."""
    spec, mode = all_modes()[target.mode_name]
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qis-bench-")))
        ctx = ModeContext(folder, stack, collection=f"bench-{uuid.uuid4().hex[:8]}")
        store = open_store(spec.name, dim=dim, **mode.options(ctx))
        stack.callback(store.close)
        if mode.cleanup is not None:  # runs before close (last in, first out)
            stack.callback(mode.cleanup, store)
        yield store


def build_index(store: Store) -> float:
    """Seconds the store's post-load hook takes (0 where the index is built on write)."""
    start = time.perf_counter()
    store.after_bulk_load()
    return time.perf_counter() - start


def take_turns(fns: dict[str, Callable[[int], object]], timed: Sequence[int], warmup: Sequence[int],
               block: int = BLOCK, progress=None) -> dict[str, np.ndarray]:
    """Seconds per call of each fn over `timed` inputs, after each ran the `warmup` inputs untimed.
    The fns take turns in blocks of `block` inputs, the order rotated every block."""
    for fn in fns.values():
        for i in warmup:
            fn(i)
    names = list(fns)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for b, start in enumerate(range(0, len(timed), block)):
        chunk = list(timed[start:start + block])
        shift = b % len(names)
        for name in names[shift:] + names[:shift]:
            parts[name].append(time_calls(fns[name], chunk, warmup=0))
        if progress is not None:
            progress.update(len(chunk))
    return {name: np.concatenate(p) for name, p in parts.items()}


def percentiles(prefix: str, times: np.ndarray | None) -> dict[str, float]:
    """p50/p95/p99 in ms under `prefix`; NaN where nothing was timed (a store with no native call)."""
    keys = ("p50_ms", "p95_ms", "p99_ms")
    if times is None:
        return {f"{prefix}{key}": float("nan") for key in keys}
    summary = summarise(times, "ms")
    return {f"{prefix}{key}": summary[key] for key in keys}


def measure_target(target: Target, vset: data.VectorSet, points: data.Points, filters: dict[bool, list],
                   masks: dict[bool, list], floors: dict[bool, dict], warmup: int, queries: int, k: int = K,
                   single_deposits: int = 200, progress: bool = False, raw: list | None = None) -> list[dict]:
    """Rows (unfiltered, filtered) for one target on one vector set of one size. If `raw` is a
    list, one DataFrame per filter setting is appended to it: every timed query's three
    latencies and its recall."""
    from tqdm.auto import tqdm

    n, dim = vset.n, vset.vectors.shape[1]
    ids = [p.packet_id for p in points.packets]
    payloads = stored_payloads(points)
    row_of = {p.agent_id: i for i, p in enumerate(points.packets)}
    warm, timed = range(warmup), range(warmup, warmup + queries)
    rows = []
    load_before = os.getloadavg()[0]
    with opened(target, dim) as store:
        store.before_bulk_load()
        start = time.perf_counter()
        for s in tqdm(range(0, n, BATCH), desc=f"{target.name} n={n} {vset.name}: deposit", unit="batch",
                      disable=not progress, leave=False):
            store.upsert(ids[s:s + BATCH], vset.vectors[s:s + BATCH], payloads[s:s + BATCH])
        load_s = time.perf_counter() - start
        index_s = build_index(store)
        if store.count() != n:
            raise RuntimeError(f"{target.name} holds {store.count()} points after loading {n}")
        router = OutcomeRouter(store, CachedEmbedder(texts=vset.query_texts, vectors=vset.queries, strict=True,
                                                     name="cache-hit"))
        for filtered in (False, True):
            flts = filters[filtered]
            found: list = [None] * len(flts)

            def through_transport(j, flts=flts, found=found):
                found[j] = store.query(vset.queries[j], k, flts[j])

            def through_router(j, flts=flts):
                f = flts[j]
                router.query(vset.query_texts[j], top_k=k, domain=f.domain, min_confidence=f.min_confidence, now=f.now)

            native = store.native_query_fn(vset.queries, flts, k)
            fns = {"transport": through_transport, "router": through_router}
            if native is not None:
                fns["raw"] = native
            with tqdm(total=queries, desc=f"{target.name} n={n} {vset.name} filtered={filtered}", unit="query",
                      disable=not progress, leave=False) as bar:
                times = take_turns(fns, timed, warm, progress=bar)
            found_rows = [[row_of[payload["agent_id"]] for payload, _ in found[j]] for j in timed]
            recall = data.recall_at_k(found_rows, vset.vectors, vset.queries[warmup:],
                                      masks[filtered][warmup:], k)
            row = {"transport": target.transport, "target": target.name, "mode": target.mode, "vectors": vset.name,
                   "n": n, "filtered": filtered,
                   "pass_share": float(np.mean([m.mean() for m in masks[filtered][warmup:]])),
                   **percentiles("", times["transport"]), **percentiles("raw_", times.get("raw")),
                   **percentiles("router_", times["router"]), **floors[filtered],
                   "recall_at_10": float(recall.mean()), "recall_min": float(recall.min()),
                   **{k: getattr(getattr(store, "options", None), k, None) for k in INDEX_OPTIONS}}
            row["transport_overhead"] = row["p99_ms"] / row["raw_p99_ms"]
            row["router_overhead"] = row["router_p99_ms"] / row["raw_p99_ms"]
            rows.append(row)
            if raw is not None:
                raw.append(pd.DataFrame({"target": target.name, "vectors": vset.name, "n": n, "filtered": filtered,
                                         "query": np.asarray(timed), "ms": times["transport"] * 1e3,
                                         "router_ms": times["router"] * 1e3,
                                         "raw_ms": times["raw"] * 1e3 if "raw" in times else np.nan,
                                         "recall": recall}))
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
        raise ValueError(f"unknown transport(s) {unknown}; choose from {', '.join(known)}")
    missing = [f"{n}: {known[n].unavailable()}" for n in names if known[n].unavailable()]
    if missing:
        raise ValueError("; ".join(missing))
    return [known[n] for n in names]


def run(targets: Sequence[str] = ("memory", "qdrant-edge"), sizes: Sequence[int] = (1000,),
        vectors: Sequence[str] = ("real",), queries: int = 1000, warmup: int = 100, k: int = K, seed: int = 0,
        single_deposits: int = 200, embedder=None, gitbugs_path=None, cache=None, progress: bool = False,
        skipped: list | None = None, caps: dict[str, int | None] | None = None,
        on_rows: Callable[[pd.DataFrame], object] | None = None, raw: list | None = None) -> pd.DataFrame:
    """The query table: one row per (target, vectors, n, filtered). Sizes over a target's
    cap (`Target.max_n`, or `caps[name]`; None: no cap) are skipped and, if `skipped` is
    a list, noted in it with the reason. `on_rows(table so far)` is called after each
    target at each size, so a long run that is stopped keeps what it finished. `raw`: a list
    that receives every timed query's latencies and recall (see `measure_target`)."""
    chosen = check_targets(list(targets))
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
                rows += measure_target(target, vset, points, filters, masks, floors, warmup, queries, k,
                                       single_deposits, progress, raw)
                if on_rows is not None:
                    on_rows(pd.DataFrame(rows).assign(**extra))
    return pd.DataFrame(rows).assign(**extra)


def plot_latency_vs_n(table: pd.DataFrame, path: str | os.PathLike | None = None, column: str = "p99_ms"):
    """Latency against N, log-log: one line per target, the exact numpy floor dashed, one
    panel per (vector set, filtered). Guide lines show the slope of O(N) and O(log N)."""
    import matplotlib.pyplot as plt

    fig, axes, cells = panels(table, 4.2, sharex=True)
    colours = dict(zip(targets(), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, vectors, filtered, part in cells:
        for target, rows in part.groupby("target", sort=False):
            rows = rows.sort_values("n")
            ax.plot(rows["n"], rows[column], "o-", color=colours.get(target), label=target)
        floor = part.drop_duplicates("n").sort_values("n")
        floor_column = "numpy_p50_ms" if "p50" in column else "numpy_p99_ms"
        ax.plot(floor["n"], floor[floor_column], "k--", label="exact numpy floor")
        if len(floor) > 1:  # slope guides anchored at the floor's smallest N
            n0, y0 = float(floor["n"].iloc[0]), float(floor[floor_column].iloc[0])
            ns = np.array(sorted(floor["n"]), dtype=float)
            ax.plot(ns, y0 * ns / n0, ":", color="grey", lw=1, label="∝ N")
            ax.plot(ns, y0 * np.log(ns) / np.log(n0), "-.", color="grey", lw=1, label="∝ log N")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{y:g}"))
        ax.set_ylabel(f"{column.replace('_ms', '')} query latency (ms)")
    handles, labels = [], []
    for ax in axes.flat:  # every target, even one that ran in only some panels
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    return finish(fig, axes, handles, labels, path)


def plot_recall_vs_latency(table: pd.DataFrame, path: str | os.PathLike | None = None):
    """recall@10 against p99 latency, one marker per (target, N), one panel per filter setting."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), squeeze=False, sharey=True)
    colours = dict(zip(targets(), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    markers = {"real": "o", "random": "x"}
    for c, filtered in enumerate((False, True)):
        ax = axes[0][c]
        part = table[table["filtered"] == filtered]
        for (target, vectors), rows in part.groupby(["target", "vectors"], sort=False):
            ax.scatter(rows["p99_ms"], rows["recall_at_10"], color=colours.get(target),
                       marker=markers.get(vectors, "o"), label=f"{target} ({vectors})")
            for _, row in rows.iterrows():
                ax.annotate(f"{row['n'] / 1000:g}k", (row["p99_ms"], row["recall_at_10"]), fontsize=7,
                            xytext=(3, -9), textcoords="offset points")
        ax.axhline(0.99, color="grey", ls=":", lw=1, label="target 0.99")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_ylim(min(0.98, float(table["recall_at_10"].min()) - 0.03), 1.01)
        ax.set_xlabel("p99 query latency (ms), transport.query with the vector given")
        ax.set_title(panel_title(filtered))
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("recall@10 vs exact search (same filter)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    more = axes[0][1].get_legend_handles_labels()
    for h, label in zip(*more):
        if label not in labels:
            handles.append(h)
            labels.append(label)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
