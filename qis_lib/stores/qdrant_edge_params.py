"""What QdrantEdgeStore sends to the engine: the filter, quantization and search parameters,
the payload indexes, and the cosine a hybrid result is scored with."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .contract import QueryFilter
from .options import FILTER_FIELDS, HNSW_LINKED_FIELDS, IndexOptions


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


def edge_search_params(options: IndexOptions):
    import qdrant_edge as qe

    quant = None
    if options.quantization is not None:
        quant = qe.QuantizationSearchParams(rescore=options.rescore, oversampling=options.oversampling)
    if options.hnsw_ef is None and quant is None:
        return None
    return qe.SearchParams(hnsw_ef=options.hnsw_ef, quantization=quant)


def edge_filter(flt: QueryFilter):
    """The router's filter as a qdrant_edge `Filter`."""
    import qdrant_edge as qe

    must = [
        qe.FieldCondition("expires_at", range=qe.RangeFloat(gt=flt.now)),
        qe.FieldCondition("confidence", range=qe.RangeFloat(gte=flt.min_confidence)),
    ]
    if flt.domain is not None:
        must.append(qe.FieldCondition("domain_tags", match=qe.MatchValue(flt.domain)))
    must_not = None
    if flt.exclude_agent is not None:
        must_not = [qe.FieldCondition("agent_id", match=qe.MatchValue(flt.exclude_agent))]
    return qe.Filter(must=must, must_not=must_not)


def edge_payload_indexes(linked: Sequence[str] = HNSW_LINKED_FIELDS) -> dict:
    """The payload index of each filter field, with HNSW links for the fields in `linked` only."""
    import qdrant_edge as qe

    kinds = {"keyword": qe.KeywordIndexParams, "float": qe.FloatIndexParams}
    return {field: kinds[kind](enable_hnsw=field in linked) for field, kind in FILTER_FIELDS.items()}


def cosine(query: np.ndarray, stored) -> float:
    """Cosine of a query and a stored vector (Qdrant stores cosine vectors normalised)."""
    stored = np.asarray(stored, dtype=np.float32)
    return float(stored @ query / max(float(np.linalg.norm(query) * np.linalg.norm(stored)), 1e-12))
