"""The routing service: one router (and its store) over HTTP, as a FastAPI app.

Agents send text (deposit, query, synthesize) and the service embeds it, so an agent
needs no model. Beside that text API, `/v1/vectors/{namespace}/...` exposes the
store's own contract (upsert vectors, query by vector with a filter, get, delete), so
anything written against `Store` runs over HTTP too (`qis_lib.stores.http.HttpStore`).
The namespace "default" is the agents' store: both APIs see the same packets.

Bad input never reaches the store: a body that is not JSON is a 4xx, a well-formed body
that breaks a rule is a 422 naming the field (`loc`) and the rule (`msg`), a body over
the size limit is a 413 before it is read, and with an API key a request without it is a
401. Every answer carries `Server-Timing: app;dur=MS` (time spent inside the service).
"""
from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from ..stores.contract import QueryFilter
from ..stores.http import API_KEY_HEADER, DEFAULT_NAMESPACE
from . import models as m
from .docs import install_docs
from .namespaces import NAME, Namespaces

DEFAULT_MAX_BODY = 4 * 1024 * 1024


class ErrorOut(BaseModel):
    detail: str


ERRORS = {400: {"model": ErrorOut, "description": "the body is not JSON the service can read"},
          413: {"model": ErrorOut, "description": "the body is over the service's size limit"}}


class Envelope:
    """ASGI middleware: refuse a body over `max_bytes` with 413 (by its Content-Length before
    reading it, or as soon as a chunked body passes the limit), and time each request."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._too_large(send, f"Content-Length {length.decode(errors='replace')[:20]}")
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, f"the body is over the service's limit of {self.max_bytes} bytes")
            return message

        async def timed(message):
            if message["type"] == "http.response.start":
                dur = f"app;dur={(time.perf_counter() - start) * 1000:.3f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", dur)]}
            await send(message)

        await self.app(scope, limited, timed)

    async def _too_large(self, send, what: str):
        body = JSONResponse({"detail": f"{what}: the body is over the service's limit of {self.max_bytes} bytes"},
                            status_code=413, headers={"connection": "close"})
        await body({"type": "http"}, None, send)


def _rule_errors(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each broken library rule's field in `loc` and its message in `msg`."""
    errors = []
    for error in exc.errors():
        error = dict(error)
        ctx = error.pop("ctx", None) or {}
        if error.get("type") == m.RULE and ctx.get("field"):
            error["loc"] = (*error["loc"], ctx["field"])
        elif ctx:
            error["ctx"] = {k: str(v) for k, v in ctx.items()}
        error.pop("url", None)
        errors.append(error)
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def _library_rules(exc: Exception, fields) -> RequestValidationError:
    """A ValueError/TypeError of the library (the store contract) as a 422."""
    message = str(exc)
    word = message.split(maxsplit=1)[0].strip(",:") if message else ""
    field = word if word in fields else word + "s" if word + "s" in fields else None
    loc = ("body", field) if field else ("body",)
    return RequestValidationError([{"type": m.RULE, "loc": loc, "msg": message, "input": None}])


