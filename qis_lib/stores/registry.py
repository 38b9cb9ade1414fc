"""One entry per store: everything the suite knows about a store, in one place.

The router reads an entry to open a store by name or url; the conformance suite runs
every `Mode` of every entry; the benchmark and the reliability harness pick their
targets from the modes. Adding a store is its module plus one `StoreSpec` (here, or
`register_store` from your own code) and its pin in requirements.txt.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Callable

from .contract import Store

LOCATIONS = ("path", "host", "hosts")  # what a store url's location may be


@dataclass(frozen=True)
class Mode:
    """One way to open a store, run by the conformance suite (and the benchmark, with `bench`).

    `options(ctx)` gives the keyword arguments for the store's class from a context that
    the harness running the mode builds (`qis_lib.bench.modes.ModeContext`): `ctx.folder`
    (a fresh folder), `ctx.collection` (a unique name), and `ctx.server(key)`, a running
    server the harness starts by that name and shares between modes (e.g. "chroma-server";
    a server of a new kind: `ctx.server(key, start)`). `needs()` says why this mode cannot
    run here (e.g. no server address), or None.
    """

    name: str
    options: Callable[[Any], dict[str, Any]]
    needs: Callable[[], str | None] = lambda: None
    bench: str | None = None  # the benchmark target name, if the benchmark measures this mode
    bench_max_n: int | None = None  # larger N are skipped by the benchmark, for the reason below
    bench_why_capped: str = ""
    description: str = ""
    cleanup: Callable[[Store], None] | None = None  # run before close: remove what the mode created


@dataclass(frozen=True)
class StoreSpec:
    """A store: its class, what to install, the url forms it takes and the modes to test."""

    name: str  # make_router name and url scheme
    module: str  # importable module holding the class, imported only when the store is chosen
    cls: str
    extra: str | None  # pip extra that installs its client: pip install "qis-routing[EXTRA]"
    locations: tuple[str, ...]  # what scheme://LOCATION may be, from LOCATIONS; () for none
    modes: tuple[Mode, ...]
    description: str = ""
    requires: tuple[str, ...] = ()  # modules its client provides (imported by the store when opened)
    # "module:Class" of the router make_router returns for this store instead of an OutcomeRouter
    # over it (a routing service embeds for its agents), called with the store's options.
    router: str | None = None
    hybrid: bool = False  # its class takes hybrid= (BM25 + dense fused in the engine; see stores/bm25.py)
    tls_scheme: str | None = None  # the url scheme of its servers over TLS ("https"), which names this store too

    def __post_init__(self) -> None:
        unknown = [loc for loc in self.locations if loc not in LOCATIONS]
        if unknown:
            raise ValueError(f"store {self.name!r}: unknown location kind(s) {unknown}; use {LOCATIONS}")

    @property
    def url_forms(self) -> list[str]:
        """The urls this store takes, for error messages and the README."""
        kinds = {"path": f"{self.name}:///PATH", "host": f"{self.name}://HOST:PORT",
                 "hosts": f"{self.name}://HOST:PORT[,HOST:PORT...]"}
        forms = [f"{self.name}://"] + [kinds[k] for k in self.locations]
        return forms + [f"{self.tls_scheme}://HOST:PORT"] * bool(self.tls_scheme)

    def load(self) -> type[Store]:
        """The store's class, importing its module now; a missing client is an ImportError naming the extra."""
        install = f'pip install "qis-routing[{self.extra}]"' if self.extra else "install its client"
        missing = [name for name in self.requires if importlib.util.find_spec(name) is None]
        if missing:
            raise ImportError(f"the {self.name!r} store needs {', '.join(missing)}, which is not installed: {install}")
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise ImportError(f"the {self.name!r} store needs a package that is not installed "
                              f"({exc.name or exc}): {install}") from exc
        return getattr(module, self.cls)

    def load_router(self) -> Callable[..., Any]:
        """The class named by `router` (imported now)."""
        module, _, name = self.router.partition(":")
        return getattr(importlib.import_module(module), name)


