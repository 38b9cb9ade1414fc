"""The routing service: one router (and its store) over HTTP, as a FastAPI app.

Agents send text (deposit, query, synthesize) and the service embeds it, so an agent
needs no model. Beside that text API, `/v1/vectors/{namespace}/...` exposes the
store's own contract (upsert vectors, query by vector with a filter, get, delete) to
admin keys, so anything written against `Store` runs over HTTP too
(`qis_lib.stores.http.HttpStore`). The namespace "default" is the agents' store.

Every request to /v1 carries a key (`X-API-Key: KEY` or `Authorization: Bearer KEY`) unless
the service was started without keys; the key decides the caller's role and agent (see
qis_lib.serve.gate for who may do what). Bad input never reaches the store: a body that is
not JSON is a 4xx, a well-formed body that breaks a rule is a 422 naming the field (`loc`)
and the rule (`msg`), a body over the size limit is a 413 before it is read, a missing or
unknown key a 401, a request the key may not make a 403, a key over its limits a 429 with
Retry-After. Every answer carries `Server-Timing` (`app;dur=MS`: time inside the service).
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..stores.http import API_KEY_HEADER
from . import models as m
from .access import DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BODY, DEFAULT_REFUSAL_DELAY_S, Access, Envelope, protected
from .audit import Audit
from .auth import ACTIONS, AuthFile, Credentials
from .docs import install_docs
from .gate import DEFAULT_THREADS, Caller, Gate, Refused
from .namespaces import Namespaces
from .vectors import vector_api

__all__ = ["DEFAULT_MAX_BODY", "create_app"]


class ErrorOut(BaseModel):
    detail: str


ERRORS = {400: {"model": ErrorOut, "description": "the body is not JSON the service can read"},
          401: {"model": ErrorOut, "description": "no key, or one the service does not know"},
          403: {"model": ErrorOut, "description": "this key may not do this (its role, or another agent's packet)"},
          408: {"model": ErrorOut, "description": "the body did not arrive in time"},
          413: {"model": ErrorOut, "description": "the body is over the service's size limit"},
          429: {"model": ErrorOut, "description": "this key is over its limits; see Retry-After"}}


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


def _refused(request: Request, exc: Refused) -> JSONResponse:
    if exc.status == 422:  # as a broken rule: the field in loc
        loc = ["body", *(exc.field.split(".") if exc.field else [])]
        loc = [int(p) if p.isdigit() else p for p in loc]
        return JSONResponse({"detail": [{"type": m.RULE, "loc": loc, "msg": exc.detail, "input": None}]},
                            status_code=422)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


def library_rules(exc: Exception, fields) -> RequestValidationError:
    """A ValueError/TypeError of the library (the store contract) as a 422."""
    message = str(exc)
    word = message.split(maxsplit=1)[0].strip(",:") if message else ""
    field = word if word in fields else word + "s" if word + "s" in fields else None
    loc = ("body", field) if field else ("body",)
    return RequestValidationError([{"type": m.RULE, "loc": loc, "msg": message, "input": None}])


SECURITY_SCHEMES = {
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER,
                     "description": "a key of the service's --auth file (or its --api-key)"},
    "HTTPBearer": {"type": "http", "scheme": "bearer", "description": "the same key as a bearer token"},
}


def caller(request: Request) -> Caller:
    """The caller `Access` authenticated (the key's schemes are declared by `declare_security`)."""
    found = request.scope.get("state", {}).get("caller")
    if found is None:  # Access always sets it on /v1; a missing one is a wiring error, not an open door
        raise HTTPException(401, "no caller: the service's access layer did not run")
    return found


def declare_security(app: FastAPI) -> None:
    """Declare in the OpenAPI document that every operation under a protected prefix takes the key
    in either scheme. `Access` checks the key before any endpoint runs, so no per-request
    security dependency is needed (each one costs every request its parsing)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in schema["paths"].items():
                if protected(path):
                    for operation in operations.values():
                        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
        return app.openapi_schema

    app.openapi = openapi


def create_app(namespaces: Namespaces, api_key: str | None = None, auth: AuthFile | Credentials | None = None,
               audit: Audit | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
               body_timeout: float = DEFAULT_BODY_TIMEOUT_S, refusal_delay: float = DEFAULT_REFUSAL_DELAY_S,
               threads: int = DEFAULT_THREADS) -> FastAPI:
    """The FastAPI app serving `namespaces` (its default router is the agents' one).

    `auth`: the keys (an AuthFile, reloaded when it changes, or Credentials); `api_key`: one
    admin key (shorthand, not with `auth`); neither: no keys, every caller an admin. `threads`:
    the worker threads the store and the model's callers run in (the event loop only waits)."""
    if api_key and auth is not None:
        raise ValueError("give api_key or auth, not both (an auth file may hold an admin key)")
    keys = Credentials.single_admin(api_key) if api_key else auth
    audit = audit or Audit(None)
    gate = Gate(namespaces, audit, threads=threads)
    app = FastAPI(title="qis-routing service", version="1", description=__doc__,
                  exception_handlers={RequestValidationError: _rule_errors, Refused: _refused},
                  docs_url=None, redoc_url=None)
    install_docs(app)
    app.state.namespaces, app.state.gate, app.state.audit = namespaces, gate, audit
    app.add_middleware(Access, keys=keys, audit=audit, refusal_delay=refusal_delay)
    app.add_middleware(Envelope, max_bytes=max_body_bytes, body_timeout=body_timeout)
    api = APIRouter(prefix="/v1", responses=dict(ERRORS))
    who = Depends(caller)
    router = namespaces.default

    @app.get("/health", response_model=m.HealthOut, tags=["service"])
    def health() -> dict:
        """Answers while the service runs (no key needed): which store and embedder it serves."""
        return {"status": "ok", "store": router.store.name, "embedder": router.embedder.name,
                "dim": router.embedder.dim, "namespaces": len(namespaces)}

    @api.get("/whoami", response_model=m.WhoAmIOut, tags=["service"])
    async def whoami(me: Caller = who) -> dict:
        """The key's id, role and agent, and what it may do."""
        return {"key": me.key_id, "role": me.role, "agent": me.agent, "may": sorted(ACTIONS[me.role])}

    @api.post("/packets", response_model=m.IdOut, tags=["agents"])
    async def deposit(body: m.PacketIn, me: Caller = who) -> dict:
        """Deposit one packet (embedded here) as the caller's agent; answers once the store has acknowledged it."""
        return {"id": (await gate.deposit(me, [body.owned]))[0]}

    @api.post("/packets/batch", response_model=m.IdsOut, tags=["agents"])
    async def deposit_many(body: m.PacketsIn, me: Caller = who) -> dict:
        """Deposit up to 1,000 packets: one batched encode, one write; one refused packet refuses them all."""
        return {"ids": await gate.deposit(me, [p.owned for p in body.packets])}

    @api.post("/query", response_model=m.HitsOut, tags=["agents"])
    async def query(body: m.QueryIn, me: Caller = who) -> dict:
        """The live packets whose problems are most similar to `problem`, every filter applied in the store."""
        return {"hits": _hits(await gate.query(me, body.problem, top_k=body.top_k, **body.filters()))}

    @api.post("/synthesize", response_model=m.SynthesisOut, tags=["agents"])
    async def synthesize(body: m.SynthesizeIn, me: Caller = who) -> dict:
        """Deposit `outcome` as the caller's agent, then what other agents found for a problem like `problem`."""
        result = await gate.synthesize(me, body.problem, body.outcome.owned, top_k=body.top_k, domain=body.domain,
                                       min_confidence=body.min_confidence, now=body.now)
        return {"matches": _hits(result.matches), "outcome_counts": result.outcome_counts,
                "consensus": result.consensus, "support": result.support}

    @api.get("/packets/{packet_id}", response_model=m.PacketOut, tags=["agents"],
             responses={404: {"model": ErrorOut, "description": "no packet with this id"},
                        422: {"description": "an id this store cannot hold"}})
    async def get_one(packet_id: str, me: Caller = who) -> m.PacketOut:
        """One stored packet by id."""
        try:
            found = await gate.get(me, [packet_id])
        except (ValueError, TypeError) as exc:
            raise library_rules(exc, ("packet_id",)) from None
        if packet_id not in found:
            raise HTTPException(404, f"no packet {packet_id!r} in the store")
        return m.PacketOut.of(found[packet_id])

    @api.post("/get", response_model=m.PacketsOut, tags=["agents"])
    async def get_many(body: m.IdsIn, me: Caller = who) -> dict:
        """The stored packets among `ids` (ids not stored are left out)."""
        try:
            found = await gate.get(me, body.ids)
        except (ValueError, TypeError) as exc:
            raise library_rules(exc, ("ids",)) from None
        return {"packets": {pid: m.packet_json(p) for pid, p in found.items()}}

    @api.delete("/packets/{packet_id}", response_model=m.DeletedOut, tags=["agents"],
                responses={404: {"model": ErrorOut, "description": "no packet with this id"}})
    async def delete_one(packet_id: str, me: Caller = who) -> dict:
        """Delete one packet: an agent key its own only."""
        deleted = await _delete(me, [packet_id])
        if not deleted:
            raise HTTPException(404, f"no packet {packet_id!r} in the store")
        return {"deleted": deleted}

    @api.post("/packets/delete", response_model=m.DeletedOut, tags=["agents"])
    async def delete_many(body: m.DeleteIn, me: Caller = who) -> dict:
        """Delete the stored packets among `ids` (an agent key: its own only; one of another agent's
        among them refuses them all). Answers the ids deleted."""
        return {"deleted": await _delete(me, body.ids)}

    async def _delete(me: Caller, ids: list[str]) -> list[str]:
        try:
            return await gate.delete(me, ids)
        except (ValueError, TypeError) as exc:
            raise library_rules(exc, ("ids",)) from None

    @api.get("/stats", tags=["service"])
    async def stats(me: Caller = who) -> dict[str, Any]:
        """The router's counts and the store's size and capabilities."""
        return jsonable_encoder(await gate.stats(me))

    @api.post("/purge", response_model=m.PurgeOut, tags=["agents"])
    async def purge(body: m.PurgeIn, me: Caller = who) -> dict:
        """Remove expired packets (at `now`, default the service's clock): an agent key its own,
        an admin key every agent's or `agent_id`'s."""
        return {"purged": await gate.purge(me, now=body.now, agent_id=body.agent_id)}

    @api.post("/embed", response_model=m.EmbedOut, tags=["service"])
    async def embed(body: m.EmbedIn, me: Caller = who) -> dict:
        """The service's embedding of each text (what deposits and queries use)."""
        return {"embedder": router.embedder.name, "vectors": (await gate.embed(me, body.texts)).tolist()}

    vector_api(api, gate, who, library_rules, ErrorOut)
    app.include_router(api)
    declare_security(app)
    return app


def _hits(hits) -> list[dict]:
    """Hits as the answer's JSON (plain dicts: the response model checks and serialises them once)."""
    return [{"packet": m.packet_json(p), "score": s} for p, s in hits]
