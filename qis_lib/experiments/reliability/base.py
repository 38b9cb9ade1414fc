"""Reliability experiments: the shared parts (modes that can run here, packets, the concurrent
load, a writer killed mid-stream and its check, saving results)."""
from __future__ import annotations

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
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from ...bench.modes import ModeContext, ServerPool
from ...core.packet import OutcomePacket
from ...core.router import OutcomeRouter, make_router
from ...stores import Mode, StoreSpec, all_modes
from ..ledger import Ledger, LossReport, check_loss


WORDS = ("namenode datanode heap block report timeout lease replication disk full quota yarn container "
         "killed memory shuffle fetch failure kerberos token expired checksum corrupt rpc queue slow").split()


class VolatileStoreError(ValueError):
    """A crash run was asked of a store that keeps nothing once its process is gone."""


def runnable_modes() -> dict[str, tuple[StoreSpec, Mode]]:
    """Every registered store mode that can run here (its `needs()` names nothing missing)."""
    return {name: (spec, mode) for name, (spec, mode) in all_modes().items() if mode.needs() is None}


def mode_options(name: str, ctx: ModeContext) -> tuple[str, dict[str, Any]]:
    """(store name, options) opening a fresh store of mode `name` in ctx's folder; options are JSON-able."""
    modes = all_modes()
    if name not in modes:
        raise ValueError(f"unknown store mode {name!r}; choose one of {sorted(modes)}")
    spec, mode = modes[name]
    reason = mode.needs()
    if reason is not None:
        raise RuntimeError(f"mode {name!r} cannot run here: {reason}")
    return spec.name, mode.options(ctx)


