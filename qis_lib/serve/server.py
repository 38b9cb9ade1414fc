"""Running the app under uvicorn with bounds a slow or hostile client cannot get around.

- At most `max_connections` open connections (by default the open files the process may
  have, its soft limit raised to its hard one, less a reserve for the store: 1,000 agents
  may each hold a connection): past that, a new connection is answered 503 (Retry-After: 1)
  and closed at once, so clients that never finish a request cannot take every file
  descriptor of the process.
- A request's headers must arrive within `header_timeout` seconds of the connection opening
  (or of the previous answer on a kept-alive connection), else it is answered 408 and
  closed. (uvicorn closes idle kept-alive connections itself after `timeout_keep_alive`; its
  body is bounded by `Envelope`'s body timeout.)
- TLS with uvicorn's own `ssl_certfile` / `ssl_keyfile`.

uvicorn takes the HTTP protocol class as an option; `bounded_protocol` subclasses the one
it would pick (httptools when installed, else h11) and adds the two bounds.
"""
from __future__ import annotations

import json
import resource

FILES_KEPT = 256  # open files left for the store, the model and logs when the connections are bounded
MAX_CONNECTIONS_CAP = 8192
DEFAULT_HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5  # above the clients' KEEPALIVE_EXPIRY_S (qis_lib.stores.http), so they drop an idle connection first


def open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (capped at 65,536) and
    return it: a service that holds a connection per agent needs more than the common 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard if hard != resource.RLIM_INFINITY else 65_536, 65_536)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections() -> int:
    """The open files this process may have, less FILES_KEPT, between 64 and MAX_CONNECTIONS_CAP."""
    return max(64, min(MAX_CONNECTIONS_CAP, open_files_limit() - FILES_KEPT))


def _raw_answer(status: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    return head + body


def bounded_protocol(max_connections: int, header_timeout: float = DEFAULT_HEADER_TIMEOUT_S) -> type:
    """uvicorn's HTTP protocol class with the connection bound and the header deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    busy = _raw_answer("503 Service Unavailable",
                       f"the service holds its limit of {max_connections} open connections; retry shortly")
    late = _raw_answer("408 Request Timeout", f"the request's headers did not arrive within {header_timeout:g}s")

    class Bounded(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _refused = False
        _timer = None

        def connection_made(self, transport) -> None:
            if len(self.connections) >= max_connections:
                self._refused = True
                transport.write(busy)
                transport.close()
                return
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            waiting_since = self.cycle  # a new request replaces it: then the headers arrived

            def deadline() -> None:
                idle = self.cycle is waiting_since and (self.cycle is None or self.cycle.response_complete)
                if idle and self.transport is not None and not self.transport.is_closing():
                    self.transport.write(late)
                    self.transport.close()

            self._timer = self.loop.call_later(header_timeout, deadline)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._timer is not None:
                self._timer.cancel()
            if self.transport is not None and not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            if self._timer is not None:
                self._timer.cancel()
            if not self._refused:
                super().connection_lost(exc)

    return Bounded


def serve(app, host: str, port: int, *, log_level: str = "info", ssl_certfile: str | None = None,
          ssl_keyfile: str | None = None, max_connections: int | None = None,
          header_timeout: float = DEFAULT_HEADER_TIMEOUT_S) -> None:
    """Run `app` until SIGINT/SIGTERM (uvicorn finishes the requests in flight).
    `max_connections` None: `default_max_connections()`."""
    import uvicorn

    max_connections = default_max_connections() if max_connections is None else max_connections
    for name, value in (("max_connections", max_connections), ("header_timeout", header_timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ValueError("TLS needs both --ssl-certfile and --ssl-keyfile")
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, timeout_keep_alive=KEEP_ALIVE_S,
                            http=bounded_protocol(int(max_connections), float(header_timeout)))
    uvicorn.Server(config).run()
