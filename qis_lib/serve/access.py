"""The service's door: who is calling, whether it may start a request now, and requests that
must not hold the service (too large, too slow).

`Access` (ASGI middleware) runs before any endpoint of /v1 (and of anything mounted under a
protected prefix): it reads the key (`X-API-Key: K` or `Authorization: Bearer K`), finds its
credential (401 if none), applies the key's limits (429 with Retry-After, answered after
`refusal_delay`: a runaway client that retries at once makes one refused request per delay and
connection, not hundreds a second that each cost the service a request's work), and puts the
`Caller` in the request's state for the endpoints. Paths outside the protected prefixes
(/health, /docs, /openapi.json) need no key and hold no data.

`Envelope` refuses a body over the size limit (413, by its Content-Length before reading it,
or as soon as a chunked body passes it), a body that does not arrive in time (408), and puts
`Server-Timing` on every answer (qis_lib.serve.timing: embed, store, serialize, app).
"""
from __future__ import annotations

import math
import time

import anyio
from fastapi import HTTPException
from fastapi.responses import JSONResponse

from ..stores.http import API_KEY_HEADER
from . import timing
from .audit import Audit
from .auth import AuthFile, Credentials, KeyLimiter
from .gate import OPEN, Caller

PROTECTED = ("/v1", "/mcp")
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0  # a request's body must arrive within this many seconds of its headers
# A request over its key's limits is answered 429 after this many seconds, so a client
# that retries at once sends a few refused requests a second instead of hundreds of them.
DEFAULT_REFUSAL_DELAY_S = 1.0
_X_API_KEY = API_KEY_HEADER.lower().encode()


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def protected(path: str) -> bool:
    return any(_under(path, p) for p in PROTECTED)


def presented_key(headers) -> tuple[str | None, str | None]:
    """(the key the request carries, or None; a problem with how it carries it, or None)."""
    keys = []
    for name, value in headers:
        if name == _X_API_KEY:
            keys.append(value.decode("latin-1"))
        elif name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None, "the Authorization header must be 'Bearer KEY'"
            keys.append(token.strip())
    if len(set(keys)) > 1:
        return None, f"the request carries two different keys ({API_KEY_HEADER} and Authorization); send one"
    return (keys[0] if keys else None), None


async def _answer(send, status: int, detail: str, headers: dict[str, str] | None = None, path: str = "") -> None:
    """A refusal: {"detail": ...}, or under /mcp a JSON-RPC error without a request id (as the MCP
    SDK answers its own HTTP-level refusals), whose message MCP clients show."""
    body = ({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": detail}}
            if _under(path, "/mcp") else {"detail": detail})
    response = JSONResponse(body, status_code=status, headers=headers)
    await response({"type": "http"}, None, send)


class Access:
    """ASGI middleware: authenticate the key and apply its limits (see the module docstring).

    `keys`: an AuthFile (reloaded when it changes), fixed Credentials, or None for a service
    without keys (every caller is an admin acting as no agent). `refusal_delay`: see
    DEFAULT_REFUSAL_DELAY_S (0: answer a 429 at once)."""

    def __init__(self, app, keys: AuthFile | Credentials | None, audit: Audit, limiter: KeyLimiter | None = None,
                 refusal_delay: float = DEFAULT_REFUSAL_DELAY_S):
        self.app, self.keys, self.audit = app, keys, audit
        self.limiter = limiter or KeyLimiter()
        self.refusal_delay = refusal_delay

    def credentials(self) -> Credentials | None:
        return self.keys.current() if isinstance(self.keys, AuthFile) else self.keys

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not protected(scope["path"]):
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        keys = self.credentials()
        if keys is None:
            state["caller"] = OPEN
            return await self.app(scope, receive, send)
        key, problem = presented_key(scope["headers"])
        cred = keys.find(key) if key is not None else None
        if cred is None:
            self.audit.record(None, f"{scope['method']} {scope['path']}", 401)
            why = problem or ("no API key" if key is None else "an unknown API key")
            return await _answer(send, 401, f"{why}: send a key of this service as {API_KEY_HEADER}: KEY or "
                                            "Authorization: Bearer KEY", {"WWW-Authenticate": "Bearer"}, scope["path"])
        caller = Caller.of(cred)
        wait = self.limiter.admit(cred)
        if wait is not None:
            self.audit.record(caller, f"{scope['method']} {scope['path']}", 429)
            await anyio.sleep(self.refusal_delay)  # not in flight meanwhile: no slot is held
            limits = cred.limits
            return await _answer(send, 429, f"key {cred.id!r} is over its limits ({limits.max_concurrent} requests at "
                                            f"once, {limits.rate_per_s}/s); retry after {wait:.2f}s",
                                 {"Retry-After": str(max(1, math.ceil(wait)))}, scope["path"])
        state["caller"] = caller
        try:
            await self.app(scope, receive, send)
        finally:
            self.limiter.release(cred)


class Envelope:
    """ASGI middleware: refuse a body over `max_bytes` (413) or slower than `body_timeout` s
    (408), and time each request (Server-Timing)."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY, body_timeout: float = DEFAULT_BODY_TIMEOUT_S):
        self.app, self.max_bytes, self.body_timeout = app, max_bytes, body_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._too_large(send, f"Content-Length {length.decode(errors='replace')[:20]}")
        seen = 0
        deadline = time.monotonic() + self.body_timeout

        async def limited():
            nonlocal seen
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                raise HTTPException(408, f"the request's body did not arrive within {self.body_timeout:g}s")
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, f"the body is over the service's limit of {self.max_bytes} bytes")
            return message

        spans = timing.open_spans()

        async def timed(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"server-timing", timing.header(spans, start))]}
            await send(message)

        await self.app(scope, limited, timed)

    async def _too_large(self, send, what: str):
        await _answer(send, 413, f"{what}: the body is over the service's limit of {self.max_bytes} bytes",
                      {"connection": "close"})