def create_app(namespaces: Namespaces, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY) -> FastAPI:
    """The FastAPI app serving `namespaces` (its default router is the agents' one)."""
    app = FastAPI(title="qis-routing service", version="1", description=__doc__,
                  exception_handlers={RequestValidationError: _rule_errors}, docs_url=None, redoc_url=None)
    install_docs(app)
    app.state.namespaces = namespaces
    app.add_middleware(Envelope, max_bytes=max_body_bytes)
    guarded: list = []
    responses: dict[int | str, Any] = dict(ERRORS)
    if api_key:
        header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="the key the service was started with (--api-key)")
        wanted = api_key.encode()

        def require_key(key: str | None = Security(header)) -> None:
            if key is None or not secrets.compare_digest(key.encode(), wanted):
                raise HTTPException(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header",
                                    headers={"WWW-Authenticate": "APIKey"})

        guarded = [Depends(require_key)]
        responses[401] = {"model": ErrorOut, "description": "no API key, or a wrong one"}
    api = APIRouter(prefix="/v1", dependencies=guarded, responses=responses)
    router = namespaces.default

    @app.get("/health", response_model=m.HealthOut, tags=["service"])
    def health() -> dict:
        """Answers while the service runs (no API key needed): which store and embedder it serves."""
        return {"status": "ok", "store": router.store.name, "embedder": router.embedder.name,
                "namespaces": len(namespaces)}

    @api.post("/packets", response_model=m.IdOut, tags=["agents"])
    def deposit(body: m.PacketIn) -> dict:
        """Deposit one packet (embedded here); answers once the store has acknowledged it."""
        return {"id": router.deposit(body.packet)}

    @api.post("/packets/batch", response_model=m.IdsOut, tags=["agents"])
    def deposit_many(body: m.PacketsIn) -> dict:
        """Deposit up to 1,000 packets: one batched encode, one write."""
        return {"ids": router.deposit_many([p.packet for p in body.packets])}

    @api.post("/query", response_model=m.HitsOut, tags=["agents"])
    def query(body: m.QueryIn) -> dict:
        """The live packets whose problems are most similar to `problem`, every filter applied in the store."""
        return {"hits": _hits(router.query(body.problem, top_k=body.top_k, **body.filters()))}

    @api.post("/synthesize", response_model=m.SynthesisOut, tags=["agents"])
    def synthesize(body: m.SynthesizeIn) -> dict:
        """Deposit `outcome`, then what other agents found for a problem like `problem`."""
        result = router.synthesize(body.problem, body.outcome.packet, top_k=body.top_k, domain=body.domain,
                                   min_confidence=body.min_confidence, now=body.now)
        return {"matches": _hits(result.matches), "outcome_counts": result.outcome_counts,
                "consensus": result.consensus, "support": result.support}

    @api.get("/packets/{packet_id}", response_model=m.PacketOut, tags=["agents"],
             responses={404: {"model": ErrorOut, "description": "no packet with this id"},
                        422: {"description": "an id this store cannot hold"}})
    def get_one(packet_id: str) -> m.PacketOut:
        """One stored packet by id."""
        try:
            found = router.get([packet_id])
        except (ValueError, TypeError) as exc:
            raise _library_rules(exc, ("packet_id",)) from None
        if packet_id not in found:
            raise HTTPException(404, f"no packet {packet_id!r} in the store")
        return m.PacketOut.of(found[packet_id])

    @api.post("/get", response_model=m.PacketsOut, tags=["agents"])
    def get_many(body: m.IdsIn) -> dict:
        """The stored packets among `ids` (ids not stored are left out)."""
        try:
            found = router.get(body.ids)
        except (ValueError, TypeError) as exc:
            raise _library_rules(exc, ("ids",)) from None
        return {"packets": {pid: m.PacketOut.of(p) for pid, p in found.items()}}

    @api.get("/stats", tags=["service"])
    def stats() -> dict[str, Any]:
        """The router's counts and the store's size and capabilities."""
        return jsonable_encoder(router.stats())

    @api.post("/purge", response_model=m.PurgeOut, tags=["service"],
              responses={501: {"model": ErrorOut, "description": "this router cannot purge expired packets"}})
    def purge(body: m.PurgeIn) -> dict:
        """Remove packets expired at `now` (default: the service's clock) from the store."""
        purge_expired = getattr(router, "purge_expired", None)
        if purge_expired is None:
            raise HTTPException(501, "this version of the router has no purge_expired(); expired packets are "
                                     "still never returned by a query (every filter runs in the store)")
        return {"purged": purge_expired(now=body.now)}

    @api.post("/embed", response_model=m.EmbedOut, tags=["service"])
    def embed(body: m.EmbedIn) -> dict:
        """The service's embedding of each text (what deposits and queries use)."""
        return {"embedder": router.embedder.name, "vectors": router.embedder.encode(body.texts).tolist()}

    _vector_api(api, namespaces)
    app.include_router(api)
    return app


def _hits(hits) -> list[dict]:
    return [{"packet": m.PacketOut.of(p), "score": s} for p, s in hits]


