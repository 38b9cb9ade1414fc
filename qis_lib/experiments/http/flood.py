"""One key flooding the routing service, another agent asking: what the per-key limits buy.

    python -m qis_lib.experiments.http flood --out results/http/

A service (`--auth` on, the real embedder unless told otherwise, a memory store holding
`packets` packets) and three phases, each `queries` questions asked one at a time by the
victim agent (its own key, the default limits; at most 10 questions a second, within them),
every question new (no cache hit):

- `alone`: nothing else runs;
- `flood, default limits`: a flooder process (`flood_threads` threads, one key with the
  default agent limits) sends queries as fast as the service answers, retrying at once
  after a 429, as a runaway agent would;
- `flood, no limits`: the same flood from a key whose file entry sets no limits.

Reported per phase: the victim's p50/p99 and their ratio to `alone`, and the flood's answered
and refused (429) requests per second. Then `connections`: `half_open` connections that each
send half a request's headers (more than the service's bound of open connections), how many
were refused at once (503) and when the held ones were closed (the header deadline), and the
victim's query latency meanwhile. The flooder and the victim run on the same machine as the
service: on a small machine the flood client's own CPU is part of what the victim feels.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ...bench.embedding import machine_info
from ...serve.auth import write_keys_file
from ...serve.process import RoutingService
from ...serve.server import DEFAULT_HEADER_TIMEOUT_S
from .load import packet, problem

PACKAGES = ("fastapi", "starlette", "uvicorn", "httpx", "onnxruntime", "numpy")


def _flooder(url: str, key: str, threads: int, stop, counts) -> None:
    """Queries as fast as answered from `threads` threads; a 429 is retried at once."""
    from ...serve.client import RemoteRouter
    from ...stores.http import ServiceBusyError

    router = None
    while router is None and not stop.is_set():
        try:
            router = RemoteRouter(url, api_key=key, timeout=60, max_connections=threads)
        except ServiceBusyError:
            continue
    served, refused = [0] * threads, [0] * threads

    def hammer(t: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                router.query(f"flood {t}-{i}: {problem('flood', t, i)}", top_k=5)
                served[t] += 1
            except ServiceBusyError:
                refused[t] += 1
            except ConnectionError:
                pass
            i += 1

    workers = [threading.Thread(target=hammer, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    stop.wait()
    for w in workers:
        w.join(60)
    counts.put((sum(served), sum(refused)))
    router.close()


VICTIM_RATE_PER_S = 10.0  # half the default agent limit (20/s): the victim keeps within its own key's limits


def _victim(router, run: str, queries: int, rate_per_s: float = VICTIM_RATE_PER_S) -> list[float]:
    """`queries` new questions, one at a time, started at most `rate_per_s` a second."""
    latencies = []
    first = time.perf_counter()
    for j in range(queries):
        wait = first + j / rate_per_s - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        text = f"victim asks {run}-{j}: {problem(run, 7, j)}"
        start = time.perf_counter()
        router.query(text, top_k=5)
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def _phase(name: str, latencies: list[float], base: dict | None, elapsed: float, flood=None) -> dict:
    lat = np.asarray(latencies)
    row = {"phase": name, "queries": int(lat.size), "p50_ms": round(float(np.percentile(lat, 50)), 2),
           "p99_ms": round(float(np.percentile(lat, 99)), 2), "max_ms": round(float(lat.max()), 2),
           "load_1min": round(os.getloadavg()[0], 2)}
    if base is not None:
        row["p50_ratio"] = round(row["p50_ms"] / base["p50_ms"], 2)
        row["p99_ratio"] = round(row["p99_ms"] / base["p99_ms"], 2)
    if flood is not None:
        row["flood_answered_per_s"] = round(flood[0] / elapsed, 1)
        row["flood_refused_per_s"] = round(flood[1] / elapsed, 1)
    return row


def _flooded(url: str, key: str, threads: int, victim, run: str, queries: int) -> tuple[list[float], tuple, float]:
    ctx = mp.get_context("spawn")
    stop, counts = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_flooder, args=(url, key, threads, stop, counts), daemon=True)
    proc.start()
    time.sleep(3.0)  # the flood under way
    start = time.perf_counter()
    latencies = _victim(victim, run, queries)
    elapsed = time.perf_counter() - start
    stop.set()
    flood = counts.get(timeout=120)
    proc.join(30)
    return latencies, flood, elapsed + 3.0


def half_open(url: str, victim, n: int, header_timeout: float) -> dict:
    """`n` connections that send half a request's headers and wait; what the service does with them."""
    host, port = url.split("//")[1].split(":")
    socks, refused = [], 0
    started = time.monotonic()
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=header_timeout + 10)
        s.sendall(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nX-API-")
        socks.append(s)
    time.sleep(0.5)
    victim_ms = _victim(victim, "half-open", 5)
    closed_after, held = [], []
    for s in socks:
        s.settimeout(header_timeout + 10)
        try:
            first = s.recv(100)
        except OSError:
            first = b""
        if first.startswith(b"HTTP/1.1 503"):
            refused += 1
        else:
            held.append(first)
            closed_after.append(time.monotonic() - started)
        s.close()
    return {"connections": n, "refused_503_at_once": refused, "held_then_closed": len(held),
            "held_answered_408": sum(h.startswith(b"HTTP/1.1 408") for h in held),
            "closed_after_s_min": round(min(closed_after), 2) if closed_after else None,
            "closed_after_s_max": round(max(closed_after), 2) if closed_after else None,
            "victim_p50_ms_meanwhile": round(float(np.median(victim_ms)), 2)}


def run(queries: int = 200, packets: int = 1000, flood_threads: int = 32, half_open_n: int = 1500,
        max_connections: int = 1000, header_timeout: float = DEFAULT_HEADER_TIMEOUT_S, embedder: str | None = None,
        folder: str | os.PathLike | None = None, log=print) -> dict:
    import tempfile

    from ...serve.client import RemoteRouter

    folder = Path(folder or tempfile.mkdtemp(prefix="qis-flood-"))
    folder.mkdir(parents=True, exist_ok=True)
    keys = write_keys_file(folder / "keys.json", {"victim": None, "flooder": None,
                                                  "flooder-unlimited": {"rate_per_s": None, "max_concurrent": None}})
    load = {"before": os.getloadavg()}
    run_id = f"{int(time.time())}"
    with RoutingService("memory://", embedder=embedder, folder=folder, auth=folder / "keys.json",
                        args=("--max-connections", str(max_connections), "--header-timeout", str(header_timeout))
                        ) as service:
        with RemoteRouter(service.url, api_key=keys["admin"], timeout=120) as admin:
            admin.deposit_many([packet(run_id, a, i, round(time.time(), 3)) for a in range(20)
                                for i in range(packets // 20)])
        victim = RemoteRouter(service.url, api_key=keys["victim"], timeout=120, max_connections=1)
        _victim(victim, "warm", 20)
        start = time.perf_counter()
        base = _phase("alone", _victim(victim, f"{run_id}-a", queries), None, time.perf_counter() - start)
        log(f"alone: {base}")
        rows = [base]
        for name, key in (("flood, default limits", keys["flooder"]),
                          ("flood, no limits", keys["flooder-unlimited"])):
            latencies, flood, elapsed = _flooded(service.url, key, flood_threads, victim, f"{run_id}-{len(rows)}",
                                                 queries)
            rows.append(_phase(name, latencies, base, elapsed, flood))
            log(f"{name}: {rows[-1]}")
        connections = half_open(service.url, victim, half_open_n, header_timeout)
        log(f"half-open connections: {connections}")
        victim.close()
    load["after"] = os.getloadavg()
    return {"phases": rows, "connections": connections, "load": load, "machine": machine_info(PACKAGES),
            "queries": queries, "packets": packets, "flood_threads": flood_threads,
            "max_connections": max_connections, "header_timeout_s": header_timeout}


def save(result: dict, out: str | os.PathLike, command: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result["phases"]).to_csv(out / "flood.csv", index=False)
    meta = {k: v for k, v in result.items() if k != "phases"}
    meta["command"] = command
    (out / "flood.json").write_text(json.dumps(meta, indent=2, default=list) + "\n")
    return out


def describe(result: dict) -> str:
    rows = {r["phase"]: r for r in result["phases"]}
    limited, open_ = rows["flood, default limits"], rows["flood, no limits"]
    c = result["connections"]
    return (f"victim p99 {rows['alone']['p99_ms']} ms alone, {limited['p99_ms']} ms under a flood with the default "
            f"limits ({limited['p99_ratio']}x; flood answered {limited['flood_answered_per_s']}/s, refused "
            f"{limited['flood_refused_per_s']}/s), {open_['p99_ms']} ms under the same flood with no limits "
            f"({open_['p99_ratio']}x); {c['connections']} half-open connections: {c['refused_503_at_once']} refused "
            f"at once, {c['held_then_closed']} held and closed after {c['closed_after_s_min']}-"
            f"{c['closed_after_s_max']} s")
