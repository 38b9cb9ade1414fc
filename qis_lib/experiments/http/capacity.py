"""What one routing service sustains when its agents' own CPU is elsewhere: wrk against it.

    python -m qis_lib.experiments.http capacity --connections 1,16,64,1000 --out results/http/

The load harness (`load`) runs real agents on the project's clients, and on a small machine
those clients take much of the CPU the service needs (each httpx request costs the agent's
process about as much as the service spends on it). Here the load comes from wrk (Debian's
`wrk`, a C load generator: `apt-get install wrk`), one connection per agent, each sending
queries with a text never asked before (no cache hit), for `seconds` per level, against a
service holding `packets` packets with the real embedder. Reported per level: answered
queries/s, wrk's latency percentiles (p50, p90, p99), errors (non-2xx, socket errors), the
service's CPU per query, the embedder's batches (how many texts per model call); beside
them the embedder alone, every batch size, in the same run: the ceiling for a service that
embeds every text.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd

from ...bench.embedding import machine_info
from ...embedders import SERVICE_EMBEDDER, get_embedder
from ...serve.process import RoutingService
from .bench import embedding_limits
from .load import packet

PACKAGES = ("fastapi", "starlette", "uvicorn", "httpx", "onnxruntime", "numpy")
# Every request a text never asked before: a counter per wrk thread, and the thread's number in the text.
LUA = """
threads = 0
setup = function(thread) thread:set("id", threads) threads = threads + 1 end
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("QIS_WRK_KEY")
init = function(args) tag = (args[1] or "t") .. "-" .. id end
request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/query", nil, '{"top_k": 5, "problem": "has anyone seen the namenode run out of '
    .. 'heap after an upgrade, case ' .. counter .. ' of ' .. tag .. '?"}')
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()
    return float(value) * _UNITS[unit]


def parse_wrk(out: str) -> dict:
    """Requests, errors and latency percentiles from `wrk --latency`'s report."""
    total = re.search(r"(\d+) requests in ([\d.]+)(s|m)", out)
    seconds = float(total.group(2)) * (60 if total.group(3) == "m" else 1)
    row = {"requests": int(total.group(1)), "seconds": seconds}
    for pct in ("50", "90", "99"):
        found = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        row[f"p{pct}_ms"] = round(_ms(found.group(1)), 2) if found else None
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    row["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    row["socket_errors"] = sum(map(int, sockets.groups())) if sockets else 0
    return row


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(connections=(1, 16, 64, 1000), seconds: float = 20.0, packets: int = 1000, store: str = "memory://",
        embedder: str | None = None, service_args=(), log=print) -> dict:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("capacity needs wrk, a C load generator: apt-get install wrk")
    folder = Path(tempfile.mkdtemp(prefix="qis-capacity-"))
    (folder / "query.lua").write_text(LUA)
    key = secrets.token_urlsafe(24)
    embedder = SERVICE_EMBEDDER if embedder is None else embedder  # the service's own, measured alone beside it
    emb = get_embedder(embedder)
    load = {"before": os.getloadavg()}
    limits = embedding_limits(emb, f"cap-{int(time.time())}", n=512)
    log(f"embedder alone (texts/s): {json.dumps({k: round(v, 1) for k, v in limits.items()})}")
    rows = []
    now = round(time.time(), 3)
    with RoutingService(store, embedder=embedder, folder=folder, api_key=key, args=tuple(service_args)) as service:
        from ...serve.client import RemoteRouter

        with RemoteRouter(service.url, api_key=key, timeout=300) as admin:
            admin.deposit_many([packet("cap", a, i, now) for a in range(50) for i in range(packets // 50)])
            for level in connections:
                threads = min(2, level)
                before = _cpu_seconds(service.process.pid)
                batches_before = admin.stats().get("embed_batches", {})
                out = subprocess.run([wrk, f"-t{threads}", f"-c{level}", f"-d{seconds:g}s", "--latency", "--timeout",
                                      "60s", "-s", str(folder / "query.lua"), service.url, "--", f"c{level}-{now}"],
                                     capture_output=True, text=True, env={**os.environ, "QIS_WRK_KEY": key}, check=True)
                cpu = _cpu_seconds(service.process.pid) - before
                row = {"connections": level, **parse_wrk(out.stdout), "load_1min": round(os.getloadavg()[0], 2)}
                answered = row["requests"] - row["non_2xx"]
                row["queries_per_s"] = round(answered / row["seconds"], 1)
                row["service_cpu_ms_per_query"] = round(1000 * cpu / max(1, row["requests"]), 2)
                row["share_of_best_batched"] = round(row["queries_per_s"] / limits["best batched"], 3)
                batches = admin.stats().get("embed_batches", {})
                if batches:
                    texts = batches["texts"] - batches_before.get("texts", 0)
                    calls = batches["batches"] - batches_before.get("batches", 0)
                    row["texts_per_model_call"] = round(texts / max(1, calls), 1)
                rows.append(row)
                log(f"{level} connections: {row}")
    load["after"] = os.getloadavg()
    return {"rows": rows, "embedding": limits, "embedder": emb.name, "store": store, "seconds": seconds,
            "packets": packets, "service_args": list(service_args), "machine": machine_info(PACKAGES), "load": load,
            "wrk": subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.strip()}


def save(result: dict, out: str | os.PathLike, command: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result["rows"]).to_csv(out / "capacity.csv", index=False)
    meta = {k: v for k, v in result.items() if k != "rows"}
    meta["command"] = command
    (out / "capacity.json").write_text(json.dumps(meta, indent=2, default=list) + "\n")
    return out


def describe(result: dict) -> str:
    best = result["embedding"]["best batched"]
    parts = [f"{r['connections']} connections: {r['queries_per_s']} queries/s ({r['share_of_best_batched']}x the "
             f"embedder's best batch, {best:.1f} texts/s), p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms"
             for r in result["rows"]]
    return "; ".join(parts)