def _vector_api(api: APIRouter, namespaces: Namespaces) -> None:
    """The store contract over HTTP, one namespace per path (created on first use)."""
    ns_param = Path(pattern=NAME.pattern, description=f'"{DEFAULT_NAMESPACE}" is the agents\' store')
    full = {409: {"model": ErrorOut, "description": "the service holds its limit of namespaces"}}

    def store(namespace: str):
        try:
            return namespaces.get(namespace).store
        except OverflowError as exc:
            raise HTTPException(409, str(exc)) from None

    def contract(call, fields):
        try:
            return call()
        except (ValueError, TypeError) as exc:
            raise _library_rules(exc, fields) from None

    @api.get("/vectors/{namespace}/info", response_model=m.InfoOut, tags=["vectors"], responses=full)
    def info(namespace: str = ns_param) -> dict:
        """The namespace's store: kind, dimension, count, capabilities."""
        s = store(namespace)
        return {"namespace": namespace, "store": s.name, "dim": s.dim, "count": s.count(),
                "capabilities": vars(s.capabilities), "uuid_ids": _takes_uuids_only(s)}

    @api.get("/vectors/{namespace}/ids", response_model=m.IdsOut, tags=["vectors"],
             responses={**full, 501: {"model": ErrorOut, "description": "the store cannot list its ids"}})
    def ids(namespace: str = ns_param) -> dict:
        """Every id the store holds, expired ones included (a full scroll, for crash checks)."""
        s = store(namespace)
        try:
            return {"ids": s.scroll_ids()}
        except NotImplementedError as exc:
            raise HTTPException(501, str(exc)) from None

    @api.post("/vectors/{namespace}/upsert", response_model=m.Done, tags=["vectors"], responses=full)
    def upsert(body: m.UpsertIn, namespace: str = ns_param) -> dict:
        """Write the batch (checked whole first: a bad batch writes nothing)."""
        s = store(namespace)
        contract(lambda: s.upsert(body.ids, body.vectors, body.payloads), ("ids", "vectors", "payloads"))
        return {"done": True}

    @api.post("/vectors/{namespace}/query", response_model=m.VectorHitsOut, tags=["vectors"], responses=full)
    def vector_query(body: m.VectorQueryIn, namespace: str = ns_param) -> dict:
        """The top_k payloads nearest `vector` among those the filter keeps."""
        s = store(namespace)
        f = body.filter
        flt = QueryFilter(now=time.time() if f.now is None else f.now, domain=f.domain,
                          min_confidence=f.min_confidence, exclude_agent=f.exclude_agent)
        hits = contract(lambda: s.query(body.vector, body.top_k, flt), ("vector", "top_k", "filter"))
        return {"hits": [{"payload": p, "score": score} for p, score in hits]}

    @api.post("/vectors/{namespace}/get", response_model=m.PayloadsOut, tags=["vectors"], responses=full)
    def vector_get(body: m.IdsIn, namespace: str = ns_param) -> dict:
        s = store(namespace)
        return {"payloads": contract(lambda: s.get(body.ids), ("ids",))}

    @api.post("/vectors/{namespace}/delete", response_model=m.Done, tags=["vectors"], responses=full)
    def vector_delete(body: m.IdsIn, namespace: str = ns_param) -> dict:
        s = store(namespace)
        contract(lambda: s.delete(body.ids), ("ids",))
        return {"done": True}

    @api.delete("/vectors/{namespace}", response_model=m.Done, tags=["vectors"],
                responses={404: {"model": ErrorOut, "description": "no such namespace"}})
    def drop(namespace: str = ns_param) -> dict:
        """Remove a namespace and its data (not the default one)."""
        try:
            dropped = namespaces.drop(namespace)
        except ValueError as exc:
            raise _library_rules(exc, ()) from None
        if not dropped:
            raise HTTPException(404, f"no namespace {namespace!r}")
        return {"done": True}


def _takes_uuids_only(store) -> bool:
    try:
        store.check_store_ids(["not-a-uuid"])
    except ValueError:
        return True
    return False
