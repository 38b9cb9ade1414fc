"""The command line: python -m qis_lib.experiments.failover {chroma,qdrant} [--out DIR] ..."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ...embedders import get_embedder
from .load import LoadSpec
from .run import QDRANT_CASES, compare, run_failover, run_qdrant_cases
from .targets import ChromaTarget


def _outages(text: str) -> tuple[tuple[float, float], ...]:
    try:
        return tuple(tuple(float(x) for x in part.split(":")) for part in text.split(",") if part)  # type: ignore
    except ValueError:
        raise argparse.ArgumentTypeError(f"outages look like 10:13,25:28 (kill:restart seconds), got {text!r}")


def parser() -> argparse.ArgumentParser:
    """The arguments of the command line; the help text is the package docstring."""
    from . import __doc__ as description

    p = argparse.ArgumentParser(prog="python -m qis_lib.experiments.failover", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=["chroma", "qdrant"])
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=25.0)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--deposit-share", type=float, default=0.5)
    p.add_argument("--outages", type=_outages, default=((10.0, 13.0), (30.0, 33.0)),
                   help="kill:restart pairs in seconds, e.g. 10:13,30:33")
    p.add_argument("--preload", type=int, default=1200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embedder", default=None, help="embedder backend (default: the real MiniLM model)")
    p.add_argument("--launcher", choices=["docker", "process"], default=None, help="qdrant only")
    p.add_argument("--cases", default="all", help=f"qdrant only: comma list of {list(QDRANT_CASES)}")
    p.add_argument("--out", default=None, help="directory for ops.csv, summary.csv, ... (default: print only)")
    return p


def run_chroma(spec: LoadSpec, embedder, out: str | None, command: str) -> None:
    """One `chroma run` server killed per spec; print the tables, save them, exit 1 on loss."""
    from ...infra.servers import ChromaServer

    with ChromaServer() as server:
        result = run_failover(ChromaTarget(server, dim=embedder.dim), embedder, spec, title="chroma")
    print(result.summary(), "\n")
    print(result.recovery().to_string(index=False), "\n")
    print(result.loss.drop(columns=["lost_ids"]).to_string(index=False))
    if out:
        print(f"\nwrote {result.save(out, command)}")
    if result.lost:
        sys.exit(f"LOST {result.lost} acknowledged deposits")


def run_qdrant(spec: LoadSpec, embedder, out: str | None, command: str, launcher: str | None,
               cases: str) -> None:
    """The Qdrant cluster cases on a local cluster; print the comparison, save each run, exit 1 on loss."""
    from ...infra.cluster import open_cluster

    names = None if cases == "all" else cases.split(",")
    with open_cluster(launcher) as cluster:
        results = run_qdrant_cases(cluster, embedder, spec, names)
    print(compare(results))
    if out:
        for name, result in results.items():
            result.save(Path(out) / name, command)
        compare(results).to_csv(Path(out) / "compare.csv")
        print(f"\nwrote {out}")
    if any(r.lost for r in results.values()):
        sys.exit("LOST acknowledged deposits: see the loss tables")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen experiment."""
    args = parser().parse_args(argv)
    spec = LoadSpec(duration=args.duration, rate=args.rate, threads=args.threads, deposit_share=args.deposit_share,
                    outages=args.outages, preload=args.preload, seed=args.seed)
    embedder = get_embedder(args.embedder)
    command = "python -m qis_lib.experiments.failover " + " ".join(sys.argv[1:] if argv is None else argv)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        if args.target == "chroma":
            run_chroma(spec, embedder, args.out, command)
        else:
            run_qdrant(spec, embedder, args.out, command, args.launcher, args.cases)
