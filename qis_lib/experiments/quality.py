"""Routing quality on real problems: do duplicate bug reports find each other?

A duplicate pair is two agents who met the same problem and wrote it down in their own
words. For each pair we query with one report and look for the other among all other
packets (the query's own packet is excluded with exclude_agent = its report id), in
both directions. recall@k is the share of queries whose partner is in the top k;
MRR@k the mean of 1/rank (0 when the partner is not in the top k).

- `duplicate_ranks(search, ...)` does this over any search function; `store_search`
  queries a Store with vectors embedded once (so every store sees the same
  vectors), `exact_ranks` computes the full rank with numpy (the ceiling of the model).
- `cold_start_replay` deposits reports in Created order and asks, for each report with
  an earlier duplicate, whether one is in the top k among the packets deposited so far.
- `hybrid_search`: dense, BM25 or both fused by reciprocal rank fusion inside a hybrid
  store (`make_router(..., hybrid=True)`'s stores; see qis_lib/stores/bm25.py).
  `rrf` / `rrf_scores` are the plain formula, used to check it.
- `split_pairs`, `bootstrap_ci`, `with_intervals`: choose on earlier pairs, report on
  later ones, with a bootstrap interval over pairs (66 pairs is a small sample).

Data used with this module in notebook 06: GitBugs (Patil, arXiv:2504.09651, CC BY 4.0);
see qis_lib.datasets.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..core.packet import OutcomePacket
from ..stores.contract import QueryFilter, Store

Search = Callable[[int, int], list[str]]  # (query packet index, k) -> agent ids, best first
KS = (1, 5, 10)
SEARCH_MODES = ("dense", "bm25", "hybrid")


def directed_queries(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each pair (a, b) as two queries: a looks for b, b looks for a."""
    out = []
    for a, b in pairs:
        if a == b:
            raise ValueError(f"a duplicate pair needs two different reports, got ({a!r}, {b!r})")
        out += [(a, b), (b, a)]
    return out


def _index(packets: Sequence[OutcomePacket]) -> dict[str, int]:
    index = {p.agent_id: i for i, p in enumerate(packets)}
    if len(index) != len(packets):
        raise ValueError("packets must have distinct agent_id values (one report, one agent)")
    return index


def load_store(store: Store, packets: Sequence[OutcomePacket], vectors: np.ndarray,
               batch: int = 1000) -> None:
    """Write precomputed vectors and packet payloads through the store API."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) != len(packets):
        raise ValueError(f"got {len(packets)} packets but {len(vectors)} vectors")
    for start in range(0, len(packets), batch):
        chunk = packets[start:start + batch]
        store.upsert([p.packet_id for p in chunk], vectors[start:start + batch], [p.to_payload() for p in chunk])


def store_search(store: Store, packets: Sequence[OutcomePacket], vectors: np.ndarray,
                     now: float | None = None) -> Search:
    """A search over a loaded transport: query with packet i's vector, its own agent excluded.

    `now` defaults to just after the newest packet, so no packet has expired."""
    now = max(p.timestamp for p in packets) + 1.0 if now is None else now

    def search(i: int, k: int) -> list[str]:
        flt = QueryFilter(now=now, exclude_agent=packets[i].agent_id)
        return [payload["agent_id"] for payload, _ in store.query(vectors[i], k, flt)]

    return search


def duplicate_ranks(search: Search, packets: Sequence[OutcomePacket], pairs: Iterable[tuple[str, str]],
                    top_k: int = 10) -> pd.DataFrame:
    """One row per directed query: query id, target id, rank of the target (1-based; NaN
    when it is not in the top k) and the top hit."""
    index = _index(packets)
    rows = []
    for query, target in directed_queries(pairs):
        for rid in (query, target):
            if rid not in index:
                raise ValueError(f"report {rid!r} of a duplicate pair has no packet")
        hits = search(index[query], top_k)
        rank = hits.index(target) + 1 if target in hits else np.nan
        rows.append({"query": query, "target": target, "rank": rank, "top_hit": hits[0] if hits else None})
    return pd.DataFrame(rows, columns=["query", "target", "rank", "top_hit"])


def exact_ranks(vectors: np.ndarray, packets: Sequence[OutcomePacket],
                pairs: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Full (untruncated) rank of each target among all other packets, by cosine, plus the
    cosine of the pair and of the query's best other match. Exact ties (identical texts)
    go to the target; `ties` counts the other packets scoring the same, which a store may
    rank either way."""
    vectors = np.asarray(vectors, dtype=np.float32)
    index = _index(packets)
    rows = []
    for query, target in directed_queries(pairs):
        q, t = index[query], index[target]
        scores = vectors @ vectors[q]
        scores[q] = -np.inf
        rank = int((scores > scores[t]).sum()) + 1  # ties go to the target
        ties = int((np.abs(scores - scores[t]) <= 1e-6).sum()) - 1
        best = int(np.argmax(scores))
        rows.append({"query": query, "target": target, "rank": rank, "ties": ties, "pair_cosine": float(scores[t]),
                     "best_cosine": float(scores[best]), "top_hit": packets[best].agent_id})
    return pd.DataFrame(rows)


