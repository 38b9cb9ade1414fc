"""recall@10 against N, the companion of `latency.plot_latency_vs_n` (p99 against N)."""
from __future__ import annotations

import os

import pandas as pd

from . import data


def panel_title(filtered: bool) -> str:
    return "filtered (~4.5% pass)" if filtered else "unfiltered (expiry only)"


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


def finish(fig, axes, handles: list, labels: list, path, **legend):
    """The legend above the panels, the layout, and the PNG at `path` if given."""
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False, **legend)
    fig.tight_layout(rect=(0, 0, 1, 0.88 if len(axes) == 1 else 0.94))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_recall_vs_n(table: pd.DataFrame, path: str | os.PathLike | None = None):
    """recall@10 (mean over the timed queries, and the worst single query dotted) against N,
    log x: one line per target, one panel per (vector set, filtered)."""
    import matplotlib.pyplot as plt

    fig, axes, cells = panels(table, 3.6, sharex=True, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = list(dict.fromkeys(table["target"]))
    for ax, vectors, filtered, part in cells:
        for target, rows in part.groupby("target", sort=False):
            rows = rows.sort_values("n")
            colour = colours[order.index(target) % len(colours)]
            ax.plot(rows["n"], rows["recall_at_10"], "o-", color=colour, label=f"{target} (mean)")
            if "recall_min" in rows:
                ax.plot(rows["n"], rows["recall_min"], ":", color=colour, label=f"{target} (worst query)")
        ax.axhline(0.99, color="grey", ls="--", lw=1, label="0.99")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("recall@10 vs exact search")
    handles, labels = axes[0][0].get_legend_handles_labels()
    return finish(fig, axes, handles, labels, path, fontsize=8)
