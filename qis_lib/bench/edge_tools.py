"""What the production benchmarks (`python -m qis_lib.bench.production`) share: vector sets, bulk
loads, timed queries, a watcher of how long the other threads were held up, the machine's
context of every row, and writing a result with its command."""
from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..stores import QueryFilter
from . import data
from .latency import BATCH, K, stored_payloads


def rss_mb() -> float:
    """This process's resident memory in MB (Linux /proc; NaN elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def folder_mb(path: str) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


@functools.cache
def _machine() -> dict:
    from .embedding import machine_info

    info = machine_info(("qdrant-edge-py",))
    return {key: info[key] for key in ("cpu", "cores", "qdrant-edge-py")}


def machine() -> dict:
    """The CPU, its core count, the engine's version and the load now: the context of every row."""
    return {**_machine(), "load_1min": round(os.getloadavg()[0], 2)}


def load_store(store, vset: data.VectorSet, points: data.Points, progress: bool = False) -> float:
    """Bulk upsert every point in batches; seconds taken."""
    from tqdm.auto import tqdm

    payloads = stored_payloads(points)
    ids = [p.packet_id for p in points.packets]
    store.before_bulk_load()
    start = time.perf_counter()
    for s in tqdm(range(0, vset.n, BATCH), desc=f"load n={vset.n}", disable=not progress, leave=False):
        store.upsert(ids[s:s + BATCH], vset.vectors[s:s + BATCH], payloads[s:s + BATCH])
    return time.perf_counter() - start


def time_queries(store, vset: data.VectorSet, flts: Sequence[QueryFilter], timed: range, k: int = K,
                 texts: Sequence[str] | None = None, warmup: int = 50):
    """Seconds per `store.query` and the rows it returned, for each query in `timed` (after one
    untimed pass over the first `warmup` queries). `texts`: each query's text, for a hybrid query."""
    def ask(j):
        if texts is None:
            return store.query(vset.queries[j], k, flts[j])
        return store.query(vset.queries[j], k, flts[j], text=texts[j])

    for j in list(timed)[:warmup]:
        ask(j)
    seconds, rows = [], []
    for j in timed:
        start = time.perf_counter()
        hits = ask(j)
        seconds.append(time.perf_counter() - start)
        rows.append([int(h["agent_id"].rsplit("-", 1)[1]) for h, _ in hits])
    return np.array(seconds), rows


def vector_set(name: str, n: int, queries: int, seed: int, gitbugs_path=None, progress: bool = False):
    if name == "random":
        return data.random_set(n, queries, seed=seed)
    return data.real_set(n, queries, seed, gitbugs_path=gitbugs_path, progress=progress)


class Ticker:
    """A thread that wakes every `every` seconds and keeps the gaps between its wake-ups: the
    longest gap is how long the other threads of the process were held up at worst (by a call
    that keeps Python's GIL, as qdrant-edge's index builds and queries do), whatever they were
    doing. Use as a context manager; `gaps` holds every gap in seconds."""

    def __init__(self, every: float = 0.005):
        self.every = every
        self.gaps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="gil-ticker")

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.every):
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    def __enter__(self) -> "Ticker":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        gaps = np.array(self.gaps) if self.gaps else np.zeros(1)
        return {"tick_gap_max_ms": gaps.max() * 1e3, "tick_gap_p99_ms": np.percentile(gaps, 99) * 1e3,
                "tick_gaps_over_1s": int((gaps > 1.0).sum()), "tick_gaps_over_2s": int((gaps > 2.0).sum())}


def latency_row(prefix: str, seconds: np.ndarray, recall: np.ndarray | None = None) -> dict:
    """{prefix_p50_ms, prefix_p99_ms, prefix_max_ms[, prefix_recall_at_10]} of some timed calls."""
    ms = np.asarray(seconds) * 1e3
    row = {f"{prefix}_p50_ms": np.percentile(ms, 50), f"{prefix}_p99_ms": np.percentile(ms, 99),
           f"{prefix}_max_ms": ms.max()}
    if recall is not None:
        row[f"{prefix}_recall_at_10"] = float(np.mean(recall))
    return row


def write(out: Path, name: str, table: pd.DataFrame, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    table = table.assign(command=command)
    path = out / name
    table.to_csv(path, index=False)
    return path
