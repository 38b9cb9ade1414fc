"""The store's own contract over HTTP, one namespace per path (created on first use), for admin keys.

What `qis_lib.stores.http.HttpStore` calls: info, ids, upsert, query, get, delete, and the
removal of a namespace. Writes go through the `Gate` (audited; into "default", the agents'
namespace, every payload is checked as a packet, see `checked_payloads`).
"""
from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Path

from ..stores.contract import QueryFilter
from ..stores.http import DEFAULT_NAMESPACE
from . import models as m
from .gate import Caller, Gate
from .namespaces import NAME


def vector_api(api: APIRouter, gate: Gate, who, library_rules, error_model) -> None:
    """Add the vector API's routes to `api` (`who`: the caller dependency)."""
    ns_param = Path(pattern=NAME.pattern, description=f'"{DEFAULT_NAMESPACE}" is the agents\' store')
    full = {409: {"model": error_model, "description": "the service holds its limit of namespaces"}}

    async def contract(call, fields):
        try:
            return await call
        except (ValueError, TypeError) as exc:
            raise library_rules(exc, fields) from None

    @api.get("/vectors/{namespace}/info", response_model=m.InfoOut, tags=["vectors"], responses=full)
    async def info(namespace: str = ns_param, me: Caller = who) -> dict:
        """The namespace's store: kind, dimension, count, capabilities."""
        return await gate.read(me, namespace, lambda s: {
            "namespace": namespace, "store": s.name, "dim": s.dim, "count": s.count(),
            "capabilities": vars(s.capabilities), "uuid_ids": _takes_uuids_only(s)})

    @api.get("/vectors/{namespace}/ids", response_model=m.IdsOut, tags=["vectors"],
             responses={**full, 501: {"model": error_model, "description": "the store cannot list its ids"}})
    async def ids(namespace: str = ns_param, me: Caller = who) -> dict:
        """Every id the store holds, expired ones included (a full scroll, for crash checks)."""
        try:
            return {"ids": await gate.read(me, namespace, lambda s: s.scroll_ids())}
        except NotImplementedError as exc:
            raise HTTPException(501, str(exc)) from None

    @api.post("/vectors/{namespace}/upsert", response_model=m.Done, tags=["vectors"], responses=full)
    async def upsert(body: m.UpsertIn, namespace: str = ns_param, me: Caller = who) -> dict:
        """Write the batch (checked whole first: a bad batch writes nothing)."""
        await contract(gate.upsert(me, namespace, body.ids, body.vectors, body.payloads),
                       ("ids", "vectors", "payloads"))
        return {"done": True}

    @api.post("/vectors/{namespace}/query", response_model=m.VectorHitsOut, tags=["vectors"], responses=full)
    async def vector_query(body: m.VectorQueryIn, namespace: str = ns_param, me: Caller = who) -> dict:
        """The top_k payloads nearest `vector` among those the filter keeps."""
        f = body.filter
        flt = QueryFilter(now=time.time() if f.now is None else f.now, domain=f.domain,
                          min_confidence=f.min_confidence, exclude_agent=f.exclude_agent)
        hits = await contract(gate.read(me, namespace, lambda s: s.query(body.vector, body.top_k, flt)),
                              ("vector", "top_k", "filter"))
        return {"hits": [{"payload": p, "score": score} for p, score in hits]}

    @api.post("/vectors/{namespace}/get", response_model=m.PayloadsOut, tags=["vectors"], responses=full)
    async def vector_get(body: m.IdsIn, namespace: str = ns_param, me: Caller = who) -> dict:
        return {"payloads": await contract(gate.read(me, namespace, lambda s: s.get(body.ids)), ("ids",))}

    @api.post("/vectors/{namespace}/delete", response_model=m.Done, tags=["vectors"], responses=full)
    async def vector_delete(body: m.IdsIn, namespace: str = ns_param, me: Caller = who) -> dict:
        await contract(gate.vector_delete(me, namespace, body.ids), ("ids",))
        return {"done": True}

    @api.delete("/vectors/{namespace}", response_model=m.Done, tags=["vectors"],
                responses={404: {"model": error_model, "description": "no such namespace"}})
    async def drop(namespace: str = ns_param, me: Caller = who) -> dict:
        """Remove a namespace and its data (not the default one)."""
        dropped = await contract(gate.drop(me, namespace), ())
        if not dropped:
            raise HTTPException(404, f"no namespace {namespace!r}")
        return {"done": True}


def _takes_uuids_only(store) -> bool:
    try:
        store.check_store_ids(["not-a-uuid"])
    except ValueError:
        return True
    return False
