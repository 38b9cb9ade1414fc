"""What a caller of the routing service may do, checked in one place for every way in.

The HTTP endpoints (qis_lib.serve.app) and the MCP tools call these methods with the
`Caller` a key stands for; each checks the caller's role and identity, does the work off the
event loop (the store and the model block), and writes the audit line. A refusal is a
`Refused` with its HTTP status: 403 for what the role or identity does not allow, 404 for an
id not stored, 422 for a payload that breaks a packet's rule.

The rules (README, "Who may do what"):
- an `agent` deposits and synthesizes as its own agent id only (a packet without an agent id
  takes the caller's), deletes and purges its own packets only, queries and reads any;
- a `reader` queries and reads;
- an `admin` does everything, the store's own vector API included. Every payload written
  into the agents' namespace through that API is checked as a packet, as a deposit is, and
  the library's trust marker is set only after that check (`checked_payloads`).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import anyio

from ..core.packet import ANONYMOUS, OutcomePacket
from ..core.router import PAYLOAD_MARKER, Hit, OutcomeRouter, Synthesis, router_payload, validated_packet
from ..stores.http import DEFAULT_NAMESPACE
from . import timing
from .audit import Audit
from .auth import ACTIONS, Credential
from .namespaces import Namespaces

@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id (for logs), its role, and the agent id it acts as."""

    key_id: str | None
    role: str
    agent: str | None = None

    @classmethod
    def of(cls, cred: Credential) -> "Caller":
        return cls(cred.id, cred.role, cred.agent)

    def may(self, action: str) -> bool:
        return action in ACTIONS[self.role]

    def describe(self) -> str:
        who = f"key {self.key_id!r}" if self.key_id else "this caller"
        return f"{who} ({self.role}{f', agent {self.agent!r}' if self.agent else ''})"


OPEN = Caller(None, "admin")  # a service started without keys: whoever reaches its port
# Worker threads for the store and the embedder's callers. With micro-batching, the texts of the
# requests in these threads at once are what a model call can batch; a waiting thread costs no CPU.
DEFAULT_THREADS = 128


