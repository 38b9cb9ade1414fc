"""What hybrid search costs: dense vs BM25 + dense (RRF) on the same store, same queries.

    python -m qis_lib.bench.hybrid --out results/hybrid/

Packets: GitBugs Hadoop from `load_gitbugs()` defaults (each problem text filled up to the
512-byte packet target), embedded once. For each store (qdrant-edge after `optimize()`,
qdrant-client local mode), a dense store and a hybrid store are loaded with the same
packets (the load time is the write cost: BM25 encoding and the sparse index), then
every query (a packet's own text and vector, its agent excluded, not expired) is timed
as a dense call and as a hybrid call, alternating, so that a change of machine load
hits both alike. Compare the ratio within a row's store, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..embedders import get_embedder
from ..infra.datasets import load_gitbugs
from ..stores import QueryFilter, open_store
from .embedding import machine_info
from .timing import summarise

STORES = ("qdrant-edge", "qdrant")


def load_timed(store, packets, vectors, batch: int = 500) -> float:
    """Seconds to write every packet through the store API (and build the index, for qdrant-edge)."""
    start = time.perf_counter()
    for i in range(0, len(packets), batch):
        chunk = packets[i:i + batch]
        store.upsert([p.packet_id for p in chunk], vectors[i:i + batch], [p.to_payload() for p in chunk])
    store.after_bulk_load()
    return time.perf_counter() - start


def measure(store_name: str, packets, vectors: np.ndarray, queries: int, top_k: int = 10) -> list[dict]:
    """Rows for one store: dense store load, hybrid store load, dense and hybrid query times."""
    now = max(p.timestamp for p in packets) + 1.0
    picks = np.linspace(0, len(packets) - 1, queries).astype(int)
    dense_store = open_store(store_name, dim=vectors.shape[1], hybrid=False)
    hybrid_store = open_store(store_name, dim=vectors.shape[1], hybrid=True)
    try:
        loads = {"dense": load_timed(dense_store, packets, vectors), "hybrid": load_timed(hybrid_store, packets, vectors)}
        times: dict[str, list[float]] = {"dense": [], "hybrid": []}
        calls = {"dense": lambda i, flt: dense_store.query(vectors[i], top_k, flt),
                 "hybrid": lambda i, flt: hybrid_store.query(vectors[i], top_k, flt,
                                                             text=packets[i].problem_description)}
        for turn, i in enumerate(picks):
            flt = QueryFilter(now=now, exclude_agent=packets[i].agent_id)
            order = ("dense", "hybrid") if turn % 2 == 0 else ("hybrid", "dense")
            for name in order:
                start = time.perf_counter()
                calls[name](i, flt)
                times[name].append(time.perf_counter() - start)
    finally:
        dense_store.close()
        hybrid_store.close()
    rows = []
    for name in ("dense", "hybrid"):
        stats = summarise(times[name][3:])  # the first calls warm the caches
        rows.append({"store": store_name, "search": name, "points": len(packets), "queries": stats["n"],
                     "p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"], "mean_ms": stats["mean_ms"],
                     "load_s": loads[name]})
    base = rows[0]
    for row in rows:
        row["p50_x_dense"] = row["p50_ms"] / base["p50_ms"]
        row["p99_x_dense"] = row["p99_ms"] / base["p99_ms"]
        row["load_x_dense"] = row["load_s"] / base["load_s"]
    return rows


def run(stores: Sequence[str] = STORES, queries: int = 500, path: str | None = None,
        embedder: str | None = None) -> pd.DataFrame:
    ds = load_gitbugs(path)
    model = get_embedder(embedder)
    vectors = model.encode([p.problem_description for p in ds.packets])
    load_before = os.getloadavg()[0]
    rows = [row for name in stores for row in measure(name, ds.packets, vectors, queries)]
    table = pd.DataFrame(rows)
    table["embedder"] = model.name
    table["load_1min_before"] = round(load_before, 2)
    table["load_1min_after"] = round(os.getloadavg()[0], 2)
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="folder for hybrid.csv (default: print only)")
    parser.add_argument("--queries", type=int, default=500, help="queries per store and search (default 500)")
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated (default {','.join(STORES)})")
    parser.add_argument("--embedder", default=None, help="embedding backend (default: the fastest installed)")
    args = parser.parse_args(argv)
    table = run([s.strip() for s in args.stores.split(",") if s.strip()], args.queries, embedder=args.embedder)
    for key, value in machine_info(("qdrant-edge-py", "qdrant-client", "onnxruntime", "numpy")).items():
        table[key] = value
    table["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    table["command"] = shlex.join(["python", "-m", "qis_lib.bench.hybrid", *argv])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.iloc[:, :11].round(3).to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "hybrid.csv", index=False)
        print(f"wrote {out / 'hybrid.csv'}")
    return table


if __name__ == "__main__":
    main()
