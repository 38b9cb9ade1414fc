"""The agents' async client of the routing service: `RemoteRouter`'s methods as coroutines.

    async with make_async_router("http://127.0.0.1:8080", api_key="...") as router:
        await router.deposit(OutcomePacket(...))
        hits = await router.query("...", domain="hdfs")

The same methods, parameters and return types as `RemoteRouter` (qis_lib/serve/client.py),
the same request bodies, and the same errors (`qis_lib.stores.http.answer_of`): a dead or
silent service is a ConnectionError naming its address within `timeout` seconds, a missing
key a PermissionError, a broken rule a ValueError naming the field. One httpx.AsyncClient
(one connection pool, `max_connections`) serves every task of one event loop: many agents
in one process are many tasks on one router. It needs httpx only.
"""
from __future__ import annotations

import contextvars
import math
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import urlparse

from ..core.packet import OutcomePacket
from ..core.router import Hit, Synthesis, one_domain
from ..stores.http import API_KEY_HEADER, DEFAULT_NAMESPACE, MAX_BATCH, answer_of, server_ms_of
from .client import _check_packets, _hits, _packet, packet_body


def tls_context(ca_file: str | Path):
    """An ssl context that trusts the certificate authority in `ca_file` (PEM) and checks host names."""
    import ssl

    if not Path(ca_file).is_file():
        raise FileNotFoundError(f"ca_file={str(ca_file)!r}: no such file (a PEM certificate of the service's CA)")
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise ValueError(f"ca_file={str(ca_file)!r} holds no PEM certificate ssl can read: {exc}") from None


class AsyncServiceClient:
    """JSON over HTTP to one routing service from an event loop; every answer goes through
    `answer_of`, so its errors are `ServiceClient`'s. `https://` urls are checked against the
    system's certificate authorities, or those of `ca_file`."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0, max_connections: int = 100,
                 ca_file: str | Path | None = None):
        import httpx

        parsed = urlparse(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"the routing service url must look like http://host:port, got {url!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
                or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if ca_file is not None and parsed.scheme != "https":
            raise ValueError(f"ca_file= is for an https:// service, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=httpx.Timeout(self.timeout),
                                       limits=limits, verify=True if ca_file is None else tls_context(ca_file))
        self._httpx = httpx
        self._server_ms: contextvars.ContextVar[float | None] = contextvars.ContextVar("server_ms", default=None)

    @property
    def last_server_ms(self) -> float | None:
        """Time the service spent on this task's last request (its Server-Timing header), in ms."""
        return self._server_ms.get()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            outcome = await self._http.request(method, path, json=body)
        except self._httpx.TransportError as exc:
            outcome = exc
        else:
            self._server_ms.set(server_ms_of(outcome))
        return answer_of(outcome, self.url, method, path, self.timeout)

    async def close(self) -> None:
        await self._http.aclose()


class AsyncRemoteRouter:
    """`RemoteRouter` as coroutines: an outcome router whose store and embedder live in a
    routing service at `url`. `async with` (or `await router.connect()`) checks the service
    and the key first; without it the first call does. Use it from one event loop."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0, max_connections: int = 100,
                 ca_file: str | Path | None = None):
        self.client = AsyncServiceClient(url, api_key=api_key, timeout=timeout, max_connections=max_connections,
                                         ca_file=ca_file)
        self.url = self.client.url
        self.embedder_name: str | None = None  # the service's embedder, store kind and dimension, once connected
        self.backend: str | None = None
        self.dim: int | None = None

    async def connect(self) -> "AsyncRemoteRouter":
        """Ask the service which embedder and store it runs (checks the key too)."""
        health = await self.client.call("GET", "/health")
        info = await self.client.call("GET", f"/v1/vectors/{DEFAULT_NAMESPACE}/info")
        self.embedder_name, self.backend, self.dim = health["embedder"], info["store"], info["dim"]
        return self

    async def deposit(self, packet: OutcomePacket) -> str:
        """Store one packet; returns its id once the service's store has acknowledged it."""
        _check_packets([packet])
        return (await self.client.call("POST", "/v1/packets", packet_body(packet)))["id"]

    async def deposit_many(self, packets: Iterable[OutcomePacket]) -> list[str]:
        """Batches of up to 1,000 packets, one request each; ids in the order given."""
        packets = _check_packets(packets)
        ids: list[str] = []
        for start in range(0, len(packets), MAX_BATCH):
            body = {"packets": [packet_body(p) for p in packets[start:start + MAX_BATCH]]}
            ids += (await self.client.call("POST", "/v1/packets/batch", body))["ids"]
        return ids

    async def query(self, problem: str, top_k: int = 10, domain: str | None = None, min_confidence: float = 0.0,
                    exclude_agent: str | None = None, now: float | None = None, *,
                    domain_filter: str | None = None) -> list[Hit]:
        """As `OutcomeRouter.query`: every filter runs in the service's store, before top-k."""
        domain = one_domain(domain, domain_filter)
        body = {"problem": problem, "top_k": top_k, "domain": domain, "min_confidence": min_confidence,
                "exclude_agent": exclude_agent, "now": now}
        return _hits((await self.client.call("POST", "/v1/query", body))["hits"])

    async def synthesize(self, my_problem: str, my_outcome: OutcomePacket, top_k: int = 10, **filters) -> Synthesis:
        """Deposit my outcome, then learn what other agents found for a similar problem."""
        _check_packets([my_outcome])
        body = {"problem": my_problem, "outcome": packet_body(my_outcome), "top_k": top_k, **filters}
        out = await self.client.call("POST", "/v1/synthesize", body)
        return Synthesis(matches=_hits(out["matches"]), outcome_counts=out["outcome_counts"],
                         consensus=out["consensus"], support=out["support"])

    async def get(self, packet_ids: Sequence[str]) -> dict[str, OutcomePacket]:
        """The stored packets among `packet_ids` (missing ids are left out)."""
        ids = list(packet_ids)
        found: dict[str, OutcomePacket] = {}
        for start in range(0, len(ids), 10 * MAX_BATCH):
            out = await self.client.call("POST", "/v1/get", {"ids": ids[start:start + 10 * MAX_BATCH]})
            found.update({pid: _packet(p) for pid, p in out["packets"].items()})
        return found

    async def stats(self) -> dict[str, Any]:
        """The service's router stats (its counts cover every agent it serves)."""
        return await self.client.call("GET", "/v1/stats")

    async def purge_expired(self, now: float | None = None) -> int:
        """Remove expired packets from the service's store; NotImplementedError if its router cannot."""
        return (await self.client.call("POST", "/v1/purge", {"now": now}))["purged"]

    async def close(self) -> None:
        """Close this client's connections (the service and its store keep running)."""
        await self.client.close()

    async def __aenter__(self) -> "AsyncRemoteRouter":
        try:
            return await self.connect()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, *exc) -> None:
        await self.close()


def make_async_router(url: str, api_key: str | None = None, timeout: float = 10.0, max_connections: int = 100,
                      ca_file: str | Path | None = None) -> AsyncRemoteRouter:
    """An async router on the routing service at `url` ("http://host:port", or "https://host:port"
    with `ca_file=` the PEM certificate of the authority that signed the service's certificate,
    where the system's do not). `api_key` goes in the X-API-Key header of every request;
    `timeout` (seconds) bounds each request; `max_connections` is the pool size (one connection
    per request in flight at once)."""
    return AsyncRemoteRouter(url, api_key=api_key, timeout=timeout, max_connections=max_connections, ca_file=ca_file)
