"""Qdrant's production options, measured: the recall-latency frontier, indexing without being
asked, throughput with several client threads, graph links, and the filtered-query planner.

    python -m qis_lib.bench.production frontier --sizes 10000 --vectors random --out results/production/
    python -m qis_lib.bench.production autoindex --n 100000 --max-segment 10000,20000,none --out results/production/
    python -m qis_lib.bench.production throughput --n 100000 --threads 1,2,4 --out results/production/
    python -m qis_lib.bench.production links --n 100000 --vectors random --out results/production/links/
    python -m qis_lib.bench.production planner --n 100000 --vectors real --out results/production/planner/

- `frontier` (the ann-benchmarks picture): for each quantization, one qdrant-edge store is
  loaded and indexed (`index_s`, the RAM the process gained `ram_mb`, the folder's size
  `disk_mb`), then every `hnsw_ef` is timed on the same queries, unfiltered and filtered; the
  memory store (exact) is the reference. `frontier.csv` has the summary columns of
  `python -m qis_lib.bench` (store, n, filtered, p50_ms, p95_ms, p99_ms, recall_at_10,
  raw_p99_ms) plus one per option; `frontier_raw.csv.gz` keeps every query's latency and
  recall, so a new metric needs no rerun.
- `autoindex` (`builds.py`): N single router deposits into a qdrant-edge store that builds its
  index by itself, once per `--max-segment` value: the longest stall behind a build (a thread
  ticking every 5 ms, each deposit, a probe query every 100 deposits), the builds, the segments,
  then query p50/p99/recall after the deposits, after `optimize()`, and on the same points
  bulk-loaded (`p99_ratio_bulk_*`, the target <= 1.5). `autoindex.csv`, one row per value;
  `autoindex_raw.csv.gz`, every deposit's time and each build where it started.
- `throughput`: queries per second of one default qdrant-edge store with 1, 2 and 4 client
  threads sharing it.
- `links`: which payload fields get HNSW links of their own (`LINK_CHOICES`: all four filter
  fields, domain_tags only as the stores do, none): per choice one default qdrant-edge store,
  its build time, and p50/p99/recall@10 under three filters: the expiry check alone, the
  benchmark's domain filter (one domain, confidence >= 0.5; about 4.5% pass), and confidence
  >= 0.95 without a domain (about 4.5% pass, a filter the domain's links do not help).
- `planner` (`planner.py`): how a filtered query is answered: per planner config one hybrid
  store, ACORN off and on, dense and hybrid queries, p50/p99/recall@10 per filter kind, and
  what the `confidence >= 0` condition the stores no longer send used to cost.

Every row carries the machine's core count and load average: on a shared machine compare
ratios within one run, not absolute times across runs.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..stores import QueryFilter
from ..stores.memory import MemoryStore
from ..stores.options import DEFAULT, FILTER_FIELDS, HNSW_LINKED_FIELDS, QUANTIZATIONS
from ..stores.qdrant_edge import QdrantEdgeStore
from ..stores.qdrant_edge_params import edge_payload_indexes
from . import data
from .builds import VECTOR_KINDS, autoindex, autoindex_sweep  # noqa: F401 (python -m ... autoindex)
from .edge_tools import folder_mb, load_store, machine, rss_mb, time_queries, vector_set, write  # noqa: F401
from .latency import K
from .planner import planner

HNSW_EFS = (16, 32, 64, 128, 256, 512)


def frontier(sizes: Sequence[int], vectors: Sequence[str], quantizations: Sequence[str | None] = (None, "int8"),
             hnsw_efs: Sequence[int] = HNSW_EFS, queries: int = 500, seed: int = 0, gitbugs_path=None,
             progress: bool = False, index_threshold: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, raw): one summary row per (vectors, n, quantization, hnsw_ef, filtered).
    `index_threshold`: the qdrant-edge store's (None: its default); below it no graph is built."""
    from tqdm.auto import tqdm

    summary, raw = [], []
    timed = range(queries)
    for vname in vectors:
        full = vector_set(vname, max(sizes), queries, seed, gitbugs_path, progress)
        all_points = data.make_points(full.texts, seed)
        filters = {f: data.make_filters(queries, f, seed) for f in (False, True)}
        for n in sorted(sizes):
            vset = full.head(n)
            points = data.Points(all_points.packets[:n], all_points.domain[:n], all_points.confidence[:n],
                                 all_points.expires_at[:n])
            masks = {f: data.filter_masks(points, filters[f]) for f in (False, True)}
            configs = [("memory", None)] + [("qdrant-edge", q) for q in quantizations]
            for store_name, quant in tqdm(configs, desc=f"{vname} n={n}", disable=not progress):
                before = rss_mb()
                if store_name == "memory":
                    store = MemoryStore(dim=vset.vectors.shape[1])
                else:
                    extra = {} if index_threshold is None else {"index_threshold": index_threshold}
                    store = QdrantEdgeStore(dim=vset.vectors.shape[1], quantization=quant, **extra)
                try:
                    load_s = load_store(store, vset, points, progress)
                    start = time.perf_counter()
                    store.after_bulk_load()
                    index_s = time.perf_counter() - start
                    ram = rss_mb() - before
                    disk = folder_mb(store.path) if store_name != "memory" else float("nan")
                    efs = [None] if store_name == "memory" else list(hnsw_efs)
                    for ef in efs:
                        if ef is not None:
                            store.set_hnsw_ef(ef)
                        for filtered in (False, True):
                            seconds, rows = time_queries(store, vset, filters[filtered], timed)
                            recall = data.recall_at_k(rows, vset.vectors, vset.queries, masks[filtered], K)
                            ms = seconds * 1e3
                            summary.append({
                                "store": store_name, "vectors": vname, "n": n, "filtered": filtered,
                                "quantization": quant or "none", "hnsw_ef": ef, "m": getattr(store, "options", None)
                                and store.options.m, "ef_construct": getattr(store, "options", None)
                                and store.options.ef_construct,
                                "indexed": getattr(getattr(store, "shard", None), "info", lambda: None)() and
                                store.shard.info().indexed_vectors_count,
                                "p50_ms": np.percentile(ms, 50), "p95_ms": np.percentile(ms, 95),
                                "p99_ms": np.percentile(ms, 99), "recall_at_10": recall.mean(),
                                "recall_min": recall.min(), "raw_p99_ms": float("nan"), "load_s": load_s,
                                "index_s": index_s, "ram_mb": ram, "disk_mb": disk, "queries": queries, **machine()})
                            raw.append(pd.DataFrame({"store": store_name, "vectors": vname, "n": n,
                                                     "filtered": filtered, "quantization": quant or "none",
                                                     "hnsw_ef": ef, "query": np.asarray(timed), "ms": ms,
                                                     "recall": recall}))
                finally:
                    store.close()
    return pd.DataFrame(summary), pd.concat(raw, ignore_index=True)


