"""The load harness on a small run: agent processes against a live service, exact counts."""
import time

from qis_lib.experiments.http import bench
from qis_lib.experiments.http.load import loss_of, packet, run_over_http, split
from qis_lib.serve.process import RoutingService
from qis_lib.stores.http import HttpStore


def test_split_gives_every_agent_once():
    for agents, processes in ((1, 16), (16, 16), (1000, 16), (7, 3)):
        groups = split(agents, processes)
        assert sorted(a for g in groups for a in g) == list(range(agents))
        assert len(groups) == min(agents, processes) and max(map(len, groups)) - min(map(len, groups)) <= 1


def test_agent_processes_exact_counts(tmp_path):
    """4 agents in 2 processes: every deposit acknowledged and stored once, every question answered,
    and each finds the other agent's packet it asks about (ids agree across processes)."""
    with RoutingService("memory://", embedder="hash", folder=tmp_path) as service:
        results = run_over_http(service.url, "t", 4, 2, 3, 3, timeout=60)
        with HttpStore(service.url) as reader:
            check = bench.checks_of(results, loss_of(results, reader), "http", 4, queries_per_agent=3)
    assert check["ok"], check
    assert (check["sent"], check["acknowledged"], check["store_count"], check["answers"]) == (12, 12, 12, 12)
    assert check["target_in_top5"] == 12
    assert len(results.server_ms["query"]) == 12  # every answer carried the service's own time
    assert packet("t", 0, 0, 5.0).packet_id == packet("t", 0, 0, 5.0).packet_id != packet("t", 0, 0, 6.0).packet_id


def test_the_flood_experiment_measures_each_phase_and_the_connection_bound(tmp_path):
    from qis_lib.experiments.http import flood

    result = flood.run(queries=5, packets=20, flood_threads=2, half_open_n=30, max_connections=20, header_timeout=1.0,
                       embedder="hash", folder=tmp_path, log=lambda _: None)
    phases = {r["phase"]: r for r in result["phases"]}
    assert list(phases) == ["alone", "flood, default limits", "flood, no limits"]
    assert all(r["queries"] == 5 for r in phases.values())
    assert phases["flood, no limits"]["flood_refused_per_s"] == 0  # no limits: nothing refused
    assert phases["flood, default limits"]["flood_answered_per_s"] > 0
    c = result["connections"]
    # the bound of 20 holds the victim's connection and 19 half-open ones; the other 11 are refused at once
    assert (c["refused_503_at_once"], c["held_then_closed"], c["held_answered_408"]) == (11, 19, 19)
    assert "victim p99" in flood.describe(result)


def test_wrks_report_is_read_into_a_row():
    from qis_lib.experiments.http.capacity import parse_wrk

    out = """Running 6s test @ http://127.0.0.1:1
  2 threads and 64 connections
  Latency Distribution
     50%  140.14ms
     75%    1.20s
     90%    2.56s
     99%  950.00us
  7059 requests in 6.08s, 9.84MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 63
Requests/sec:   1161.00
"""
    row = parse_wrk(out)
    assert row == {"requests": 7059, "seconds": 6.08, "p50_ms": 140.14, "p90_ms": 2560.0, "p99_ms": 0.95,
                   "non_2xx": 63, "socket_errors": 5}
