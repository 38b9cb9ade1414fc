"""One colour and marker per store in every plot (qis_lib/bench/style.py), readable log ticks, and
the benchmark's and the failover experiment's plots drawn with them."""
import os
import subprocess
import sys

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from qis_lib.bench.plots import plot_latency_vs_n, plot_recall_vs_latency, plot_recall_vs_n  # noqa: E402
from qis_lib.bench.style import (FALLBACK_MARKERS, MUTED, STORES, log_axis, log_ticks, plain_number,  # noqa: E402
                                 short_count, store_name, style_of)
from qis_lib.experiments.failover import timeline_plot  # noqa: E402
from qis_lib.stores import all_modes  # noqa: E402


def test_every_store_mode_and_benchmark_target_has_its_own_look():
    names = {name for name in all_modes()} | {mode.bench for _, mode in all_modes().values() if mode.bench}
    assert {n for n in names if store_name(n) not in STORES} == set()
    pairs = list(STORES.values())
    assert len(set(pairs)) == len(pairs) and len({c for c, _ in pairs}) == len(pairs)  # a colour each
    assert {c for c, _ in pairs} <= set(MUTED.values())
    assert style_of("qdrant-memory") == style_of("qdrant") == {"color": MUTED["purple"], "marker": "D"}
    assert style_of("Qdrant-Edge", linestyle="--") == {"color": MUTED["rose"], "marker": "s", "linestyle": "--"}


def test_an_unknown_store_gets_a_look_of_its_own_that_every_run_repeats():
    look = style_of("mystore")
    assert look["color"] in MUTED.values() and look["marker"] in FALLBACK_MARKERS
    assert (look["color"], look["marker"]) not in STORES.values()
    code = "from qis_lib.bench.style import style_of; print(style_of('mystore'))"
    for seed in ("1", "2"):  # not Python's salted hash: the same in every process
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert out.strip() == str(look)


@pytest.mark.parametrize("x, label", [(0.05, "0.05"), (1.0, "1"), (250.0, "250"), (1000.0, "1,000"),
                                      (100_000.0, "100,000"), (1e6, "1M"), (2.5e6, "2.5M")])
def test_plain_numbers(x, label):
    assert plain_number(x) == label


def test_short_counts():
    assert [short_count(n) for n in (500, 1000, 10_000, 2_500_000)] == ["500", "1k", "10k", "2.5M"]


@pytest.mark.parametrize("lo, hi, ticks", [
    (0.1, 10, [0.1, 0.2, 0.5, 1, 2, 5, 10]),
    (0.04, 120, [0.1, 0.3, 1, 3, 10, 30, 100]),
    (1, 1e6, [1, 10, 100, 1000, 1e4, 1e5, 1e6]),
    (0.45, 1.3, [0.5, 0.6, 0.7, 0.8, 1]),
    (2, 3, [2, 2.25, 2.5, 2.75, 3]),
])
def test_log_ticks(lo, hi, ticks):
    assert log_ticks(lo, hi) == pytest.approx(ticks)


def test_log_ticks_and_axes_refuse_bad_input():
    with pytest.raises(ValueError, match="0 < lo < hi, got lo=0"):
        log_ticks(0, 10)
    with pytest.raises(ValueError, match="which must be 'x' or 'y', got 'z'"):
        log_axis(plt.figure().add_subplot(), "z")
    plt.close("all")


def labels(axis):
    return [t.get_text() for t in axis.get_ticklabels()]


def test_log_axis_labels_are_plain_numbers():
    fig, ax = plt.subplots()
    ax.plot([1000, 10_000, 1_000_000], [0.05, 3, 200])
    log_axis(ax, "x", ticks=[1000, 10_000, 1_000_000])
    log_axis(ax, "y")
    fig.canvas.draw()
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert labels(ax.xaxis) == ["1,000", "10,000", "1M"]
    assert labels(ax.yaxis) == ["0.1", "0.3", "1", "3", "10", "30", "100", "300"]  # 0.04-300 with the margins
    plt.close(fig)