def throughput(n: int, threads: Sequence[int] = (1, 2, 4), seconds: float = 10.0, seed: int = 0,
               progress: bool = False) -> pd.DataFrame:
    """Queries per second of one default qdrant-edge store (random vectors, filtered queries) per thread count."""
    vset = data.random_set(n, 1000, seed=seed)
    points = data.make_points(vset.texts, seed)
    flts = data.make_filters(1000, True, seed)
    rows = []
    with QdrantEdgeStore(dim=384) as store:
        load_store(store, vset, points, progress)
        store.after_bulk_load()
        for t in threads:
            done = [0] * t
            stop = threading.Event()

            def work(w):
                j = w
                while not stop.is_set():
                    store.query(vset.queries[j % 1000], K, flts[j % 1000])
                    done[w] += 1
                    j += t

            workers = [threading.Thread(target=work, args=(w,)) for w in range(t)]
            start = time.perf_counter()
            for w in workers:
                w.start()
            time.sleep(seconds)
            stop.set()
            for w in workers:
                w.join()
            elapsed = time.perf_counter() - start
            rows.append({"n": n, "threads": t, "queries": sum(done), "seconds": elapsed,
                         "queries_per_s": sum(done) / elapsed, **machine()})
    return pd.DataFrame(rows)


LINK_CHOICES = {"all": tuple(FILTER_FIELDS), "domain": HNSW_LINKED_FIELDS, "none": ()}


def link_filters(queries: int, seed: int) -> dict[str, list[QueryFilter]]:
    return {"expiry only": data.make_filters(queries, False, seed), "domain": data.make_filters(queries, True, seed),
            "confidence >= 0.95": [QueryFilter(now=data.NOW, min_confidence=0.95)] * queries}


def payload_links(n: int, vectors: str = "random", queries: int = 300, seed: int = 0, gitbugs_path=None,
                  choices: Sequence[str] = tuple(LINK_CHOICES), progress: bool = False) -> pd.DataFrame:
    """One row per (choice of HNSW-linked payload fields, filter): build time, latency, recall."""
    import qdrant_edge as qe

    vset = vector_set(vectors, n, queries, seed, gitbugs_path, progress)
    points = data.make_points(vset.texts, seed)
    filters = link_filters(queries, seed)
    masks = {name: data.filter_masks(points, flts) for name, flts in filters.items()}
    rows = []
    for choice in choices:
        store = QdrantEdgeStore(dim=vset.vectors.shape[1], payload_index=False)
        try:
            for field, params in edge_payload_indexes(LINK_CHOICES[choice]).items():
                store.shard.update(qe.UpdateOperation.create_field_index(field, params))
            load_s = load_store(store, vset, points, progress)
            start = time.perf_counter()
            store.after_bulk_load()
            index_s = time.perf_counter() - start
            for name, flts in filters.items():
                seconds, found = time_queries(store, vset, flts, range(queries))
                recall = data.recall_at_k(found, vset.vectors, vset.queries, masks[name], K)
                rows.append({"store": "qdrant-edge", "vectors": vectors, "n": n, "linked": choice,
                             "linked_fields": " ".join(LINK_CHOICES[choice]) or "-", "filter": name,
                             "pass_share": float(np.mean([m.mean() for m in masks[name]])),
                             "p50_ms": np.percentile(seconds, 50) * 1e3, "p99_ms": np.percentile(seconds, 99) * 1e3,
                             "recall_at_10": recall.mean(), "recall_min": recall.min(), "load_s": load_s,
                             "index_s": index_s, "queries": queries, **store.options.as_dict(), **machine()})
        finally:
            store.close()
    return pd.DataFrame(rows)


