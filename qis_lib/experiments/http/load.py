"""Many agents against one routing service: throughput, latency and exact counts.

    python -m qis_lib.experiments.http load --agents 1,4,16,64,1000 --out results/http/
    python -m qis_lib.experiments.http load --agents 1000 --clients async --out results/http-async/

For each number of agents: a fresh service (`python -m qis_lib.serve`, memory store, the
real embedder), agent *processes* (one per agent up to 16, then several concurrent
agents per process, each agent a thread with its own requests in flight) that first
deposit their packets, then query problems like the other agents' (a barrier between
the two phases). With `--clients async`, the agents are asyncio tasks in one process
instead, on one async client (`make_async_router`), a connection each. Then the exact counts through the ledger: every acknowledged deposit
stored once, none twice, nothing stored that was never sent. The same work runs
in-process (one `OutcomeRouter`, one thread per agent, at most 64), and the embedder
alone is timed in the same run: the ceiling for a service that embeds every text.
Where the time goes: each answer's Server-Timing header (time inside the service)
against the latency the agent saw; the embedding alone; the store (in-process query
minus embedding).
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


from ...core.packet import OutcomePacket
from ..ledger import check_loss

COMPONENTS = ("namenode", "datanode", "resource manager", "node manager", "hbase region server", "zookeeper quorum",
              "kafka broker", "postgres connection pool", "redis cache", "api gateway", "job scheduler", "spark driver")
SYMPTOMS = ("runs out of heap", "hangs on startup", "drops client connections", "loses its leader election",
            "reports blocks slowly", "times out under load", "corrupts its write-ahead log", "leaks file descriptors",
            "fails over slowly", "rejects valid tokens", "fills the disk with logs")
TRIGGERS = ("after an upgrade", "during a rolling restart", "when the disk fills up", "under a burst of small writes",
            "with TLS enabled", "after a network partition", "on the first run of the day", "with 500 clients")


def problem(run: str, agent: int, i: int) -> str:
    """A distinct problem text for (run, agent, i): what agent `agent` met the i-th time."""
    k = agent * 7919 + i * 104729
    return (f"{COMPONENTS[k % len(COMPONENTS)]} {SYMPTOMS[(k // 12) % len(SYMPTOMS)]} "
            f"{TRIGGERS[(k // 132) % len(TRIGGERS)]} (run {run}, agent {agent}, case {i})")


def packet(run: str, agent: int, i: int, now: float) -> OutcomePacket:
    """Agent `agent`'s i-th packet of a run that started at `now` (the same in every process,
    so any process can compute any packet's id)."""
    return OutcomePacket(problem(run, agent, i), ("resolved", "partial", "open")[i % 3], 0.5 + (i % 5) / 10,
                         f"what agent {agent} did about case {i}", [COMPONENTS[(agent + i) % 4].split()[0]],
                         timestamp=now, agent_id=f"agent-{agent}")


def question(run: str, agent: int, j: int, agents: int, deposits: int, now: float) -> tuple[str, str]:
    """Agent `agent`'s j-th question: another agent's problem, asked in other words (so it is not
    an embedding cache hit). Returns (text, id of the packet it should find)."""
    other = (agent + 1 + j) % agents if agents > 1 else agent
    target = packet(run, other, j % deposits, now)
    return f"has anyone seen this: {target.problem_description}?", target.packet_id


