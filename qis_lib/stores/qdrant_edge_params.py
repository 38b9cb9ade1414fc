"""What QdrantEdgeStore sends to the engine: the shard's config (vectors, HNSW, quantization,
the optimizer's thresholds), the filter, the search parameters, the payload indexes, and the
cosine a hybrid result is scored with."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .bm25 import SPARSE_NAME
from .contract import QueryFilter
from .options import (ACORN_MAX_SELECTIVITY, DOMAIN_IS_TENANT, FILTER_FIELDS, FULL_SCAN_POINTS, HNSW_LINKED_FIELDS,
                      IndexOptions)


@dataclass(frozen=True)
class EdgePlanner:
    """How the engine answers a filtered query (options.py says why the defaults).

    full_scan_points: a segment answers a filter it estimates to keep fewer points than this
    by scoring each of them (exact), more through the HNSW graph; also the smallest block of
    a linked field's value that gets graph links. Qdrant's default is 10,000 KB of vectors
    (6,666 points at 384-d). tenant_domain: `is_tenant` on the domain_tags index, which stores
    each domain's points together when a segment is built. acorn: None, or the largest share
    of a segment's points a filter may keep for the graph search to use ACORN (it looks past
    the neighbours the filter drops to theirs)."""

    full_scan_points: int = FULL_SCAN_POINTS
    tenant_domain: bool = DOMAIN_IS_TENANT
    acorn: float | None = ACORN_MAX_SELECTIVITY

    def __post_init__(self) -> None:
        if isinstance(self.full_scan_points, bool) or not isinstance(self.full_scan_points, int) \
                or self.full_scan_points < 1:
            raise ValueError(f"full_scan_points must be a positive int, got {self.full_scan_points!r}")
        if not isinstance(self.tenant_domain, bool):
            raise ValueError(f"tenant_domain must be True or False, got {self.tenant_domain!r}")
        if self.acorn is not None and (isinstance(self.acorn, bool) or not isinstance(self.acorn, (int, float))
                                       or not 0.0 < self.acorn <= 1.0):
            raise ValueError(f"acorn must be None or a share above 0 and at most 1, got {self.acorn!r}")


def vector_kb(points: int, dim: int) -> int:
    """`points` float32 vectors of `dim` in KB, the unit of the engine's thresholds, plus one:
    the engine keeps a segment strictly under its limit, so exactly `points` points fit."""
    return points * dim * 4 // 1024 + 1


def edge_config(qe, dim: int, options: IndexOptions, planner: EdgePlanner, index_threshold: int | None,
                max_segment_points: int | None, with_bm25: bool):
    """The shard's config: vectors (and the BM25 sparse vector), HNSW, quantization, and the
    optimizer's thresholds: a segment is indexed once it holds `index_threshold` points, and
    no build makes a segment above `max_segment_points` points from smaller ones (one segment
    written larger, as a bulk load does, is indexed whole). None: the engine's defaults."""
    hnsw = qe.HnswIndexConfig(m=options.m if options.m is not None else 16,  # None: Qdrant's defaults
                              ef_construct=options.ef_construct if options.ef_construct is not None else 100,
                              full_scan_threshold=vector_kb(planner.full_scan_points, dim))
    thresholds = {}
    if index_threshold is not None:
        thresholds["indexing_threshold"] = max(1, index_threshold * dim * 4 // 1024)
    if max_segment_points is not None:
        thresholds["max_segment_size"] = vector_kb(max_segment_points, dim)
    sparse = {SPARSE_NAME: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if with_bm25 else None
    return qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine), sparse_vectors=sparse,
                         hnsw_config=hnsw, quantization_config=edge_quantization(options.quantization),
                         optimizers=qe.EdgeOptimizersConfig(**thresholds) if thresholds else None)


def edge_quantization(name: str | None):
    """The qdrant_edge quantization config for an option value (all kept in RAM)."""
    import qdrant_edge as qe

    if name is None:
        return None
    return {"int8": lambda: qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, always_ram=True),
            "binary": lambda: qe.BinaryQuantizationConfig(always_ram=True),
            "product": lambda: qe.ProductQuantizationConfig(qe.CompressionRatio.X16, always_ram=True),
            "turbo": lambda: qe.TurboQuantQuantizationConfig(always_ram=True, bits=qe.TurboQuantBitSize.Bits4),
            }[name]()


def edge_search_params(options: IndexOptions, planner: EdgePlanner = EdgePlanner()):
    import qdrant_edge as qe

    quant = None
    if options.quantization is not None:
        quant = qe.QuantizationSearchParams(rescore=options.rescore, oversampling=options.oversampling)
    acorn = None if planner.acorn is None else qe.AcornSearchParams(enable=True, max_selectivity=float(planner.acorn))
    if options.hnsw_ef is None and quant is None and acorn is None:
        return None
    return qe.SearchParams(hnsw_ef=options.hnsw_ef, quantization=quant, acorn=acorn)


def edge_filter(flt: QueryFilter):
    """The router's filter as a qdrant_edge `Filter`. A condition that keeps every packet is left
    out (confidence >= 0.0: an OutcomePacket's confidence is from 0 to 1), so the engine's planner
    does not estimate and check it on every candidate."""
    import qdrant_edge as qe

    must = [qe.FieldCondition("expires_at", range=qe.RangeFloat(gt=flt.now))]
    if flt.min_confidence > 0.0:
        must.append(qe.FieldCondition("confidence", range=qe.RangeFloat(gte=flt.min_confidence)))
    if flt.domain is not None:
        must.append(qe.FieldCondition("domain_tags", match=qe.MatchValue(flt.domain)))
    must_not = None
    if flt.exclude_agent is not None:
        must_not = [qe.FieldCondition("agent_id", match=qe.MatchValue(flt.exclude_agent))]
    return qe.Filter(must=must, must_not=must_not)


def edge_payload_indexes(linked: Sequence[str] = HNSW_LINKED_FIELDS, tenant_domain: bool = DOMAIN_IS_TENANT) -> dict:
    """The payload index of each filter field, with HNSW links for the fields in `linked` only,
    and domain_tags marked as the tenant field if `tenant_domain`."""
    import qdrant_edge as qe

    def params(field: str, kind: str):
        if kind == "float":
            return qe.FloatIndexParams(enable_hnsw=field in linked)
        return qe.KeywordIndexParams(enable_hnsw=field in linked,
                                     is_tenant=True if tenant_domain and field == "domain_tags" else None)

    return {field: params(field, kind) for field, kind in FILTER_FIELDS.items()}


def cosine(query: np.ndarray, stored) -> float:
    """Cosine of a query and a stored vector (Qdrant stores cosine vectors normalised)."""
    return cosines(query, [stored])[0]


def cosines(query: np.ndarray, stored: Sequence) -> list[float]:
    """Cosine of a query and each stored vector, in one matrix-vector product (a hybrid result is
    ordered by the fusion; its score shown is still the cosine)."""
    if not len(stored):
        return []
    matrix = np.asarray(stored, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(query))
    return (matrix @ query / np.maximum(norms, 1e-12)).tolist()