@contextlib.contextmanager
def mode_router(name: str, ctx: ModeContext, embedder: str = "hash") -> Iterator[OutcomeRouter]:
    """A router over a fresh store of mode `name`; the mode's cleanup runs before the store closes."""
    store, options = mode_options(name, ctx)
    router = make_router(store, embedder=embedder, **options)
    cleanup = all_modes()[name][1].cleanup
    try:
        yield router
    finally:
        try:
            if cleanup is not None:
                cleanup(router.store)
        finally:
            router.close()


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
    a query that returns one after its expiry counts as bad. The result has the
    operation counts and the loss check's acknowledged, lost, changed (corrupted) and
    extra (stored beyond the ids written: a retry stored twice).
    """
    ledger = Ledger()
    sent: dict[str, OutcomePacket] = {}
    failed: set[str] = set()
    lock = threading.Lock()
    counts = {"deposits": 0, "retries": 0, "queries": 0, "bad_hits": 0, "errors": 0}
    errors: list[str] = []
    start_gate = threading.Barrier(threads)
    started = time.perf_counter()

    def agent(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        mine: list[OutcomePacket] = []
        start_gate.wait()
        for i in range(ops_per_thread):
            packet = None
            try:
                roll = rng.random()
                if roll < 0.45 or not mine:
                    packet = make_packet(f"agent-{number}", i, ttl=0.2 if rng.random() < 0.2 else 3600.0,
                                         now=time.time())
                    with lock:
                        sent[packet.packet_id] = packet
                    router.deposit(packet)
                    ledger.append(packet.packet_id, time.perf_counter() - started)
                    mine.append(packet)
                    with lock:
                        counts["deposits"] += 1
                elif roll < 0.55:
                    router.deposit(rng.choice(mine))  # a retried deposit must not duplicate
                    with lock:
                        counts["retries"] += 1
                else:
                    now = time.time()
                    hits = router.query(" ".join(rng.choices(WORDS, k=5)), top_k=10, now=now,
                                        domain=rng.choice([None, "hdfs", "yarn"]))
                    with lock:
                        counts["queries"] += 1
                        counts["bad_hits"] += check_hits(hits, now)
            except Exception as exc:  # recorded, and the test fails on it
                with lock:
                    counts["errors"] += 1
                    errors.append(f"{type(exc).__name__}: {exc}")
                    if packet is not None:
                        failed.add(packet.packet_id)

    workers = [threading.Thread(target=agent, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - started
    report = check_loss(router.store.name, ledger.ids, sent, failed, (), router.store.get, router.store.count)
    return {"store": router.store.name, "threads": threads, "operations": threads * ops_per_thread,
            **counts, "acknowledged": report.acknowledged, "lost": report.lost, "changed": report.changed,
            "extra": report.extra, "seconds": round(seconds, 2), "error_samples": errors[:3]}


def write_stream(store: str, writer: str, count: int, options: dict | None = None) -> None:
    """Child process: deposit packets one by one, printing each acknowledged index."""
    router = make_router(store, embedder="hash", **(options or {}))
    for index in range(count):
        router.deposit(make_packet(writer, index))
        print(index, flush=True)  # the ack: printed only after deposit() returned
    router.close()


def check_stream(store: str, writer: str, indexes: list[int], options: dict | None = None) -> dict:
    """Open the store anew and check every acknowledged packet of `writer` (the LossReport, as a dict).

    The packet after the last acknowledged one was in flight at the kill: it counts as
    indeterminate (stored or not, both are right).
    """
    started = time.perf_counter()
    router = make_router(store, embedder="hash", **(options or {}))
    opened = time.perf_counter() - started
    in_flight = max(indexes, default=-1) + 1
    sent = {p.packet_id: p for p in (make_packet(writer, i) for i in [*indexes, in_flight])}
    try:
        report = check_loss(writer, [make_packet(writer, i).packet_id for i in indexes], sent, (),
                            [make_packet(writer, in_flight).packet_id], router.store.get, router.store.count)
    finally:
        router.close()
    return {**report.row(), "open_seconds": round(opened, 2)}


def _run_module(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qis_lib.experiments.reliability", *args], text=True, **popen)


def kill_writer(store: str, kill_after: int, writer: str = "crash", limit: int = 100_000,
                timeout: float = 120.0, options: dict | None = None) -> dict:
    """Start a writer process, SIGKILL it after `kill_after` acks, check the store from a new process.

    `store` and `options` are make_router's (a store name and its options, or a url).
    Returns killed_after_acks, the check's acknowledged, found, stored, lost and changed,
    and how long the reopen took.
    """
    store_args = ["--store", store, "--options", json.dumps(options or {})]
    child = _run_module("write", *store_args, "--writer", writer, "--count", str(limit),
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
    checker = _run_module("check", *store_args, "--writer", writer, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = checker.communicate(json.dumps(acked), timeout=timeout)
    if checker.returncode != 0:
        raise RuntimeError(f"reopening {store} after the kill failed: {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    opened = result.pop("open_seconds")
    report = LossReport(**result)
    return {"killed_after_acks": len(acked), "acknowledged": report.acknowledged, "found": report.found,
            "stored": report.store_count, "open_seconds": opened, "lost": report.lost, "changed": report.changed}


def crash_runs(kinds: Sequence[str] | None = None, kills: int = 3, seed: int = 0, max_acks: int = 400) -> pd.DataFrame:
    """For each store mode, `kills` runs, each killing the writer at a random moment of one growing store.

    `kinds`: mode names (default: every mode that runs here and whose store is
    persistent). A mode whose store is not persistent raises VolatileStoreError.
    """
    rng = random.Random(seed)
    rows = []
    for kind in (list(runnable_modes()) if kinds is None else list(kinds)):
        with tempfile.TemporaryDirectory(prefix=f"qis-crash-{kind}-") as tmp, contextlib.ExitStack() as stack:
            # A server the mode needs lives as long as `stack`: the client process is killed, not the server.
            ctx = ModeContext(Path(tmp), stack)
            store, options = mode_options(kind, ctx)
            with make_router(store, embedder="hash", **options) as router:
                persistent = router.store.capabilities.persistent
            if not persistent:
                if kinds is None:
                    continue
                raise VolatileStoreError(f"mode {kind!r}: the store is not persistent, a reopen has nothing to find")
            for run in range(kills):
                # Each run writes new packets into the same store, so later runs reopen a store
                # that has already survived kills.
                row = kill_writer(store, rng.randint(20, max_acks), writer=f"crash-{run}", options=options)
                rows.append({"kind": kind, "run": run, **row})
            cleanup = all_modes()[kind][1].cleanup
            if cleanup is not None:
                with make_router(store, embedder="hash", **options) as router:
                    cleanup(router.store)
    return pd.DataFrame(rows)


def load_runs(threads: int = 8, ops: int = 200) -> pd.DataFrame:
    """`concurrent_load` on a fresh store of every mode that runs here, one row per mode."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="qis-load-") as tmp, contextlib.ExitStack() as stack:
        pool = ServerPool(Path(tmp) / "servers", stack)
        for name in runnable_modes():
            with mode_router(name, ModeContext(Path(tmp) / name, stack, pool=pool)) as router:
                rows.append({"store": name, **concurrent_load(router, threads=threads, ops_per_thread=ops)})
    return pd.DataFrame(rows).drop(columns="error_samples")


def save_results(frame: pd.DataFrame, out: str | os.PathLike, name: str, module: str, argv: list[str] | None,
                 started: float) -> Path:
    """Write `frame` to out/name with the command that made it, the core count, the load average
    at the end and the run's wall-clock seconds (since `started`, a time.time())."""
    command = f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(command=command, cores=os.cpu_count(), load_at_end=round(os.getloadavg()[0], 2),
                 wall_seconds=round(time.time() - started, 1)).to_csv(path, index=False)
    return path
