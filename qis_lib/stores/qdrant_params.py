"""What QdrantStore sends to Qdrant: its filter, collection and index settings, the payload
indexes, and the connection settings in qdrant-client's names (host, port, gRPC)."""
from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import urlparse

from .contract import QueryFilter
from .options import FILTER_FIELDS, HNSW_LINKED_FIELDS, IndexOptions

def qdrant_filter(flt: QueryFilter):
    """The router's filter as a qdrant-client `models.Filter`. A condition that keeps every packet
    is left out (confidence >= 0.0: an OutcomePacket's confidence is from 0 to 1), so the planner
    does not estimate and check it."""
    from qdrant_client import models

    must = [models.FieldCondition(key="expires_at", range=models.Range(gt=flt.now))]
    if flt.min_confidence > 0.0:
        must.append(models.FieldCondition(key="confidence", range=models.Range(gte=flt.min_confidence)))
    if flt.domain is not None:
        must.append(models.FieldCondition(key="domain_tags", match=models.MatchValue(value=flt.domain)))
    must_not = None
    if flt.exclude_agent is not None:
        must_not = [models.FieldCondition(key="agent_id", match=models.MatchValue(value=flt.exclude_agent))]
    return models.Filter(must=must, must_not=must_not)


def check_url(url: Any) -> str:
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"Qdrant node url must look like http://host:6333, got {url!r}")
    return url


def collection_params(dim: int, shard_number: int | None = None, replication_factor: int | None = None,
                      write_consistency_factor: int | None = None) -> dict[str, Any]:
    """Arguments for `create_collection`; cluster settings only when given."""
    from qdrant_client import models

    for key, value in (("shard_number", shard_number), ("replication_factor", replication_factor),
                       ("write_consistency_factor", write_consistency_factor)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    if replication_factor is not None and write_consistency_factor is not None \
            and write_consistency_factor > replication_factor:
        raise ValueError(f"write_consistency_factor ({write_consistency_factor}) cannot exceed "
                         f"replication_factor ({replication_factor}): no write could ever succeed")
    params: dict[str, Any] = {"vectors_config": models.VectorParams(size=dim, distance=models.Distance.COSINE)}
    for key, value in (("shard_number", shard_number), ("replication_factor", replication_factor),
                       ("write_consistency_factor", write_consistency_factor)):
        if value is not None:
            params[key] = value
    return params


def index_params(options: IndexOptions) -> dict[str, Any]:
    """`create_collection` arguments for the HNSW and quantization options (a server honours them)."""
    from qdrant_client import models

    params: dict[str, Any] = {"hnsw_config": models.HnswConfigDiff(m=options.m, ef_construct=options.ef_construct)}
    kinds = {
        "int8": lambda: models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=0.99, always_ram=True)),
        "binary": lambda: models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True)),
        "product": lambda: models.ProductQuantization(product=models.ProductQuantizationConfig(
            compression=models.CompressionRatio.X16, always_ram=True)),
    }
    if options.quantization is not None:
        if options.quantization not in kinds:
            raise ValueError(f"quantization={options.quantization!r} is not offered by qdrant-client "
                             f"{_client_version()}; choose None or one of {', '.join(map(repr, kinds))}")
        params["quantization_config"] = kinds[options.quantization]()
    return params


def search_params(options: IndexOptions):
    """The query-time `SearchParams`: hnsw_ef and rescoring of quantized candidates."""
    from qdrant_client import models

    quant = None
    if options.quantization is not None:
        quant = models.QuantizationSearchParams(rescore=options.rescore, oversampling=options.oversampling)
    return models.SearchParams(hnsw_ef=options.hnsw_ef, quantization=quant)


def _client_version() -> str:
    from importlib.metadata import version

    return version("qdrant-client")


def payload_indexes(linked: Sequence[str] = HNSW_LINKED_FIELDS):
    """The payload index of each filter field (a server plans filtered searches with them),
    with HNSW links for the fields in `linked` only."""
    from qdrant_client import models

    kinds = {"keyword": models.KeywordIndexParams, "float": models.FloatIndexParams}
    return {field: kinds[kind](type=kind, enable_hnsw=field in linked) for field, kind in FILTER_FIELDS.items()}


DEFAULT_GRPC_PORT = 6334
DEFAULT_PORT = 6333


def server_url(host: Any, port: Any) -> str:
    """qdrant-client's `host=`/`port=` as a node url (port 6333 unless given)."""
    if not isinstance(host, str) or not host or "/" in host:
        raise ValueError(f"host must be a host name like 'localhost' (port= apart), got {host!r}")
    port = DEFAULT_PORT if port is None else port
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"port must be an int from 1 to 65535, got {port!r}")
    return check_url(f"http://{host}:{port}")


def check_grpc(grpc_port: Any, prefer_grpc: Any) -> None:
    if not isinstance(grpc_port, int) or isinstance(grpc_port, bool) or not 0 < grpc_port < 65536:
        raise ValueError(f"grpc_port must be an int from 1 to 65535, got {grpc_port!r}")
    if not isinstance(prefer_grpc, bool):
        raise ValueError(f"prefer_grpc must be True or False, got {prefer_grpc!r}")


def warn_local_settings(**settings: Any) -> None:
    """Local mode has one in-process copy and no network: say so for each server setting given."""
    import warnings

    for key, value in settings.items():
        if value is not None:
            warnings.warn(f"{key}={value!r} has no effect in qdrant-client local mode (one in-process copy, no "
                          f"server): a Qdrant server or cluster honours it (make_router('qdrant', url=... or "
                          f"urls=[...] or host=...))", UserWarning, stacklevel=4)
