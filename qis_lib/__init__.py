"""qis_lib: outcome routing over interchangeable vector stores.

The public API is what this module exports. The package is laid out as:

- `core/`: the outcome packet, the router, store urls;
- `stores/`: the contract every store keeps, one module per store, the registry;
- `embedders/`: text -> vectors (MiniLM on ONNX Runtime or torch, a hash stand-in);
- `infra/`: servers, cluster launchers, data sets, shipped seed packets;
- `serve/`: the routing service and its clients (`make_async_router`: the async one);
- `experiments/`: the demo, cold start, routing quality, reliability, failover;
- `bench/`: the latency and embedding benchmarks.

Imports point one way: experiments and bench use the rest, never the reverse.
Importing qis_lib loads numpy and msgpack only; a store's client is imported when
that store is chosen.
"""
from .core.packet import OUTCOME_TYPES, OutcomePacket
from .core.router import OutcomeRouter, Synthesis, make_router
from .embedders import get_embedder
from .serve.aclient import make_async_router
from .stores import (Capabilities, Mode, QueryFilter, Store, StoreBusyError, StoreSpec, open_store, register_store)

__all__ = ["OUTCOME_TYPES", "Capabilities", "Mode", "OutcomePacket", "OutcomeRouter", "QueryFilter", "Store",
           "StoreBusyError", "StoreSpec", "Synthesis", "get_embedder", "make_async_router", "make_router", "open_store",
           "register_store"]
