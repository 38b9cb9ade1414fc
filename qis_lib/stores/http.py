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
import threading
from typing import Any

import numpy as np

from .contract import Capabilities, QueryFilter, Store

API_KEY_HEADER = "X-API-Key"
DEFAULT_NAMESPACE = "default"
MAX_BATCH = 1000  # packets or texts in one request (ids and vectors: ten times that)


class ServiceError(RuntimeError):
    """The routing service answered with an error of its own (5xx)."""


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
    detail = _detail(outcome)
    if code == 401:
        raise PermissionError(f"{where}: {detail} (pass api_key=)")
    if code == 404:
        raise KeyError(f"{where}: {detail}")
    if code == 501:
        raise NotImplementedError(f"{where}: {detail}")
    if code < 500:
        raise ValueError(f"{where}: {detail}")
    raise ServiceError(f"{where}: {detail}")


def server_ms_of(response) -> float | None:
    """The time the service spent on `response` (its Server-Timing header), in ms, or None."""
    timing = response.headers.get("server-timing", "")
    return float(timing.partition("dur=")[2]) if "dur=" in timing else None


class ServiceClient:
    """JSON over HTTP to one routing service, with its errors turned into Python ones:
    unreachable or silent -> ConnectionError, 401 -> PermissionError, 4xx -> ValueError
    (naming the field and the rule), 404 -> KeyError, 501 -> NotImplementedError,
    5xx -> ServiceError. Thread-safe (one httpx connection pool)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0, max_connections: int = 100):
        import httpx

        from urllib.parse import urlparse

        parsed = urlparse(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"the routing service url must look like http://host:port, got {url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
                or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(self.timeout),
                                  limits=limits)
        self._httpx = httpx
        self._local = threading.local()

    @property
    def last_server_ms(self) -> float | None:
        """Time the service spent on this thread's last request (its Server-Timing header), in ms."""
        return getattr(self._local, "server_ms", None)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            outcome = self._http.request(method, path, json=body)
        except self._httpx.TransportError as exc:
            outcome = exc
        else:
            self._local.server_ms = server_ms_of(outcome)
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
                 timeout: float = 10.0):
        self.client = ServiceClient(url, api_key=api_key, timeout=timeout)
        self.url, self.namespace = self.client.url, namespace
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
