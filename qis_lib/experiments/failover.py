"""Failover experiments: a steady load on a store, a server killed and restarted under it,
and a check that every acknowledged deposit is still there afterwards.

    from qis_lib.experiments.failover import ChromaTarget, LoadSpec, run_failover
    with ChromaServer() as server:
        result = run_failover(ChromaTarget(server), get_embedder(), LoadSpec(duration=40, outages=((10, 13),)))
    result.summary(); result.recovery(); result.loss; result.plot()

    python -m qis_lib.experiments.failover chroma --out results/failover          # a `chroma run` server
    python -m qis_lib.experiments.failover qdrant --out results/failover_qdrant   # a 3-node Qdrant cluster

The load is open-loop: operation i is due at i/rate seconds, handed to thread i % threads,
a deposit or a query by a seeded coin. Every operation is recorded (when it started, how
long it took, ok/error/timeout, which node answered). A deposit counts as acknowledged
only when the store returned without error; its id then goes to an append-only ledger.
After the last restart, when the target says it has recovered, every id in the ledger must
come back from `get` with the payload that was sent. Deposits that failed were never
acknowledged and are not lost if missing; deposits that timed out are indeterminate (the
write may or may not have happened) and are counted apart.

A SIGKILL shows survival of a process crash only; it says nothing about power loss.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np
import pandas as pd

from ..embedders import Embedder, get_embedder
from ..core.packet import OutcomePacket
from ..core.router import OutcomeRouter
from ..stores.contract import Store

PHASES = ("before", "during", "after")
# node: the node the client's last call went to (for an ok operation, the one that answered)
OP_COLUMNS = ["op", "thread", "kind", "due", "start", "latency", "outcome", "error", "node", "packet_id", "hits"]


# ---------------------------------------------------------------------------- load

@dataclass(frozen=True)
class LoadSpec:
    """What load to run and when to kill. Times are seconds from the start of the load."""

    duration: float = 30.0
    rate: float = 30.0  # operations per second, all threads together
    threads: int = 4
    deposit_share: float = 0.5  # the rest are queries
    outages: tuple[tuple[float, float], ...] = ((10.0, 14.0),)  # (kill at, restart at)
    min_after: float = 3.0  # keep the load going at least this long after the last recovery
    preload: int = 0  # packets deposited (and ledgered) before the load starts
    top_k: int = 5
    seed: int = 0
    recovery_timeout: float = 180.0

    def __post_init__(self) -> None:
        for name in ("duration", "rate", "min_after", "recovery_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (value == 0 and name in ("duration", "rate", "recovery_timeout")):
                raise ValueError(f"{name} must be a positive number of {'ops/s' if name == 'rate' else 'seconds'}, "
                                 f"got {value!r}")
        for name in ("threads", "preload", "top_k", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name in ("threads", "top_k") else 0):
                raise ValueError(f"{name} must be a {'positive' if name in ('threads', 'top_k') else 'non-negative'} "
                                 f"int, got {value!r}")
        if isinstance(self.deposit_share, bool) or not isinstance(self.deposit_share, (int, float)) \
                or not 0.0 <= self.deposit_share <= 1.0:
            raise ValueError(f"deposit_share must be between 0 and 1, got {self.deposit_share!r}")
        previous = 0.0
        for outage in self.outages:
            if not (isinstance(outage, (tuple, list)) and len(outage) == 2):
                raise ValueError(f"each outage must be (kill_at, restart_at), got {outage!r}")
            kill_at, restart_at = outage
            if not (previous <= kill_at < restart_at < self.duration):
                raise ValueError(f"outages must be ordered, non-overlapping (kill_at, restart_at) pairs with "
                                 f"kill_at < restart_at < duration ({self.duration}); got {list(self.outages)}")
            previous = restart_at
        object.__setattr__(self, "outages", tuple((float(k), float(r)) for k, r in self.outages))


class CachedEmbedder:
    """An embedder whose vectors for known texts are computed up front, in one batch.

    The failover run then measures the store, not the model: the vectors are the real
    model's, only computed before the clock starts. Unknown texts fall through to the model.
    """

    def __init__(self, embedder: Embedder, texts: Iterable[str] = ()):
        self.embedder = embedder
        self.name = f"cached:{embedder.name}"
        self.dim = embedder.dim
        self._vectors: dict[str, np.ndarray] = {}
        self.misses = 0
        self.warm(texts)

    def warm(self, texts: Iterable[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if todo:
            self._vectors.update(zip(todo, self.embedder.encode(todo)))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        missing = [t for t in texts if t not in self._vectors]
        if missing:
            self.misses += len(missing)
            self.warm(missing)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts]).astype(np.float32, copy=False)


def seed_texts() -> list[tuple[str, str, str]]:
    """(problem, domain, agent) of the project's 40 hand-written packets."""
    from ..infra.seeds import load_seed_packets

    return [(p.problem_description, p.domain_tags[0], p.agent_id) for p in load_seed_packets(now=0.0)]


