"""One look per store in every plot, and log axes with ticks a reader can read.

Every plot of the suite (the benchmark's, the failover timeline, the notebooks') draws a store in
the colour and marker `style_of(name)` gives, so "qdrant-edge" is the same rose square everywhere.
The colours are Paul Tol's "muted" scheme, nine colours told apart with the common forms of
colour blindness (https://personal.sron.nl/~pault/); the marker tells two stores apart a second way.

    ax.plot(ns, p99, label="qdrant-edge", **style_of("qdrant-edge"))
    log_axis(ax, "y")             # ticks 0.1, 0.2, 0.5, 1, 2, 5 ... or 1, 10, 100, 1,000, not 10^0
    log_axis(ax, "x", ticks=ns)   # ticks exactly at the sizes measured: 1,000  10,000  100,000  1M

Names are the store modes' (`qis_lib.stores.all_modes()`) and the benchmark targets'; other
spellings of a store (`qdrant-memory`, `chroma-path`, the failover experiment's `qdrant-cluster`)
are aliases of one of them. A name not listed gets a colour of the same scheme and a marker no
listed store uses, chosen from a CRC of the name: the same in every run and on every machine.
Black and greys are left for what is no store (the exact-search floor, guide lines, errors).
"""
from __future__ import annotations

import math
import zlib

MUTED = {"indigo": "#332288", "cyan": "#88ccee", "teal": "#44aa99", "green": "#117733", "olive": "#999933",
         "sand": "#ddcc77", "rose": "#cc6677", "wine": "#882255", "purple": "#aa4499"}

STORES = {
    "memory": (MUTED["indigo"], "o"),
    "qdrant-edge": (MUTED["rose"], "s"),
    "qdrant": (MUTED["purple"], "D"),  # qdrant-client's local mode
    "qdrant-server": (MUTED["wine"], "^"),
    "qdrant-server-grpc": (MUTED["olive"], "v"),
    "chroma": (MUTED["green"], "P"),  # embedded
    "chroma-server": (MUTED["teal"], "X"),
    "http": (MUTED["cyan"], "h"),  # the routing service over a memory store
    "http-edge": (MUTED["sand"], "p"),  # the routing service over a qdrant-edge folder
}
ALIASES = {"qdrant-memory": "qdrant", "qdrant-path": "qdrant", "qdrant-local": "qdrant",
           "qdrant-cluster": "qdrant-server", "chroma-path": "chroma", "chroma-ephemeral": "chroma",
           "chroma-embedded": "chroma", "numpy": "memory"}
FALLBACK_MARKERS = ("*", "<", ">", "8", "H", "d")  # none of them a listed store's


def store_name(name: str) -> str:
    """The listed store a name stands for (itself if listed or unknown)."""
    key = str(name).strip().lower()
    return ALIASES.get(key, key)


def style_of(name: str, **overrides) -> dict:
    """Keyword arguments for `ax.plot` or `ax.scatter` that draw store `name` in its own colour and
    marker ({"color": ..., "marker": ...}), `overrides` on top (a linestyle, a size)."""
    key = store_name(name)
    if key in STORES:
        colour, marker = STORES[key]
    else:
        h = zlib.crc32(key.encode())
        colours = list(MUTED.values())
        colour, marker = colours[h % len(colours)], FALLBACK_MARKERS[(h // len(colours)) % len(FALLBACK_MARKERS)]
    return {"color": colour, "marker": marker, **overrides}


def plain_number(x: float, _pos=None) -> str:
    """A tick label without powers of ten: 0.05, 1, 250, 1,000, 100,000, 1M, 2.5M."""
    if x >= 1e6 and (x / 1e6) == round(x / 1e6, 3):
        return f"{x / 1e6:g}M"
    if x >= 1000 and float(x).is_integer():
        return f"{x:,.0f}"
    return f"{x:g}"


def short_count(n: float) -> str:
    """A count in a few characters, for labels beside points: 500, 1k, 10k, 2.5M."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:g}{suffix}"
    return f"{n:g}"


def log_ticks(lo: float, hi: float, max_ticks: int = 9) -> list[float]:
    """Ticks for a log axis from `lo` to `hi`: over about a decade, 1, 1.5, 2, 3, ... 8 in it; over
    more, 1-2-5 in each decade when that gives at most `max_ticks`, else 1-3, else one a decade
    (every second or third decade over a wide span); over a span too narrow for any of those, a
    few evenly spaced round values (matplotlib's MaxNLocator)."""
    from matplotlib.ticker import MaxNLocator

    if not (lo > 0 and hi > lo):
        raise ValueError(f"log_ticks needs 0 < lo < hi, got lo={lo!r}, hi={hi!r}")
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))

    def at(subs, step=1):
        return [float(f"{m}e{e}") for e in range(first, last + 1, step) for m in subs if lo <= float(f"{m}e{e}") <= hi]

    ticks = at((1, 1.5, 2, 3, 4, 5, 6, 7, 8))
    if not 3 <= len(ticks) <= max_ticks:
        ticks = next((t for t in (at((1, 2, 5)), at((1, 3)), at((1,))) if len(t) <= max_ticks), None) \
            or at((1,), math.ceil((last - first + 1) / max_ticks))
    if len(ticks) < 2:
        ticks = [float(t) for t in MaxNLocator(nbins=4).tick_values(lo, hi) if lo <= t <= hi]
    return ticks


def log_axis(ax, which: str = "y", ticks=None, max_ticks: int = 9):
    """Make an axis of `ax` logarithmic with plain tick labels: at `ticks` if given (the sizes a
    run measured), else at `log_ticks` over the axis' current limits (call it after plotting)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    if which not in ("x", "y"):
        raise ValueError(f"which must be 'x' or 'y', got {which!r}")
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    if ticks is None:
        lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
        ticks = log_ticks(lo, hi, max_ticks)
    axis.set_major_locator(FixedLocator(sorted(set(float(t) for t in ticks))))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())
    return ax
