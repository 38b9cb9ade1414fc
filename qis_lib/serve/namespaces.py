"""The stores one service holds: "default" (the agents' router) and namespaces opened on demand.

A namespace is a fresh store of the same kind as the default one: a sibling folder
(`PATH.ns/NAME`) for a store with a path, a collection of its own (`COLLECTION-NAME`)
for a store with collections, a new in-process store otherwise. Every namespace has
one router over its store, sharing the service's embedder, so its text API and its
vector API see the same data.
"""
from __future__ import annotations

import inspect
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from ..core.router import OutcomeRouter
from ..core.urls import parse_store_url
from ..embedders import Embedder
from ..stores.contract import Store
from ..stores.http import DEFAULT_NAMESPACE
from ..stores.registry import STORES, open_store, store_spec

NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def store_of(url: str) -> tuple[str, dict[str, Any]]:
    """The store name and options of a store url or name ("memory", "qdrant-edge:///data/s")."""
    name, options = parse_store_url(url) if "://" in url else (url, {})
    if name not in STORES:
        raise ValueError(f"unknown store {name!r}; choose one of {sorted(STORES)}")
    if store_spec(name).router is not None:
        raise ValueError(f"the service cannot serve a {name!r} store: it is itself a routing service")
    return name, options


class Namespaces:
    """Routers by namespace name, "default" first; at most `limit` namespaces at once."""

    def __init__(self, store: str, embedder: Embedder, limit: int = 64):
        self.store_name, self.options = store_of(store)
        self.embedder = embedder
        self.limit = limit
        self._lock = threading.Lock()
        self._routers: dict[str, OutcomeRouter] = {DEFAULT_NAMESPACE: self._open(self.options)}

    @property
    def default(self) -> OutcomeRouter:
        return self._routers[DEFAULT_NAMESPACE]

    def __len__(self) -> int:
        return len(self._routers)

    def _open(self, options: dict[str, Any]) -> OutcomeRouter:
        """A router over a store opened as make_router opens it: hybrid where the store can fuse
        BM25 with the dense search (an existing store keeps what it holds), unless the url says."""
        if store_spec(self.store_name).hybrid:
            options = {"hybrid": None, **options}
        return OutcomeRouter(open_store(self.store_name, dim=self.embedder.dim, **options), self.embedder)

    def _options(self, name: str) -> dict[str, Any]:
        options = dict(self.options)
        if "path" in options:
            options["path"] = str(Path(f"{options['path']}.ns") / name)
        elif "collection" in inspect.signature(store_spec(self.store_name).load()).parameters:
            options["collection"] = f"{options.get('collection', 'outcomes')}-{name}"
        return options

    def get(self, name: str) -> OutcomeRouter:
        """The router of namespace `name`, opening a fresh store for it the first time."""
        with self._lock:
            if name in self._routers:
                return self._routers[name]
            if not NAME.match(name):
                raise ValueError(f"namespace must be 1-64 characters from [A-Za-z0-9._-], got {name!r}")
            if len(self._routers) >= self.limit:
                raise OverflowError(f"the service holds {self.limit} namespaces already (its limit); "
                                    f"drop one first (DELETE /v1/vectors/NAME)")
            router = self._routers[name] = self._open(self._options(name))
            return router

    def drop(self, name: str) -> bool:
        """Remove namespace `name` and its data; False if there was none."""
        if name == DEFAULT_NAMESPACE:
            raise ValueError("the default namespace is the agents' store and cannot be dropped")
        with self._lock:
            router = self._routers.pop(name, None)
        if router is None:
            return False
        _remove(router.store)
        return True

    def close(self) -> None:
        with self._lock:
            routers, self._routers = list(self._routers.values()), {}
        for router in routers:
            router.close()


def _remove(store: Store) -> None:
    """Close `store` and delete what it holds (its collection, or its folder)."""
    drop = getattr(store, "drop_collection", None)
    if callable(drop):
        drop()
    path = getattr(store, "path", None)
    store.close()
    if path and Path(f"{path}").parent.name.endswith(".ns"):
        shutil.rmtree(path, ignore_errors=True)