def make_packet(index: int, now: float, seeds: Sequence[tuple[str, str, str]]) -> OutcomePacket:
    """Deposit number `index` of a run: a seed problem made unique, so every deposit has its own id."""
    problem, domain, agent = seeds[index % len(seeds)]
    outcomes = ("resolved", "partial", "contradicted", "open")
    return OutcomePacket(
        problem_description=f"{problem} (report {index})", outcome_type=outcomes[index % 4],
        confidence=round(0.5 + (index % 50) / 100, 2), delta_summary=f"failover run deposit {index}",
        domain_tags=(domain,), timestamp=now, agent_id=f"{agent}-f{index % 7}")


class Ledger:
    """Append-only record of acknowledged deposit ids, one JSON line each, written after each ack."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, packet_id: str, t: float) -> None:
        with self._lock:
            self._file.write(json.dumps({"id": packet_id, "t": round(t, 4)}) + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    @staticmethod
    def read(path: str | os.PathLike) -> list[str]:
        """The acknowledged ids, in ledger order (an id acknowledged twice appears twice)."""
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["id"] for line in f if line.strip()]


# ---------------------------------------------------------------------------- targets

class FailoverTarget(Protocol):
    """Something to put load on, kill and restart."""

    name: str

    def open_transport(self) -> Store:
        """A new client connection (each load thread gets its own)."""

    def answered_by(self, transport: Store) -> str:
        """Which node answered this transport's last call."""

    def kill(self) -> None:
        """SIGKILL the victim."""

    def restart(self) -> None:
        """Start the victim again (may return before it is ready)."""

    def wait_recovered(self, timeout: float) -> None:
        """Return once the store can be expected to serve every acknowledged write."""

    def verify_transports(self) -> list[tuple[str, Store]]:
        """(label, transport) pairs through which to check for loss (one per node)."""

    def describe(self) -> dict[str, Any]:
        """The target's settings, for the records."""


class ChromaTarget:
    """One `chroma run` server (qis_lib.servers.ChromaServer): no replication, so while it
    is down every operation fails."""

    name = "chroma"

    def __init__(self, server, collection: str = "failover", dim: int = 384):
        self.server = server
        self.collection = collection
        self.dim = dim

    def open_transport(self) -> Store:
        from ..stores.chroma import ChromaStore

        return ChromaStore(url=self.server.url, collection=self.collection, dim=self.dim)

    def answered_by(self, transport: Store) -> str:
        return "chroma"

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        self.server.start()  # returns once the heartbeat answers

    def wait_recovered(self, timeout: float) -> None:
        from ..infra.cluster import wait_until

        wait_until(self.server.heartbeat, timeout, "chroma heartbeat")

    def verify_transports(self) -> list[tuple[str, Store]]:
        return [("chroma", self.open_transport())]

    def describe(self) -> dict[str, Any]:
        import chromadb

        return {"target": "chroma", "chromadb": chromadb.__version__, "collection": self.collection,
                "replication": "none (single server)"}


