"""What a failover run recorded, and the tables and plot made from it."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...bench.style import log_axis, style_of

PHASES = ("before", "during", "after")
# The store each target of this experiment runs (its colour and marker in every plot): the
# "chroma" target is a `chroma run` server, "qdrant-cluster" a Qdrant server's nodes.
STORE_OF_TARGET = {"chroma": "chroma-server", "qdrant-cluster": "qdrant-server"}


@dataclass
class FailoverResult:
    """One run: every operation, the kill and restart events, and the loss check per verifier.

    `summary()`, `recovery()` and `plot()` are made from `ops` and `events`; `save()`
    writes them all as CSV files, with the run's settings in run.json.
    """

    ops: pd.DataFrame  # one row per operation, columns OP_COLUMNS (+ phase)
    events: pd.DataFrame  # t, event (kill / killed / restart / ready), outage number
    loss: pd.DataFrame  # one LossReport row per verifier
    params: dict[str, Any]

    @property
    def lost(self) -> int:
        """Lost acknowledged deposits, worst node."""
        return int(self.loss["lost"].max()) if len(self.loss) else 0

    def summary(self) -> pd.DataFrame:
        """Per phase and kind: operations, errors, error rate, latency percentiles (`summarise`)."""
        return summarise(self.ops, self.events)

    def recovery(self) -> pd.DataFrame:
        """Per outage: how long the store was down and when errors stopped (`recovery_times`)."""
        return recovery_times(self.ops, self.events)

    def plot(self, ax=None, title: str | None = None):
        target = self.params.get("target")
        return timeline_plot(self.ops, self.events, ax=ax, title=title or self.params.get("title"),
                             store=STORE_OF_TARGET.get(target, target))

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
    """`ops` with a `phase` column: before, during or after an outage (see `_phase`)."""
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


def shades(colour, n: int) -> list:
    """`n` shades of `colour`, darker to lighter, for the nodes of one store."""
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(colour))
    if n < 2:
        return [tuple(rgb)]
    return [tuple(rgb * (1 + t) if t < 0 else rgb + (1 - rgb) * t) for t in np.linspace(-0.35, 0.45, n)]


def timeline_plot(ops: pd.DataFrame, events: pd.DataFrame, ax=None, title: str | None = None,
                  store: str | None = None):
    """Latency of every operation against its start time, on a log axis: successful ones in the
    store's colour and marker (`qis_lib.bench.style`; deposits filled, queries hollow; one shade
    per node when several answered; dark grey circles when no store is named), failures in black
    and timeouts in grey at their latency, outages (kill until ready) shaded, restarts dashed."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 4), layout="constrained")
    else:
        fig = ax.figure
    look = style_of(store) if store else {"color": "#555555", "marker": "o"}
    ok = ops[ops["outcome"] == "ok"]
    nodes = sorted(ok["node"].dropna().unique())
    colours = dict(zip(nodes, shades(look["color"], len(nodes)))) if len(nodes) > 1 else {}
    for kind in ("deposit", "query"):
        part = ok[ok["kind"] == kind]
        for node, sub in (part.groupby("node") if colours else [(None, part)]):
            colour = colours.get(node, look["color"])
            fill = {"color": colour} if kind == "deposit" else {"facecolors": "none", "edgecolors": colour}
            ax.scatter(sub["start"], sub["latency"] * 1000, s=10, marker=look["marker"], alpha=0.6, linewidths=0.8,
                       label=f"{kind} ok" + (f" via {node}" if node is not None else ""), **fill)
    for outcome, colour, marker in (("error", "black", "x"), ("timeout", "grey", "+")):
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
    if len(ops):
        log_axis(ax, "y")
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(f"{title} ({store})" if title and store and store not in title else title or store or "")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if fig.get_layout_engine() is None:  # the caller's figure: make room for the legend beside it
        fig.tight_layout()
    return fig