class Refused(Exception):
    """A request this caller may not make; `status` is its HTTP status."""

    def __init__(self, status: int, detail: str, field: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


def _forbidden(caller: Caller, what: str) -> Refused:
    return Refused(403, f"{caller.describe()} may not {what}")


class Gate:
    """The service's operations for a `Caller`, over `namespaces` (its "default" router is the
    agents'). `threads` bounds the worker threads the store and the model run in."""

    def __init__(self, namespaces: Namespaces, audit: Audit | None = None, threads: int = DEFAULT_THREADS):
        self.namespaces = namespaces
        self.audit = audit or Audit(None)
        self.threads = anyio.CapacityLimiter(threads)

    @property
    def router(self) -> OutcomeRouter:
        return self.namespaces.default

    async def _run(self, fn: Callable, *args, **kwargs) -> Any:
        """fn(*args, **kwargs) in a worker thread; its time goes to the request's Server-Timing
        as `embed` (what the embedder reports for the thread, if it counts: BatchingEmbedder) and `store`."""
        embedder = self.router.embedder
        counts = callable(getattr(embedder, "spent", None))

        def timed():
            if counts:
                embedder.reset()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                total = time.perf_counter() - start
                embed = embedder.spent() if counts else 0.0
                spans.append((embed, total - embed))

        spans: list[tuple[float, float]] = []
        try:
            return await anyio.to_thread.run_sync(timed, limiter=self.threads)
        finally:
            for embed, rest in spans:
                if embed:
                    timing.add("embed", embed)
                timing.add("store", rest)

    def require(self, caller: Caller, action: str, what: str | None = None) -> None:
        """Refuse (403, audited) unless the caller's role allows `action`."""
        if not caller.may(action):
            self.audit.record(caller, action, 403)
            raise _forbidden(caller, what or action)

    async def _write(self, caller: Caller, action: str, ids: Sequence[str], fn: Callable, *args, **extra) -> Any:
        """Do a write off the loop and audit it with its outcome (an error keeps its status);
        `extra` goes into the audit line."""
        try:
            result = await self._run(fn, *args)
        except Refused as exc:
            self.audit.record(caller, action, exc.status, ids, **extra)
            raise
        except (ValueError, TypeError):
            self.audit.record(caller, action, 422, ids, **extra)
            raise
        except Exception:
            self.audit.record(caller, action, 500, ids, **extra)
            raise
        self.audit.record(caller, action, 200, ids, **extra)
        return result

    # --- identity --------------------------------------------------------------------

    def own(self, caller: Caller, packet: OutcomePacket, agent_given: bool, action: str = "deposit") -> OutcomePacket:
        """`packet` as `caller` may write it: without an agent id it takes the caller's; with
        another agent's id it is refused (403, naming both), unless the caller is an admin."""
        if not agent_given:
            agent = caller.agent or ANONYMOUS
            return packet if packet.agent_id == agent else dataclasses.replace(packet, agent_id=agent)
        if caller.role != "admin" and packet.agent_id != caller.agent:
            self.audit.record(caller, action, 403, [packet.packet_id], as_agent=packet.agent_id)
            raise Refused(403, f"{caller.describe()} acts as agent {caller.agent!r} and may not {action} as agent "
                               f"{packet.agent_id!r}", field="agent_id")
        return packet

    # --- the agents' API ---------------------------------------------------------------

    async def deposit(self, caller: Caller, packets: Sequence[tuple[OutcomePacket, bool]]) -> list[str]:
        """Store each (packet, agent_given) as `caller`; all of them or, if one is refused, none."""
        self.require(caller, "deposit", "deposit packets")
        owned = [self.own(caller, p, given) for p, given in packets]
        return await self._write(caller, "deposit", [p.packet_id for p in owned], self.router.deposit_many, owned)

    async def synthesize(self, caller: Caller, problem: str, outcome: tuple[OutcomePacket, bool], top_k: int = 10,
                         **filters) -> Synthesis:
        """Deposit the caller's outcome, then what other agents found (the caller's own packets left out)."""
        self.require(caller, "synthesize", "deposit an outcome and synthesize")
        mine = self.own(caller, *outcome, action="synthesize")
        return await self._write(caller, "synthesize", [mine.packet_id],
                                 functools.partial(self.router.synthesize, problem, mine, top_k, **filters))

    async def query(self, caller: Caller, problem: str, top_k: int = 10, **filters) -> list[Hit]:
        self.require(caller, "query", "query")
        return await self._run(self.router.query, problem, top_k=top_k, **filters)

    async def get(self, caller: Caller, ids: Sequence[str]) -> dict[str, OutcomePacket]:
        self.require(caller, "get", "read packets")
        return await self._run(self.router.get, list(ids))

    async def delete(self, caller: Caller, ids: Sequence[str]) -> list[str]:
        """Remove the stored packets among `ids`; an agent only its own: one of another agent's
        among them refuses the whole request (403) and removes nothing."""
        self.require(caller, "delete", "delete packets")
        ids = list(dict.fromkeys(ids))
        if caller.role != "admin":
            found = await self._run(self.router.get, ids)
            others = {pid: p.agent_id for pid, p in found.items() if p.agent_id != caller.agent}
            if others:
                self.audit.record(caller, "delete", 403, ids)
                shown = ", ".join(f"{pid} (agent {agent!r})" for pid, agent in list(others.items())[:3])
                raise Refused(403, f"{caller.describe()} may delete its own packets only; {len(others)} of these "
                                   f"are another agent's: {shown}; nothing was deleted", field="ids")
            ids = list(found)
        return await self._write(caller, "delete", ids, self.router.delete, ids)

    async def purge(self, caller: Caller, now: float | None = None, agent_id: str | None = None) -> int:
        """Remove expired packets: an agent's own (agent_id None or its own), an admin's choice
        (all, or one agent's)."""
        self.require(caller, "purge", "purge expired packets")
        if caller.role != "admin":
            if agent_id not in (None, caller.agent):
                self.audit.record(caller, "purge", 403, as_agent=agent_id)
                raise Refused(403, f"{caller.describe()} may purge its own expired packets only, not agent "
                                   f"{agent_id!r}'s", field="agent_id")
            agent_id = caller.agent
        return await self._write(caller, "purge", [], self.router.purge_expired, now, agent_id)

    async def embed(self, caller: Caller, texts: Sequence[str]):
        self.require(caller, "embed", "use the embedder")
        return await self._run(self.router.embedder.encode, list(texts))

    async def stats(self, caller: Caller) -> dict[str, Any]:
        """The router's stats, and the embedder's batches where it batches (BatchingEmbedder)."""
        self.require(caller, "stats", "read the service's stats")
        stats = await self._run(self.router.stats)
        batches = getattr(self.router.embedder, "stats", None)
        if callable(batches):
            stats["embed_batches"] = batches()
        return stats

    # --- the store's own API (admin) ------------------------------------------------------

    def _store(self, namespace: str):
        """The store of `namespace`, opened on first use (in a worker thread: opening may take a while)."""
        try:
            return self.namespaces.get(namespace).store
        except OverflowError as exc:
            raise Refused(409, str(exc)) from None

    def _admin(self, caller: Caller, what: str) -> None:
        self.require(caller, "vectors", f"{what} (admin keys only)")

    async def upsert(self, caller: Caller, namespace: str, ids: list[str], vectors, payloads: list[dict]) -> None:
        """Write vectors and payloads as given, into "default" only as packets (`checked_payloads`)."""
        self._admin(caller, "write through the vector API")

        def work():
            checked = checked_payloads(ids, payloads, agents=namespace == DEFAULT_NAMESPACE)
            self._store(namespace).upsert(ids, vectors, checked)

        await self._write(caller, "vectors.upsert", ids, work, namespace=namespace)

    async def vector_delete(self, caller: Caller, namespace: str, ids: list[str]) -> None:
        self._admin(caller, "delete through the vector API")
        await self._write(caller, "vectors.delete", ids, lambda: self._store(namespace).delete(ids),
                          namespace=namespace)

    async def drop(self, caller: Caller, namespace: str) -> bool:
        self._admin(caller, "drop a namespace")
        return await self._write(caller, "vectors.drop", [], self.namespaces.drop, namespace, namespace=namespace)

    async def read(self, caller: Caller, namespace: str, fn: Callable[[Any], Any]) -> Any:
        """fn(store) off the loop, for the vector API's reads."""
        self._admin(caller, "read through the vector API")
        return await self._run(lambda: fn(self._store(namespace)))


def checked_payloads(ids: Sequence[str], payloads: Sequence[Any], agents: bool) -> list[Any]:
    """Payloads for the vector API's upsert: into the agents' namespace (`agents`) every one must
    be a valid packet stored under its own packet id; elsewhere one that carries the library's
    trust marker must be. Each checked payload is stored as the library writes it (marker set
    here, after the check); a broken one is a Refused(422) naming its index, and nothing is written."""
    out = []
    for i, (pid, payload) in enumerate(zip(ids, payloads)):
        if not agents and not (isinstance(payload, dict) and PAYLOAD_MARKER in payload):
            out.append(payload)
            continue
        try:
            packet = validated_packet(payload)
        except (ValueError, TypeError) as exc:
            where = "the agents' namespace holds packets only" if agents else f"it carries {PAYLOAD_MARKER}"
            raise Refused(422, f"payloads[{i}] is not a valid packet ({where}): {exc}", field=f"payloads.{i}") from None
        if pid != packet.packet_id:
            raise Refused(422, f"ids[{i}] must be the packet id of its payload ({packet.packet_id}), got {pid!r}",
                          field=f"ids.{i}")
        out.append(router_payload(packet))
    return out
