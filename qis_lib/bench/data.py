"""Vector sets, packets and filters for the latency benchmark, and recall against exact search.

Two vector sets, both unit vectors of the model's 384 dimensions:

- "real": all-MiniLM-L6-v2 embeddings of GitBugs Hadoop bug reports (CC BY 4.0, see
  `qis_lib.datasets.CREDIT`). Point i < R (R = 2,503 reports) is report i's summary;
  past R, point i is a variant of report i % R: its summary with each word dropped with
  probability `DROPOUT` (at least two kept), followed by `WINDOW` words taken from a
  random place in its description. Queries are further variants made with another seed
  (other agents describing a similar problem in their own words). Every set of N is the
  first N points of a larger one, so the sizes of one run are nested.
- "random": Gaussian vectors normalised, queries likewise: no structure at all, the
  worst case for a graph index. Their texts (what a hybrid store's BM25 branch searches)
  are `TEXT_WORDS` (a query `QUERY_WORDS`) synthetic words "w0".."w9999" drawn with
  Zipf-Mandelbrot frequencies (word k in proportion to 1 / (k + 10)), as words are in text
  once stop words are gone: the commonest in about one text in seven, a long tail of rare
  ones; and no relation to the vectors.

Packets: one per point, with a seeded domain ("d0".."d9", uniform), confidence
(uniform 0..1, 3 decimals) and age; `EXPIRED_SHARE` of them expired at `NOW`.
A filtered query asks for one domain, confidence >= `MIN_CONFIDENCE`, not expired:
about 10% x 50% x 90% = 4.5% of the points pass. An unfiltered query keeps only the
expiry check that every router query carries (about 90% pass).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import paths
from ..core.packet import OUTCOME_TYPES, OutcomePacket
from ..stores.contract import QueryFilter

NOW = 1_700_000_000.0  # the benchmark's clock: packets and filters use it, never the wall clock
DAY = 86_400.0
DOMAINS = tuple(f"d{i}" for i in range(10))
EXPIRED_SHARE = 0.10
MIN_CONFIDENCE = 0.5
DROPOUT = 0.2
WINDOW = 8
RECIPE_VERSION = 1  # bump when the text recipe changes, so cached matrices made the old way are not reused
VECTOR_SETS = ("real", "random")
VOCABULARY, TEXT_WORDS, QUERY_WORDS = 10_000, 12, 6  # the random set's texts


@dataclass
class VectorSet:
    """Points and queries of one kind, with the text each came from (a label for random ones)."""

    name: str
    vectors: np.ndarray  # (n, dim) float32, unit rows
    queries: np.ndarray  # (q, dim) float32, unit rows
    texts: list[str]
    query_texts: list[str]
    recipe: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.vectors) or len(self.query_texts) != len(self.queries):
            raise ValueError("each vector needs its text")

    @property
    def n(self) -> int:
        return len(self.vectors)

    def head(self, n: int) -> "VectorSet":
        """The first n points (the queries stay the same)."""
        if not 1 <= n <= self.n:
            raise ValueError(f"this {self.name} set has {self.n} points, cannot take {n}")
        return VectorSet(self.name, self.vectors[:n], self.queries, self.texts[:n], self.query_texts, self.recipe)


def check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def zipf_texts(count: int, words: int, stream: list[int]) -> list[str]:
    """`count` texts of `words` synthetic words each, drawn from `VOCABULARY` with the frequencies
    of the module docstring (seeded by `stream`; the first texts do not depend on `count`)."""
    weights = 1.0 / (np.arange(1, VOCABULARY + 1) + 10)
    picks = np.random.default_rng(stream).choice(VOCABULARY, size=(count, words), p=weights / weights.sum())
    return [" ".join(f"w{w}" for w in row) for row in picks]


def random_set(n: int, queries: int, dim: int = 384, seed: int = 0) -> VectorSet:
    n, queries = check_count("n", n), check_count("queries", queries)
    # Separate streams, so the first n points do not depend on how many queries there are.
    points = np.random.default_rng([seed, 10]).standard_normal((n, dim), dtype=np.float32)
    asked = np.random.default_rng([seed, 11]).standard_normal((queries, dim), dtype=np.float32)
    return VectorSet("random", unit_rows(points), unit_rows(asked), zipf_texts(n, TEXT_WORDS, [seed, 12]),
                     zipf_texts(queries, QUERY_WORDS, [seed, 13]),
                     {"set": "random", "seed": seed, "dim": dim, "texts": f"zipf {VOCABULARY}"})


def variant(summary: str, description: str, rng: np.random.Generator) -> str:
    """The summary with some words dropped, then a window of the description."""
    words = summary.split()
    kept = [w for w in words if rng.random() >= DROPOUT]
    if len(kept) < 2:
        kept = words
    extra = description.split()
    if extra:
        start = int(rng.integers(0, max(1, len(extra) - WINDOW + 1)))
        kept = kept + extra[start:start + WINDOW]
    return " ".join(kept)


def report_texts(summaries: Sequence[str], descriptions: Sequence[str], n: int, queries: int,
                 seed: int = 0) -> tuple[list[str], list[str]]:
    """The texts of the first n points and of the queries (see the module docstring)."""
    from ..infra.datasets import clean_text

    n, queries = check_count("n", n), check_count("queries", queries)
    if len(summaries) != len(descriptions) or not summaries:
        raise ValueError("need as many descriptions as summaries, and at least one report")
    summaries = [clean_text(s) for s in summaries]
    descriptions = [clean_text(d) if isinstance(d, str) else "" for d in descriptions]
    reports = len(summaries)
    texts = []
    for i in range(n):
        r = i % reports
        texts.append(summaries[r] if i < reports else variant(summaries[r], descriptions[r],
                                                               np.random.default_rng([seed, 1, i])))
    asked = []
    for j in range(queries):
        rng = np.random.default_rng([seed, 2, j])
        r = int(rng.integers(0, reports))
        asked.append(variant(summaries[r], descriptions[r], rng))
    return texts, asked


def cache_dir() -> Path:
    """bench/ in the cache folder (qis_lib.paths.cache_dir: $QIS_CACHE_DIR, else the user's cache)."""
    return paths.cache_dir() / "bench"


def real_set(n: int, queries: int, seed: int = 0, embedder=None, gitbugs_path: str | os.PathLike | None = None,
             cache: str | os.PathLike | None | bool = None, progress: bool = False) -> VectorSet:
    """MiniLM vectors of GitBugs report texts. Embedding 100k texts takes minutes, so the
    points' matrix is cached under `cache` (default `cache_dir()`; False: no cache) by recipe:
    a cached matrix with at least n points of the same recipe is reused (its head). The
    queries (a few hundred texts, seconds) are embedded every time, so runs asking for
    different numbers of queries share one cached matrix."""
    from ..infra.datasets import CREDIT, load_gitbugs
    from ..embedders import get_embedder

    n, queries = check_count("n", n), check_count("queries", queries)
    embedder = get_embedder() if embedder is None else embedder
    data = load_gitbugs(gitbugs_path)
    summaries, descriptions = data.reports["summary"].tolist(), data.reports["description"].tolist()
    texts, asked = report_texts(summaries, descriptions, n, queries, seed)
    recipe = {"set": "real", "version": RECIPE_VERSION, "seed": seed, "dropout": DROPOUT, "window": WINDOW,
              "embedder": embedder.name, "project": data.project, "reports": len(summaries),
              "text_digest": hashlib.sha1("\x1f".join(summaries).encode()).hexdigest()[:12], "credit": CREDIT}
    key = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    recipe["queries"] = queries
    asked_vectors = encode_all(embedder, asked, False)
    folder = None if cache is False else Path(cache_dir() if cache in (None, True) else cache)
    if folder is not None and folder.is_dir():
        for path in sorted(folder.glob(f"points-{key}-*.npy"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
            if int(path.stem.rsplit("-", 1)[1]) >= n:
                vectors = np.load(path, mmap_mode="r")[:n].copy()
                return VectorSet("real", vectors, asked_vectors, texts, asked, {**recipe, "cache": str(path)})
    vectors = encode_all(embedder, texts, progress)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"points-{key}-{n}.npy"
        tmp = target.with_suffix(".part.npy")
        np.save(tmp, vectors)
        os.replace(tmp, target)  # never a half-written file under the final name
    return VectorSet("real", vectors, asked_vectors, texts, asked, recipe)


def encode_all(embedder, texts: Sequence[str], progress: bool = False, batch: int = 512) -> np.ndarray:
    """Embed `texts` in batches of `batch` (a progress bar if asked): one (len(texts), dim) array."""
    from tqdm.auto import tqdm

    # Each distinct text once, in order of length: a batch is padded to its longest text.
    unique = sorted(set(texts), key=len)
    out = np.empty((len(unique), embedder.dim), dtype=np.float32)
    with tqdm(total=len(unique), desc="embedding texts", unit="text", disable=not progress) as bar:
        for i in range(0, len(unique), batch):
            out[i:i + batch] = embedder.encode(unique[i:i + batch])
            bar.update(len(unique[i:i + batch]))
    row = {text: i for i, text in enumerate(unique)}
    return unit_rows(out[[row[t] for t in texts]])


@dataclass
class Points:
    """The payload attributes the filters look at, as arrays, plus the packets themselves."""

    packets: list[OutcomePacket]
    domain: np.ndarray  # index into DOMAINS
    confidence: np.ndarray
    expires_at: np.ndarray

    def mask(self, flt: QueryFilter) -> np.ndarray:
        """QueryFilter.matches for every point at once (exclude_agent is not used here)."""
        if flt.exclude_agent is not None:
            raise ValueError("the benchmark's filters do not exclude agents")
        keep = (self.expires_at > flt.now) & (self.confidence >= flt.min_confidence)
        if flt.domain is not None:
            keep &= self.domain == DOMAINS.index(flt.domain)
        return keep


def make_points(texts: Sequence[str], seed: int = 0, agent_prefix: str = "agent-") -> Points:
    """One packet per text, attributes drawn from seeded streams (so the first n do not depend on the total)."""
    n = check_count("number of texts", len(texts))
    domain = np.random.default_rng([seed, 20]).integers(0, len(DOMAINS), n)
    confidence = np.round(np.random.default_rng([seed, 21]).random(n), 3)
    expired = np.random.default_rng([seed, 22]).random(n) < EXPIRED_SHARE
    age = np.round(np.random.default_rng([seed, 23]).random(n) * DAY, 3)
    outcome = np.random.default_rng([seed, 24]).integers(0, len(OUTCOME_TYPES), n)
    # Live packets: made within the last day, live for 30 days. Expired: made 2 days ago, lived 1 day.
    timestamp = np.where(expired, NOW - 2 * DAY, NOW - age)
    ttl = np.where(expired, DAY, 30 * DAY)
    packets = [OutcomePacket(problem_description=text, outcome_type=OUTCOME_TYPES[o], confidence=float(c),
                             domain_tags=(DOMAINS[d],), timestamp=float(t), agent_id=f"{agent_prefix}{i}", ttl=float(s))
               for i, (text, o, c, d, t, s) in enumerate(zip(texts, outcome, confidence, domain, timestamp, ttl))]
    expires_at = np.array([p.expires_at for p in packets])
    return Points(packets, domain, confidence, expires_at)


def make_filters(queries: int, filtered: bool, seed: int = 0) -> list[QueryFilter]:
    """Per query: one domain + MIN_CONFIDENCE + not expired, or (unfiltered) the expiry check alone."""
    queries = check_count("queries", queries)
    if not filtered:
        return [QueryFilter(now=NOW)] * queries
    domains = np.random.default_rng([seed, 30]).integers(0, len(DOMAINS), queries)
    return [QueryFilter(now=NOW, domain=DOMAINS[d], min_confidence=MIN_CONFIDENCE) for d in domains]


def filter_masks(points: Points, filters: Sequence[QueryFilter]) -> list[np.ndarray]:
    """The mask of each query's filter (one array per distinct filter, shared)."""
    cache: dict[QueryFilter, np.ndarray] = {}
    for flt in filters:
        if flt not in cache:
            cache[flt] = points.mask(flt)
    return [cache[flt] for flt in filters]


def exact_thresholds(vectors: np.ndarray, queries: np.ndarray, masks: Sequence[np.ndarray], k: int = 10,
                     chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k-th best exact cosine among the points its filter keeps, and how
    many of the true top k there are (fewer than k when fewer points pass)."""
    k = check_count("k", k)
    if len(masks) != len(queries):
        raise ValueError(f"need one mask per query: {len(masks)} masks, {len(queries)} queries")
    kth = np.full(len(queries), np.nan)
    wanted = np.zeros(len(queries), dtype=int)
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ vectors.T
        for j, row in enumerate(scores):
            passing = row[masks[start + j]]
            wanted[start + j] = min(k, len(passing))
            if len(passing):
                kth[start + j] = np.partition(passing, len(passing) - wanted[start + j])[len(passing) - wanted[start + j]]
    return kth, wanted


def recall_at_k(found: Sequence[Sequence[int]], vectors: np.ndarray, queries: np.ndarray,
                masks: Sequence[np.ndarray], k: int = 10, tolerance: float = 1e-5) -> np.ndarray:
    """Per query, the share of the true top k (exact cosine, same filter) that `found` holds.

    `found[j]` are the row numbers a store returned for query j. As in ann-benchmarks, a
    returned point counts when it passes the filter and scores at least the k-th best
    exact score (less `tolerance`): ties at the k-th place are not held against a store.
    Scores are recomputed from `vectors`, not taken from the store. Points returned twice
    count once; a query with no passing point has recall 1 if nothing was returned.
    """
    if len(found) != len(queries):
        raise ValueError(f"need one result list per query: {len(found)} lists, {len(queries)} queries")
    vectors = np.asarray(vectors, dtype=np.float32)
    kth, wanted = exact_thresholds(vectors, queries, masks, k)
    recall = np.empty(len(queries))
    for j, rows in enumerate(found):
        rows = np.unique(np.asarray(list(rows)[:k], dtype=int))
        if wanted[j] == 0:
            recall[j] = 1.0 if len(rows) == 0 else 0.0
            continue
        rows = rows[masks[j][rows]]
        good = int(np.sum(vectors[rows] @ queries[j] >= kth[j] - tolerance))
        recall[j] = min(good, wanted[j]) / wanted[j]
    return recall
