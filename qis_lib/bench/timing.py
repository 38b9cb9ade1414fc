"""Time repeated calls and summarise them as percentiles.

    times = time_calls(lambda q: store.query(q, 10, flt), queries, warmup=5)
    summary_table({"no index": before, "index": after}, baseline="no index")

The caller decides what one call is; this module only runs it, after a few untimed
warm-up calls (caches, lazy imports, first-touch allocations), and reports
percentiles computed by numpy. Compare figures taken in the same run: absolute
times on a shared 2-core machine are noisy.
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
