"""The latency benchmark's plots: latency and recall@10 against N, recall against latency.

One line (or marker) per series: a target in one configuration (`config`, see
`qis_lib.bench.latency`), in the target's colour and marker (`qis_lib.bench.style`, the same in
every plot of the suite), dashed for a hybrid store's dense-only row.
Tables written before the `config` column are drawn one series per target. Hybrid rows have
no `recall_at_10` (see `latency`), so the recall plots show the dense rows only.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from . import data
from .style import log_axis, short_count, style_of


def panel_title(filtered: bool) -> str:
    return "filtered (~4.5% pass)" if filtered else "unfiltered (expiry only)"


def series_label(target: str, config) -> str:
    """The legend's name of a series: the target, with its configuration where it has two."""
    if not isinstance(config, str) or config in ("", "default (dense)"):
        return target
    return f"{target}, {config}"


def series(table: pd.DataFrame):
    """(label, style, line style, rows) per (target, config) in `table`, in the table's order;
    `style` is the target's colour and marker (`style_of`)."""
    configs = table["config"] if "config" in table else pd.Series("", index=table.index)
    for (target, config), rows in table.assign(config=configs.fillna("")).groupby(["target", "config"], sort=False):
        yield series_label(target, config), style_of(target), "--" if config == "dense" else "-", rows


def panels(table: pd.DataFrame, height: float, **subplots):
    """A figure with one panel per (vector set, filtered) present in `table`, each titled, with N
    on a log x axis ticked at the sizes measured; and the panels as (ax, vectors, filtered, the
    table's rows for that panel)."""
    import matplotlib.pyplot as plt

    sets = [v for v in data.VECTOR_SETS if v in set(table["vectors"])]
    fig, axes = plt.subplots(len(sets), 2, figsize=(11, height * len(sets)), squeeze=False, layout="constrained",
                             **subplots)
    cells = [(axes[r][c], vectors, filtered, table[(table["vectors"] == vectors) & (table["filtered"] == filtered)])
             for r, vectors in enumerate(sets) for c, filtered in enumerate((False, True))]
    for ax, vectors, filtered, part in cells:
        log_axis(ax, "x", ticks=sorted(set(table["n"])))  # the panels may share x: every size measured
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


def finish(fig, handles: list, labels: list, path, **legend):
    """The legend above the panels, in room the figure's constrained layout keeps for it (so it
    covers no data), and the PNG at `path` if given."""
    fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 5), frameon=False, **legend)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def dense_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows with a recall@10 (hybrid rows have none: their order is the fusion's)."""
    return table[table["recall_at_10"].notna()]


def plot_latency_vs_n(table: pd.DataFrame, path: str | os.PathLike | None = None, column: str = "p99_ms"):
    """Latency against N, log-log: one line per series, the exact numpy floor dashed, one
    panel per (vector set, filtered). Guide lines show the slope of O(N) and O(log N)."""
    fig, axes, cells = panels(table, 4.2, sharex=True)
    for ax, vectors, filtered, part in cells:
        for label, look, style, rows in series(part):
            rows = rows.sort_values("n")
            ax.plot(rows["n"], rows[column], linestyle=style, label=label, **look)
        floor = part.drop_duplicates("n").sort_values("n")
        floor_column = "numpy_p50_ms" if "p50" in column else "numpy_p99_ms"
        ax.plot(floor["n"], floor[floor_column], "k--", marker="_", markersize=12, label="exact numpy floor")
        if len(floor) > 1:  # slope guides anchored at the floor's smallest N
            n0, y0 = float(floor["n"].iloc[0]), float(floor[floor_column].iloc[0])
            ns = np.array(sorted(floor["n"]), dtype=float)
            ax.plot(ns, y0 * ns / n0, ":", color="grey", lw=1, label="∝ N")
            ax.plot(ns, y0 * np.log(ns) / np.log(n0), "-.", color="grey", lw=1, label="∝ log N")
        log_axis(ax, "y")
        ax.set_ylabel(f"{column.replace('_ms', '')} query latency (ms)")
    return finish(fig, *legend_entries(axes), path)


def plot_recall_vs_n(table: pd.DataFrame, path: str | os.PathLike | None = None):
    """recall@10 (mean over the timed queries, and the worst single query dotted) against N,
    log x: one line per dense series, one panel per (vector set, filtered)."""
    fig, axes, cells = panels(table, 3.6, sharex=True, sharey=True)
    for ax, vectors, filtered, part in cells:
        for label, look, style, rows in series(dense_rows(part)):
            rows = rows.sort_values("n")
            ax.plot(rows["n"], rows["recall_at_10"], linestyle=style, label=f"{label} (mean)", **look)
            if "recall_min" in rows:
                ax.plot(rows["n"], rows["recall_min"], linestyle=":", label=f"{label} (worst query)",
                        **style_of(rows["target"].iloc[0], markersize=4, fillstyle="none"))
        ax.axhline(0.99, color="grey", ls="--", lw=1, label="0.99")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("recall@10 vs exact search")
    return finish(fig, *legend_entries(axes), path, fontsize=8)


def plot_recall_vs_latency(table: pd.DataFrame, path: str | os.PathLike | None = None):
    """recall@10 against p99 latency, one marker per (dense series, N), one panel per filter setting;
    the target's marker filled for real vectors, hollow for random ones, each labelled with its N."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), squeeze=False, sharey=True, layout="constrained")
    dense = dense_rows(table)
    for c, filtered in enumerate((False, True)):
        ax = axes[0][c]
        part = dense[dense["filtered"] == filtered]
        for vectors, by_set in part.groupby("vectors", sort=False):
            for label, look, _, rows in series(by_set):
                fill = {} if vectors == "real" else {"facecolors": "none", "edgecolors": look["color"]}
                ax.scatter(rows["p99_ms"], rows["recall_at_10"], label=f"{label} ({vectors})", s=36,
                           **{**look, **fill})
                for _, row in rows.iterrows():
                    ax.annotate(short_count(row["n"]), (row["p99_ms"], row["recall_at_10"]), fontsize=7,
                                xytext=(4, -9), textcoords="offset points")
        ax.axhline(0.99, color="grey", ls=":", lw=1, label="target 0.99")
        if len(part):
            ax.margins(x=0.1)  # room for the size labels beside the outermost markers
            log_axis(ax, "x")
        lowest = dense["recall_at_10"].min() if len(dense) else 1.0
        ax.set_ylim(min(0.98, float(lowest) - 0.03), 1.01)
        ax.set_xlabel("p99 query latency (ms), store.query with the vector given")
        ax.set_title(panel_title(filtered))
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("recall@10 vs exact search (same filter)")
    return finish(fig, *legend_entries(axes), path, fontsize=8)
