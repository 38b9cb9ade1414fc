"""Throughput and latency of the routing service against the number of agents, beside the
same work in-process and the embedder alone, measured in one run (see load.py)."""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ...bench.embedding import machine_info
from ...core.router import make_router
from ...embedders import SERVICE_EMBEDDER, get_embedder
from ...serve.process import RoutingService
from ...stores.http import HttpStore
from .load import AgentResults, embedding_limit, loss_of, problem, run_agents, run_over_http, run_over_http_async

PACKAGES = ("fastapi", "starlette", "uvicorn", "httpx", "onnxruntime", "qdrant-edge-py", "numpy")
# (deposits, queries) per agent: about the same total work at every level, one each at 1,000.
WORK = {1: (100, 100), 4: (40, 40), 16: (15, 15), 64: (5, 5), 1000: (1, 1)}
MAX_IN_PROCESS_THREADS = 64
CLIENTS = ("processes", "async")  # how the agents reach the service: see measure()


def work_for(agents: int) -> tuple[int, int]:
    return WORK.get(agents, (max(1, 640 // agents),) * 2)


BATCHES = (16, 32, 64, 128)


def embedding_limits(embedder, run: str, n: int = 256) -> dict[str, float]:
    """Texts/s of the embedder alone, on the harness's own kind of text, every text new: one text
    a call from 1, 2 and 4 threads, batches of each of BATCHES from one thread, and the best batch."""
    texts = [problem(run, 10_000 + i, i) for i in range((3 + len(BATCHES)) * n)]
    chunk = lambda k: texts[k * n:(k + 1) * n]  # noqa: E731
    out = {f"one text a call, {t} thread{'s' * (t > 1)}": embedding_limit(embedder, chunk(k), t)
           for k, t in enumerate((1, 2, 4))}
    for k, batch in enumerate(BATCHES, start=3):
        out[f"batches of {batch}"] = embedding_limit(embedder, chunk(k), 1, batch=batch)
    out["best batched"] = max(out[f"batches of {b}"] for b in BATCHES)
    return out


def rows_of(results: AgentResults, mode: str, agents: int, processes: int) -> list[dict]:
    rows = []
    for op in ("deposit", "query"):
        lat = np.asarray(results.latency[op]) * 1e3
        start, end = results.phase.get(op, (0.0, 0.0))
        server = results.server_ms[op]
        rows.append({
            "mode": mode, "agents": agents, "processes": processes, "op": op, "ok": int(lat.size),
            "errors": sum(e.startswith(op) for e in results.errors),
            "throughput_per_s": round(lat.size / (end - start), 1) if end > start else None,
            "p50_ms": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
            "mean_ms": round(float(lat.mean()), 3) if lat.size else None,
            "server_mean_ms": round(float(np.mean(server)), 3) if server else None,
            "server_p50_ms": round(float(np.percentile(server, 50)), 3) if server else None,
        })
    return rows


def checks_of(results: AgentResults, loss, mode: str, agents: int, queries_per_agent: int | None = None) -> dict:
    """The exact counts of one run on a fresh store (each must be 0 or equal, see `ok`)."""
    queries = agents * (work_for(agents)[1] if queries_per_agent is None else queries_per_agent)
    row = {"mode": mode, "agents": agents, "sent": len(results.sent), "acknowledged": loss.acknowledged,
           "found": loss.found, "lost": loss.lost, "changed": loss.corrupted, "stored_twice_or_unsent": loss.duplicated,
           "store_count": loss.store_count, "errors": len(results.errors), "queries": queries,
           "answers": len(results.latency["query"]), "target_in_top5": results.targets_found,
           "repeated_in_an_answer": results.repeated_in_answer, "first_errors": results.errors[:3]}
    row["ok"] = (loss.ok and row["errors"] == 0 and row["acknowledged"] == row["sent"] == row["store_count"]
                 and row["answers"] == queries and row["repeated_in_an_answer"] == 0)
    return row


def measure(levels: Sequence[int] = (1, 4, 16, 64, 1000), store: str = "memory://", embedder: str | None = None,
            max_processes: int = 16, folder: str | os.PathLike | None = None,
            log: Callable[[str], None] = print, clients: str = "processes",
            service_args: Sequence[str] = ()) -> dict:
    """The whole comparison; returns {"rows", "checks", "embedding", "machine", "load"}.
    `clients`: "processes" (agent processes, RemoteRouter) or "async" (every agent an asyncio
    task in this process, on one async client). The service runs with one admin key, which
    every agent sends (keys checked on every request, no per-key limit); `service_args` go to
    `python -m qis_lib.serve` (e.g. ("--batch-max", "32"))."""
    if clients not in CLIENTS:
        raise ValueError(f"clients must be one of {CLIENTS}, got {clients!r}")
    embedder = SERVICE_EMBEDDER if embedder is None else embedder  # the service's own, measured alone beside it
    emb = get_embedder(embedder)
    tag = f"{int(time.time())}"
    load = {"before": os.getloadavg()}
    limits_before = embedding_limits(emb, f"{tag}-e0")
    log(f"embedding alone (texts/s): {json.dumps({k: round(v, 1) for k, v in limits_before.items()})}")
    rows, checks = [], []
    for agents in levels:
        deposits, queries = work_for(agents)
        processes = min(agents, max_processes) if clients == "processes" else 1
        mode = "http" if clients == "processes" else "http-async"
        key = secrets.token_urlsafe(24)  # one admin key for every agent: keys on, no per-key limit in the way
        with RoutingService(store, embedder=embedder, folder=folder, api_key=key, args=service_args) as service:
            started = time.perf_counter()
            if clients == "processes":
                results = run_over_http(service.url, f"{tag}-h{agents}", agents, processes, deposits, queries,
                                        api_key=key)
            else:
                results = run_over_http_async(service.url, f"{tag}-h{agents}", agents, deposits, queries, api_key=key)
            elapsed = time.perf_counter() - started
            reader = HttpStore(service.url, timeout=60, api_key=key)
            checks.append(checks_of(results, loss_of(results, reader), mode, agents))
            reader.close()
        rows += rows_of(results, mode, agents, processes)
        how = f"{processes} processes" if clients == "processes" else "asyncio tasks in 1 process"
        log(f"{agents} agents over HTTP ({how}): {elapsed:.1f}s, checks ok: {checks[-1]['ok']}, "
            f"load {os.getloadavg()[0]:.1f}")
        with make_router(store, embedder=emb) as router:
            results = run_agents(router, f"{tag}-l{agents}", list(range(agents)), agents, deposits, queries,
                                 threads=min(agents, MAX_IN_PROCESS_THREADS))
            checks.append(checks_of(results, loss_of(results, router.store), "in-process", agents))
        rows += rows_of(results, "in-process", agents, 1)
        log(f"{agents} agents in-process: checks ok: {checks[-1]['ok']}")
    limits_after = embedding_limits(emb, f"{tag}-e1")
    load["after"] = os.getloadavg()
    return {"rows": rows, "checks": checks, "machine": machine_info(PACKAGES), "load": load,
            "embedder": emb.name, "store": store, "clients": clients,
            "embedding": {"before": limits_before, "after": limits_after}}


def summary(result: dict) -> pd.DataFrame:
    """Per level and mode: both phases together (ops/s over the whole run), p50 of each op."""
    table = pd.DataFrame(result["rows"])
    wide = table.pivot_table(index=["agents", "mode"], columns="op",
                             values=["throughput_per_s", "p50_ms", "p99_ms", "server_p50_ms"], aggfunc="first")
    wide.columns = [f"{op}_{metric}" for metric, op in wide.columns]
    return wide.reset_index()


def save(result: dict, out: str | os.PathLike, command: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result["rows"]).to_csv(out / "load.csv", index=False)
    pd.DataFrame(result["checks"]).to_csv(out / "load_checks.csv", index=False)
    meta = {k: result[k] for k in ("machine", "load", "embedder", "store", "clients", "embedding")}
    meta["command"] = command
    (out / "load.json").write_text(json.dumps(meta, indent=2, default=list) + "\n")
    return out


def load_results(folder: str | os.PathLike) -> dict:
    """A saved run (save's files) as measure's dict."""
    folder = Path(folder)
    meta = json.loads((folder / "load.json").read_text())
    return {**meta, "rows": pd.read_csv(folder / "load.csv").to_dict("records"),
            "checks": pd.read_csv(folder / "load_checks.csv").to_dict("records")}


def query_overhead(url: str, embedder=None, n: int = 100, packets: int = 200, api_key: str | None = None,
                   timeout: float = 300.0) -> pd.DataFrame:
    """The same queries in-process and over HTTP, alternating, on the same packets and the same
    kind of store and embedder: one row per query with both latencies and the service's own
    time (Server-Timing), in ms. Every text is new to both embedders' caches."""
    from ...serve.client import RemoteRouter
    from .load import packet, question

    emb = get_embedder(embedder) if embedder is None or isinstance(embedder, str) else embedder
    run, now = f"ov{time.time_ns()}", round(time.time(), 3)
    batch = [packet(run, a, i, now) for a in range(8) for i in range(packets // 8)]
    rows = []
    with make_router("memory", embedder=emb) as local, RemoteRouter(url, api_key=api_key, timeout=timeout,
                                                                         max_connections=1) as remote:
        local.deposit_many(batch)
        remote.deposit_many(batch)
        for j in range(n + 3):
            text = f"{question(run, j % 8, j, 8, packets // 8, now)[0]} (asked {j})"  # never asked before
            order = (local, remote) if j % 2 else (remote, local)
            times = {}
            for router in order:
                start = time.perf_counter()
                router.query(text, top_k=5)
                times[router] = (time.perf_counter() - start) * 1e3
            if j >= 3:  # warm-up
                rows.append({"in_process_ms": times[local], "http_ms": times[remote],
                             "server_ms": remote.client.last_server_ms})
    table = pd.DataFrame(rows)
    table["http_minus_server_ms"] = table["http_ms"] - table["server_ms"]
    return table
