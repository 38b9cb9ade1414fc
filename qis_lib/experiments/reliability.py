"""Reliability experiments: many agents at once, and a writer killed in the middle of a stream.

The standard: a deposit is *acknowledged* when `deposit()` returned; it is *lost* if a
later read, after recovery, does not see it. Every experiment keeps a ledger of
acknowledged ids and checks each one afterwards with `qis_lib.experiments.ledger.check_loss`
(the same check the failover experiment makes). A SIGKILL test covers a crash of the
process only, not a power loss.

The stores come from the registry: the concurrent load runs on every mode that can run
here, the crash runs and the kill cycles on those whose store is persistent (a reopen must
find the data). A store served over HTTP (the routing service) joins them by being a
registered mode: if its options come from a server in the ModeContext's pool that has
kill() and start(), the kill cycles kill that server too (plan "server").

    python -m qis_lib.experiments.reliability cycles --cycles 200 --out results/reliability/  # kill cycles
    python -m qis_lib.experiments.reliability processes --out results/reliability/          # history check
    python -m qis_lib.experiments.reliability table                                         # README table

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
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from ..core.packet import OutcomePacket
from ..core.router import OutcomeRouter, make_router
from ..stores import Mode, ModeContext, ServerPool, StoreSpec, all_modes
from .ledger import Ledger, LossReport, check_loss

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
    return {"transport": router.store.name, "threads": threads, "operations": threads * ops_per_thread,
            **counts, "acknowledged": report.acknowledged, "lost": report.lost, "changed": report.changed,
            "extra": report.extra, "seconds": round(seconds, 2), "error_samples": errors[:3]}


# --- a writer killed mid-stream -------------------------------------------------------------

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


# --- kill cycles: one store folder killed and reopened hundreds of times ------------------
#
# Each cycle is one child process (`cycle`): it opens the store (recovery), checks every
# deposit acknowledged in earlier cycles (present once, unchanged, no phantom, count equal
# to a full scroll), then deposits, retries, builds the index (`after_bulk_load`: qdrant-edge's
# `optimize()`) and closes, printing a marker before and after each step. The parent kills it
# at a moment drawn from KILL_PLANS, or kills the server a server mode uses. A mode whose
# server sits in the ModeContext's pool and has kill()/start() (chroma-server; the HTTP
# routing service once it is a registered mode) gets its server killed too.

KILL_PLANS = {
    "open": "during the open (recovery): a random moment after the child starts opening",
    "acks": "after a random number (1 to max_acks) of acknowledged deposits",
    "time": "a random time (0 to 1 s) into the writes",
    "optimize": "during an index build: a random moment inside the n-th after_bulk_load()",
    "close": "during close (flush): a random moment after close() starts",
    "server": "the server killed (SIGKILL) after a random number of acks, then restarted",
}


def _print(line: str) -> None:
    print(line, flush=True)


def cycle_child(store: str, options: dict, ledger_path: str, writer: str, plan: dict, emit=_print) -> None:
    """Child of a kill cycle: open, check the ledger's acknowledged packets, then write (see above).

    `ledger_path`: JSON {"acked": [[writer, index], ...], "in_flight": [[writer, index], ...]}.
    `plan`: count (deposits before close, None for no close), optimize_every (0: never),
    retry_every (0: never), check_only.
    """
    with open(ledger_path, encoding="utf-8") as f:
        ledger = json.load(f)
    preload_client(store)  # so that a kill "during the open" lands in the store's recovery, not in imports
    emit("open")
    started = time.perf_counter()
    router = make_router(store, embedder="hash", **options)
    opened = time.perf_counter() - started
    emit("opened")
    acked = [make_packet(w, i) for w, i in ledger["acked"]]
    in_flight = [make_packet(w, i) for w, i in ledger["in_flight"]]
    sent = {p.packet_id: p for p in acked + in_flight}
    started = time.perf_counter()
    report = check_loss(store, [p.packet_id for p in acked], sent, (), [p.packet_id for p in in_flight],
                        router.store.get, router.store.count, stored_ids=router.store.scroll_ids)
    emit("check " + json.dumps({**report.row(), "open_seconds": round(opened, 3),
                                "check_seconds": round(time.perf_counter() - started, 3)}))
    if plan.get("check_only"):
        router.close()
        return
    count = plan.get("count") or 1_000_000
    for index in range(count):
        packet = make_packet(writer, index)
        router.deposit(packet)
        emit(f"ack {index}")
        if plan.get("retry_every") and index % plan["retry_every"] == 0:
            router.deposit(make_packet(writer, index // 2))  # a retried deposit: must not duplicate
        if plan.get("optimize_every") and (index + 1) % plan["optimize_every"] == 0:
            emit("optimize")
            router.store.after_bulk_load()
            emit("optimized")
    emit("close")
    router.close()
    emit("closed")


def preload_client(store: str) -> None:
    """Import the store's client now (a child's open then times recovery, not imports).

    jsonschema builds an IRI grammar (package rfc3987_syntax) when imported, which chromadb
    does: about 2.5 s of a child's start on a quiet machine and 9 s on a loaded one, in every
    one of hundreds of children. No store validates IRIs, so the children skip it.
    """
    import importlib

    from ..stores.registry import store_spec

    sys.modules.setdefault("rfc3987_syntax", None)  # jsonschema then leaves out its "iri" format check
    for module in store_spec(store).requires:
        importlib.import_module(module)


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


def _drain(child) -> list[str]:
    """The lines a child's queue still holds (up to its end)."""
    rest = []
    while True:
        line = child.next_line(0)
        if line is None or line is False:
            return rest
        rest.append(line)


