"""Kill cycles: one store folder opened, written and SIGKILLed again and again, each reopen
checked against the ledger (every ack present once and unchanged, no phantom)."""
from __future__ import annotations

import contextlib
import json
import random
import tempfile
import time
from pathlib import Path

import pandas as pd

from ...core.router import make_router
from ...bench.modes import ModeContext
from .base import VolatileStoreError, mode_options
from .children import KILL_PLANS, _Child, _ForkedChild


def _killable_server(ctx: ModeContext):
    """The server of ctx's pool a kill cycle may kill (it has kill() and start()), or None."""
    servers = list(ctx.pool.servers.values()) if ctx.pool is not None else []
    return next((s for s in servers if callable(getattr(s, "kill", None)) and callable(getattr(s, "start", None))),
                None)


class KillCycles:
    """The state of one kill-cycle campaign on one store folder: what was acknowledged, what was in flight."""

    def __init__(self, kind: str, ctx: ModeContext, folder: Path, seed: int = 0, max_acks: int = 60,
                 timeout: float = 180.0, server_share: float | None = None):
        self.kind = kind
        self.store, self.options = mode_options(kind, ctx)
        self.server = _killable_server(ctx)
        self.folder = folder
        self.rng = random.Random(f"{kind}/{seed}")
        self.max_acks = max_acks
        self.timeout = timeout
        if server_share is not None and not 0.0 <= server_share <= 1.0:
            raise ValueError(f"server_share must be between 0 and 1, got {server_share!r}")
        if server_share and self.server is None:
            raise ValueError(f"server_share={server_share}: mode {kind!r} has no server the cycles can kill")
        self.server_share = server_share
        self.acked: list[tuple[str, int]] = []
        self.in_flight: list[tuple[str, int]] = []
        self.estimates = {"open": 0.5, "optimize": 0.05, "close": 0.05}  # seconds, updated from what is seen

    def plans(self) -> list[str]:
        return [p for p in KILL_PLANS if p != "server" or self.server is not None]

    def draw_plan(self) -> str:
        """A kill plan drawn uniformly, or with `server_share` the server's kill that often."""
        if self.server_share is None:
            return self.rng.choice(self.plans())
        if self.rng.random() < self.server_share:
            return "server"
        return self.rng.choice([p for p in self.plans() if p != "server"])

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
        kind = self.draw_plan()
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
                progress: bool = False, minutes: float | None = None,
                server_share: float | None = None) -> pd.DataFrame:
    """`cycles` kill cycles on one folder of mode `kind`, then a final check; one row per cycle.

    Each row's check_* columns are the check made when that cycle's child reopened the
    store, i.e. the verdict on the previous kill; the last row (plan "final") checks the
    last kill. With `csv_path`, rows are appended to that CSV as they come. With `minutes`,
    no cycle starts after that long: the final check comes early. Plans are drawn uniformly
    from KILL_PLANS; with `server_share` (0-1) the mode's server is the one killed that share
    of the cycles (for a service, whose own crash is the point).
    """
    stop_at = time.monotonic() + minutes * 60 if minutes is not None else float("inf")
    with tempfile.TemporaryDirectory(prefix=f"qis-cycles-{kind}-") as tmp, contextlib.ExitStack() as stack:
        ctx = ModeContext(Path(tmp) / "store", stack)
        store, options = mode_options(kind, ctx)
        with make_router(store, embedder="hash", **options) as router:
            if not router.store.capabilities.persistent:
                raise VolatileStoreError(f"mode {kind!r}: the store is not persistent, a reopen has nothing to find")
        campaign = KillCycles(kind, ctx, Path(tmp), seed=seed, max_acks=max_acks, server_share=server_share)
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
