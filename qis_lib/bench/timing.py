"""Time repeated calls and summarise them as percentiles.

    times = time_calls(lambda q: store.query(q, 10, flt), queries, warmup=5)
    summary_table({"no index": before, "index": after}, baseline="no index")
    both = time_interleaved({"router": via_router, "raw": via_engine}, range(1000))
    paired_difference(both["router"], both["raw"])  # median per-query difference and ratio

The caller decides what one call is; this module only runs it, after a few untimed
warm-up calls (caches, lazy imports, first-touch allocations), and reports
percentiles computed by numpy. Compare figures taken in the same run: absolute
times on a shared 2-core machine are noisy. Two calls compared query by query
(`time_interleaved`, `paired_difference`) see the same moment of the machine, so a
burst of load from elsewhere falls on both and a small difference survives it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

PERCENTILES = (50, 95, 99)
UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6}


def time_calls(fn: Callable, inputs: Iterable[Any] | None = None, *, repeat: int | None = None, warmup: int = 3,
               clock: Callable[[], float] = time.perf_counter) -> np.ndarray:
    """Seconds taken by each call, as a float array.

    With `inputs`, calls fn(x) once per input, timed; the first `warmup` inputs are
    also used, untimed, for the warm-up. Without, calls fn() `repeat` times.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if (inputs is None) == (repeat is None):
        raise ValueError("give either inputs (fn(x) per input) or repeat (fn() that many times), not both")
    if inputs is None:
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
        calls: Sequence[tuple] = [()] * repeat
    else:
        calls = [(x,) for x in inputs]
        if not calls:
            raise ValueError("inputs is empty: nothing to time")
    for i in range(warmup):
        fn(*calls[i % len(calls)])
    times = np.empty(len(calls), dtype=np.float64)
    for i, args in enumerate(calls):
        start = clock()
        fn(*args)
        times[i] = clock() - start
    return times


def time_interleaved(fns: Mapping[str, Callable[[Any], object]], inputs: Iterable[Any],
                     orders: Sequence[Sequence[str]] | None = None, *, clock: Callable[[], float] = time.perf_counter,
                     progress: Callable[[int], object] | None = None, every: int = 100) -> dict[str, np.ndarray]:
    """Seconds taken by each fn on each input, the fns run back to back on one input before
    the next input: input t runs them in the order `orders[t % len(orders)]` (each order
    names every fn once; default: each fn first in turn, the others rotated after it).
    `progress(n)` is called after every `every` inputs (and at the end), outside the clock."""
    names = list(fns)
    if not names or not all(callable(fn) for fn in fns.values()):
        raise ValueError(f"fns must map names to callables, got {dict(fns)!r}")
    orders = [names[i:] + names[:i] for i in range(len(names))] if orders is None else [list(o) for o in orders]
    bad = [o for o in orders if sorted(o) != sorted(names)]
    if not orders or bad:
        raise ValueError(f"each order must name every fn once ({names}), got {bad or orders}")
    inputs = list(inputs)
    if not inputs:
        raise ValueError("inputs is empty: nothing to time")
    times = {name: np.empty(len(inputs), dtype=np.float64) for name in names}
    reported = 0
    for t, x in enumerate(inputs):
        for name in orders[t % len(orders)]:
            fn = fns[name]
            start = clock()
            fn(x)
            times[name][t] = clock() - start
        if progress is not None and (t + 1 - reported == every or t + 1 == len(inputs)):
            progress(t + 1 - reported)
            reported = t + 1
    return times


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                      unit: str = "us") -> dict[str, float]:
    """a against b, input by input (a[i] and b[i] timed on the same input): `median_diff` is the
    median of a[i] - b[i] in `unit`, `median_ratio` the median of (a[i] - b[i]) / b[i] (0.08: a
    takes 8% longer than b on the median input). Times in seconds, as from `time_interleaved`."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {sorted(UNITS)}, got {unit!r}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"a and b must be 1-d and of one length, one time per input: shapes {a.shape} and {b.shape}")
    if not (b > 0).all():
        raise ValueError("every time in b must be > 0 seconds (it divides)")
    diff = a - b
    return {f"median_diff_{unit}": float(np.median(diff) * UNITS[unit]), "median_ratio": float(np.median(diff / b))}


def summarise(times: Sequence[float] | np.ndarray, unit: str = "ms",
              percentiles: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """n, mean and percentiles (numpy's default linear interpolation) of times in seconds."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {sorted(UNITS)}, got {unit!r}")
    values = np.asarray(times, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"times must be a non-empty 1-d sequence of seconds, got shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("times must be finite and >= 0 seconds")
    scaled = values * UNITS[unit]
    out = {"n": int(values.size), f"mean_{unit}": float(scaled.mean())}
    for p, value in zip(percentiles, np.percentile(scaled, percentiles)):
        out[f"p{p:g}_{unit}"] = float(value)
    return out


def summary_table(samples: Mapping[str, Sequence[float] | np.ndarray], baseline: str | None = None,
                  unit: str = "ms", percentiles: Sequence[float] = PERCENTILES) -> pd.DataFrame:
    """One row per label. With `baseline`, adds each percentile as a ratio to the baseline's
    (baseline / this: above 1 means faster than the baseline)."""
    if not samples:
        raise ValueError("samples is empty")
    if baseline is not None and baseline not in samples:
        raise ValueError(f"baseline {baseline!r} is not one of the labels {list(samples)}")
    table = pd.DataFrame({label: summarise(t, unit, percentiles) for label, t in samples.items()}).T
    table["n"] = table["n"].astype(int)
    table.index.name = "label"
    if baseline is not None:
        for p in percentiles:
            column = f"p{p:g}_{unit}"
            table[f"speedup_p{p:g}"] = table.loc[baseline, column] / table[column]
    return table
