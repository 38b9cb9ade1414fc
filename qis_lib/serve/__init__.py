"""The routing service: one router over HTTP for many agent processes.

    python -m qis_lib.serve --store qdrant-edge:///data/router [--host 127.0.0.1] [--port 8080] [--api-key KEY]

- `app`: the FastAPI app (text API for agents, vector API for `Store` clients);
- `client`: `RemoteRouter`, what `make_router("http://host:port")` returns (needs httpx only);
- `aclient`: `make_async_router`, the same methods as coroutines (httpx only too);
- `process`: `RoutingService`, a service process that tests, notebooks and experiments start
  and stop (and SIGKILL);
- `namespaces`, `models`: the stores one service holds; the request and answer bodies;
- `docs`: the /docs page, its Swagger UI files served by the service (no CDN).

Importing this package loads nothing: FastAPI is imported by the service side only.
"""