def recall_summary(ranks: pd.DataFrame | pd.Series, ks: Sequence[int] = KS, mrr_at: int = 10) -> dict:
    """recall@k for each k and MRR@mrr_at from a column of 1-based ranks (NaN = not found)."""
    rank = ranks["rank"] if isinstance(ranks, pd.DataFrame) else ranks
    rank = pd.to_numeric(rank, errors="raise").astype(float)
    if len(rank) == 0:
        raise ValueError("no ranks to summarise")
    if (rank < 1).any():
        raise ValueError("ranks are 1-based")
    found = rank.fillna(np.inf)
    out: dict = {"queries": len(rank)}
    for k in ks:
        out[f"recall@{k}"] = float((found <= k).mean())
    out[f"MRR@{mrr_at}"] = float(np.where(found <= mrr_at, 1.0 / found, 0.0).mean())
    return out


def quality_table(results: dict[tuple, pd.DataFrame], names: Sequence[str], ks: Sequence[int] = KS,
                  mrr_at: int = 10) -> pd.DataFrame:
    """{(store, text): ranks} -> one row per key with recall@k and MRR, 3 decimals."""
    rows = [{**dict(zip(names, key)), **recall_summary(r, ks, mrr_at)} for key, r in results.items()]
    return pd.DataFrame(rows).round(3)


def cold_start_replay(store: Store, packets: Sequence[OutcomePacket], vectors: np.ndarray,
                      pairs: Iterable[tuple[str, str]], top_k: int = 10, match_score: float = 0.5) -> pd.DataFrame:
    """Agents arrive in timestamp order; each queries the store (holding only earlier
    packets, at its own time) and then deposits its packet.

    One row per arrival: deposited (packets already in the store), has_earlier (a
    duplicate arrived before it), rank (best rank of an earlier duplicate in the top k,
    NaN if none), best_score, matched (best score >= `match_score`: it "finds a match"
    in the series' loose sense, right or wrong). The store should start empty."""
    if store.count() != 0:
        raise ValueError(f"the replay needs an empty store, this one holds {store.count()} packets")
    vectors = np.asarray(vectors, dtype=np.float32)
    _index(packets)
    if len(vectors) != len(packets):
        raise ValueError(f"got {len(packets)} packets but {len(vectors)} vectors")
    partners: dict[str, set[str]] = defaultdict(set)
    for a, b in pairs:
        partners[a].add(b)
        partners[b].add(a)
    order = sorted(range(len(packets)), key=lambda i: (packets[i].timestamp, i))
    seen: set[str] = set()
    rows = []
    for deposited, i in enumerate(order):
        packet = packets[i]
        earlier = partners[packet.agent_id] & seen
        hits = store.query(vectors[i], top_k, QueryFilter(now=packet.timestamp, exclude_agent=packet.agent_id)) \
            if deposited else []
        ids = [payload["agent_id"] for payload, _ in hits]
        ranks = [ids.index(e) + 1 for e in earlier if e in ids]
        best = hits[0][1] if hits else np.nan
        rows.append({"deposited": deposited, "agent": packet.agent_id, "has_earlier": bool(earlier),
                     "rank": min(ranks) if ranks else np.nan, "best_score": best,
                     "matched": bool(hits) and best >= match_score})
        store.upsert([packet.packet_id], vectors[i:i + 1], [packet.to_payload()])
        seen.add(packet.agent_id)
    return pd.DataFrame(rows)


def cold_start_curve(replay: pd.DataFrame, bins: Sequence[int], ks: Sequence[int] = KS) -> pd.DataFrame:
    """Per bin of `deposited`: arrivals, share that matched anything, and, over arrivals
    with an earlier duplicate, their number and hit@k."""
    cut = pd.cut(replay["deposited"], bins=list(bins), right=False)
    rows = []
    for interval, group in replay.groupby(cut, observed=False):
        dup = group[group["has_earlier"]]
        row = {"deposited": f"{int(interval.left)}-{int(interval.right) - 1}", "arrivals": len(group),
               "matched_share": group["matched"].mean() if len(group) else np.nan,
               "with_earlier_duplicate": len(dup)}
        for k in ks:
            row[f"hit@{k}"] = float((dup["rank"] <= k).mean()) if len(dup) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def agrees_with_exact(ranks: pd.DataFrame, exact: pd.DataFrame, top_k: int = 10) -> pd.Series:
    """Per query: did the store put the target at the same place as exact search (both
    beyond top_k counts as agreeing)? Rows must be in the same order (same pairs)."""
    if list(zip(ranks["query"], ranks["target"])) != list(zip(exact["query"], exact["target"])):
        raise ValueError("ranks and exact must list the same queries in the same order")
    store = ranks["rank"].where(ranks["rank"] <= top_k).fillna(0).to_numpy()
    truth = exact["rank"].where(exact["rank"] <= top_k).fillna(0).to_numpy()
    return pd.Series(store == truth, index=ranks.index)


