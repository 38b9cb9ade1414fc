"""The command line of the reliability experiments (`python -m qis_lib.experiments.reliability`)
and the README table made from the committed results."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ...core.router import make_router
from ...bench.modes import ModeContext
from .base import check_stream, crash_runs, load_runs, mode_options, runnable_modes, save_results, write_stream
from .children import cycle_child
from .cycles import cycles_summary, kill_cycles
from .history import agents_child, processes_run


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
    cs.add_argument("--server-share", type=float, default=None,
                    help="share of cycles (0-1) that kill the mode's server (default: one plan among the others)")
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
                                  csv_path=csv_path, progress=True, minutes=args.minutes,
                                  server_share=args.server_share))
    summary = cycles_summary(pd.concat(frames))
    print(summary.to_string(index=False))
    if out is not None:
        save_results(summary, out, f"cycles-summary-{'-'.join(kinds)}.csv", "qis_lib.experiments.reliability", argv,
                     started)