@dataclass
class AgentResults:
    """What the agents of one process did: latencies (s), server times (ms), ids, errors."""

    latency: dict[str, list[float]] = field(default_factory=lambda: {"deposit": [], "query": []})
    server_ms: dict[str, list[float]] = field(default_factory=lambda: {"deposit": [], "query": []})
    phase: dict[str, tuple[float, float]] = field(default_factory=dict)
    acked: list[str] = field(default_factory=list)
    sent: dict[str, OutcomePacket] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    targets_found: int = 0
    repeated_in_answer: int = 0  # a packet twice in one answer: must be 0

    def timed(self, op: str, seconds: float, client) -> None:
        """One answer to `op` after `seconds`; the service's own time from `client`, if it read one."""
        self.latency[op].append(seconds)
        if client is not None and client.last_server_ms is not None:
            self.server_ms[op].append(client.last_server_ms)

    def refused(self, op: str, exc: Exception, packet_id: str | None = None) -> None:
        """A call that failed: recorded and counted (a failed deposit is never acknowledged)."""
        if packet_id is not None:
            self.failed.append(packet_id)
        self.errors.append(f"{op}: {type(exc).__name__}: {exc}")

    def answered(self, target: str, hits) -> None:
        """A query's answer: did it hold the packet asked about, and any packet twice?"""
        ids = [p.packet_id for p, _ in hits]
        self.targets_found += target in ids
        self.repeated_in_answer += len(ids) - len(set(ids))

    def merge(self, other: "AgentResults") -> None:
        for op in ("deposit", "query"):
            self.latency[op] += other.latency[op]
            self.server_ms[op] += other.server_ms[op]
        for name, (start, end) in other.phase.items():
            old = self.phase.get(name, (start, end))
            self.phase[name] = (min(old[0], start), max(old[1], end))
        self.acked += other.acked
        self.sent.update(other.sent)
        self.failed += other.failed
        self.errors += other.errors
        self.targets_found += other.targets_found
        self.repeated_in_answer += other.repeated_in_answer


def run_agents(router, run: str, agents: list[int], n_agents: int, deposits: int, queries: int,
               barrier=None, top_k: int = 5, threads: int | None = None, now: float | None = None) -> AgentResults:
    """The agents `agents` on `router` (one thread each, or `threads` shared): deposit, wait at
    `barrier`, query. `now`: the packets' timestamp (default: now)."""
    now = round(time.time(), 3) if now is None else now
    out = AgentResults()
    lock = threading.Lock()
    client = getattr(router, "client", None)  # a RemoteRouter's: it reads each answer's Server-Timing

    def timed(op: str, fn):
        start = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - start
        with lock:
            out.timed(op, elapsed, client)
        return value

    def deposit(agent: int) -> None:
        for i in range(deposits):
            p = packet(run, agent, i, now)
            with lock:
                out.sent[p.packet_id] = p
            try:
                timed("deposit", lambda: router.deposit(p))
            except Exception as exc:
                with lock:
                    out.refused("deposit", exc, p.packet_id)
                continue
            with lock:
                out.acked.append(p.packet_id)

    def ask(agent: int) -> None:
        for j in range(queries):
            text, target = question(run, agent, j, n_agents, deposits, now)
            exclude = f"agent-{agent}" if n_agents > 1 else None
            try:
                hits = timed("query", lambda: router.query(text, top_k=top_k, exclude_agent=exclude))
            except Exception as exc:
                with lock:
                    out.refused("query", exc)
                continue
            with lock:
                out.answered(target, hits)

    with ThreadPoolExecutor(threads or max(1, len(agents))) as pool:
        for name, work in (("deposit", deposit), ("query", ask)):
            if barrier is not None:
                barrier.wait()
            start = time.time()
            list(pool.map(work, agents))
            out.phase[name] = (start, time.time())
    return out


