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
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..core.packet import OutcomePacket
from ..core.router import Hit, Synthesis
from ..stores.http import MAX_BATCH, answer_of, client_limits, client_options, server_ms_of, tls_verify
from .client import _check_packets, _hits, _packet, packet_body, query_body, synthesis_of, synthesize_body


class AsyncServiceClient:
    """JSON over HTTP to one routing service from an event loop; every answer goes through
    `answer_of`, so its errors are `ServiceClient`'s. `https://` urls are checked against the
    system's certificate authorities, or those of `ca_file`."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0, max_connections: int = 100,
                 ca_file: str | Path | None = None):
        import httpx

        self.url, self.timeout, headers = client_options(url, api_key, timeout, ca_file)
        limits = client_limits(max_connections)
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=httpx.Timeout(self.timeout),
                                       limits=limits, verify=tls_verify(ca_file))
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
        """Ask the service which embedder and store it runs, and who the key is (`whoami`)."""
        health = await self.client.call("GET", "/health")
        self.whoami = await self.client.call("GET", "/v1/whoami")  # checks the key
        self.embedder_name, self.backend, self.dim = health["embedder"], health["store"], health["dim"]
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
        body = query_body(problem, top_k, domain, min_confidence, exclude_agent, now, domain_filter)
        return _hits((await self.client.call("POST", "/v1/query", body))["hits"])

    async def synthesize(self, my_problem: str, my_outcome: OutcomePacket, top_k: int = 10, **filters) -> Synthesis:
        """Deposit my outcome (as the key's agent), then what other agents found for a similar problem."""
        body = synthesize_body(my_problem, my_outcome, top_k, filters)
        return synthesis_of(await self.client.call("POST", "/v1/synthesize", body))

    async def get(self, packet_ids: Sequence[str]) -> dict[str, OutcomePacket]:
        """The stored packets among `packet_ids` (missing ids are left out)."""
        ids = list(packet_ids)
        found: dict[str, OutcomePacket] = {}
        for start in range(0, len(ids), 10 * MAX_BATCH):
            out = await self.client.call("POST", "/v1/get", {"ids": ids[start:start + 10 * MAX_BATCH]})
            found.update({pid: _packet(p) for pid, p in out["packets"].items()})
        return found

    async def delete(self, packet_ids: Sequence[str]) -> list[str]:
        """Remove the packets `packet_ids` (an agent key: its own only); returns the ids that were stored."""
        ids = list(packet_ids)
        deleted: list[str] = []
        for start in range(0, len(ids), 10 * MAX_BATCH):
            chunk = {"ids": ids[start:start + 10 * MAX_BATCH]}
            deleted += (await self.client.call("POST", "/v1/packets/delete", chunk))["deleted"]
        return deleted

    async def stats(self) -> dict[str, Any]:
        """The service's router stats (its counts cover every agent it serves)."""
        return await self.client.call("GET", "/v1/stats")

    async def purge_expired(self, now: float | None = None, agent_id: str | None = None) -> int:
        """Remove expired packets from the service's store (an agent key: its own only)."""
        return (await self.client.call("POST", "/v1/purge", {"now": now, "agent_id": agent_id}))["purged"]

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
