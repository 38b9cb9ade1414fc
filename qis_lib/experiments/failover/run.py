"""Running a failover experiment: the load threads, the outages, the loss check; and the
Qdrant cluster cases."""
from __future__ import annotations

import math
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ...core.packet import OutcomePacket
from ...core.router import OutcomeRouter
from ...embedders import CachedEmbedder, Embedder
from ..ledger import Ledger, LossReport, check_loss
from .errors import classify, describe_error
from .load import OP_COLUMNS, LoadSpec, Schedule, seed_texts
from .report import PHASES, FailoverResult, with_phases
from .targets import FailoverTarget, QdrantClusterTarget

PRELOAD_BATCH = 200
EVENT_COLUMNS = ["t", "event", "outage"]


class StopTime:
    """When the load threads stop, in seconds since the load started; shared with them.

    It starts at `at` (infinite while outages are still to come) and only ever moves
    earlier: `stop_at` once the last outage has recovered, `stop_now` when something
    failed. Safe to read and set from any thread.
    """

    def __init__(self, at: float = math.inf):
        self._at = at
        self._lock = threading.Lock()

    @property
    def at(self) -> float:
        with self._lock:
            return self._at

    def stop_at(self, at: float) -> None:
        """Stop the load at `at` seconds, unless it is set to stop earlier already."""
        with self._lock:
            self._at = min(self._at, at)

    def stop_now(self) -> None:
        self.stop_at(0.0)

    def reached(self, due: float) -> bool:
        """True when an operation due at `due` should not start."""
        return due >= self.at