class QdrantClusterTarget:
    """A collection on a local Qdrant cluster (qis_lib.cluster); kills one node.

    victim "other": a node that is not the client's entry point; "entry": the node every
    client talks to first, so clients must fail over to the next url.
    """

    name = "qdrant-cluster"

    def __init__(self, cluster, collection: str = "failover", dim: int = 384, replication_factor: int = 2,
                 write_consistency_factor: int = 1, shard_number: int = 3, victim: str = "other",
                 timeout: int = 3, recreate: bool = True):
        from ..stores.qdrant import collection_params

        collection_params(dim, shard_number, replication_factor, write_consistency_factor)  # validate now
        if victim not in ("other", "entry") and victim not in cluster.nodes:
            raise ValueError(f"victim must be 'other', 'entry' or one of {cluster.nodes}, got {victim!r}")
        self.cluster = cluster
        self.collection = collection
        self.dim = dim
        self.replication_factor = replication_factor
        self.write_consistency_factor = write_consistency_factor
        self.shard_number = shard_number
        self.timeout = timeout
        self.entry = cluster.entry
        self.victim = {"entry": cluster.entry, "other": cluster.others()[-1]}.get(victim, victim)
        self.placement_before: pd.DataFrame | None = None
        if recreate:
            try:
                cluster.delete_collection(collection)
            except Exception:  # absent is fine; a dead cluster shows up on the first write
                pass

    def open_transport(self) -> Store:
        from ..stores.qdrant import QdrantStore

        transport = QdrantStore(urls=self.cluster.url_list(self.entry), collection=self.collection, dim=self.dim,
                                    shard_number=self.shard_number, replication_factor=self.replication_factor,
                                    write_consistency_factor=self.write_consistency_factor, timeout=self.timeout)
        if self.placement_before is None:
            self.placement_before = self.cluster.wait_replicas_active(self.collection)
        return transport

    def answered_by(self, transport: Store) -> str:
        url = transport.active_url
        return next((n for n in self.cluster.nodes if self.cluster.url(n) == url), url)

    def kill(self) -> None:
        self.cluster.kill(self.victim)

    def restart(self) -> None:
        self.cluster.start(self.victim)

    def wait_recovered(self, timeout: float) -> None:
        self.cluster.wait_ready(self.victim, timeout)
        self.cluster.wait_replicas_active(self.collection, timeout)

    def verify_transports(self) -> list[tuple[str, Store]]:
        from ..stores.qdrant import QdrantStore

        return [(node, QdrantStore(url=self.cluster.url(node), collection=self.collection, dim=self.dim,
                                       timeout=max(self.timeout, 10)))
                for node in self.cluster.nodes]

    def describe(self) -> dict[str, Any]:
        return {"target": "qdrant-cluster", "launcher": type(self.cluster).__name__, "nodes": self.cluster.nodes,
                "collection": self.collection, "shard_number": self.shard_number,
                "replication_factor": self.replication_factor,
                "write_consistency_factor": self.write_consistency_factor, "entry": self.entry,
                "victim": self.victim}


# ---------------------------------------------------------------------------- errors

_TIMEOUT_TEXT = re.compile(r"timed? ?out|timeout", re.IGNORECASE)


def is_timeout(exc: BaseException) -> bool:
    """True if the failure was a timeout (the request may or may not have been applied)."""
    import httpx

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
            return True
        source = getattr(exc, "source", None)  # qdrant-client's ResponseHandlingException
        if isinstance(source, BaseException) and is_timeout(source):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def describe_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


def classify(exc: BaseException) -> str:
    """'timeout' or 'error'. QdrantStore folds node errors into one ConnectionError message,
    so its text is read too."""
    return "timeout" if is_timeout(exc) or _TIMEOUT_TEXT.search(str(exc)) else "error"


# ---------------------------------------------------------------------------- the run

@dataclass
class LossReport:
    """What the check after recovery found, through one node."""

    verifier: str
    acknowledged: int  # distinct ids in the ledger
    found: int  # of those, returned by get()
    lost: int  # acknowledged and missing after recovery: must be 0
    corrupted: int  # found, but the payload differs from what was sent: must be 0
    duplicated: int  # rows in the store beyond the distinct ids we wrote (duplicates or phantoms)
    failed: int  # deposits answered with an error: never acknowledged
    failed_but_stored: int  # of those, present anyway (a failed write may be partly applied)
    indeterminate: int  # deposits that timed out: unknown whether applied
    indeterminate_stored: int
    store_count: int
    lost_ids: list[str] = field(default_factory=list)


