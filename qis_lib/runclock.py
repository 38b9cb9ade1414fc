"""What a notebook's first and last cells say about its own run: how long it took, and how quiet
the machine was when it started and when it ended.

    CLOCK = RunClock()      # first code cell
    ...
    CLOCK.show()            # last code cell: a Markdown line rendered from this run's values

A figure measured while other work shares the cores says little about this machine; the line
says so when the 1-minute load average at the start was above `QUIET_LOAD` (2 on these 2-core
machines), so the run's timings are compared only with each other, never with a quiet run's.
"""
from __future__ import annotations

import os
import time

QUIET_LOAD = 2.0


def load_1min() -> float:
    """The 1-minute load average now."""
    return os.getloadavg()[0]


class RunClock:
    """Started when made: `report()` is the run's time and its load average at start and end."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.load_at_start = load_1min()

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def report(self) -> str:
        minutes = self.elapsed_s / 60
        took = f"{minutes:.1f} min" if minutes >= 1 else f"{self.elapsed_s:.0f} s"
        line = (f"This run took {took} on {os.cpu_count()} cores; the 1-minute load average was "
                f"{self.load_at_start:.2f} when it started and {load_1min():.2f} at its end.")
        if self.load_at_start > QUIET_LOAD:
            line += (f" It started above {QUIET_LOAD:g}: other work shared the cores, so compare its timings "
                     "with each other, not with a quiet run's.")
        return line

    def show(self) -> None:
        """Display `report()` as Markdown (in a notebook), else print it."""
        try:
            from IPython.display import Markdown, display
        except ImportError:  # pragma: no cover - IPython ships with the notebooks' requirements
            print(self.report())
            return
        display(Markdown(self.report()))
