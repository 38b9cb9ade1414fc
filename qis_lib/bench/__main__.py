"""Query latency and recall of the stores against N: the benchmark's command line.

    python -m qis_lib.bench --stores memory,qdrant-edge --sizes 1000,10000 --out results/

Each store runs as make_router opens it (config "default (hybrid)" on qdrant-edge and
qdrant, "default (dense)" elsewhere) and, on those two, dense only as well (config "dense";
--configs default to leave it out). Writes to --out: query.csv (one row per store,
config, vectors, n, filtered; machine info, versions and this command in every row; while
the run goes on, query.partial.csv holds the rows finished so far and is removed at the
end), query_raw.csv.gz (every timed query: its config, its latency through the store, the
router and the raw call, which of those two ran first, and its share of the exact dense
top 10, for new metrics without a rerun), run.json (the same information, plus what was
skipped and why), latency_vs_n.png, recall_vs_n.png and recall_vs_latency.png; and prints
the router's paired overhead per row. What each column means: the docstring of
qis_lib/bench/latency.py. Embedding speed has its own command: python -m qis_lib.bench.embedding.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

from . import data
from .latency import CONFIGS, PACKAGES, targets


def positive_ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers like 1000,10000, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers like 1000,10000, got {text!r}")
    return values


def names(choices):
    """An argparse type: a comma-separated list of names from `choices`, duplicates dropped."""
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [v for v in values if v not in choices]
        if not values or unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                                             f"choose from {', '.join(choices)}")
        return list(dict.fromkeys(values))
    return parse


def cap(text: str) -> tuple[str, int | None]:
    target, sep, value = text.partition("=")
    if not sep or target not in targets() or not (value == "none" or value.isdigit() and int(value) > 0):
        raise argparse.ArgumentTypeError(f"expected TARGET=N or TARGET=none with TARGET one of "
                                         f"{', '.join(targets())}, got {text!r}")
    return target, None if value == "none" else int(value)


def count(minimum: int):
    """An argparse type: an integer of at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    """The command line, with every benchmark target of the registry listed in its help."""
    known = targets()
    listing = "\n".join(f"  {t.name:14} {t.mode}" + (f" (N <= {t.max_n:,} unless --cap)" if t.max_n else "")
                         + (f" (cannot run here: {t.unavailable()})" if t.unavailable() else "") for t in known.values())
    p = argparse.ArgumentParser(prog="python -m qis_lib.bench", description=__doc__,
                                epilog="stores:\n" + listing, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", "--transports", dest="stores", type=names(list(known)), default=["memory", "qdrant-edge"],
                   help="comma-separated, from the list below (default memory,qdrant-edge)")
    p.add_argument("--sizes", type=positive_ints, default=[1000, 10000, 100000],
                   help="comma-separated numbers of points N (default 1000,10000,100000)")
    p.add_argument("--vectors", type=names(list(data.VECTOR_SETS)), default=["real"],
                   help="real (MiniLM embeddings of GitBugs reports), random (unit Gaussian), or real,random (default real)")
    p.add_argument("--configs", type=names(list(CONFIGS)), default=list(CONFIGS),
                   help="default (as make_router opens each store), dense (hybrid stores opened with hybrid=False), "
                        "or default,dense (the default)")
    p.add_argument("--queries", type=count(1), default=1000, help="timed queries per measurement (default 1000)")
    p.add_argument("--warmup", type=count(0), default=100, help="untimed queries before them (default 100)")
    p.add_argument("--single-deposits", type=count(0), default=200, help="timed one-packet deposits (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the vectors, texts, payloads and filters (default 0)")
    p.add_argument("--cap", type=cap, action="append", default=[], metavar="TARGET=N",
                   help="largest N to run TARGET at (N or none); repeatable")
    p.add_argument("--gitbugs", default=None, help="GitBugs project folder (default $QIS_GITBUGS_DIR, else the Hadoop copy in data/gitbugs/)")
    p.add_argument("--out", default="results/bench", help="output folder (default results/bench)")
    p.add_argument("--no-plots", action="store_true", help="write no PNGs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--replot", action="store_true", help="measure nothing: redraw the PNGs from --out/query.csv")
    return p