def check_loss(verifier: str, acked_ids: Sequence[str], sent: dict[str, OutcomePacket],
               failed_ids: Iterable[str], timeout_ids: Iterable[str], get: Callable[[list[str]], dict[str, dict]],
               count: Callable[[], int], batch: int = 500) -> LossReport:
    """Compare what the ledger says was acknowledged with what the store returns now."""
    acked = list(dict.fromkeys(acked_ids))
    failed = set(failed_ids) - set(acked)  # acknowledged on a retry counts as acknowledged
    timeouts = set(timeout_ids) - set(acked) - failed
    wanted = acked + sorted(failed) + sorted(timeouts)
    found: dict[str, dict] = {}
    for start in range(0, len(wanted), batch):
        found.update(get(wanted[start:start + batch]))
    lost = [pid for pid in acked if pid not in found]
    corrupted = 0
    for pid in acked:
        if pid in found and pid in sent:
            try:
                corrupted += OutcomePacket.from_payload(found[pid]) != sent[pid]
            except (ValueError, TypeError):
                corrupted += 1
    store_count = count()
    return LossReport(
        verifier=verifier, acknowledged=len(acked), found=len(acked) - len(lost), lost=len(lost), corrupted=corrupted,
        duplicated=store_count - len(found), failed=len(failed), failed_but_stored=sum(p in found for p in failed),
        indeterminate=len(timeouts), indeterminate_stored=sum(p in found for p in timeouts),
        store_count=store_count, lost_ids=lost[:20])


@dataclass
class FailoverResult:
    ops: pd.DataFrame  # one row per operation, columns OP_COLUMNS (+ phase)
    events: pd.DataFrame  # t, event (kill / killed / restart / ready), outage number
    loss: pd.DataFrame  # one LossReport row per verifier
    params: dict[str, Any]

    @property
    def lost(self) -> int:
        """Lost acknowledged deposits, worst node."""
        return int(self.loss["lost"].max()) if len(self.loss) else 0

    def summary(self) -> pd.DataFrame:
        return summarise(self.ops, self.events)

    def recovery(self) -> pd.DataFrame:
        return recovery_times(self.ops, self.events)

    def plot(self, ax=None, title: str | None = None):
        return timeline_plot(self.ops, self.events, ax=ax, title=title or self.params.get("title"))

    def save(self, out_dir: str | os.PathLike, command: str | None = None) -> Path:
        """ops.csv, events.csv, summary.csv, recovery.csv, loss.csv and run.json (params + command)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ops = self.ops.copy()
        for column in ("due", "start", "latency"):
            ops[column] = ops[column].round(5)
        ops.to_csv(out / "ops.csv", index=False)
        self.events.round(4).to_csv(out / "events.csv", index=False)
        self.summary().round(5).to_csv(out / "summary.csv")
        self.recovery().round(4).to_csv(out / "recovery.csv", index=False)
        self.loss.drop(columns=["lost_ids"]).to_csv(out / "loss.csv", index=False)
        params = {**self.params, "command": command}
        (out / "run.json").write_text(json.dumps(params, indent=2, default=str) + "\n")
        return out


def _phase(start: np.ndarray, end: np.ndarray, events: pd.DataFrame) -> np.ndarray:
    """'before': ended before the first kill; 'during': running at some moment between a kill
    and the matching 'ready' (an operation in flight when the server died counts here);
    'after': the rest (started once the store had recovered)."""
    phase = np.full(len(start), "after", dtype=object)
    kills = events[events["event"] == "kill"]
    if kills.empty:
        phase[:] = "before"
        return phase
    phase[end < kills["t"].min()] = "before"
    for _, kill in kills.iterrows():
        ready = events[(events["event"] == "ready") & (events["outage"] == kill["outage"])]["t"]
        until = ready.iloc[0] if len(ready) else np.inf
        phase[(end >= kill["t"]) & (start < until)] = "during"
    return phase


def with_phases(ops: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    ops = ops.copy()
    start = ops["start"].to_numpy(float)
    phase = _phase(start, start + ops["latency"].to_numpy(float), events)
    ops["phase"] = pd.Categorical(phase, categories=PHASES, ordered=True)
    return ops


def summarise(ops: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Per phase and kind (and 'all'): operations, errors, timeouts, error rate, p50/p99 of the
    successful operations' latency in ms, and which nodes answered."""
    ops = with_phases(ops, events)
    both = pd.concat([ops, ops.assign(kind="all")], ignore_index=True)
    rows = []
    for (phase, kind), group in both.groupby(["phase", "kind"], observed=True, sort=True):
        ok = group[group["outcome"] == "ok"]
        latency_ms = ok["latency"].to_numpy(float) * 1000.0
        rows.append({
            "phase": phase, "kind": kind, "ops": len(group), "ok": len(ok),
            "errors": int((group["outcome"] == "error").sum()), "timeouts": int((group["outcome"] == "timeout").sum()),
            "error_rate": 1.0 - len(ok) / len(group),
            "p50_ms": float(np.percentile(latency_ms, 50)) if len(ok) else np.nan,
            "p99_ms": float(np.percentile(latency_ms, 99)) if len(ok) else np.nan,
            "answered_by": ", ".join(f"{n}:{c}" for n, c in ok["node"].value_counts().sort_index().items()),
        })
    return pd.DataFrame(rows).set_index(["phase", "kind"])


