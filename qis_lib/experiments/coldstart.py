"""The cold-start curve: agents arrive one after another; how many relevant packets does each find?

Each agent deposits its packet, then asks for the top k packets of other agents. The
store holds only what earlier agents deposited, so an agent can find a relevant packet
only if someone with a related problem came before it. "Relevant" is a label match:
the same `problem` label (paraphrases of one problem, the sharp reading) or the same
domain (the loose one).

`arrivals` computes this exactly from the vectors (cosine top-k among earlier arrivals,
what the memory store answers); `router_arrivals` runs the same walk through a real
router and store, so the two can be checked against each other.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..core.packet import OutcomePacket

COLUMNS = ["arrival", "item", "label", "available", "matches", "found", "top1_relevant", "best_score"]


def _check_order(order: Sequence[int], n: int) -> np.ndarray:
    order = np.asarray(order)
    if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
        raise ValueError(f"order must be a 1-d sequence of item indices, got {order!r}")
    if len(set(order.tolist())) != len(order) or (order < 0).any() or (order >= n).any():
        raise ValueError(f"order must hold distinct indices in 0..{n - 1}, got {order.tolist()}")
    return order


def _check_common(n: int, labels: Sequence, top_k: int) -> None:
    if len(labels) != n:
        raise ValueError(f"got {n} items but {len(labels)} labels")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")


def _row(arrival: int, item: int, label, labels: Sequence, earlier: Sequence[int],
         hits: Sequence[tuple[int, float]], min_score: float | None) -> dict:
    kept = [(i, s) for i, s in hits if min_score is None or s >= min_score]
    return {
        "arrival": arrival,
        "item": item,
        "label": label,
        "available": sum(labels[j] == label for j in earlier),
        "matches": len(kept),
        "found": sum(labels[i] == label for i, _ in kept),
        "top1_relevant": bool(kept) and labels[kept[0][0]] == label,
        "best_score": kept[0][1] if kept else np.nan,
    }


def arrivals(vectors: np.ndarray, labels: Sequence, order: Sequence[int] | None = None, top_k: int = 3,
             min_score: float | None = None) -> pd.DataFrame:
    """One row per arriving agent, in `order` (default: index order).

    vectors: (n, d) unit vectors, one per agent's problem; labels: n relevance labels.
    Columns: arrival (1-based), item (index), label, available (earlier agents with the
    same label: the most it could find), matches (hits returned, those scoring at least
    `min_score` if given), found (relevant hits among them), top1_relevant, best_score.
    """
    scores = _similarities(vectors, labels, top_k)
    return _walk(scores, labels, np.arange(len(labels)) if order is None else order, top_k, min_score)


def _similarities(vectors: np.ndarray, labels: Sequence, top_k: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be an (n, d) array, got shape {vectors.shape}")
    _check_common(len(vectors), labels, top_k)
    return vectors @ vectors.T


def _walk(scores: np.ndarray, labels: Sequence, order: Sequence[int], top_k: int,
          min_score: float | None) -> pd.DataFrame:
    order = _check_order(order, len(scores))
    rows = []
    for position, item in enumerate(order.tolist()):
        earlier = order[:position]
        row = scores[item, earlier]
        best = np.argsort(-row, kind="stable")[:top_k]  # stable: ties keep arrival order
        hits = [(int(earlier[b]), float(row[b])) for b in best]
        rows.append(_row(position + 1, item, labels[item], labels, earlier.tolist(), hits, min_score))
    return pd.DataFrame(rows, columns=COLUMNS)


def random_orders(n_items: int, n_orders: int, seed: int = 0) -> list[np.ndarray]:
    """n_orders random arrival orders of n_items agents, reproducible from the seed."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n_items) for _ in range(n_orders)]


def arrival_curves(vectors: np.ndarray, labels: Sequence, n_orders: int = 200, top_k: int = 3, seed: int = 0,
                   min_score: float | None = None) -> pd.DataFrame:
    """`arrivals` for many random orders, stacked, with an `order` column (0..n_orders-1)."""
    if isinstance(n_orders, bool) or not isinstance(n_orders, int) or n_orders < 1:
        raise ValueError(f"n_orders must be a positive int, got {n_orders!r}")
    scores = _similarities(vectors, labels, top_k)  # once, not per order
    frames = [_walk(scores, labels, order, top_k, min_score).assign(order=i)
              for i, order in enumerate(random_orders(len(labels), n_orders, seed))]
    return pd.concat(frames, ignore_index=True)


def summarise_curve(table: pd.DataFrame) -> pd.DataFrame:
    """Per arrival position, over all orders in `table`: the share of agents that could find
    a relevant packet (share_available), that found one in their top k (share_found), whose
    best hit was relevant (share_top1), got any hit at all (share_any_match), and the mean
    number of relevant packets found."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}; pass the output of arrivals or arrival_curves")
    grouped = table.groupby("arrival")
    return pd.DataFrame({
        "agents": grouped.size(),
        "share_available": grouped["available"].apply(lambda s: (s > 0).mean()),
        "share_found": grouped["found"].apply(lambda s: (s > 0).mean()),
        "share_top1": grouped["top1_relevant"].mean(),
        "share_any_match": grouped["matches"].apply(lambda s: (s > 0).mean()),
        "mean_found": grouped["found"].mean(),
    })


def router_arrivals(router, packets: Sequence[OutcomePacket], labels: Sequence, order: Sequence[int] | None = None,
                    top_k: int = 3, min_score: float | None = None, now: float | None = None) -> pd.DataFrame:
    """The same walk through a real router: each agent in turn deposits its packet and
    queries with its problem, excluding its own agent id. The store should start empty;
    agent ids should be distinct, since a hit is traced back to its agent by id."""
    _check_common(len(packets), labels, top_k)
    order = _check_order(np.arange(len(packets)) if order is None else order, len(packets))
    index = {p.agent_id: i for i, p in enumerate(packets)}
    if len(index) != len(packets):
        raise ValueError("packets must have distinct agent_id values")
    rows = []
    for position, item in enumerate(order.tolist()):
        packet = packets[item]
        router.deposit(packet)
        found = router.query(packet.problem_description, top_k=top_k, exclude_agent=packet.agent_id, now=now)
        hits = [(index[p.agent_id], score) for p, score in found]
        rows.append(_row(position + 1, item, labels[item], labels, order[:position].tolist(), hits, min_score))
    return pd.DataFrame(rows, columns=COLUMNS)