class FailoverRun:
    """One run in progress: the schedule, the clients, the ledger and what has been recorded.

    `preload`, then `run_load` (the load threads, with the outages driven meanwhile), then
    `verify` and `result`. `run_failover` does all of it.
    """

    def __init__(self, target: FailoverTarget, embedder: Embedder, spec: LoadSpec, ledger_path: str | os.PathLike):
        self.target = target
        self.spec = spec
        self.schedule = Schedule.draw(spec, seed_texts(), time.time())
        # The vectors are the real model's, computed before the clock starts: the run times the store.
        self.embedder = CachedEmbedder(embedder, self.schedule.texts())
        self.ledger_path = Path(ledger_path)
        self.ledger = Ledger(ledger_path)
        self.sent: dict[str, OutcomePacket] = {}
        self.failed_ids: set[str] = set()
        self.timeout_ids: set[str] = set()
        self.lock = threading.Lock()  # guards sent, failed_ids, timeout_ids
        self.routers = [OutcomeRouter(target.open_store(), self.embedder) for _ in range(spec.threads)]
        self.records: list[list[dict]] = [[] for _ in range(spec.threads)]  # one list per thread
        self.crashes: list[BaseException] = []
        self.events: list[dict] = []
        # With outages the end is set once the last one has recovered (recovery may run past duration).
        self.stop = StopTime(math.inf if spec.outages else spec.duration)
        self.t0 = math.nan

    def preload(self) -> None:
        """Deposit spec.preload packets in batches before the clock starts, each one ledgered."""
        packets = self.schedule.preload_packets()
        for start in range(0, len(packets), PRELOAD_BATCH):
            chunk = packets[start:start + PRELOAD_BATCH]
            for pid in self.routers[0].deposit_many(chunk):
                self.ledger.append(pid, -1.0)
            self.sent.update((p.packet_id, p) for p in chunk)

    def run_load(self) -> None:
        """Start the load threads, drive the outages, stop the load; closes the clients and the ledger."""
        self.t0 = time.monotonic()
        threads = [threading.Thread(target=self._worker, args=(w,), name=f"failover-load-{w}", daemon=True)
                   for w in range(self.spec.threads)]
        for thread in threads:
            thread.start()
        try:
            self._drive_outages()
        except BaseException:
            self.stop.stop_now()  # an outage step failed: stop the load now
            raise
        finally:
            for thread in threads:
                thread.join()
            self.ledger.close()
            for router in self.routers:
                router.close()
        if self.crashes:
            raise RuntimeError(f"a load thread failed: {describe_error(self.crashes[0])}") from self.crashes[0]

    def _event(self, name: str, outage: int) -> None:
        self.events.append({"t": time.monotonic() - self.t0, "event": name, "outage": outage})

    def _drive_outages(self) -> None:
        """Kill and restart the target at the times of spec.outages, then set when the load ends."""
        for n, (kill_at, restart_at) in enumerate(self.spec.outages, 1):
            time.sleep(max(0.0, self.t0 + kill_at - time.monotonic()))
            self._event("kill", n)  # the outage starts when the kill is sent...
            self.target.kill()
            self._event("killed", n)  # ...and the victim is surely dead once kill() returned
            time.sleep(max(0.0, self.t0 + restart_at - time.monotonic()))
            self._event("restart", n)
            self.target.restart()
            self.target.wait_recovered(self.spec.recovery_timeout)
            self._event("ready", n)
        if self.spec.outages:
            self.stop.stop_at(max(self.spec.duration, self.events[-1]["t"] + self.spec.min_after))

    def _worker(self, w: int) -> None:
        """Thread w runs operations w, w + threads, ... each at its due time, until the stop time."""
        try:
            for i in range(w, self.schedule.max_ops, self.spec.threads):
                due = self.schedule.due(i)
                if self.stop.reached(due):
                    break
                delay = self.t0 + due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.records[w].append(self._operation(w, i, due))
        except BaseException as exc:  # a bug here must fail the run, not thin out the load
            self.crashes.append(exc)
            self.stop.stop_now()

    def _operation(self, w: int, i: int, due: float) -> dict[str, Any]:
        """Run operation i on thread w's client and return its record; ledger an acknowledged deposit."""
        router = self.routers[w]
        packet = self.schedule.packet(i)
        if packet is not None:
            with self.lock:
                self.sent[packet.packet_id] = packet
        start = time.monotonic()
        outcome, error, hits = "ok", "", -1
        try:
            if packet is not None:
                router.deposit(packet)
            else:
                hits = len(router.query(self.schedule.query(i), top_k=self.spec.top_k))
        except Exception as exc:
            outcome, error = classify(exc), describe_error(exc)
        end = time.monotonic()
        if packet is not None:
            if outcome == "ok":
                self.ledger.append(packet.packet_id, end - self.t0)
            else:
                with self.lock:
                    (self.timeout_ids if outcome == "timeout" else self.failed_ids).add(packet.packet_id)
        return {"op": i, "thread": w, "kind": "query" if packet is None else "deposit", "due": due,
                "start": start - self.t0, "latency": end - start, "outcome": outcome, "error": error,
                "node": self.target.answered_by(router.store),
                "packet_id": packet.packet_id if packet is not None else "", "hits": hits}

    def verify(self) -> list[LossReport]:
        """Once the target has recovered, check every id in the ledger file through each verifier."""
        self.target.wait_recovered(self.spec.recovery_timeout)
        acked = Ledger.read(self.ledger_path)
        reports = []
        for label, store in self.target.verify_stores():
            try:
                reports.append(check_loss(label, acked, self.sent, self.failed_ids, self.timeout_ids, store.get,
                                          store.count))
            finally:
                store.close()
        return reports

    def result(self, reports: list[LossReport], embedder: Embedder, title: str | None) -> FailoverResult:
        """The records as a FailoverResult, with the run's settings in params."""
        events = pd.DataFrame(self.events, columns=EVENT_COLUMNS)
        ops = pd.DataFrame([r for rs in self.records for r in rs], columns=OP_COLUMNS).sort_values(
            "op", ignore_index=True)
        params = {
            "title": title, **self.target.describe(),
            "spec": {**asdict(self.spec), "outages": [list(o) for o in self.spec.outages]},
            "embedder": embedder.name, "embedder_misses": self.embedder.misses,
            "started_at_unix": round(self.schedule.now, 3), "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
        return FailoverResult(ops=with_phases(ops, events), events=events,
                              loss=pd.DataFrame([r.row() for r in reports]), params=params)


def run_failover(target: FailoverTarget, embedder: Embedder, spec: LoadSpec | None = None,
                 ledger_path: str | os.PathLike | None = None, title: str | None = None) -> FailoverResult:
    """Run the load against `target`, kill and restart it per spec.outages, then check for loss.

    `ledger_path`: where to keep the ledger of acknowledged ids (a new file; default: a
    temporary one, removed afterwards).
    """
    spec = spec or LoadSpec()
    tmp = None
    if ledger_path is None:
        tmp = tempfile.mkdtemp(prefix="qis-failover-")
        ledger_path = Path(tmp) / "ledger.jsonl"
    elif Path(ledger_path).exists():
        raise FileExistsError(f"ledger {ledger_path} already exists: each run needs a new ledger file")
    try:
        run = FailoverRun(target, embedder, spec, ledger_path)
        run.preload()
        run.run_load()
        reports = run.verify()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return run.result(reports, embedder, title)


# ---------------------------------------------------------------------------- Qdrant cases

QDRANT_CASES: dict[str, dict[str, Any]] = {
    # kill a node the clients do not talk to: with 2 replicas of every shard, nothing should fail
    "kill-other-rf2": {"replication_factor": 2, "write_consistency_factor": 1, "victim": "other"},
    # kill the clients' entry node: every client must fail over to the next url
    "kill-entry-rf2": {"replication_factor": 2, "write_consistency_factor": 1, "victim": "entry"},
    # one replica per shard: the shards on the dead node are gone until it is back
    "kill-other-rf1": {"replication_factor": 1, "write_consistency_factor": 1, "victim": "other"},
    # two replicas, and a write needs both: writes to shards with a replica on the dead node fail
    "kill-other-rf2-wcf2": {"replication_factor": 2, "write_consistency_factor": 2, "victim": "other"},
}


def run_qdrant_cases(cluster, embedder: Embedder, spec: LoadSpec | None = None,
                     cases: Sequence[str] | None = None, shard_number: int = 3) -> dict[str, FailoverResult]:
    """Run each case of QDRANT_CASES (default: all) on its own fresh collection of a running cluster."""
    cases = list(cases or QDRANT_CASES)
    unknown = [c for c in cases if c not in QDRANT_CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; choose from {list(QDRANT_CASES)}")
    results = {}
    for case in cases:
        target = QdrantClusterTarget(cluster, collection=f"failover_{case.replace('-', '_')}", dim=embedder.dim,
                                     shard_number=shard_number, **QDRANT_CASES[case])
        results[case] = run_failover(target, embedder, spec, title=case)
    return results


def compare(results: dict[str, FailoverResult]) -> pd.DataFrame:
    """One row per run: error rates and p99 before/during/after, recovery, loss."""
    rows = []
    for name, result in results.items():
        summary = result.summary()
        row: dict[str, Any] = {"case": name}
        for phase in PHASES:
            if (phase, "all") in summary.index:
                row[f"error_rate_{phase}"] = summary.loc[(phase, "all"), "error_rate"]
                row[f"p99_ms_{phase}"] = summary.loc[(phase, "all"), "p99_ms"]
        recovery = result.recovery()
        row["errors_stop_after_kill_s"] = recovery["errors_stop_after_kill_s"].max() if len(recovery) else np.nan
        row["acknowledged"] = int(result.loss["acknowledged"].max())
        row["lost"] = result.lost
        row["indeterminate"] = int(result.loss["indeterminate"].max())
        rows.append(row)
    return pd.DataFrame(rows).set_index("case")
