"""The "N(N-1)/2 synthesis paths" claim, counted on real reports.

The claim: N agents open N(N-1)/2 pairwise synthesis paths, so what the network can
learn grows quadratically with N. What an agent can actually use is a route from its
query to a packet that helps it: here, a report the tracker marked as a duplicate of
its own (the same problem, with its outcome). Reports arrive in their Created order;
each one queries the store holding the reports before it (its own excluded, filters
inside the query), then deposits. For the first N arrivals this module counts:

- possible_pairs: N(N-1)/2, the claim's paths;
- duplicate_pairs: pairs among them that are the same problem (a useful route exists);
- useful_routes: arrivals whose top k holds an earlier duplicate (a useful route taken);
- routes_any_hit: arrivals that got any packet back (what "finds matches" counts).

`growth_exponent` fits count ~ N^b on a log-log scale: b = 2 is quadratic, b = 1 linear.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..core.packet import OutcomePacket
from ..stores.memory import MemoryStore
from .quality import cold_start_replay


def replay(packets: Sequence[OutcomePacket], vectors: np.ndarray, pairs: Iterable[tuple[str, str]],
           top_k: int = 10) -> pd.DataFrame:
    """One row per arrival (see `quality.cold_start_replay`), on the exact in-memory store."""
    vectors = np.asarray(vectors, dtype=np.float32)
    with MemoryStore(dim=vectors.shape[1], capacity=len(packets)) as store:
        return cold_start_replay(store, packets, vectors, pairs, top_k=top_k)


def paths_table(replayed: pd.DataFrame, pairs: Iterable[tuple[str, str]], sizes: Sequence[int],
                top_k: int = 10) -> pd.DataFrame:
    """Counts for the first N arrivals, for each N in `sizes` (see the module docstring)."""
    position = {agent: i for i, agent in enumerate(replayed["agent"])}
    later = np.array(sorted(max(position[a], position[b]) for a, b in pairs if a in position and b in position))
    useful = (replayed["rank"] <= top_k).to_numpy()
    any_hit = (replayed["deposited"] > 0).to_numpy()
    rows = []
    for n in sizes:
        if not 1 <= n <= len(replayed):
            raise ValueError(f"N must be between 1 and {len(replayed)}, got {n}")
        rows.append({"N": n, "possible_pairs": n * (n - 1) // 2,
                     "duplicate_pairs": int((later < n).sum()),
                     "useful_routes": int(useful[:n].sum()),
                     "routes_any_hit": int(any_hit[:n].sum())})
    table = pd.DataFrame(rows)
    table["useful_per_possible"] = table["useful_routes"] / table["possible_pairs"].where(table["possible_pairs"] > 0)
    return table


def growth_exponent(table: pd.DataFrame, column: str) -> float:
    """b in column ~ N^b, fitted on the rows where the column is positive (NaN with under two)."""
    rows = table[table[column] > 0]
    if len(rows) < 2:
        return float("nan")
    slope, _ = np.polyfit(np.log(rows["N"].to_numpy(float)), np.log(rows[column].to_numpy(float)), 1)
    return float(slope)
