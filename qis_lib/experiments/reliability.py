"""Reliability experiments: many agents at once, and a writer killed in the middle of a stream.

The standard: a deposit is *acknowledged* when
`deposit()` returned; it is *lost* if a later read, after recovery, does not see it.
Every experiment keeps a ledger of acknowledged ids and checks each one afterwards.
A SIGKILL test covers a crash of the process only, not a power loss.

    python -m qis_lib.experiments.reliability --out results/reliability/   # every experiment, a CSV summary
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.packet import OutcomePacket
from ..core.router import OutcomeRouter, make_router
from ..infra.servers import ChromaServer

WORDS = ("namenode datanode heap block report timeout lease replication disk full quota yarn container "
         "killed memory shuffle fetch failure kerberos token expired checksum corrupt rpc queue slow").split()


def make_packet(writer: str, index: int, ttl: float = 3600.0, now: float | None = None) -> OutcomePacket:
    """Packet `index` of `writer`: the same arguments give the same packet (and id) in any process."""
    rng = random.Random(f"{writer}/{index}")
    problem = " ".join(rng.choices(WORDS, k=8)) + f" #{writer}-{index}"
    return OutcomePacket(problem_description=problem, outcome_type=rng.choice(["resolved", "partial", "open"]),
                         confidence=round(rng.random(), 3), delta_summary=f"step {index}",
                         domain_tags=[rng.choice(["hdfs", "yarn", "mapreduce"])],
                         timestamp=float(now if now is not None else 1_800_000_000 + index), agent_id=writer, ttl=ttl)


def check_hits(hits, now: float) -> int:
    """How many hits are malformed or expired (should be 0)."""
    bad = 0
    for packet, score in hits:
        if not isinstance(packet, OutcomePacket) or packet.is_expired(now) or not np.isfinite(score):
            bad += 1
    return bad


def concurrent_load(router: OutcomeRouter, threads: int = 8, ops_per_thread: int = 100, seed: int = 0) -> dict:
    """`threads` agents deposit, re-deposit (a retry) and query at once; then every ack is checked.

    Some packets have a TTL of a fraction of a second, so they expire during the run:
    a query that returns one after its expiry counts as bad.
    """
    acked: dict[str, OutcomePacket] = {}
    ack_lock = threading.Lock()
    counts = {"deposits": 0, "retries": 0, "queries": 0, "bad_hits": 0, "errors": 0}
    errors: list[str] = []
    start_gate = threading.Barrier(threads)

    def agent(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        mine: list[OutcomePacket] = []
        start_gate.wait()
        for i in range(ops_per_thread):
            try:
                roll = rng.random()
                if roll < 0.45 or not mine:
                    ttl = 0.2 if rng.random() < 0.2 else 3600.0
                    packet = make_packet(f"agent-{number}", i, ttl=ttl, now=time.time())
                    router.deposit(packet)
                    mine.append(packet)
                    with ack_lock:
                        acked[packet.packet_id] = packet
                        counts["deposits"] += 1
                elif roll < 0.55:
                    router.deposit(rng.choice(mine))  # a retried deposit must not duplicate
                    with ack_lock:
                        counts["retries"] += 1
                else:
                    now = time.time()
                    hits = router.query(" ".join(rng.choices(WORDS, k=5)), top_k=10, now=now,
                                        domain=rng.choice([None, "hdfs", "yarn"]))
                    with ack_lock:
                        counts["queries"] += 1
                        counts["bad_hits"] += check_hits(hits, now)
            except Exception as exc:  # recorded, and the test fails on it
                with ack_lock:
                    counts["errors"] += 1
                    errors.append(f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    workers = [threading.Thread(target=agent, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - started
    stored = router.get(list(acked))
    lost = [pid for pid in acked if pid not in stored]
    changed = [pid for pid, p in stored.items() if p != acked[pid]]
    return {"transport": router.store.name, "threads": threads, "operations": threads * ops_per_thread,
            **counts, "acknowledged": len(acked), "lost": len(lost), "changed": len(changed),
            "extra": router.stats()["packets"] - len(acked), "seconds": round(seconds, 2), "error_samples": errors[:3]}


# --- a writer killed mid-stream -------------------------------------------------------------

def write_stream(store: str, writer: str, count: int) -> None:
    """Child process: deposit packets one by one, printing each acknowledged index."""
    router = make_router(store, embedder="hash")
    for index in range(count):
        router.deposit(make_packet(writer, index))
        print(index, flush=True)  # the ack: printed only after deposit() returned
    router.close()


def check_stream(store: str, writer: str, indexes: list[int]) -> dict:
    """Open the store anew and check that every acknowledged packet is there, intact."""
    started = time.perf_counter()
    router = make_router(store, embedder="hash")
    opened = time.perf_counter() - started
    want = {make_packet(writer, i).packet_id: make_packet(writer, i) for i in indexes}
    got = router.get(list(want))
    result = {"acknowledged": len(want), "found": sum(got.get(pid) == p for pid, p in want.items()),
              "stored": router.stats()["packets"], "open_seconds": round(opened, 2)}
    router.close()
    return result


def _run_module(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qis_lib.experiments.reliability", *args], text=True, **popen)


def kill_writer(store: str, kill_after: int, writer: str = "crash", limit: int = 100_000,
                timeout: float = 120.0) -> dict:
    """Start a writer process, SIGKILL it after `kill_after` acks, check the store from a new process."""
    child = _run_module("write", "--store", store, "--writer", writer, "--count", str(limit),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    acked: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        for line in child.stdout:
            acked.append(int(line))
            if len(acked) >= kill_after or time.monotonic() > deadline:
                break
        child.send_signal(signal.SIGKILL)
        # Acks already printed before the kill count too: read what is left in the pipe.
        acked.extend(int(line) for line in child.stdout.read().split())
    finally:
        child.kill()
        child.wait()
    if len(acked) < kill_after and child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"writer on {store} died on its own: {child.stderr.read()[-1000:]}")
    checker = _run_module("check", "--store", store, "--writer", writer, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = checker.communicate(json.dumps(acked), timeout=timeout)
    if checker.returncode != 0:
        raise RuntimeError(f"reopening {store} after the kill failed: {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    return {"killed_after_acks": len(acked), **result,
            "lost": result["acknowledged"] - result["found"]}


def _chroma_server_store(folder: str, stack: contextlib.ExitStack) -> str:
    server = stack.enter_context(ChromaServer(path=os.path.join(folder, "server")))
    return f"chroma://{server.host}:{server.port}"


# kind -> store url in a fresh folder (a server, if any, lives as long as `stack`)
CRASH_STORES = {
    "chroma-path": lambda d, stack: f"chroma://{d}/chroma",
    "chroma-server": _chroma_server_store,  # the client process is killed, the server lives on
    "qdrant-path": lambda d, stack: f"qdrant://{d}/qdrant",
    "qdrant-edge": lambda d, stack: f"qdrant-edge://{d}/edge",
}


def crash_runs(kinds=tuple(CRASH_STORES), kills: int = 3, seed: int = 0, max_acks: int = 400) -> pd.DataFrame:
    """For each store, `kills` runs, each killing the writer at a random moment of one growing store."""
    rng = random.Random(seed)
    rows = []
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix=f"qis-crash-{kind}-") as tmp, contextlib.ExitStack() as stack:
            store = CRASH_STORES[kind](tmp, stack)
            for run in range(kills):
                # Each run writes new packets into the same store, so later runs reopen a store
                # that has already survived kills.
                row = kill_writer(store, rng.randint(20, max_acks), writer=f"crash-{run}")
                rows.append({"kind": kind, "run": run, **row})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    w = sub.add_parser("write", help="(child) deposit packets and print each acknowledged index")
    c = sub.add_parser("check", help="(child) read acknowledged indexes as JSON on stdin, check the store")
    for p in (w, c):
        p.add_argument("--store", required=True)
        p.add_argument("--writer", required=True)
    w.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", default=None, help="folder for the summary CSVs (default: print only)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--ops", type=int, default=200, help="operations per thread")
    parser.add_argument("--kills", type=int, default=5, help="kills per store")
    args = parser.parse_args(argv)
    if args.command == "write":
        write_stream(args.store, args.writer, args.count)
        return
    if args.command == "check":
        print(json.dumps(check_stream(args.store, args.writer, json.load(sys.stdin))))
        return
    load_rows = []
    with tempfile.TemporaryDirectory(prefix="qis-load-") as tmp:
        for spec in ("memory", "chroma", f"chroma://{tmp}/c", "qdrant", f"qdrant://{tmp}/q", f"qdrant-edge://{tmp}/e"):
            with make_router(spec, embedder="hash") as router:
                row = concurrent_load(router, threads=args.threads, ops_per_thread=args.ops)
                load_rows.append({"store": spec.replace(tmp, "TMP"), **row})
    load = pd.DataFrame(load_rows).drop(columns="error_samples")
    crashes = crash_runs(kills=args.kills)
    print(load.to_string(index=False), "\n")
    print(crashes.to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = "python -m qis_lib.experiments.reliability " + " ".join(argv if argv is not None else sys.argv[1:])
        for name, frame in (("concurrency", load), ("crashes", crashes)):
            frame.assign(command=command, cores=os.cpu_count()).to_csv(out / f"{name}.csv", index=False)


if __name__ == "__main__":
    main()
