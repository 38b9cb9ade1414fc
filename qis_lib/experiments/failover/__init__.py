"""Failover experiments: a steady load on a store, a server killed and restarted under it,
and a check that every acknowledged deposit is still there afterwards.

    from qis_lib.experiments.failover import ChromaTarget, LoadSpec, run_failover
    with ChromaServer() as server:
        result = run_failover(ChromaTarget(server), get_embedder(), LoadSpec(duration=40, outages=((10, 13),)))
    result.summary(); result.recovery(); result.loss; result.plot()

    python -m qis_lib.experiments.failover chroma --out results/failover          # a `chroma run` server
    python -m qis_lib.experiments.failover qdrant --out results/failover_qdrant   # a 3-node Qdrant cluster

The load is open-loop: operation i is due at i/rate seconds, handed to thread i % threads,
a deposit or a query by a seeded coin. Every operation is recorded (when it started, how
long it took, ok/error/timeout, which node answered). A deposit counts as acknowledged
only when the store returned without error; its id then goes to an append-only ledger.
After the last restart, when the target says it has recovered, every id in the ledger must
come back from `get` with the payload that was sent. Deposits that failed were never
acknowledged and are not lost if missing; deposits that timed out are indeterminate (the
write may or may not have happened) and are counted apart.

A SIGKILL shows survival of a process crash only; it says nothing about power loss.

The package: `load` (LoadSpec, the packets and the schedule), `targets` (what is killed),
`errors` (timeout or error), `run` (run_failover and the Qdrant cases), `report` (the
tables and the plot), `cli`. The ledger and the loss check are `qis_lib.experiments.ledger`,
shared with the reliability experiments.
"""
from __future__ import annotations

from ..ledger import Ledger, LossReport, check_loss
from .errors import classify, describe_error, is_timeout
from .load import OP_COLUMNS, LoadSpec, Schedule, make_packet, seed_texts
from .report import PHASES, FailoverResult, recovery_times, summarise, timeline_plot, with_phases
from .run import QDRANT_CASES, FailoverRun, StopTime, compare, run_failover, run_qdrant_cases
from .targets import ChromaTarget, FailoverTarget, QdrantClusterTarget

__all__ = ["OP_COLUMNS", "PHASES", "QDRANT_CASES", "ChromaTarget", "FailoverResult", "FailoverRun", "FailoverTarget",
           "Ledger", "LoadSpec", "LossReport", "QdrantClusterTarget", "Schedule", "StopTime", "check_loss", "classify",
           "compare", "describe_error", "is_timeout", "make_packet", "recovery_times", "run_failover",
           "run_qdrant_cases", "seed_texts", "summarise", "timeline_plot", "with_phases"]