class _Child:
    """A child process whose stdout lines arrive in a queue (so the parent can wait with a timeout)."""

    def __init__(self, args: list[str], stderr_path: Path):
        import queue

        self._stderr = open(stderr_path, "w+", encoding="utf-8")
        self.process = _run_module(*args, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.endswith("\n"):  # a line cut short by the kill was never a complete ack
                self.lines.put(line[:-1])
        self.lines.put(None)  # EOF

    def next_line(self, timeout: float) -> str | None | bool:
        """The next line; None at EOF; False if nothing came within `timeout` seconds."""
        import queue

        try:
            return self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def finish(self) -> tuple[list[str], str]:
        """Wait for the process and return the lines not read yet and its stderr's tail."""
        self.process.wait()
        self._reader.join(10)
        rest = _drain(self)
        self._stderr.seek(0)
        tail = self._stderr.read()[-1500:]
        self._stderr.close()
        return rest, tail


def _forked_cycle(conn, store: str, options: dict, ledger_path: str, writer: str, plan: dict) -> None:
    """A kill-cycle child forked from the fork server: its lines go through `conn`."""
    import traceback

    try:
        cycle_child(store, options, ledger_path, writer, plan, emit=conn.send)
    except BaseException:
        conn.send("error " + traceback.format_exc()[-1500:])
        raise SystemExit(1)


class _ForkedChild:
    """A kill-cycle child forked from a fork server that has the store's client imported already.

    Hundreds of children each importing chromadb (seconds each, far more on a loaded machine)
    would make the import the experiment; forked from a preloaded server, a child starts at
    once and its time goes to opening, checking and writing. Same interface as `_Child`.
    """

    _context = None

    @classmethod
    def context(cls):
        """The fork server's context, preloading this module and every runnable store's client."""
        import multiprocessing

        if cls._context is None:
            clients = dict.fromkeys(m for spec, _ in runnable_modes().values() for m in spec.requires)
            cls._context = multiprocessing.get_context("forkserver")
            cls._context.set_forkserver_preload([__name__, *clients])
        return cls._context

    def __init__(self, store: str, options: dict, ledger_path: str, writer: str, plan: dict):
        ctx = self.context()
        self._conn, send = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_forked_cycle, args=(send, store, options, ledger_path, writer, plan),
                                   daemon=True)
        self.process.start()
        send.close()
        self._error = ""

    def next_line(self, timeout: float) -> str | None | bool:
        try:
            if not self._conn.poll(max(0.0, timeout)):
                return False
            line = self._conn.recv()
        except (EOFError, OSError):  # the child is gone (a message cut short by the kill too)
            return None
        if line.startswith("error "):
            self._error = line[6:]
            return self.next_line(timeout)
        return line

    def kill(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def finish(self) -> tuple[list[str], str]:
        self.process.join()
        rest = _drain(self)
        self._conn.close()
        return rest, self._error


def _killable_server(ctx: ModeContext):
    """The server of ctx's pool a kill cycle may kill (it has kill() and start()), or None."""
    servers = list(ctx.pool.servers.values()) if ctx.pool is not None else []
    return next((s for s in servers if callable(getattr(s, "kill", None)) and callable(getattr(s, "start", None))),
                None)


class KillCycles:
    """The state of one kill-cycle campaign on one store folder: what was acknowledged, what was in flight."""

    def __init__(self, kind: str, ctx: ModeContext, folder: Path, seed: int = 0, max_acks: int = 60,
                 timeout: float = 180.0):
        self.kind = kind
        self.store, self.options = mode_options(kind, ctx)
        self.server = _killable_server(ctx)
        self.folder = folder
        self.rng = random.Random(f"{kind}/{seed}")
        self.max_acks = max_acks
        self.timeout = timeout
        self.acked: list[tuple[str, int]] = []
        self.in_flight: list[tuple[str, int]] = []
        self.estimates = {"open": 0.5, "optimize": 0.05, "close": 0.05}  # seconds, updated from what is seen

    def plans(self) -> list[str]:
        return [p for p in KILL_PLANS if p != "server" or self.server is not None]

    def _spawn(self, writer: str, plan: dict) -> _Child:
        ledger = self.folder / "ledger.json"
        ledger.write_text(json.dumps({"acked": self.acked, "in_flight": self.in_flight}))
        return _ForkedChild(self.store, self.options, str(ledger), writer, plan)

    def check(self) -> dict:
        """A child that opens the store and checks it, nothing else (the campaign's last word)."""
        child = self._spawn("final", {"check_only": True})
        check, line = None, ""
        deadline = time.monotonic() + self.timeout
        while line is not None and time.monotonic() < deadline:
            line = child.next_line(deadline - time.monotonic())
            if isinstance(line, str) and line.startswith("check "):
                check = json.loads(line[6:])
        child.kill()
        _, err = child.finish()
        if check is None:
            raise RuntimeError(f"reopening {self.kind} for the final check failed: {err}")
        return check

    def cycle(self, number: int) -> dict:
        """Run one cycle: start the child, kill it (or the server) as the drawn plan says; return its row."""
        rng = self.rng
        kind = rng.choice(self.plans())
        writer = f"k{number}"
        plan = {"count": rng.randint(1, self.max_acks) if kind == "close" else None,
                "optimize_every": rng.randint(2, 12) if kind == "optimize" else rng.choice([0, 0, 10, 25]),
                "retry_every": rng.choice([0, 3, 7])}
        target_acks = rng.randint(1, self.max_acks)
        nth_optimize = rng.randint(1, 3)
        fraction = rng.random()
        child = self._spawn(writer, plan)
        try:
            started = time.monotonic()
            deadline = started + self.timeout
            kill_at = None
            phase, marks, acks, optimizes, check, victim = "start", {}, [], 0, None, None

            def kill(what: str) -> None:
                nonlocal victim
                if victim is None:
                    victim = what
                    if what == "server":
                        self.server.kill()
                    else:
                        child.kill()

            while True:
                now = time.monotonic()
                if now > deadline:
                    child.kill()
                    _, err = child.finish()
                    raise RuntimeError(f"{self.kind} cycle {number} did not end within {self.timeout}s: {err}")
                if kill_at is not None and now >= kill_at:
                    kill("writer")
                    kill_at = None
                wait = (kill_at if kill_at is not None else deadline) - now
                line = child.next_line(min(wait, 1.0) if victim != "server" else 5.0)
                if line is False:
                    if victim == "server":  # the client may block on the dead server: end it
                        child.kill()
                    continue
                if line is None:
                    break
                word, _, rest = line.partition(" ")
                now = time.monotonic()
                if word in ("opened", "optimized", "closed"):
                    began = {"opened": "open", "optimized": "optimize", "closed": "close"}[word]
                    seconds = now - marks[began]
                    self.estimates[began] = 0.7 * self.estimates[began] + 0.3 * seconds
                marks[word] = now
                if victim is None:
                    phase = word
                if word == "open" and kind == "open":
                    kill_at = now + fraction * self.estimates["open"] * 1.2
                elif word == "check":
                    check = json.loads(rest)
                    if kind == "time":
                        kill_at = now + fraction * 1.0
                elif word == "ack":
                    acks.append(int(rest))
                    if kind == "acks" and len(acks) >= target_acks:
                        kill("writer")
                    elif kind == "server" and len(acks) >= target_acks:
                        kill("server")
                elif word == "optimize":
                    optimizes += 1
                    if kind == "optimize" and optimizes == nth_optimize:
                        kill_at = now + fraction * self.estimates["optimize"]
                elif word == "close" and kind == "close":
                    kill_at = now + fraction * self.estimates["close"]
        except BaseException:
            child.kill()  # never leave a child behind
            raise
        child.kill()
        _, err = child.finish()
        code = child.returncode
        if victim is None and code != 0:
            raise RuntimeError(f"{self.kind} cycle {number}: the child failed with exit code {code} "
                               f"in phase {phase!r}: {err}")
        if victim == "server":
            self.server.start()  # same folder, same port
        # What this cycle acknowledged, and the deposit that may have been in flight.
        self.acked.extend((writer, i) for i in acks)
        if phase not in ("start", "open", "opened", "closed"):  # after "check" a deposit may be under way
            self.in_flight.append((writer, max(acks, default=-1) + 1))
        row = {"kind": self.kind, "cycle": number, "plan": kind, "killed": victim or "exited",
               "phase_at_kill": phase if victim else "exited", "acks": len(acks),
               "acknowledged_total": len(self.acked), "seconds": round(time.monotonic() - started, 2)}
        if check is not None:
            row.update({f"check_{k}": v for k, v in check.items() if k not in ("verifier", "lost_ids")})
            row["check_lost_ids"] = ",".join(check.get("lost_ids", []))
        return row


CYCLE_COLUMNS = ["kind", "cycle", "plan", "killed", "phase_at_kill", "acks", "acknowledged_total", "seconds",
                 *(f"check_{k}" for k in ("acknowledged", "found", "lost", "corrupted", "duplicated", "failed",
                                          "failed_but_stored", "indeterminate", "indeterminate_stored", "store_count",
                                          "phantoms", "scrolled", "open_seconds", "check_seconds", "lost_ids"))]


def kill_cycles(kind: str, cycles: int = 200, seed: int = 0, max_acks: int = 60, csv_path: Path | None = None,
                progress: bool = False, minutes: float | None = None) -> pd.DataFrame:
    """`cycles` kill cycles on one folder of mode `kind`, then a final check; one row per cycle.

    Each row's check_* columns are the check made when that cycle's child reopened the
    store, i.e. the verdict on the previous kill; the last row (plan "final") checks the
    last kill. With `csv_path`, rows are appended to that CSV as they come. With `minutes`,
    no cycle starts after that long: the final check comes early.
    """
    stop_at = time.monotonic() + minutes * 60 if minutes is not None else float("inf")
    with tempfile.TemporaryDirectory(prefix=f"qis-cycles-{kind}-") as tmp, contextlib.ExitStack() as stack:
        ctx = ModeContext(Path(tmp) / "store", stack)
        store, options = mode_options(kind, ctx)
        with make_router(store, embedder="hash", **options) as router:
            if not router.store.capabilities.persistent:
                raise VolatileStoreError(f"mode {kind!r}: the store is not persistent, a reopen has nothing to find")
        campaign = KillCycles(kind, ctx, Path(tmp), seed=seed, max_acks=max_acks)
        rows = []
        for number in range(cycles + 1):
            if number < cycles and time.monotonic() > stop_at:
                cycles = number  # out of time: the final check now
            if number < cycles:
                row = campaign.cycle(number)
            else:
                check = campaign.check()
                row = {"kind": kind, "cycle": number, "plan": "final", "killed": "none", "phase_at_kill": "",
                       "acks": 0, "acknowledged_total": len(campaign.acked), "seconds": 0.0,
                       **{f"check_{k}": v for k, v in check.items() if k not in ("verifier", "lost_ids")},
                       "check_lost_ids": ",".join(check.get("lost_ids", []))}
            rows.append(row)
            if csv_path is not None:  # every row has every column (a cycle killed while opening checked nothing)
                pd.DataFrame([row], columns=CYCLE_COLUMNS).to_csv(csv_path, mode="a", header=not csv_path.exists(),
                                                                  index=False)
            if progress:
                print(kind, number, row["plan"], row["phase_at_kill"], "acked", row["acknowledged_total"],
                      "lost", row.get("check_lost"), "phantoms", row.get("check_phantoms"), flush=True)
            if number >= cycles:
                break
    return pd.DataFrame(rows)


def cycles_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per store: kills, acknowledged, and the worst any reopen saw (lost, changed, duplicated, phantoms)."""
    rows = []
    for kind, every in frame.groupby("kind", sort=False):
        part = every.dropna(subset=["check_lost"])  # a child killed while opening checked nothing
        kills = every[every["killed"].isin(["writer", "server"])]
        scroll_ok = (part["check_scrolled"] == part["check_store_count"]).all()
        rows.append({"kind": kind, "cycles": int((every["plan"] != "final").sum()), "kills": len(kills),
                     "server_kills": int((kills["killed"] == "server").sum()),
                     "kills_by_phase": "; ".join(f"{k} {v}" for k, v in kills["phase_at_kill"].value_counts().items()),
                     "acknowledged": int(part["acknowledged_total"].max()),
                     "lost": int(part["check_lost"].max()), "changed": int(part["check_corrupted"].max()),
                     "duplicated": int(part["check_duplicated"].max()), "phantoms": int(part["check_phantoms"].max()),
                     "count_equals_scroll": bool(scroll_ok), "reopens_checked": len(part),
                     "seconds": round(float(every["seconds"].sum()), 1)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    """The experiments (with --out, their CSV summaries), or a child's part of a crash run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    w = sub.add_parser("write", help="(child) deposit packets and print each acknowledged index")
    c = sub.add_parser("check", help="(child) read acknowledged indexes as JSON on stdin, check the store")
    for p in (w, c):
        p.add_argument("--store", required=True, help="a store name or url, as make_router takes it")
        p.add_argument("--options", type=json.loads, default={}, help="the store's options, as JSON")
        p.add_argument("--writer", required=True)
    w.add_argument("--count", type=int, required=True)
    cy = sub.add_parser("cycle", help="(child) open, check the ledger's acks, then write as --plan says")
    cy.add_argument("--store", required=True)
    cy.add_argument("--options", type=json.loads, default={})
    cy.add_argument("--writer", required=True)
    cy.add_argument("--ledger", required=True)
    cy.add_argument("--plan", type=json.loads, required=True)
    ag = sub.add_parser("agents", help="(child) threads of agents through one store client, with a history")
    ag.add_argument("--store", required=True)
    ag.add_argument("--options", type=json.loads, default={})
    ag.add_argument("--process", required=True)
    ag.add_argument("--threads", type=int, default=8)
    ag.add_argument("--ops", type=int, default=200)
    ag.add_argument("--history", required=True)
    pr = sub.add_parser("processes", help="processes x threads through a chroma server killed once; history check")
    pr.add_argument("--processes", type=int, default=4)
    pr.add_argument("--threads", type=int, default=8)
    pr.add_argument("--ops", type=int, default=200, help="operations per thread")
    pr.add_argument("--out", default=None)
    tb = sub.add_parser("table", help="the README's reliability table from the committed results, as markdown")
    tb.add_argument("--results", default="results/reliability")
    cs = sub.add_parser("cycles", help="kill cycles: one store folder killed and reopened again and again")
    cs.add_argument("--kinds", nargs="*", default=None, help="mode names (default: every persistent mode here)")
    cs.add_argument("--cycles", type=int, default=200)
    cs.add_argument("--seed", type=int, default=0)
    cs.add_argument("--max-acks", type=int, default=60)
    cs.add_argument("--minutes", type=float, default=None, help="start no cycle after this long (then the final check)")
    cs.add_argument("--out", default=None, help="folder for cycles-KIND.csv and its summary")
    parser.add_argument("--out", default=None, help="folder for the summary CSVs (default: print only)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--ops", type=int, default=200, help="operations per thread")
    parser.add_argument("--kills", type=int, default=5, help="kills per store")
    args = parser.parse_args(argv)
    if args.command == "write":
        write_stream(args.store, args.writer, args.count, args.options)
        return
    if args.command == "cycle":
        cycle_child(args.store, args.options, args.ledger, args.writer, args.plan)
        return
    if args.command == "table":
        table = results_table(args.results).astype(str)
        print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
        for row in table.itertuples(index=False):
            print("| " + " | ".join(row) + " |")
        return
    if args.command == "agents":
        agents_child(args.store, args.options, args.process, args.threads, args.ops, args.history)
        return
    if args.command == "processes":
        started = time.time()
        row = processes_run(args.processes, args.threads, args.ops)
        print(json.dumps(row))
        if args.out:
            save_results(pd.DataFrame([row]), args.out, "processes.csv", "qis_lib.experiments.reliability", argv,
                         started)
        return
    if args.command == "cycles":
        run_cycles_cli(args, argv)
        return
    if args.command == "check":
        print(json.dumps(check_stream(args.store, args.writer, json.load(sys.stdin), args.options)))
        return
    load = load_runs(threads=args.threads, ops=args.ops)
    crashes = crash_runs(kills=args.kills)
    print(load.to_string(index=False), "\n")
    print(crashes.to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = "python -m qis_lib.experiments.reliability " + " ".join(argv if argv is not None else sys.argv[1:])
        for name, frame in (("concurrency", load), ("crashes", crashes)):
            frame.assign(command=command, cores=os.cpu_count()).to_csv(out / f"{name}.csv", index=False)


# --- many processes through one server, with the server killed: a history check -------------

def outcome_of(exc: BaseException) -> str:
    """A failed deposit's history type: "fail" only when the request surely never reached the
    server (connection refused, or refused by our own validation); anything else may have been
    applied, so "info" (indeterminate)."""
    import httpx

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (httpx.ConnectError, ConnectionRefusedError, ValueError, TypeError)):
            return "fail"
        exc = exc.__cause__ or exc.__context__
    return "info"


def agents_child(store: str, options: dict, process: str, threads: int, ops: int, history_path: str) -> None:
    """Child: `threads` agents deposit, retry and query through one store client; every deposit's
    outcome goes to this process's history; prints `done` and its counts as JSON."""
    from .ledger import History

    history = History(history_path, process)
    router = make_router(store, embedder="hash", **options)
    counts = {"deposits": 0, "retries": 0, "queries": 0, "query_errors": 0}
    lock = threading.Lock()
    started = time.perf_counter()

    def agent(number: int) -> None:
        rng = random.Random(f"{process}/{number}")
        mine: list[OutcomePacket] = []
        for i in range(ops):
            roll = rng.random()
            if roll < 0.6 or not mine:
                packet, kind = make_packet(f"{process}-{number}", i), "deposits"
            elif roll < 0.7:
                packet, kind = rng.choice(mine), "retries"
            else:
                try:
                    router.query(" ".join(rng.choices(WORDS, k=5)), top_k=5, now=0.0)
                except Exception:
                    with lock:
                        counts["query_errors"] += 1
                with lock:
                    counts["queries"] += 1
                continue
            try:
                router.deposit(packet)
            except Exception as exc:
                history.record(packet.packet_id, outcome_of(exc), time.perf_counter() - started)
                time.sleep(0.05)
            else:
                history.record(packet.packet_id, "ok", time.perf_counter() - started)
                mine.append(packet)
            with lock:
                counts[kind] += 1

    workers = [threading.Thread(target=agent, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    history.close()
    router.close()
    print("done", json.dumps(counts), flush=True)


def processes_run(processes: int = 4, threads: int = 8, ops: int = 200, kill_after_ops: int | None = 400,
                  down_seconds: float = 2.0, folder: Path | None = None) -> dict:
    """`processes` processes x `threads` agents through one `chroma run` server, the server
    SIGKILLed once `kill_after_ops` deposits are in the histories and restarted `down_seconds`
    later; then the histories are checked (`check_history`) through a new client."""
    from ..infra.servers import ChromaServer
    from .ledger import History, check_history

    with contextlib.ExitStack() as stack:
        tmp = Path(folder) if folder is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        server = stack.enter_context(ChromaServer(path=tmp / "server", start_timeout=120.0))
        options = {"url": server.url, "collection": "processes"}
        make_router("chroma", embedder="hash", **options).close()  # the collection exists before the agents start
        paths = [tmp / f"history-{p}.jsonl" for p in range(processes)]
        started = time.monotonic()
        children = [_run_module("agents", "--store", "chroma", "--options", json.dumps(options), "--process", f"p{p}",
                                "--threads", str(threads), "--ops", str(ops), "--history", str(path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    for p, path in enumerate(paths)]
        kills = 0
        if kill_after_ops is not None:
            while sum(len(History.read([p])) for p in paths if p.exists()) < kill_after_ops:
                if all(c.poll() is not None for c in children):
                    break
                time.sleep(0.2)
            server.kill()
            kills = 1
            time.sleep(down_seconds)
            server.start()
        outputs = [c.communicate() for c in children]
        seconds = time.monotonic() - started
        for child, (out, err) in zip(children, outputs):
            if child.returncode != 0:
                raise RuntimeError(f"an agent process failed: {err[-1500:]}")
        counts = [json.loads(out.split("done ", 1)[1]) for out, _ in outputs]
        ops_log = History.read(paths)
        tried = {op["id"] for op in ops_log}
        sent = {}
        for p in range(processes):
            for n in range(threads):
                sent.update((q.packet_id, q) for q in (make_packet(f"p{p}-{n}", i) for i in range(ops))
                            if q.packet_id in tried)
        with make_router("chroma", embedder="hash", **options) as router:
            report = check_history("chroma-server", ops_log, sent, router.store.get, router.store.count,
                                   stored_ids=router.store.scroll_ids)
    return {"processes": processes, "threads_per_process": threads, "operations": processes * threads * ops,
            "deposit_ops": len(ops_log), "server_kills": kills,
            "queries": sum(c["queries"] for c in counts), "query_errors": sum(c["query_errors"] for c in counts),
            "acknowledged": report.acknowledged, "lost": report.lost, "changed": report.corrupted,
            "duplicated": report.duplicated, "phantoms": report.phantoms,
            "failed": report.failed, "failed_but_stored": report.failed_but_stored,
            "indeterminate": report.indeterminate, "indeterminate_stored": report.indeterminate_stored,
            "count": report.store_count, "scrolled": report.scrolled, "seconds": round(seconds, 1)}


# --- the README's table, from the committed results ----------------------------------------

def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def results_table(folder: str | os.PathLike) -> pd.DataFrame:
    """One row per experiment whose CSVs are in `folder` (results/reliability/): experiment,
    stores, operations or kills, acknowledged, lost, phantoms, time (wall clock of the run)."""
    folder = Path(folder)
    rows = []
    cycles = sorted(folder.glob("cycles-*.csv"))
    cycles = [c for c in cycles if not c.name.startswith("cycles-summary")]
    if cycles:
        summary = cycles_summary(pd.concat([pd.read_csv(c) for c in cycles]))
        for r in summary.itertuples():
            rows.append({"experiment": f"kill cycles, one folder reopened after each kill ({r.kills_by_phase})",
                         "stores": r.kind, "operations or kills": f"{r.kills} kills ({r.server_kills} of the server)",
                         "acknowledged": r.acknowledged, "lost": r.lost, "phantoms": r.phantoms,
                         "time": _minutes(r.seconds)})
    if (folder / "concurrency.csv").exists():
        c = pd.read_csv(folder / "concurrency.csv")
        rows.append({"experiment": f"{c['threads'].iloc[0]} threads in one process: deposits, retried deposits, "
                                   f"filtered queries, packets expiring", "stores": ", ".join(c["store"]),
                     "operations or kills": f"{c['operations'].iloc[0]:,} ops each",
                     "acknowledged": " / ".join(f"{a:,}" for a in c["acknowledged"]), "lost": int(c["lost"].max()),
                     "phantoms": "", "time": _minutes(float(c["seconds"].sum()))})
    if (folder / "crashes.csv").exists():
        c = pd.read_csv(folder / "crashes.csv")
        per = c.groupby("kind", sort=False)
        rows.append({"experiment": "a writer SIGKILLed mid-stream, checked from a new process",
                     "stores": ", ".join(per.groups), "operations or kills": f"{per.size().iloc[0]} kills each",
                     "acknowledged": " / ".join(f"{a:,}" for a in per["acknowledged"].sum()),
                     "lost": int(c["lost"].max()), "phantoms": "", "time": ""})
    if (folder / "processes.csv").exists():
        r = pd.read_csv(folder / "processes.csv").iloc[0]
        rows.append({"experiment": f"{r.processes} processes x {r.threads_per_process} threads through `chroma run`, "
                                   f"server SIGKILLed once; history check ({r.failed} failed, {r.indeterminate} "
                                   f"indeterminate, {r.indeterminate_stored} of them stored)",
                     "stores": "chroma server", "operations or kills": f"{r.operations} ops, {r.server_kills} kill",
                     "acknowledged": r.acknowledged, "lost": r.lost, "phantoms": r.phantoms,
                     "time": _minutes(r.seconds)})
    damage = sorted(folder.glob("damage*.csv"), key=lambda p: (p.name != "damage.csv", p.name))  # then re-runs
    if damage:
        frames = [pd.read_csv(path) for path in damage]
        d = pd.concat([f[~f["mode"].isin(set().union(*(set(g["mode"]) for g in frames[i + 1:])))]
                       for i, f in enumerate(frames)])
        cases = d[d["damage"].notna() & ~d["verdict"].isin(["absent", "empty-file"])]
        for mode, part in cases.groupby("mode", sort=False):
            verdicts = ", ".join(f"{v} {n}" for v, n in part["verdict"].value_counts().items())
            rows.append({"experiment": f"damaged folder: truncate / zero / garble / delete each file ({verdicts})",
                         "stores": mode, "operations or kills": f"{len(part)} damaged copies",
                         "acknowledged": "", "lost": int(part["verdict"].isin(["partial", "empty"]).sum()),
                         "phantoms": "", "time": _minutes(float(part["seconds"].sum()))})
    if (folder / "fulldisk.csv").exists():
        for r in pd.read_csv(folder / "fulldisk.csv").itertuples():
            rows.append({"experiment": f"full disk ({r.method}): writer {r.writer}, then space back: "
                                       f"new deposits {getattr(r, 'new_deposits_found', '')}",
                         "stores": r.mode, "operations or kills": "deposits until refused",
                         "acknowledged": r.acknowledged, "lost": r.lost, "phantoms": r.phantoms,
                         "time": _minutes(float(r.seconds)) if pd.notna(r.seconds) else ""})
    if (folder / "hung.csv").exists():
        h = pd.read_csv(folder / "hung.csv")
        for target, part in h.groupby("target", sort=False):
            ok = int((part["within_limit"] & part["names_address"]).sum())
            rows.append({"experiment": f"hung or slow server: calls failing within timeout + 1 s a node tried, naming the address "
                                       f"({ok} of {len(part)}; slowest {part['seconds'].max():.1f} s)",
                         "stores": target, "operations or kills": f"{len(part)} calls", "acknowledged": "",
                         "lost": "", "phantoms": "", "time": _minutes(float(part["seconds"].sum()))})
    return pd.DataFrame(rows)


def persistent_modes() -> list[str]:
    """The modes here whose store keeps its data once closed (a kill cycle has something to find)."""
    names = []
    for name in runnable_modes():
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            store, options = mode_options(name, ModeContext(Path(tmp), stack))
            with make_router(store, embedder="hash", **options) as router:
                if router.store.capabilities.persistent:
                    names.append(name)
    return names


def run_cycles_cli(args, argv) -> None:
    # A campaign stopped with SIGTERM unwinds: its child is killed, its server stopped, its folder removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    kinds = args.kinds or persistent_modes()
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    frames = []
    for kind in kinds:
        csv_path = out / f"cycles-{kind}.csv" if out is not None else None
        if csv_path is not None and csv_path.exists():
            csv_path.unlink()
        frames.append(kill_cycles(kind, cycles=args.cycles, seed=args.seed, max_acks=args.max_acks,
                                  csv_path=csv_path, progress=True, minutes=args.minutes))
    summary = cycles_summary(pd.concat(frames))
    print(summary.to_string(index=False))
    if out is not None:
        save_results(summary, out, f"cycles-summary-{'-'.join(kinds)}.csv", "qis_lib.experiments.reliability", argv,
                     started)


if __name__ == "__main__":
    main()
