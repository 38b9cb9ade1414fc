"""Transports: one module per store, imported only when chosen."""
from __future__ import annotations

import importlib

from .base import Capabilities, QueryFilter, StoreBusyError, Transport

# name -> (module, class, pip package that provides the store)
REGISTRY = {
    "memory": ("memory", "MemoryTransport", None),
    "chroma": ("chroma", "ChromaTransport", "chromadb"),
    "qdrant": ("qdrant", "QdrantTransport", "qdrant-client"),
    "qdrant-edge": ("qdrant_edge", "QdrantEdgeTransport", "qdrant-edge-py"),
}


def transport_class(name: str):
    if name not in REGISTRY:
        raise ValueError(f"unknown transport {name!r}; choose one of {sorted(REGISTRY)}")
    module, cls, package = REGISTRY[name]
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
        return getattr(mod, cls)
    except ImportError as exc:
        raise ImportError(f"transport {name!r} needs the package {package!r}: pip install {package} ({exc})") from exc


def open_transport(name: str, **options) -> Transport:
    return transport_class(name)(**options)


__all__ = ["Capabilities", "QueryFilter", "StoreBusyError", "Transport", "REGISTRY", "open_transport",
           "transport_class"]
