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
- `EdgeHybrid`: lexical (BM25) and dense search fused with reciprocal rank fusion,
  inside the Qdrant engine (qdrant-edge's own Bm25 sparse vectors, IDF modifier,
  prefetch + Fusion.Rrf). `rrf` / `rrf_scores` are the plain formula, used to check it.

Data used with this module in notebook 06: GitBugs (Patil, arXiv:2504.09651, CC BY 4.0);
see qis_lib.datasets.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..core.packet import OutcomePacket
from ..stores.contract import QueryFilter, Store

Search = Callable[[int, int], list[str]]  # (query packet index, k) -> agent ids, best first
KS = (1, 5, 10)


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


class EdgeHybrid:
    """Dense and BM25 search in one qdrant-edge shard, fused inside the engine.

    Each point holds the dense vector (unnamed) and a "bm25" sparse vector from
    qdrant_edge.Bm25 (English stemming and stop words; IDF applied by the engine at
    query time). `query(mode="hybrid")` sends one request: two prefetches (dense and
    BM25, `prefetch` results each) fused by Fusion.Rrf(k=rrf_k)."""

    MODES = ("dense", "bm25", "hybrid")

    def __init__(self, dim: int = 384, avg_len: float = 20.0, rrf_k: int = 60, prefetch: int = 100,
                 path: str | None = None):
        import qdrant_edge as qe

        self.dim, self.rrf_k, self.prefetch = dim, rrf_k, prefetch
        self._tmpdir = tempfile.mkdtemp(prefix="qis-hybrid-") if path is None else None
        self.path = os.path.join(self._tmpdir, "shard") if path is None else str(path)
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
                               sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)})
        self.shard = qe.EdgeShard.create(self.path, config)
        self.shard.update(qe.UpdateOperation.create_field_index("agent_id", qe.PayloadSchemaType.Keyword))
        self.bm25 = qe.Bm25(qe.Bm25Config(avg_len=avg_len))

    def upsert(self, packets: Sequence[OutcomePacket], vectors: np.ndarray, texts: Sequence[str] | None = None,
               batch: int = 500) -> None:
        """Store packets with their dense vectors; BM25 indexes `texts` (default: the problem descriptions)."""
        import qdrant_edge as qe

        vectors = np.asarray(vectors, dtype=np.float32)
        texts = [p.problem_description for p in packets] if texts is None else list(texts)
        if not (len(packets) == len(vectors) == len(texts)):
            raise ValueError(f"packets, vectors and texts differ in length: {len(packets)}, {len(vectors)}, {len(texts)}")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {vectors.shape}")
        for start in range(0, len(packets), batch):
            points = [qe.Point(p.packet_id, {"": v.tolist(), "bm25": self.bm25.embed_document(t)}, p.to_payload())
                      for p, v, t in zip(packets[start:start + batch], vectors[start:start + batch],
                                         texts[start:start + batch])]
            self.shard.update(qe.UpdateOperation.upsert_points(points))

    def query(self, vector: np.ndarray, text: str, top_k: int = 10, exclude_agent: str | None = None,
              mode: str = "hybrid") -> list[tuple[dict, float]]:
        """Top-k payloads for a query: "dense" (the vector), "bm25" (the text) or "hybrid" (both
        fused by reciprocal rank in one request)."""
        import qdrant_edge as qe

        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        flt = qe.Filter(must_not=[qe.FieldCondition("agent_id", match=qe.MatchValue(exclude_agent))]) \
            if exclude_agent is not None else None
        dense = qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist())
        lexical = qe.Query.Nearest(self.bm25.embed_query(text), using="bm25")
        if mode == "hybrid":
            limit = max(self.prefetch, top_k)
            request = qe.QueryRequest(
                limit=top_k, query=qe.Fusion.Rrf(k=self.rrf_k), filter=flt, with_payload=True,
                prefetches=[qe.Prefetch(limit=limit, query=dense, filter=flt),
                            qe.Prefetch(limit=limit, query=lexical, filter=flt)])
        else:
            request = qe.QueryRequest(limit=top_k, query=dense if mode == "dense" else lexical, filter=flt,
                                      with_payload=True)
        return [(dict(h.payload or {}), float(h.score)) for h in self.shard.query(request)]

    def search(self, packets: Sequence[OutcomePacket], vectors: np.ndarray, mode: str = "hybrid",
               texts: Sequence[str] | None = None) -> Search:
        """A Search for `duplicate_ranks`: query with packet i's vector and text."""
        texts = [p.problem_description for p in packets] if texts is None else list(texts)

        def search(i: int, k: int) -> list[str]:
            return [payload["agent_id"] for payload, _ in
                    self.query(vectors[i], texts[i], k, exclude_agent=packets[i].agent_id, mode=mode)]

        return search

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> "EdgeHybrid":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def mean_tokens(texts: Iterable[str]) -> float:
    """Average whitespace-token count: a fair avg_len for BM25's length normalisation."""
    counts = [len(t.split()) for t in texts]
    return float(np.mean(counts)) if counts else 1.0
