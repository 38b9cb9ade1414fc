"""The latency benchmark's plots: latency and recall@10 against N, recall against latency.

One line (or marker) per series: a target in one configuration (`config`, see
`qis_lib.bench.latency`), coloured by target, dashed for a hybrid store's dense-only row.
Tables written before the `config` column are drawn one series per target. Hybrid rows have
no `recall_at_10` (see `latency`), so the recall plots show the dense rows only.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from . import data
from ..stores import all_modes


def panel_title(filtered: bool) -> str:
    return "filtered (~4.5% pass)" if filtered else "unfiltered (expiry only)"


def series_label(target: str, config) -> str:
    """The legend's name of a series: the target, with its configuration where it has two."""
    if not isinstance(config, str) or config in ("", "default (dense)"):
        return target
    return f"{target}, {config}"


def series(table: pd.DataFrame):
    """(label, colour, line style, rows) per (target, config) in `table`, in the table's order."""
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [mode.bench for _, mode in all_modes().values() if mode.bench]
    names += [t for t in dict.fromkeys(table["target"]) if t not in names]
    configs = table["config"] if "config" in table else pd.Series("", index=table.index)
    for (target, config), rows in table.assign(config=configs.fillna("")).groupby(["target", "config"], sort=False):
        yield (series_label(target, config), cycle[names.index(target) % len(cycle)],
               "--" if config == "dense" else "-", rows)


def panels(table: pd.DataFrame, height: float, **subplots):
    """A figure with one panel per (vector set, filtered) present in `table`, each titled, with N
    on a log x axis ticked at the sizes measured; and the panels as (ax, vectors, filtered, the
    table's rows for that panel)."""
    import matplotlib.pyplot as plt

    sets = [v for v in data.VECTOR_SETS if v in set(table["vectors"])]
    fig, axes = plt.subplots(len(sets), 2, figsize=(11, height * len(sets)), squeeze=False, **subplots)
    cells = [(axes[r][c], vectors, filtered, table[(table["vectors"] == vectors) & (table["filtered"] == filtered)])
             for r, vectors in enumerate(sets) for c, filtered in enumerate((False, True))]
    for ax, vectors, filtered, part in cells:
        ax.set_xscale("log")
        ax.set_xticks(sorted(set(part["n"])), [f"{n:,}" for n in sorted(set(part["n"]))])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_title(f"{vectors} vectors, {panel_title(filtered)}")
        ax.set_xlabel("N (points in the store)")
        ax.grid(True, which="both", alpha=0.3)
    return fig, axes, cells


def legend_entries(axes) -> tuple[list, list]:
    """Every labelled line of every panel, once (a series may run in some panels only)."""
    handles, labels = [], []
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    return handles, labels


def finish(fig, axes, handles: list, labels: list, path, **legend):
    """The legend above the panels, the layout, and the PNG at `path` if given."""
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False, **legend)
    fig.tight_layout(rect=(0, 0, 1, 0.88 if len(axes) == 1 else 0.94))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def dense_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows with a recall@10 (hybrid rows have none: their order is the fusion's)."""
    return table[table["recall_at_10"].notna()]


def plot_latency_vs_n(table: pd.DataFrame, path: str | os.PathLike | None = None, column: str = "p99_ms"):
    """Latency against N, log-log: one line per series, the exact numpy floor dashed, one
    panel per (vector set, filtered). Guide lines show the slope of O(N) and O(log N)."""
    import matplotlib.pyplot as plt

    fig, axes, cells = panels(table, 4.2, sharex=True)
    for ax, vectors, filtered, part in cells:
        for label, colour, style, rows in series(part):
            rows = rows.sort_values("n")
            ax.plot(rows["n"], rows[column], "o" + style, color=colour, label=label)
        floor = part.drop_duplicates("n").sort_values("n")
        floor_column = "numpy_p50_ms" if "p50" in column else "numpy_p99_ms"
        ax.plot(floor["n"], floor[floor_column], "k--", label="exact numpy floor")
        if len(floor) > 1:  # slope guides anchored at the floor's smallest N
            n0, y0 = float(floor["n"].iloc[0]), float(floor[floor_column].iloc[0])
            ns = np.array(sorted(floor["n"]), dtype=float)
            ax.plot(ns, y0 * ns / n0, ":", color="grey", lw=1, label="∝ N")
            ax.plot(ns, y0 * np.log(ns) / np.log(n0), "-.", color="grey", lw=1, label="∝ log N")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{y:g}"))
        ax.set_ylabel(f"{column.replace('_ms', '')} query latency (ms)")
    return finish(fig, axes, *legend_entries(axes), path)


def plot_recall_vs_n(table: pd.DataFrame, path: str | os.PathLike | None = None):
    """recall@10 (mean over the timed queries, and the worst single query dotted) against N,
    log x: one line per dense series, one panel per (vector set, filtered)."""
    fig, axes, cells = panels(table, 3.6, sharex=True, sharey=True)
    for ax, vectors, filtered, part in cells:
        for label, colour, style, rows in series(dense_rows(part)):
            rows = rows.sort_values("n")
            ax.plot(rows["n"], rows["recall_at_10"], "o" + style, color=colour, label=f"{label} (mean)")
            if "recall_min" in rows:
                ax.plot(rows["n"], rows["recall_min"], ":", color=colour, label=f"{label} (worst query)")
        ax.axhline(0.99, color="grey", ls="--", lw=1, label="0.99")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("recall@10 vs exact search")
    return finish(fig, axes, *legend_entries(axes), path, fontsize=8)


def plot_recall_vs_latency(table: pd.DataFrame, path: str | os.PathLike | None = None):
    """recall@10 against p99 latency, one marker per (dense series, N), one panel per filter setting."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), squeeze=False, sharey=True)
    markers = {"real": "o", "random": "x"}
    dense = dense_rows(table)
    for c, filtered in enumerate((False, True)):
        ax = axes[0][c]
        part = dense[dense["filtered"] == filtered]
        for vectors, by_set in part.groupby("vectors", sort=False):
            for label, colour, _, rows in series(by_set):
                ax.scatter(rows["p99_ms"], rows["recall_at_10"], color=colour, marker=markers.get(vectors, "o"),
                           label=f"{label} ({vectors})")
                for _, row in rows.iterrows():
                    ax.annotate(f"{row['n'] / 1000:g}k", (row["p99_ms"], row["recall_at_10"]), fontsize=7,
                                xytext=(3, -9), textcoords="offset points")
        ax.axhline(0.99, color="grey", ls=":", lw=1, label="target 0.99")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        lowest = dense["recall_at_10"].min() if len(dense) else 1.0
        ax.set_ylim(min(0.98, float(lowest) - 0.03), 1.01)
        ax.set_xlabel("p99 query latency (ms), transport.query with the vector given")
        ax.set_title(panel_title(filtered))
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("recall@10 vs exact search (same filter)")
    handles, labels = legend_entries(axes)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