def points_or_none(text: str) -> list:
    """An argparse type: comma-separated positive ints or "none" (the engine's own limit)."""
    import argparse

    values = []
    for part in filter(None, (t.strip() for t in text.split(","))):
        if part.lower() == "none":
            values.append(None)
        elif part.isdigit() and int(part) >= 1:
            values.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"expected comma-separated positive integers or none, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers or none, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None):
    import argparse
    import shlex
    import sys

    from .__main__ import count, positive_ints

    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m qis_lib.bench.production", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("frontier", "autoindex", "throughput", "links", "planner"))
    p.add_argument("--sizes", type=positive_ints, default=[10_000], help="frontier: N values (default 10000)")
    p.add_argument("--vectors", default=None, help="frontier: real, random or real,random; links, planner: real or "
                   "random (default random); autoindex: clustered, random or real (default clustered)")
    p.add_argument("--quantizations", default="none,int8", help=f"frontier: from none,{','.join(QUANTIZATIONS)}")
    p.add_argument("--hnsw-ef", type=positive_ints, default=list(HNSW_EFS), help="frontier: hnsw_ef values")
    p.add_argument("--queries", type=count(1), default=500)
    p.add_argument("--n", type=count(1), default=100_000, help="autoindex/throughput/links: N (default 100000)")
    p.add_argument("--threads", type=positive_ints, default=[1, 2, 4])
    p.add_argument("--max-segment", type=points_or_none, default=[DEFAULT],
                   help="autoindex: max_segment_points values, none for the engine's own (default: the store's)")
    p.add_argument("--index-threshold", type=positive_ints, default=[None],
                   help="autoindex: index_threshold values (default: the store's)")
    p.add_argument("--hybrid", action="store_true", help="autoindex: a hybrid store and hybrid queries")
    p.add_argument("--gitbugs", default=None)
    p.add_argument("--out", default="results/production")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    command = shlex.join(["python", "-m", "qis_lib.bench.production", *argv])
    out, progress = Path(args.out), not args.no_progress
    vectors = args.vectors or ("clustered" if args.what == "autoindex" else "random")
    if args.what in ("links", "planner") and vectors not in data.VECTOR_SETS:
        p.error(f"{args.what} takes one vector set, real or random, got {vectors!r}")
    if args.what == "autoindex" and vectors not in VECTOR_KINDS:
        p.error(f"autoindex takes one vector set, {' or '.join(VECTOR_KINDS)}, got {vectors!r}")
    if args.what == "frontier":
        quants = [None if q == "none" else q for q in args.quantizations.split(",")]
        summary, raw = frontier(args.sizes, vectors.split(","), quants, args.hnsw_ef, args.queries,
                                gitbugs_path=args.gitbugs, progress=progress)
        write(out, "frontier.csv", summary, command)
        raw.to_csv(out / "frontier_raw.csv.gz", index=False)
        print(summary[["store", "vectors", "n", "filtered", "quantization", "hnsw_ef", "p50_ms", "p99_ms",
                       "recall_at_10", "index_s", "ram_mb", "disk_mb"]].round(3).to_string(index=False))
    elif args.what == "autoindex":
        summary, raw = autoindex_sweep(args.n, args.max_segment, args.index_threshold, queries=args.queries,
                                       progress=progress, vectors=vectors, hybrid=args.hybrid,
                                       gitbugs_path=args.gitbugs)
        write(out, "autoindex.csv", summary, command)
        raw.to_csv(out / "autoindex_raw.csv.gz", index=False)
        print(summary.T.to_string())
    elif args.what == "planner":
        table = planner(args.n, vectors, args.queries, gitbugs_path=args.gitbugs, progress=progress)
        write(out, "planner.csv", table, command)
        print(table[["config", "acorn", "filter", "mode", "confidence_sent", "pass_share", "p50_ms", "p99_ms",
                     "recall_at_10"]].round(3).to_string(index=False))
    elif args.what == "links":
        table = payload_links(args.n, vectors, args.queries, gitbugs_path=args.gitbugs, progress=progress)
        write(out, "links.csv", table, command)
        print(table[["linked", "filter", "pass_share", "index_s", "p50_ms", "p99_ms", "recall_at_10"]].round(3)
              .to_string(index=False))
    else:
        table = throughput(args.n, args.threads, progress=progress)
        write(out, "throughput.csv", table, command)
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