def _http_options(ctx, server: str) -> dict[str, Any]:
    """An http mode's options: its routing service (started with --auth on) and the admin key
    its clients send, a namespace of the test's own."""
    service = ctx.server(server)
    return {"url": service.url, "namespace": ctx.collection, "api_key": getattr(service, "admin_key", None)}


def drop_service_namespace(store: Store) -> None:
    """Delete the namespace an `http` mode's test created, through a client of its own: the
    test may have closed the store's client already (the reopen test does)."""
    from .http import ServiceClient

    with ServiceClient(store.url, api_key=store.api_key) as client:
        client.call("DELETE", f"/v1/vectors/{store.namespace}")


def _qdrant_url() -> str | None:
    return os.environ.get("QDRANT_URL")


def drop_server_collection(store: Store) -> None:
    """Delete the collection a `qdrant-server` run created, through a client of its own: the
    test may have closed the store's clients already."""
    from qdrant_client import QdrantClient

    client = QdrantClient(url=store.urls[0], check_compatibility=False)
    try:
        client.delete_collection(store.collection_name)
    finally:
        client.close()


CHROMA_WHY = ("every router query carries a where clause (expiry, confidence), and Chroma's query time grows "
              "linearly with N under one (tens of ms at 10k, about 0.6-0.9 s at 30k measured on this machine "
              "under load), so 6,000 calls at 100k would take hours")
QDRANT_LOCAL_WHY = ("qdrant-client local mode is pure Python (exact search, filters checked in Python point by point, "
                    "no payload indexes; it warns above 20,000 points): about 30 ms a query at 1k and ten times "
                    "that at 10k, so 6,000 calls at 10k would take about half an hour")

BUILTIN = (
    StoreSpec("memory", "qis_lib.stores.memory", "MemoryStore", extra=None, locations=(),
              description="numpy matrix, exact cosine, in-process; the reference the others are tested against",
              modes=(Mode("memory", lambda ctx: {}, bench="memory", description="numpy exact, in-process"),)),
    StoreSpec("chroma", "qis_lib.stores.chroma", "ChromaStore", extra="chroma", locations=("path", "host"),
              requires=("chromadb",),
              description="ChromaDB: embedded (ephemeral or a path) or a `chroma run` server",
              modes=(
                  Mode("chroma-ephemeral", lambda ctx: {"collection": ctx.collection}),
                  Mode("chroma-path", lambda ctx: {"path": str(ctx.folder / "chroma"), "collection": ctx.collection},
                       bench="chroma", bench_max_n=10_000, bench_why_capped=CHROMA_WHY,
                       description="embedded PersistentClient, temp folder"),
                  Mode("chroma-server", lambda ctx: {"url": ctx.server("chroma-server").url,
                                                     "collection": ctx.collection},
                       bench="chroma-server", bench_max_n=10_000, bench_why_capped=CHROMA_WHY,
                       description="chroma run on loopback, HTTP"),
              )),
    StoreSpec("qdrant", "qis_lib.stores.qdrant", "QdrantStore", extra="qdrant", locations=("path", "hosts"),
              requires=("qdrant_client",), hybrid=True,
              description="Qdrant through qdrant-client: local mode, a server, or a cluster with node failover",
              modes=(
                  Mode("qdrant-memory", lambda ctx: {"location": ":memory:", "collection": ctx.collection},
                       bench="qdrant", bench_max_n=1_000, bench_why_capped=QDRANT_LOCAL_WHY,
                       description="qdrant-client local mode (:memory:)"),
                  Mode("qdrant-path", lambda ctx: {"path": str(ctx.folder / "qdrant"), "collection": ctx.collection}),
                  Mode("qdrant-server", lambda ctx: {"url": _qdrant_url(), "collection": ctx.collection},
                       needs=lambda: None if _qdrant_url() else
                       "no Qdrant server: set QDRANT_URL (e.g. docker compose up -d, then "
                       "QDRANT_URL=http://localhost:6333)",
                       bench="qdrant-server", description="Qdrant server at $QDRANT_URL, HTTP",
                       cleanup=drop_server_collection),
                  Mode("qdrant-server-grpc", lambda ctx: {"url": _qdrant_url(), "prefer_grpc": True,
                                                          "collection": ctx.collection},
                       needs=lambda: None if _qdrant_url() else
                       "no Qdrant server: set QDRANT_URL (its gRPC port 6334 must be reachable too)",
                       bench="qdrant-server-grpc", description="Qdrant server at $QDRANT_URL, gRPC (prefer_grpc)",
                       cleanup=drop_server_collection),
              )),
    StoreSpec("qdrant-edge", "qis_lib.stores.qdrant_edge", "QdrantEdgeStore", extra=None, locations=("path",),
              requires=("qdrant_edge",), hybrid=True,
              description="the Qdrant engine in-process (qdrant-edge-py): HNSW and payload indexes, one opener",
              modes=(Mode("qdrant-edge", lambda ctx: {"path": str(ctx.folder / "edge")}, bench="qdrant-edge",
                          description="Qdrant engine in-process, payload indexes, temp folder"),)),
    StoreSpec("http", "qis_lib.stores.http", "HttpStore", extra="serve", locations=("host",), requires=("httpx",),
              router="qis_lib.serve.client:RemoteRouter", tls_scheme="https",
              description="a routing service (python -m qis_lib.serve): agents send text, the service embeds",
              modes=(Mode("http", lambda ctx: _http_options(ctx, "http-service"),
                          cleanup=drop_service_namespace,
                          description="routing service on loopback over a memory store (--auth on, an admin key), "
                                      "a namespace per test"),
                     Mode("http-edge", lambda ctx: _http_options(ctx, "http-edge-service"),
                          cleanup=drop_service_namespace,
                          description="routing service on loopback over a qdrant-edge folder (persistent, --auth on), "
                                      "a namespace per test"),
                     )),
)

