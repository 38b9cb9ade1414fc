"""The MCP tools over streamable HTTP, served by the routing service itself at /mcp.

`mount(app)` adds the endpoint to an app of `qis_lib.serve.app.create_app`, behind the
service's own middleware: `Access` authenticates every request to /mcp exactly as one to /v1
(`X-API-Key: KEY` or `Authorization: Bearer KEY`; 401 without a known key, 429 over the key's
limits, the refusal in the audit file) and puts the key's `Caller` in the request's state,
where the tools read it; `Envelope` bounds the body and its arrival time. So one keys file,
one set of per-key limits and one audit file cover both doors, and the MCP tools call the same
`Gate` as the endpoints of /v1.

The endpoint is stateless and answers JSON (the SDK's `stateless_http`, `json_response`):
every MCP message is one HTTP request with one answer, so each passes the key check and the
limits on its own, no session lives in the service's memory (a restart breaks no client), and
no stream is held open against a key's `max_concurrent` (the tools never call back the client).
The SDK's DNS-rebinding protection is on for a loopback `host`, as the SDK sets it.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from mcp.server.mcpserver import MCPServer

from ..serve.access import protected
from .server import build_server

PATH = "/mcp"


def mount(app: FastAPI, host: str = "127.0.0.1", path: str = PATH) -> MCPServer:
    """Serve the MCP tools at `path` of the routing service `app` (a path its access layer
    guards), over `app.state.gate`; `host` is the address the service binds. The SDK's session
    manager runs in the app's lifespan. Returns the server."""
    if not protected(path):
        raise ValueError(f"path must be one the service's access layer guards (/mcp or under it), got {path!r}")
    server = build_server(app.state.gate)
    endpoint = server.streamable_http_app(streamable_http_path=path, stateless_http=True, json_response=True,
                                          host=host)
    app.router.routes.extend(endpoint.routes)  # the route alone: the service's middleware stays in front
    # The SDK logs every stateless request's end at INFO ("Terminating session: None"); the service logs no
    # request it answered, so neither does its MCP endpoint.
    logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        async with inner(a) as state, server.session_manager.run():
            yield state

    app.router.lifespan_context = lifespan
    return server