def main(argv: list[str] | None = None):
    """Run the benchmark (or --replot) and write query.csv, run.json and the plots to --out."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    known = targets()
    missing = [f"{t}: {known[t].unavailable()}" for t in args.stores if known[t].unavailable()]
    if missing:
        parser().error("; ".join(missing))

    import pandas as pd

    from .embedding import PACKAGES as EMBED_PACKAGES, machine_info
    from .latency import print_overhead, run

    out = Path(args.out)
    if args.replot:
        if not (out / "query.csv").is_file():
            parser().error(f"--replot needs {out / 'query.csv'}, which does not exist")
        return draw(pd.read_csv(out / "query.csv"), out)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "qis_lib.bench", *argv])
    load_before, started = os.getloadavg(), time.perf_counter()
    skipped: list[dict] = []
    machine = {**machine_info(EMBED_PACKAGES + PACKAGES), "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "")}

    def run_info() -> dict:
        return {**machine, "load_before": " ".join(f"{x:.2f}" for x in load_before),
                "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                "duration_s": round(time.perf_counter() - started, 1),
                "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "command": command}

    partial = out / "query.partial.csv"  # rows so far: a run stopped midway keeps what it finished

    def keep(rows):
        rows.assign(**run_info()).to_csv(partial, index=False)

    per_query: list = []
    table = run(args.stores, args.sizes, args.vectors, queries=args.queries, warmup=args.warmup, seed=args.seed,
                single_deposits=args.single_deposits, gitbugs_path=args.gitbugs, progress=not args.no_progress,
                skipped=skipped, caps=dict(args.cap), on_rows=keep, raw=per_query, configs=args.configs)
    info = run_info()
    table = table.assign(**info)
    table.to_csv(out / "query.csv", index=False)
    partial.unlink(missing_ok=True)
    (out / "run.json").write_text(json.dumps({**info, "skipped": skipped, "data_credit": data_credit(args.vectors)},
                                             indent=2) + "\n")
    written = ["query.csv", "run.json"]
    if per_query:
        pd.concat(per_query, ignore_index=True).to_csv(out / "query_raw.csv.gz", index=False)
        written.append("query_raw.csv.gz")
    if not args.no_plots and len(table):
        draw(table, out)
        written += ["latency_vs_n.png", "recall_vs_n.png", "recall_vs_latency.png"]
    columns = ["target", "config", "vectors", "n", "filtered", "p50_ms", "p99_ms", "raw_p50_ms", "router_p50_ms",
               "router_added_ratio", "recall_at_10", "dense_overlap_at_10", "deposit_per_s"]
    with pd.option_context("display.width", 220, "display.max_columns", 20):
        print(table[columns].round(3).to_string(index=False) if len(table) else "no rows")
    if len(table):
        print_overhead(table)
    for item in skipped:
        print(f"skipped {item['target']} at n={item['n']} ({item['vectors']}): {item['why']}")
    print(f"wrote {', '.join(str(out / name) for name in written)} in {info['duration_s']:.0f} s")
    return table


def draw(table, out: Path):
    """Write latency_vs_n.png, recall_vs_n.png and recall_vs_latency.png for `table` into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import plot_latency_vs_n, plot_recall_vs_latency, plot_recall_vs_n

    for plot, name in ((plot_latency_vs_n, "latency_vs_n.png"), (plot_recall_vs_n, "recall_vs_n.png"),
                       (plot_recall_vs_latency, "recall_vs_latency.png")):
        plt.close(plot(table, out / name))
    return table


def data_credit(vectors) -> str | None:
    if "real" not in vectors:
        return None
    from ..infra.datasets import CREDIT

    return CREDIT


if __name__ == "__main__":
    main()
