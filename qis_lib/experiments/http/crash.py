"""The routing service SIGKILLed under load, restarted on the same persistent store.

Writer processes deposit packets (and query now and then) through `RemoteRouter`, each with
its own agent key (the service runs with --auth; the check reads with an admin key); each
packet is written to a `sent` file before it is sent and to the writer's ledger once the
service acknowledged it; an error is retried with the same packet (same id: a retry
overwrites) until it is acknowledged. The service (`qdrant-edge:///...`) is killed with
SIGKILL at random moments, each time after every writer has been acknowledged again
since the last restart (the clients recovered by themselves), and restarted on the same
folder. At the end the ledger check runs through the restarted service: every
acknowledged deposit there, unchanged, nothing stored twice or unsent; and every error a
writer saw overlaps an outage (from the kill to the restarted service answering).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import time
from pathlib import Path

import pandas as pd

from ...core.packet import OutcomePacket
from ...infra.servers import wait_until
from ...serve.auth import write_keys_file
from ...serve.process import RoutingService
from ...stores.http import HttpStore
from ..ledger import Ledger, check_loss
from .load import packet, question

CLIENT_TIMEOUT = 5.0


def _writer(url: str, wid: int, folder: str, stop, api_key: str, query_every: int = 5) -> None:
    from ...serve.client import RemoteRouter

    folder = Path(folder)
    router = RemoteRouter(url, api_key=api_key, timeout=CLIENT_TIMEOUT, max_connections=1)
    with open(folder / f"sent-{wid}.jsonl", "a") as sent, open(folder / f"errors-{wid}.jsonl", "a") as errors, \
            Ledger(folder / f"ledger-{wid}.jsonl") as ledger:
        def error(op: str, start: float, exc: Exception) -> None:
            errors.write(json.dumps({"writer": wid, "op": op, "start": start, "end": time.time(),
                                     "error": f"{type(exc).__name__}: {exc}"[:300]}) + "\n")
            errors.flush()

        i, now = 0, round(time.time(), 3)
        while not stop.is_set():
            p = packet("crash", wid, i, now)
            sent.write(json.dumps(p.to_payload()) + "\n")
            sent.flush()
            while not stop.is_set():
                start = time.time()
                try:
                    router.deposit(p)
                except Exception as exc:  # the service is down: note it, try the same packet again
                    error("deposit", start, exc)
                    time.sleep(0.05)
                    continue
                ledger.append(p.packet_id, time.time())
                break
            if i % query_every == 0 and not stop.is_set():
                start = time.time()
                try:
                    router.query(question("crash", wid, i, 1, i + 1, now)[0], top_k=3)
                except Exception as exc:
                    error("query", start, exc)
            i += 1
    router.close()


def _acked_counts(folder: Path, writers: int) -> list[int]:
    counts = []
    for w in range(writers):
        path = folder / f"ledger-{w}.jsonl"
        counts.append(sum(1 for _ in open(path)) if path.exists() else 0)
    return counts


def run(kills: int = 20, writers: int = 4, embedder: str = "hash", seed: int = 0, folder: str | os.PathLike | None = None,
        recover_timeout: float = 60.0, log=print) -> dict:
    """`kills` SIGKILLs of a service under `writers` agent processes; returns the events and checks."""
    import tempfile

    folder = Path(folder or tempfile.mkdtemp(prefix="qis-http-crash-"))
    (folder / "run").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    store = f"qdrant-edge://{folder / 'store'}"
    # --auth on: each writer deposits with its own agent key (no limits: it writes as fast as it can),
    # the check reads with the admin key
    keys = write_keys_file(folder / "keys.json", [f"agent-{w}" for w in range(writers)],
                           limits={"rate_per_s": None, "max_concurrent": None})
    service = RoutingService(store, embedder=embedder, folder=folder, auth=folder / "keys.json").start()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(service.url, w, str(folder / "run"), stop, keys[f"agent-{w}"]),
                         daemon=True) for w in range(writers)]
    for p in procs:
        p.start()
    outages, load = [], [os.getloadavg()]
    base = [0] * writers  # acknowledgements per writer when the service last came up
    try:
        for k in range(kills + 1):
            wait_until(lambda: all(c > b for c, b in zip(_acked_counts(folder / "run", writers), base)),
                       recover_timeout, f"every writer acknowledged again after restart {k}", interval=0.05)
            if outages:  # the clients recovered by themselves: each writer was acknowledged again
                outages[-1]["all_writers_acked_after_s"] = round(time.time() - outages[-1]["ready"], 3)
            if k == kills:
                break
            time.sleep(rng.uniform(0.2, 1.5))  # a random moment of the load
            acked = sum(_acked_counts(folder / "run", writers))
            killed = time.time()
            service.kill()
            service.start()
            base = _acked_counts(folder / "run", writers)
            outages.append({"kill": k + 1, "killed": killed, "ready": time.time(), "acked_before_kill": acked})
            log(f"kill {k + 1}/{kills}: down {outages[-1]['ready'] - killed:.2f}s, {acked} acknowledged before it")
        time.sleep(1.0)
    finally:
        stop.set()
        for p in procs:
            p.join(30)
    load.append(os.getloadavg())
    result = check(folder / "run", writers, service.url, outages, keys["admin"])
    service.stop()
    result.update(kills=kills, writers=writers, embedder=embedder, store="qdrant-edge", auth=True, load=load,
                  cores=os.cpu_count())
    return result


def check(run_dir: Path, writers: int, url: str, outages: list[dict], api_key: str | None = None) -> dict:
    """The ledger check through the restarted service, and the errors against the outages."""
    sent: dict[str, OutcomePacket] = {}
    acked: list[str] = []
    errors = []
    for w in range(writers):
        for line in open(run_dir / f"sent-{w}.jsonl"):
            p = OutcomePacket.from_payload(json.loads(line))
            sent[p.packet_id] = p
        acked += Ledger.read(run_dir / f"ledger-{w}.jsonl")
        path = run_dir / f"errors-{w}.jsonl"
        errors += [json.loads(line) for line in open(path)] if path.exists() else []
    in_flight = sorted(set(sent) - set(acked))  # sent when the run stopped: not acknowledged
    store = HttpStore(url, timeout=60, api_key=api_key)
    try:
        loss = check_loss("restarted service", acked, sent, (), in_flight, store.get, store.count)
    finally:
        store.close()
    windows = [(o["killed"], o["ready"]) for o in outages]
    outside = [e for e in errors if not any(e["start"] <= end and e["end"] >= start for start, end in windows)]
    ok = loss.ok and not outside and loss.acknowledged > 0
    return {"ok": ok, "loss": loss.row(), "errors": len(errors), "errors_outside_outages": len(outside),
            "first_outside": outside[:3], "outages": outages}


def describe(result: dict) -> str:
    loss = result["loss"]
    downs = [o["ready"] - o["killed"] for o in result["outages"]]
    return (f"{result['kills']} SIGKILLs of the service under {result['writers']} writer processes: "
            f"{loss['acknowledged']} acknowledged deposits, {loss['lost']} lost, {loss['corrupted']} changed, "
            f"{loss['duplicated']} stored twice or never sent; {loss['indeterminate']} in flight at the end; "
            f"{result['errors']} errors seen by the writers, {result['errors_outside_outages']} outside an outage; "
            f"outage {min(downs):.1f}-{max(downs):.1f}s (kill to answering again)")


def save(result: dict, out: str | os.PathLike, command: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result["outages"]).to_csv(out / "crash_outages.csv", index=False)
    meta = {k: v for k, v in result.items() if k != "outages"}
    meta["command"] = command
    meta["summary"] = describe(result)
    (out / "crash.json").write_text(json.dumps(meta, indent=2, default=list) + "\n")
    return out
