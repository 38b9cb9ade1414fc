"""Reliability experiments: many agents at once, and a writer killed in the middle of a stream.

The standard: a deposit is *acknowledged* when `deposit()` returned; it is *lost* if a
later read, after recovery, does not see it. Every experiment keeps a ledger of
acknowledged ids and checks each one afterwards with `qis_lib.experiments.ledger.check_loss`
(the same check the failover experiment makes). A SIGKILL test covers a crash of the
process only, not a power loss.

The stores come from the registry: the concurrent load runs on every mode that can run
here, the crash runs and the kill cycles on those whose store is persistent (a reopen must
find the data). A store served over HTTP (the routing service) joins them by being a
registered mode: if its options come from a server in the ModeContext's pool that has
kill() and start(), the kill cycles kill that server too (plan "server").

    python -m qis_lib.experiments.reliability cycles --cycles 200 --out results/reliability/  # kill cycles
    python -m qis_lib.experiments.reliability processes --out results/reliability/          # history check
    python -m qis_lib.experiments.reliability table                                         # README table

    python -m qis_lib.experiments.reliability --out results/reliability/   # every experiment, a CSV summary
"""
from .base import VolatileStoreError, WORDS, _run_module, check_hits, check_stream, concurrent_load, crash_runs, kill_writer, load_runs, make_packet, mode_options, mode_router, runnable_modes, save_results, write_stream  # noqa: F401
from .children import KILL_PLANS, _Child, _ForkedChild, _drain, _forked_cycle, _print, cycle_child, preload_client  # noqa: F401
from .cycles import CYCLE_COLUMNS, KillCycles, _killable_server, cycles_summary, kill_cycles  # noqa: F401
from .history import agents_child, outcome_of, processes_run  # noqa: F401
from .cli import _minutes, main, persistent_modes, results_table, run_cycles_cli  # noqa: F401