def recovery_times(ops: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Per outage: when the victim was killed, restarted and ready again (s from the start of
    the load), how many operations failed, when the first and the last failure ended (s after
    the kill), and how many failed although they started after 'ready'. An outage owns the
    operations that ended between its kill and the next one."""
    rows = []
    kills = events[events["event"] == "kill"].sort_values("t")
    end = ops["start"] + ops["latency"]
    for i, (_, kill) in enumerate(kills.iterrows()):
        n, killed_at = kill["outage"], float(kill["t"])

        def at(name: str) -> float:
            times = events[(events["event"] == name) & (events["outage"] == n)]["t"]
            return float(times.iloc[0]) if len(times) else np.nan

        next_kill = float(kills["t"].iloc[i + 1]) if i + 1 < len(kills) else np.inf
        mine = (end >= killed_at) & (end < next_kill)
        failed = ops[mine & (ops["outcome"] != "ok")]
        failed_end = end[failed.index]
        ready = at("ready")
        rows.append({
            "outage": int(n), "kill_at": killed_at, "restart_at": at("restart"), "ready_at": ready,
            "down_s": ready - killed_at, "failed_ops": len(failed),
            "first_error_after_kill_s": float(failed_end.min() - killed_at) if len(failed) else np.nan,
            "errors_stop_after_kill_s": float(failed_end.max() - killed_at) if len(failed) else 0.0,
            "errors_after_ready": int((failed["start"] >= ready).sum()) if np.isfinite(ready) else len(failed),
        })
    return pd.DataFrame(rows, columns=["outage", "kill_at", "restart_at", "ready_at", "down_s", "failed_ops",
                                       "first_error_after_kill_s", "errors_stop_after_kill_s", "errors_after_ready"])


def timeline_plot(ops: pd.DataFrame, events: pd.DataFrame, ax=None, title: str | None = None):
    """Latency of every operation against its start time; failures in red at their latency,
    outages (kill until ready) shaded, restarts dashed."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 4))
    else:
        fig = ax.figure
    ok = ops[ops["outcome"] == "ok"]
    nodes = sorted(ok["node"].dropna().unique())
    markers = {"deposit": "o", "query": "s"}
    for kind, marker in markers.items():
        part = ok[ok["kind"] == kind]
        if len(nodes) > 1:
            for node, colour in zip(nodes, plt.cm.tab10.colors):
                sub = part[part["node"] == node]
                ax.scatter(sub["start"], sub["latency"] * 1000, s=9, marker=marker, color=colour, alpha=0.6,
                           label=f"{kind} ok via {node}")
        else:
            ax.scatter(part["start"], part["latency"] * 1000, s=9, marker=marker, alpha=0.6,
                       color="tab:blue" if kind == "deposit" else "tab:green", label=f"{kind} ok")
    for outcome, colour, marker in (("error", "tab:red", "x"), ("timeout", "tab:orange", "^")):
        part = ops[ops["outcome"] == outcome]
        if len(part):
            ax.scatter(part["start"], part["latency"].clip(lower=1e-4) * 1000, s=14, marker=marker, color=colour,
                       label=f"{outcome} ({len(part)})")
    for n, group in events.groupby("outage"):
        t = dict(zip(group["event"], group["t"]))
        if "kill" in t:
            end = t.get("ready", ops["start"].max())
            ax.axvspan(t["kill"], end, color="grey", alpha=0.2, lw=0,
                       label="killed until ready" if n == events["outage"].min() else None)
        if "restart" in t:
            ax.axvline(t["restart"], color="grey", ls="--", lw=1,
                       label="restart" if n == events["outage"].min() else None)
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("latency (ms, log)")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def run_failover(target: FailoverTarget, embedder: Embedder, spec: LoadSpec | None = None,
                 ledger_path: str | os.PathLike | None = None, title: str | None = None) -> FailoverResult:
    """Run the load against `target`, kill and restart it per spec.outages, then check for loss."""
    spec = spec or LoadSpec()
    seeds = seed_texts()
    now = time.time()
    max_ops = int(math.ceil(spec.rate * (spec.duration + spec.recovery_timeout * max(1, len(spec.outages))
                                          + spec.min_after))) + 1
    rng = np.random.default_rng(spec.seed)
    is_deposit = rng.random(max_ops) < spec.deposit_share
    deposit_index = np.cumsum(is_deposit) - 1 + spec.preload  # packet number of each deposit op
    query_pick = rng.integers(0, len(seeds), max_ops)
    expected_deposits = int(is_deposit[:int(spec.rate * spec.duration) + 1].sum())
    cached = CachedEmbedder(embedder, [s[0] for s in seeds] + [
        make_packet(j, now, seeds).problem_description for j in range(spec.preload + expected_deposits)])

    tmp = None
    if ledger_path is None:
        tmp = tempfile.mkdtemp(prefix="qis-failover-")
        ledger_path = Path(tmp) / "ledger.jsonl"
    elif Path(ledger_path).exists():
        raise FileExistsError(f"ledger {ledger_path} already exists: each run needs a new ledger file")
    ledger = Ledger(ledger_path)
    sent: dict[str, OutcomePacket] = {}
    failed_ids: set[str] = set()
    timeout_ids: set[str] = set()
    lock = threading.Lock()

    routers = [OutcomeRouter(target.open_transport(), cached) for _ in range(spec.threads)]
    if spec.preload:
        packets = [make_packet(j, now, seeds) for j in range(spec.preload)]
        for start in range(0, len(packets), 200):
            chunk = packets[start:start + 200]
            for pid in routers[0].deposit_many(chunk):
                ledger.append(pid, -1.0)
            sent.update((p.packet_id, p) for p in chunk)

    records: list[list[dict]] = [[] for _ in range(spec.threads)]
    crashes: list[BaseException] = []
    # With outages the end is set once the last one has recovered (recovery may run past duration).
    stop_at = [math.inf if spec.outages else spec.duration]
    t0 = time.monotonic()

    def worker(w: int) -> None:
        try:
            load(w)
        except BaseException as exc:  # a bug here must fail the run, not thin out the load
            crashes.append(exc)
            stop_at[0] = 0.0

    def load(w: int) -> None:
        router = routers[w]
        for i in range(w, max_ops, spec.threads):
            due = i / spec.rate
            if due >= stop_at[0]:
                break
            delay = t0 + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            kind = "deposit" if is_deposit[i] else "query"
            packet = make_packet(int(deposit_index[i]), now, seeds) if kind == "deposit" else None
            if packet is not None:
                with lock:
                    sent[packet.packet_id] = packet
            start = time.monotonic()
            outcome, error, hits = "ok", "", -1
            try:
                if packet is not None:
                    router.deposit(packet)
                else:
                    hits = len(router.query(seeds[query_pick[i]][0], top_k=spec.top_k))
            except Exception as exc:
                outcome, error = classify(exc), describe_error(exc)
            end = time.monotonic()
            if packet is not None:
                if outcome == "ok":
                    ledger.append(packet.packet_id, end - t0)
                else:
                    with lock:
                        (timeout_ids if outcome == "timeout" else failed_ids).add(packet.packet_id)
            records[w].append({
                "op": i, "thread": w, "kind": kind, "due": due, "start": start - t0, "latency": end - start,
                "outcome": outcome, "error": error, "node": target.answered_by(router.store),
                "packet_id": packet.packet_id if packet is not None else "", "hits": hits})

    events: list[dict] = []

    def event(name: str, n: int) -> None:
        events.append({"t": time.monotonic() - t0, "event": name, "outage": n})

    threads = [threading.Thread(target=worker, args=(w,), name=f"failover-load-{w}", daemon=True)
               for w in range(spec.threads)]
    for thread in threads:
        thread.start()
    try:
        for n, (kill_at, restart_at) in enumerate(spec.outages, 1):
            time.sleep(max(0.0, t0 + kill_at - time.monotonic()))
            event("kill", n)  # the outage starts when the kill is sent...
            target.kill()
            event("killed", n)  # ...and the victim is surely dead once kill() returned
            time.sleep(max(0.0, t0 + restart_at - time.monotonic()))
            event("restart", n)
            target.restart()
            target.wait_recovered(spec.recovery_timeout)
            event("ready", n)
        if spec.outages:
            stop_at[0] = max(spec.duration, events[-1]["t"] + spec.min_after)
    finally:
        if stop_at[0] == math.inf:  # an outage step failed: stop the load now
            stop_at[0] = 0.0
        for thread in threads:
            thread.join()
        ledger.close()
        for router in routers:
            router.close()
    if crashes:
        raise RuntimeError(f"a load thread failed: {describe_error(crashes[0])}") from crashes[0]

    target.wait_recovered(spec.recovery_timeout)
    acked = Ledger.read(ledger_path)
    reports = []
    for label, transport in target.verify_transports():
        try:
            reports.append(check_loss(label, acked, sent, failed_ids, timeout_ids, transport.get, transport.count))
        finally:
            transport.close()
    if tmp is not None:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    ops = pd.DataFrame([r for rs in records for r in rs], columns=OP_COLUMNS).sort_values("op", ignore_index=True)
    params = {
        "title": title, **target.describe(), "spec": {**asdict(spec), "outages": [list(o) for o in spec.outages]},
        "embedder": embedder.name, "embedder_misses": cached.misses, "started_at_unix": round(now, 3),
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }
    return FailoverResult(ops=with_phases(ops, pd.DataFrame(events, columns=["t", "event", "outage"])),
                          events=pd.DataFrame(events, columns=["t", "event", "outage"]),
                          loss=pd.DataFrame([asdict(r) for r in reports]), params=params)


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
    """Run each case on its own fresh collection of a running cluster."""
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


# ---------------------------------------------------------------------------- command line

def _outages(text: str) -> tuple[tuple[float, float], ...]:
    try:
        return tuple(tuple(float(x) for x in part.split(":")) for part in text.split(",") if part)  # type: ignore
    except ValueError:
        raise argparse.ArgumentTypeError(f"outages look like 10:13,25:28 (kill:restart seconds), got {text!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=["chroma", "qdrant"])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--deposit-share", type=float, default=0.5)
    parser.add_argument("--outages", type=_outages, default=((10.0, 13.0), (30.0, 33.0)),
                        help="kill:restart pairs in seconds, e.g. 10:13,30:33")
    parser.add_argument("--preload", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedder", default=None, help="embedder backend (default: the real MiniLM model)")
    parser.add_argument("--launcher", choices=["docker", "process"], default=None, help="qdrant only")
    parser.add_argument("--cases", default="all", help=f"qdrant only: comma list of {list(QDRANT_CASES)}")
    parser.add_argument("--out", default=None, help="directory for ops.csv, summary.csv, ... (default: print only)")
    args = parser.parse_args(argv)
    spec = LoadSpec(duration=args.duration, rate=args.rate, threads=args.threads, deposit_share=args.deposit_share,
                    outages=args.outages, preload=args.preload, seed=args.seed)
    embedder = get_embedder(args.embedder)
    command = "python -m qis_lib.experiments.failover " + " ".join(sys.argv[1:] if argv is None else argv)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        if args.target == "chroma":
            from ..infra.servers import ChromaServer

            with ChromaServer() as server:
                result = run_failover(ChromaTarget(server, dim=embedder.dim), embedder, spec, title="chroma")
            print(result.summary(), "\n")
            print(result.recovery().to_string(index=False), "\n")
            print(result.loss.drop(columns=["lost_ids"]).to_string(index=False))
            if args.out:
                print(f"\nwrote {result.save(args.out, command)}")
            if result.lost:
                sys.exit(f"LOST {result.lost} acknowledged deposits")
        else:
            from ..infra.cluster import open_cluster

            cases = None if args.cases == "all" else args.cases.split(",")
            with open_cluster(args.launcher) as cluster:
                results = run_qdrant_cases(cluster, embedder, spec, cases)
            print(compare(results))
            if args.out:
                for name, result in results.items():
                    result.save(Path(args.out) / name, command)
                compare(results).to_csv(Path(args.out) / "compare.csv")
                print(f"\nwrote {args.out}")
            if any(r.lost for r in results.values()):
                sys.exit("LOST acknowledged deposits: see the loss tables")


if __name__ == "__main__":
    main()
