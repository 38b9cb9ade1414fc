"""Running a store's registry modes: the context a mode's options are built from, and the
servers modes run against (a `chroma run` server, the routing service).

The registry (`qis_lib.stores.registry`) describes each mode as data: `options(ctx)` gives
the store's keyword arguments from a `ModeContext`, and a mode that runs against a server
asks for it by name, `ctx.server("chroma-server")`. This module starts those servers, so
the store layer imports nothing above it. The conformance suite, the latency benchmark
and the reliability harness build their contexts here.

A new store whose mode needs a server of a new kind passes its own starter:
`ctx.server("my-server", start)`, where start(stack, folder) returns a running server
(anything with a `url`) whose stop is registered on `stack`.
"""
from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

Starter = Callable[[contextlib.ExitStack, Path], Any]


def start_chroma_server(stack: contextlib.ExitStack, folder: Path):
    """`chroma run` on a free loopback port over `folder`."""
    from ..infra.servers import ChromaServer

    # `chroma run` answers in about 1 s on a quiet machine and has taken over 30 s on a loaded one.
    return stack.enter_context(ChromaServer(path=folder, start_timeout=120.0))


def _service_with_keys(stack: contextlib.ExitStack, folder: Path, store: str):
    """A routing service over `store` with the hash embedder and a keys file holding one admin
    key (`service.admin_key`, which the modes' clients send): the suite runs with --auth on."""
    from ..serve.auth import write_keys_file
    from ..serve.process import RoutingService

    folder.mkdir(parents=True, exist_ok=True)
    keys = write_keys_file(folder / "keys.json")
    service = stack.enter_context(RoutingService(store, embedder="hash", folder=folder, auth=folder / "keys.json"))
    service.admin_key = keys["admin"]
    return service


def start_http_service(stack: contextlib.ExitStack, folder: Path):
    """A routing service over a memory store with the hash embedder: the vector API needs no model."""
    return _service_with_keys(stack, folder, "memory://")


def start_http_edge_service(stack: contextlib.ExitStack, folder: Path):
    """A routing service over a qdrant-edge folder (persistent: a killed service restarted on
    the same folder and port finds what it acknowledged), with the hash embedder. Its index
    builds every 1,000 new points (not 5,000), so a kill cycle's service dies during one now and then."""
    return _service_with_keys(stack, folder, f"qdrant-edge://{folder / 'edge'}?index_threshold=1000")


# The servers the built-in modes ask for, by the name they ask with.
SERVERS: dict[str, Starter] = {"chroma-server": start_chroma_server, "http-service": start_http_service,
                               "http-edge-service": start_http_edge_service}


@dataclass
class ServerPool:
    """Servers started on first use and shared by every mode run against this pool (a test
    session, a benchmark run); they stop when `stack` closes."""

    folder: Path
    stack: contextlib.ExitStack
    servers: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, start: Starter | None = None) -> Any:
        """The server cached under `key`, started the first time with start(stack, folder/key)
        (by default the starter `SERVERS` holds for `key`)."""
        if key not in self.servers:
            if start is None:
                if key not in SERVERS:
                    raise ValueError(f"no server named {key!r} to start; known: {sorted(SERVERS)} "
                                     f"(a mode with a server of its own passes ctx.server(key, start))")
                start = SERVERS[key]
            self.servers[key] = start(self.stack, self.folder / key)
        return self.servers[key]


@dataclass
class ModeContext:
    """What a mode needs to build its options: a fresh folder, a unique collection name,
    and a pool of shared servers (by default, servers that live as long as `stack`)."""

    folder: Path
    stack: contextlib.ExitStack
    collection: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:12]}")
    pool: ServerPool | None = None

    def server(self, key: str, start: Starter | None = None) -> Any:
        """A running server for `key` from the pool (started now if the pool has none)."""
        if self.pool is None:
            self.pool = ServerPool(self.folder / "servers", self.stack)
        return self.pool.get(key, start)
