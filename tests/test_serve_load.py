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