async def run_agents_async(router, run: str, agents: list[int], n_agents: int, deposits: int, queries: int,
                           top_k: int = 5, now: float | None = None) -> AgentResults:
    """`run_agents` on an async router (`make_async_router`): each agent an asyncio task, all of
    them depositing, then (once every deposit has been answered) all of them querying."""
    now = round(time.time(), 3) if now is None else now
    out = AgentResults()
    client = getattr(router, "client", None)

    async def timed(op: str, call):
        start = time.perf_counter()
        value = await call
        out.timed(op, time.perf_counter() - start, client)  # the task's own last answer (a context variable)
        return value

    async def deposit(agent: int) -> None:
        for i in range(deposits):
            p = packet(run, agent, i, now)
            out.sent[p.packet_id] = p
            try:
                await timed("deposit", router.deposit(p))
            except Exception as exc:
                out.refused("deposit", exc, p.packet_id)
                continue
            out.acked.append(p.packet_id)

    async def ask(agent: int) -> None:
        for j in range(queries):
            text, target = question(run, agent, j, n_agents, deposits, now)
            exclude = f"agent-{agent}" if n_agents > 1 else None
            try:
                hits = await timed("query", router.query(text, top_k=top_k, exclude_agent=exclude))
            except Exception as exc:
                out.refused("query", exc)
                continue
            out.answered(target, hits)

    for name, work in (("deposit", deposit), ("query", ask)):
        start = time.time()
        await asyncio.gather(*(work(agent) for agent in agents))
        out.phase[name] = (start, time.time())
    return out


def run_over_http_async(url: str, run: str, n_agents: int, deposits: int, queries: int,
                        timeout: float = 120.0, api_key: str | None = None) -> AgentResults:
    """`n_agents` agents as asyncio tasks in this process, on one async router (a connection
    each: every agent has its request in flight at once) against the service at `url`."""
    from ...serve.aclient import make_async_router

    now = round(time.time(), 3)

    async def agents() -> AgentResults:
        async with make_async_router(url, api_key=api_key, timeout=timeout, max_connections=max(1, n_agents)) as router:
            return await run_agents_async(router, run, list(range(n_agents)), n_agents, deposits, queries, now=now)

    return asyncio.run(agents())


def _agent_process(url: str, run: str, agents: list[int], n_agents: int, deposits: int, queries: int, barrier,
                   results, timeout: float, now: float, api_key: str | None) -> None:
    from ...serve.client import RemoteRouter

    router = RemoteRouter(url, api_key=api_key, timeout=timeout, max_connections=max(1, len(agents)))
    try:
        results.put(run_agents(router, run, agents, n_agents, deposits, queries, barrier, now=now))
    except BaseException as exc:
        failed = AgentResults(errors=[f"process: {type(exc).__name__}: {exc}"])
        results.put(failed)
        raise
    finally:
        router.close()


def split(n_agents: int, processes: int) -> list[list[int]]:
    """Agents 0..n-1 over `processes` processes, as evenly as possible."""
    return [list(range(n_agents))[p::processes] for p in range(min(processes, n_agents))]


def run_over_http(url: str, run: str, n_agents: int, processes: int, deposits: int, queries: int,
                  timeout: float = 120.0, api_key: str | None = None) -> AgentResults:
    """`n_agents` agents in `processes` processes against the service at `url` (with `api_key`)."""
    ctx = mp.get_context("spawn")
    groups = split(n_agents, processes)
    barrier, results = ctx.Barrier(len(groups)), ctx.Queue()
    now = round(time.time(), 3)  # one timestamp for the run: every process computes the same packet ids
    procs = [ctx.Process(target=_agent_process, args=(url, run, g, n_agents, deposits, queries, barrier, results,
                                                      timeout, now, api_key), daemon=True) for g in groups]
    for p in procs:
        p.start()
    merged = AgentResults()
    for _ in procs:
        merged.merge(results.get(timeout=timeout * (deposits + queries + 2)))
    for p in procs:
        p.join(30)
    return merged


def embedding_limit(embedder, texts: list[str], threads: int = 1, batch: int = 1) -> float:
    """Texts per second the embedder alone manages on `texts` (fresh ones: no cache hit)."""
    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(embedder.encode, chunks))
    return len(texts) / (time.perf_counter() - start)


def loss_of(results: AgentResults, store):
    """The ledger check of one run through a store client (get, count)."""
    return check_loss("service", results.acked, results.sent, results.failed, (), store.get, store.count)


__all__ = ["AgentResults", "embedding_limit", "loss_of", "packet", "problem", "question", "run_agents",
           "run_agents_async", "run_over_http", "run_over_http_async", "split"]