def cold_start_series(replay: pd.DataFrame, k: int = 10, window: int = 100) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For plotting the replay: (all arrivals with a rolling share of `matched` over `window`
    arrivals; arrivals with an earlier duplicate with hit@k and its running mean)."""
    every = replay[["deposited", "matched"]].copy()
    every["matched_rolling"] = every["matched"].astype(float).rolling(window, min_periods=1).mean()
    dup = replay.loc[replay["has_earlier"], ["deposited", "agent", "rank"]].copy()
    dup["hit"] = dup["rank"] <= k
    dup["hit_running"] = dup["hit"].astype(float).expanding().mean()
    return every, dup


def rrf_scores(rankings: Sequence[Sequence[str]], k: int = 60,
               weights: Sequence[float] | None = None) -> dict[str, float]:
    """Reciprocal rank fusion: score(d) = sum_i w_i / (k + rank_i(d)), ranks 1-based.
    Qdrant's Fusion.Rrf(k) counts ranks from 0, so its scores are rrf_scores(k - 1)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an int >= 0, got {k!r}")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"got {len(rankings)} rankings but {len(weights)} weights")
    scores: dict[str, float] = {}
    for ranking, w in zip(rankings, weights):
        for rank, doc in enumerate(ranking, 1):
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
    return scores


def rrf(rankings: Sequence[Sequence[str]], k: int = 60, weights: Sequence[float] | None = None) -> list[str]:
    """The ids of `rankings` fused by `rrf_scores`, best first; equal scores (to 1e-12) keep
    the order of first appearance."""
    scores = rrf_scores(rankings, k, weights)
    order = {doc: i for i, doc in reversed(list(enumerate(d for r in rankings for d in r)))}
    return sorted(scores, key=lambda d: (-round(scores[d], 12), order[d]))


def hybrid_search(store: Store, packets: Sequence[OutcomePacket], vectors: np.ndarray, mode: str = "hybrid",
                  now: float | None = None) -> Search:
    """A Search over a hybrid store (opened with hybrid=True and loaded with `load_store`):
    "dense" (the vector), "bm25" (the problem text alone, `lexical_query`) or "hybrid" (both,
    fused inside the store). The query's own agent is excluded as in `store_search`."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
    if mode != "dense" and not store.capabilities.hybrid:
        raise ValueError(f"mode {mode!r} needs a store opened with hybrid=True, not this {store.name} store")
    now = max(p.timestamp for p in packets) + 1.0 if now is None else now

    def search(i: int, k: int) -> list[str]:
        flt = QueryFilter(now=now, exclude_agent=packets[i].agent_id)
        text = packets[i].problem_description
        hits = (store.query(vectors[i], k, flt) if mode == "dense" else store.lexical_query(text, k, flt)
                if mode == "bm25" else store.query(vectors[i], k, flt, text=text))
        return [payload["agent_id"] for payload, _ in hits]

    return search


def split_pairs(pairs: Sequence[tuple[str, str]], test_share: float = 1 / 3) -> tuple[list, list]:
    """(train, test): the pairs in their order (by the later report's arrival), the last
    `test_share` of them held out, so choices made on train are checked on later reports."""
    if not 0.0 < test_share < 1.0:
        raise ValueError(f"test_share must be between 0 and 1, got {test_share!r}")
    pairs = list(pairs)
    cut = len(pairs) - max(1, round(len(pairs) * test_share))
    if cut < 1:
        raise ValueError(f"need at least 2 pairs to split, got {len(pairs)}")
    return pairs[:cut], pairs[cut:]


def bootstrap_ci(ranks: pd.DataFrame, metric: str = "recall@10", n: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric` ("recall@K" or "MRR@K") resampling duplicate
    pairs (a pair's two directions together: they are not independent)."""
    kind, _, k = metric.partition("@")
    if kind not in ("recall", "MRR") or not k.isdigit():
        raise ValueError(f"metric must look like 'recall@10' or 'MRR@10', got {metric!r}")
    found = pd.to_numeric(ranks["rank"]).astype(float).fillna(np.inf).to_numpy()
    per_query = (found <= int(k)) if kind == "recall" else np.where(found <= int(k), 1.0 / found, 0.0)
    pair = [tuple(sorted(qt)) for qt in zip(ranks["query"], ranks["target"])]
    codes, uniques = pd.factorize(pd.Series(pair))
    sums = np.bincount(codes, weights=per_query.astype(float))
    counts = np.bincount(codes).astype(float)
    picks = np.random.default_rng(seed).integers(0, len(uniques), size=(n, len(uniques)))
    values = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def with_intervals(results: dict[tuple, pd.DataFrame], names: Sequence[str], metrics=("recall@10", "MRR@10"),
                   n: int = 2000) -> pd.DataFrame:
    """`quality_table` plus a 95% bootstrap interval for each of `metrics`, as "low-high"."""
    table = quality_table(results, names)
    for metric in metrics:
        table[f"{metric} 95% CI"] = ["{:.3f}-{:.3f}".format(*bootstrap_ci(r, metric, n)) for r in results.values()]
    return table


def mean_tokens(texts: Iterable[str]) -> float:
    """Average whitespace-token count: a fair avg_len for BM25's length normalisation."""
    counts = [len(t.split()) for t in texts]
    return float(np.mean(counts)) if counts else 1.0
