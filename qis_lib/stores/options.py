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

# How qdrant-edge's planner answers a filtered query (qdrant_edge_params.EdgePlanner).
# PLACEHOLDER: measured in results/production/planner/.
FULL_SCAN_POINTS = 6_666  # Qdrant's default: 10,000 KB of 384-d vectors
DOMAIN_IS_TENANT = False
ACORN_MAX_SELECTIVITY: float | None = None

# qdrant-edge's automatic index builds (QdrantEdgeStore). A build starts once INDEX_THRESHOLD
# points were written since the last one; it holds Python's GIL throughout, so it stalls
# every thread of the process for as long as it runs.
INDEX_THRESHOLD = 5_000
# PLACEHOLDER: measured in results/production/segments/.
MAX_SEGMENT_POINTS = 15_000


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