def bench_table():
    rows = []
    for target, config in (("memory", "default (dense)"), ("qdrant-edge", "default (hybrid)"), ("qdrant-edge", "dense"),
                           ("chroma", "default (dense)")):
        for n in (1000, 10_000):
            for filtered in (False, True):
                hybrid = config == "default (hybrid)"
                rows.append({"target": target, "config": config, "vectors": "random", "n": n, "filtered": filtered,
                             "p50_ms": n / 5000, "p99_ms": n / 2000, "numpy_p50_ms": n / 8000, "numpy_p99_ms": n / 4000,
                             "recall_at_10": None if hybrid else 0.95, "recall_min": None if hybrid else 0.8})
    return pd.DataFrame(rows)


def drawn(fig):
    """{label: (colour, marker)} of every line and scatter of a figure."""
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            out[line.get_label()] = (to_hex(line.get_color()), line.get_marker())
        for points in ax.collections:
            face, edge = points.get_facecolor(), points.get_edgecolor()
            rgba = face[0] if len(face) and face[0][3] > 0 else edge[0] if len(edge) else None
            if rgba is not None:
                out[points.get_label()] = (to_hex(rgba), None)
    return out


def test_the_benchmark_plots_draw_each_store_in_its_own_look():
    table = bench_table()
    looks = {t: (style_of(t)["color"], style_of(t)["marker"]) for t in ("memory", "qdrant-edge", "chroma")}
    latency = drawn(plot_latency_vs_n(table))
    assert latency["memory"] == looks["memory"] and latency["chroma"] == looks["chroma"]
    assert latency["qdrant-edge, default (hybrid)"] == latency["qdrant-edge, dense"] == looks["qdrant-edge"]
    assert latency["exact numpy floor"][0] == "#000000"
    recall = drawn(plot_recall_vs_n(table))
    assert recall["qdrant-edge, dense (mean)"] == looks["qdrant-edge"]
    assert recall["qdrant-edge, dense (worst query)"] == looks["qdrant-edge"]
    scatter = drawn(plot_recall_vs_latency(table))
    assert scatter["memory (random)"][0] == looks["memory"][0] and scatter["chroma (random)"][0] == looks["chroma"][0]
    plt.close("all")


def test_the_failover_timeline_draws_the_store_in_its_own_look():
    t = np.arange(0, 20, 0.5)
    ops = pd.DataFrame({"start": t, "latency": 0.01 + 0.001 * t, "kind": ["deposit", "query"] * 20,
                        "outcome": ["ok"] * 30 + ["error"] * 5 + ["ok"] * 5, "node": "n1"})
    events = pd.DataFrame({"t": [14.0, 16.0, 17.0], "event": ["kill", "restart", "ready"], "outage": [1, 1, 1]})
    fig = timeline_plot(ops, events, title="chroma", store="chroma-server")
    colours = drawn(fig)
    assert colours["deposit ok"][0] == colours["query ok"][0] == style_of("chroma-server")["color"]
    assert colours["error (5)"][0] == "#000000"
    assert fig.axes[0].get_yscale() == "log" and "chroma-server" in fig.axes[0].get_title()
    plt.close(fig)


def test_the_failover_timeline_draws_into_a_callers_axes():
    fig, (left, right) = plt.subplots(1, 2)
    ops = pd.DataFrame({"start": [0.0, 1.0], "latency": [0.01, 0.02], "kind": ["deposit", "query"],
                        "outcome": ["ok", "ok"], "node": ["a", "b"]})
    events = pd.DataFrame({"t": [], "event": [], "outage": []})
    assert timeline_plot(ops, events, ax=right, store="qdrant-cluster") is fig
    labels = right.get_legend_handles_labels()[1]
    assert labels == ["deposit ok via a", "query ok via b"]  # two nodes answered: one shade each
    deposit, query = right.collections[:2]
    node_a, node_b = to_hex(deposit.get_facecolor()[0]), to_hex(query.get_edgecolor()[0])
    assert node_a != node_b and style_of("qdrant-server")["color"] not in (node_a, node_b)  # shades of it
    assert deposit.get_paths()[0].vertices.shape == query.get_paths()[0].vertices.shape  # one marker
    plt.close(fig)
