"""The routing service's vector-level API as a `Store` (see `python -m qis_lib.serve`).

The service runs one router over one store and embeds the text its agents send. It
also exposes that store's vectors (upsert, query with a `QueryFilter`, get, delete), so
the conformance suite, the benchmark and anything else written against `Store` run over
HTTP unchanged. A service can hold several *namespaces*, each a store of its own kind
(a fresh collection or folder); "default" is the store the agents' router uses.

`ServiceClient` is the HTTP plumbing shared with the agents' client
(`qis_lib.serve.client.RemoteRouter`): every failure is an exception that names the
service's address, and a dead or hung service fails within `timeout` seconds.
"""
from __future__ import annotations

import math
import os
import threading
from typing import Any

import numpy as np

from .contract import Capabilities, QueryFilter, Store

API_KEY_HEADER = "X-API-Key"
DEFAULT_NAMESPACE = "default"
MAX_BATCH = 1000  # packets or texts in one request (ids and vectors: ten times that)


class ServiceError(RuntimeError):
    """The routing service answered with an error of its own (5xx)."""


class ServiceBusyError(ServiceError):
    """The routing service asked the caller to come back later: 429 (this key is over its
    limits) or 503 (the service holds its limit of connections). `retry_after`: seconds, from
    the answer's Retry-After header (None if it had none). Safe to retry: a deposit is idempotent."""

    def __init__(self, message: str, status: int, retry_after: float | None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def server_timing(header: str) -> dict[str, float]:
    """`Server-Timing: embed;dur=1.2, app;dur=3.4` as {"embed": 1.2, "app": 3.4} (ms)."""
    spans = {}
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    spans[name] = float(value)
                except ValueError:
                    pass
    return spans


def server_ms_of(response) -> float | None:
    """The time the service spent on `response` (its Server-Timing `app` span), in ms, or None."""
    return server_timing(response.headers.get("server-timing", "")).get("app")


def tls_verify(ca_file: str | os.PathLike | None):
    """What httpx's `verify=` takes: True (the system's certificate authorities), or an ssl
    context that trusts the authority in `ca_file` (PEM) and checks host names."""
    if ca_file is None:
        return True
    import ssl

    path = os.fspath(ca_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ca_file={path!r}: no such file (a PEM certificate of the service's CA)")
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise ValueError(f"ca_file={path!r} holds no PEM certificate ssl can read: {exc}") from None


def _detail(response) -> str:
    """The error the service put in its answer: FastAPI's {"detail": str | [{loc, msg}]}."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text[:500]
    if isinstance(detail, list):  # validation errors: name each field and its rule
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
                         for e in detail if isinstance(e, dict))
    return str(detail)


def answer_error(where: str, code: int, detail: str, retry_after: str | None = None) -> Exception:
    """The exception for an answer with status `code` (>= 400): 401/403 -> PermissionError,
    404 -> KeyError, 429/503 -> ServiceBusyError, 501 -> NotImplementedError, other 4xx ->
    ValueError (naming the field and the rule), other 5xx -> ServiceError."""
    message = f"{where}: {detail}"
    if code == 401:
        return PermissionError(f"{message} (pass api_key=, or set QIS_API_KEY)")
    if code == 403:
        return PermissionError(message)
    if code == 404:
        return KeyError(message)
    if code in (429, 503):
        try:
            wait = float(retry_after) if retry_after is not None else None
        except ValueError:
            wait = None
        return ServiceBusyError(message, code, wait)
    if code == 501:
        return NotImplementedError(message)
    if code < 500:
        return ValueError(message)
    return ServiceError(message)


# A pooled connection idle this long is closed by the client, well before the service closes its
# idle kept-alive connections (qis_lib.serve.server.KEEP_ALIVE_S, 5 s): a request written on a
# connection just as the service closes it is a ReadError, and one process driving 1,000 agents
# on one event loop can leave a connection idle for seconds.
KEEPALIVE_EXPIRY_S = 2.0


def client_limits(max_connections: int):
    """The httpx pool limits of both clients of the service."""
    import httpx

    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                        keepalive_expiry=KEEPALIVE_EXPIRY_S)


def client_options(url: Any, api_key: str | None, timeout: Any,
                   ca_file: str | os.PathLike | None = None) -> tuple[str, float, dict[str, str]]:
    """The checked url (no trailing /), timeout and headers a client of the service sends (the
    sync one and the async one); the key defaults to $QIS_API_KEY."""
    from urllib.parse import urlparse

    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"the routing service url must look like http://host:port or https://host:port, got {url!r}")
    if ca_file is not None and parsed.scheme != "https":
        raise ValueError(f"ca_file= is for an https:// service, got {url!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    api_key = api_key if api_key is not None else os.environ.get("QIS_API_KEY") or None
    return url.rstrip("/"), float(timeout), ({API_KEY_HEADER: api_key} if api_key else {})


def answer_of(outcome, url: str, method: str, path: str, timeout: float) -> Any:
    """What one request to the routing service at `url` came to, in Python: the answer's JSON,
    or the exception `ServiceClient` documents, naming the address. `outcome` is the
    httpx.Response, or the httpx.TransportError the request raised. The sync and the async
    clients (`qis_lib.serve.aclient`) both end every call here."""
    import httpx

    if isinstance(outcome, httpx.TimeoutException):
        raise ConnectionError(f"the routing service at {url} did not answer {method} {path} within "
                              f"{timeout:g}s (timed out: {type(outcome).__name__})")
    if isinstance(outcome, httpx.TransportError):
        raise ConnectionError(f"cannot reach the routing service at {url} ({method} {path}): "
                              f"{type(outcome).__name__}: {outcome}")
    code = outcome.status_code
    if code < 400:
        return outcome.json()
    where = f"the routing service at {url} answered {method} {path} with HTTP {code}"
    raise answer_error(where, code, _detail(outcome), outcome.headers.get("retry-after"))


class ServiceClient:
    """JSON over HTTP to one routing service, with its errors turned into Python ones:
    unreachable or silent -> ConnectionError, and `answer_error` for an error answer.
    Thread-safe (one httpx connection pool). `api_key` defaults to $QIS_API_KEY; `ca_file`
    is the certificate authority of an https:// service (default: the system's)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0, max_connections: int = 100,
                 ca_file: str | os.PathLike | None = None):
        import httpx

        self.url, self.timeout, headers = client_options(url, api_key, timeout, ca_file)
        limits = client_limits(max_connections)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(self.timeout),
                                  limits=limits, verify=tls_verify(ca_file))
        self._httpx = httpx
        self._local = threading.local()

    @property
    def last_server_ms(self) -> float | None:
        """Time the service spent on this thread's last request (its Server-Timing `app` span), in ms."""
        return self.last_server_timing.get("app")

    @property
    def last_server_timing(self) -> dict[str, float]:
        """Every span of this thread's last answer's Server-Timing header, in ms."""
        return getattr(self._local, "timing", {})

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            outcome = self._http.request(method, path, json=body)
        except self._httpx.TransportError as exc:
            outcome = exc
        else:
            self._local.timing = server_timing(outcome.headers.get("server-timing", ""))
        return answer_of(outcome, self.url, method, path, self.timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ServiceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def filter_body(flt: QueryFilter) -> dict[str, Any]:
    return {"now": flt.now, "domain": flt.domain, "min_confidence": flt.min_confidence,
            "exclude_agent": flt.exclude_agent}


class HttpStore(Store):
    """A namespace of a routing service, as a `Store`: `HttpStore(url="http://127.0.0.1:8080")`.

    The namespace is created on the service at first use (a fresh store of the service's
    kind); `drop()` removes it. `dim` must match the service's store.
    """

    name = "http"

    def __init__(self, url: str, namespace: str = DEFAULT_NAMESPACE, dim: int = 384, api_key: str | None = None,
                 timeout: float = 10.0, ca_file: str | os.PathLike | None = None):
        self.client = ServiceClient(url, api_key=api_key, timeout=timeout, ca_file=ca_file)
        self.url, self.namespace, self.api_key = self.client.url, namespace, api_key
        self._path = f"/v1/vectors/{namespace}"
        try:
            info = self.client.call("GET", f"{self._path}/info")
        except BaseException:
            self.client.close()
            raise
        if info["dim"] != dim:
            self.client.close()
            raise ValueError(f"the routing service at {self.url} holds {info['dim']}-d vectors, not {dim}-d")
        self.dim = dim
        self.backend = info["store"]
        caps = info["capabilities"]
        self.capabilities = Capabilities(persistent=caps["persistent"], shared=True, server=True)
        self._uuid_ids = info.get("uuid_ids", False)

    def check_store_ids(self, ids: list[str]) -> None:
        if self._uuid_ids:  # the service's store takes UUIDs only: refuse here, before sending anything
            from .contract import check_uuid_ids

            check_uuid_ids(ids)

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        self.client.call("POST", f"{self._path}/upsert",
                         {"ids": ids, "vectors": vectors.tolist(), "payloads": payloads})

    def _query(self, vector: np.ndarray, top_k: int, flt: QueryFilter) -> list[tuple[dict, float]]:
        out = self.client.call("POST", f"{self._path}/query",
                               {"vector": vector.tolist(), "top_k": top_k, "filter": filter_body(flt)})
        return [(h["payload"], h["score"]) for h in out["hits"]]

    def _get(self, ids: list[str]) -> dict[str, dict]:
        return self.client.call("POST", f"{self._path}/get", {"ids": ids})["payloads"]

    def _delete(self, ids: list[str]) -> None:
        self.client.call("POST", f"{self._path}/delete", {"ids": ids})

    def count(self) -> int:
        return self.client.call("GET", f"{self._path}/info")["count"]

    def scroll_ids(self, page: int = 1000) -> list[str]:
        """Every id the service's store holds (NotImplementedError if that store cannot list them)."""
        return self.client.call("GET", f"{self._path}/ids")["ids"]

    def info(self) -> dict:
        return self.client.call("GET", f"{self._path}/info")

    def drop(self) -> None:
        """Remove this namespace and its data from the service (not allowed for "default")."""
        self.client.call("DELETE", self._path)

    def close(self) -> None:
        self.client.close()