STORES: dict[str, StoreSpec] = {spec.name: spec for spec in BUILTIN}


def register_store(spec: StoreSpec, replace: bool = False) -> StoreSpec:
    """Add a store to the registry: make_router, the conformance suite and the benchmark see it."""
    if not isinstance(spec, StoreSpec):
        raise TypeError(f"register_store takes a StoreSpec, got {type(spec).__name__}")
    if spec.name in STORES and not replace:
        raise ValueError(f"a store named {spec.name!r} is registered already (replace=True to swap it)")
    taken = {m.name: s.name for s in STORES.values() if s.name != spec.name for m in s.modes}
    clash = [m.name for m in spec.modes if m.name in taken]
    if clash:
        raise ValueError(f"mode name(s) {clash} of store {spec.name!r} are used by another store")
    STORES[spec.name] = spec
    return spec


def unregister_store(name: str) -> None:
    """Remove a store added with register_store (the built-in ones stay)."""
    if name in {spec.name for spec in BUILTIN}:
        raise ValueError(f"{name!r} is built in and cannot be removed")
    STORES.pop(name, None)


def store_spec(name: str) -> StoreSpec:
    if name not in STORES:
        raise ValueError(f"unknown store {name!r}; choose one of {sorted(STORES)}")
    return STORES[name]


# Settings only a Qdrant server or cluster can honour: a store whose class does not take one
# gets a warning naming it and it is left out, never a bare TypeError and never silently dropped.
CLUSTER_SETTINGS = ("shard_number", "replication_factor", "write_consistency_factor")


def drop_cluster_settings(name: str, cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """`options` without the cluster settings `cls` does not take, each one warned about."""
    import inspect
    import warnings

    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    kept = dict(options)
    for key in CLUSTER_SETTINGS:
        if key in kept and key not in params:
            warnings.warn(f"{key}={kept.pop(key)!r} has no effect on the {name} store (one copy, no cluster): a "
                          f"Qdrant server or cluster honours it (make_router('qdrant', urls=[...], {key}=...))",
                          UserWarning, stacklevel=3)
    return kept


def open_store(name: str, **options) -> Store:
    """A store of the named kind, opened with `options` (its class's keyword arguments)."""
    cls = store_spec(name).load()
    return cls(**drop_cluster_settings(name, cls, options))


def all_modes() -> dict[str, tuple[StoreSpec, Mode]]:
    """Every mode of every registered store, by mode name."""
    return {mode.name: (spec, mode) for spec in STORES.values() for mode in spec.modes}
