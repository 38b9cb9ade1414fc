"""Index options shared by the Qdrant stores: HNSW `m`, `ef_construct`, `hnsw_ef` and quantization.

The same names on `qdrant` (qdrant-client: a server honours them, local mode searches
exactly and ignores them) and `qdrant-edge` (the engine in-process honours them all).
Stores without these knobs (memory, chroma) take them too and warn that they have no
effect, so one set of options can be tried on every store.

- `m`: edges per node of the HNSW graph. More edges, better recall, more memory and a
  slower build. Qdrant's default 16.
- `ef_construct`: candidates kept while the graph is built. Higher, better graph and
  slower build. Qdrant's default 100.
- `hnsw_ef`: candidates kept while a query walks the graph. Higher, better recall and
  slower queries; the one knob that can change per query without a rebuild.
- `quantization`: a compressed copy of the vectors searched first, the best
  `oversampling` x top_k candidates then re-scored with the full vectors (`rescore`):
  "int8" (scalar, 4x smaller), "binary" (1 bit a dimension, 32x), "product"
  (product quantization, 16x here), "turbo" (TurboQuant, 4 bits a dimension), or None.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

QUANTIZATIONS = ("int8", "binary", "product", "turbo")
INDEX_OPTIONS = ("quantization", "m", "ef_construct", "hnsw_ef")

# Defaults chosen from the benchmark's sweep (README, "Qdrant's production options"):
# int8 with rescoring keeps recall and is faster than float vectors; hnsw_ef 128 reaches
# recall@10 >= 0.99 on real vectors where Qdrant's default (ef = 100 at query time) does not always.
DEFAULT_QUANTIZATION = "int8"
DEFAULT_HNSW_EF = 128
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCT = 100
DEFAULT_OVERSAMPLING = 2.0

# The payload fields the router filters on, and the one whose values get their own HNSW links.
# Qdrant adds graph links for every indexed field's blocks of points (each keyword value, each
# range of a number) so a filtered walk stays connected; that multiplies the build. Measured
# on qdrant-edge at 100,000 random 384-d points, int8 (results/production/links/): 129 s with
# links for all four fields, 51 s for domain_tags only, 32 s with none; the domain filter's
# recall@10 0.919, 0.899 and 0.747. The router's selective filter is the domain; confidence and
# expiry pass most points, so they get no links of their own.
FILTER_FIELDS = {"domain_tags": "keyword", "agent_id": "keyword", "confidence": "float", "expires_at": "float"}
HNSW_LINKED_FIELDS = ("domain_tags",)

# How qdrant-edge answers a filtered query (qdrant_edge_params.EdgePlanner), chosen from
# `python -m qis_lib.bench.production planner` (results/production/planner/planner.csv, real
# vectors, 100,000 points). A filter a segment estimates to keep fewer than FULL_SCAN_POINTS
# points is answered by scoring each of them: Qdrant's default stays, since below it filters
# on a field without graph links (confidence) walk a graph cut to pieces (recall@10 far below
# 0.99 at 1,000); the domain filter goes faster with each domain's points stored together
# (is_tenant: compare the "qdrant" and "tenant" rows of the domain filters); ACORN stays off,
# as it slows the domain filter, which the graph answers with the domain's own links (the
# rows with acorn 0.4).
FULL_SCAN_POINTS = 6_666  # Qdrant's default: 10,000 KB of 384-d vectors
DOMAIN_IS_TENANT = True
ACORN_MAX_SELECTIVITY: float | None = None

# qdrant-edge's automatic index builds (QdrantEdgeStore, qdrant_edge_builds.py). A build starts
# once INDEX_THRESHOLD points were written since the last one, and holds Python's GIL (so every
# thread of the process) until it ends; it indexes the new points and, up to
# MAX_SEGMENT_POINTS, merges them into the smallest indexed segment. Chosen from
# `python -m qis_lib.bench.production autoindex` (results/production/segments/autoindex.csv,
# 100,000 single deposits of real vectors): the largest bound whose longest stall (build_s_max,
# tick_gap_max_ms) stays under 2 s, since each further segment adds to every query
# (p99_ratio_bulk_*); a smaller threshold makes each build's own share smaller. A hybrid store's
# build also rebuilds the BM25 index of what it merges, so it has its own bound, read the same
# way from results/production/segments-hybrid/autoindex.csv.
INDEX_THRESHOLD = 2_500
MAX_SEGMENT_POINTS = 25_000
MAX_SEGMENT_POINTS_HYBRID = 15_000


def _int_option(name: str, value, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be None or an int from {low} to {high}, got {value!r}")
    return value


@dataclass(frozen=True)
class IndexOptions:
    """Checked index options; None means the engine's own default."""

    quantization: str | None = DEFAULT_QUANTIZATION
    m: int | None = DEFAULT_M
    ef_construct: int | None = DEFAULT_EF_CONSTRUCT
    hnsw_ef: int | None = DEFAULT_HNSW_EF
    rescore: bool = True
    oversampling: float | None = DEFAULT_OVERSAMPLING

    def __post_init__(self) -> None:
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be None or one of {', '.join(map(repr, QUANTIZATIONS))}, "
                             f"got {self.quantization!r}")
        _int_option("m", self.m, 4, 256)
        _int_option("ef_construct", self.ef_construct, 4, 4096)
        _int_option("hnsw_ef", self.hnsw_ef, 1, 10_000)
        if not isinstance(self.rescore, bool):
            raise ValueError(f"rescore must be True or False, got {self.rescore!r}")
        if self.oversampling is not None and (isinstance(self.oversampling, bool)
                                              or not isinstance(self.oversampling, (int, float))
                                              or not 1.0 <= self.oversampling <= 100.0):
            raise ValueError(f"oversampling must be None or a number from 1 to 100, got {self.oversampling!r}")

    def as_dict(self) -> dict:
        return {"quantization": self.quantization, "m": self.m, "ef_construct": self.ef_construct,
                "hnsw_ef": self.hnsw_ef, "rescore": self.rescore, "oversampling": self.oversampling}


DEFAULT = object()  # "the project's default", told apart from an explicit None


def resolve(quantization=DEFAULT, m=DEFAULT, ef_construct=DEFAULT, hnsw_ef=DEFAULT, rescore: bool = True,
            oversampling=DEFAULT) -> tuple[IndexOptions, dict]:
    """The checked options with DEFAULT replaced by the project's defaults, and those given explicitly."""
    given = {k: v for k, v in (("quantization", quantization), ("m", m), ("ef_construct", ef_construct),
                               ("hnsw_ef", hnsw_ef), ("oversampling", oversampling)) if v is not DEFAULT}
    fields = {"quantization": DEFAULT_QUANTIZATION, "m": DEFAULT_M, "ef_construct": DEFAULT_EF_CONSTRUCT,
              "hnsw_ef": DEFAULT_HNSW_EF, "oversampling": DEFAULT_OVERSAMPLING}
    return IndexOptions(**{**fields, **given}, rescore=rescore), given


def warn_ignored(store: str, honoured_by: str, **given) -> None:
    """A UserWarning for each index option given to a store that cannot honour it."""
    for name, value in given.items():
        if value is not None:
            warnings.warn(f"{store} ignores {name}={value!r}: it has no such setting ({honoured_by} honours it)",
                          UserWarning, stacklevel=3)
