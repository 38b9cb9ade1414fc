"""`make cluster-test` (qis_lib.infra.cluster_check) and DockerComposeCluster's project handling,
run here with recording Qdrant nodes standing in for the containers and a fake `docker` on
PATH (tests/fake_docker.py) taking the compose commands.

If one of these fails: `docker.calls` lists every docker command that ran, in order.
"""
import json
import os

import pytest
import yaml

from fake_docker import FakeDocker
from qdrant_fake import FakeCluster
from qis_lib.infra import cluster_check
from qis_lib.infra.cluster import COMPOSE_FILE, DockerComposeCluster, compose_spec
from qis_lib.infra.servers import free_port

NAMES = ["qdrant_node1", "qdrant_node2", "qdrant_node3"]


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """docker-compose.yml with its host ports moved to three recording nodes (not started yet),
    and a fake docker engine that drives them."""
    cluster = FakeCluster(names=NAMES)
    spec = compose_spec(COMPOSE_FILE)
    for name in NAMES:
        # the gRPC host port: a free one (port + 1 may be another recording node's port)
        spec["services"][name]["ports"] = [f"{cluster.servers[name].port}:6333", f"{free_port()}:6334"]
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(yaml.safe_dump(spec))
    with FakeDocker(tmp_path, compose, cluster) as docker:
        monkeypatch.setenv("PATH", f"{docker.bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("QIS_COMPOSE_FILE", str(compose))
        monkeypatch.delenv("QDRANT_BIN", raising=False)
        yield cluster, docker, compose
    cluster.down()


def test_the_compose_file_names_its_project():
    assert compose_spec(COMPOSE_FILE)["name"] == "qis-qdrant"


def test_a_cluster_started_by_hand_is_adopted_not_fought_over(stand_in):
    cluster, docker, compose = stand_in
    docker.running_project = "qis-routing"  # `docker compose up -d` in a clone named qis-routing
    for name in NAMES:
        cluster.start(name)
    with DockerComposeCluster() as c:
        assert c.reused and c.project == "qis-routing"
        c.kill("qdrant_node3")
        c.start("qdrant_node3")
    assert docker.projects() == {"qis-routing"}
    assert ["down", "-v"] not in docker.compose_calls()  # left running, as it was found
    assert all(cluster.running(n) for n in NAMES)


def test_a_fresh_cluster_is_started_under_the_file_name_and_brought_down(stand_in):
    cluster, docker, compose = stand_in
    with DockerComposeCluster() as c:
        assert not c.reused and c.project == "qis-qdrant"
        assert len(c.peers()) == 3
    assert docker.compose_calls() == [["up", "-d", "qdrant_node1"], ["up", "-d", "qdrant_node2", "qdrant_node3"],
                                      ["down", "-v"]]
    assert not any(cluster.running(n) for n in NAMES)


def test_ports_held_by_something_else_are_a_clear_error(stand_in):
    cluster, docker, compose = stand_in
    cluster.start("qdrant_node1")  # a Qdrant on 6333 that no compose project of this file runs
    with pytest.raises(OSError, match=rf"host port\(s\) \[{cluster.servers['qdrant_node1'].port}"):
        DockerComposeCluster().up(timeout=5)
    assert docker.compose_calls() == []  # nothing was started


def test_cluster_check_without_docker_says_why(stand_in, capsys, tmp_path):
    cluster, docker, compose = stand_in
    docker.engine = False
    assert cluster_check.main(["--out", str(tmp_path / "out")]) == 2
    assert "cannot run: the docker CLI is installed but no docker engine answers" in capsys.readouterr().out


def test_cluster_check_plan_runs_the_server_mode_the_cluster_tests_and_the_failover_cases(stand_in, tmp_path):
    from qis_lib.stores import all_modes

    cluster, docker, compose = stand_in
    steps = cluster_check.plan(DockerComposeCluster(), tmp_path, 40, "all")
    assert [s.name for s in steps] == ["server-conformance", "live-cluster", "failover"]
    conformance, live, failover = steps
    assert conformance.env["QDRANT_URL"] == cluster.url("qdrant_node1")  # the server mode runs, not skips
    assert conformance.argv[conformance.argv.index("-k") + 1] in all_modes()
    assert conformance.env["QIS_COMPOSE_FILE"] == str(compose)  # the tests drive the same cluster
    assert (cluster_check.REPO_ROOT / live.argv[live.argv.index("pytest") + 1]).exists()
    assert failover.argv[failover.argv.index("--outages") + 1] == "10:14"  # inside a 40 s run
    assert failover.argv[failover.argv.index("--launcher") + 1] == "docker"


def test_failover_cli_kills_the_entry_node_through_compose_and_loses_nothing(stand_in, tmp_path, capsys):
    """python -m qis_lib.experiments.failover qdrant --launcher docker, one short case: clients move
    on to the next node while the entry node is killed (`docker compose kill`), and every
    acknowledged deposit is found on every node afterwards."""
    import pandas as pd

    from qis_lib.experiments.failover import cli

    cluster, docker, compose = stand_in
    out = tmp_path / "failover"
    cli.main(["qdrant", "--launcher", "docker", "--cases", "kill-entry-rf2", "--duration", "3", "--rate", "12",
              "--threads", "2", "--outages", "0.8:2", "--preload", "20", "--embedder", "hash", "--out", str(out)])
    loss = pd.read_csv(out / "kill-entry-rf2" / "loss.csv")
    assert set(loss["verifier"]) == set(NAMES) and (loss["lost"] == 0).all() and (loss["acknowledged"] > 20).all()
    ops = pd.read_csv(out / "kill-entry-rf2" / "ops.csv")
    events = pd.read_csv(out / "kill-entry-rf2" / "events.csv").set_index("event")["t"]
    during = ops[(ops["start"] > events["killed"]) & (ops["start"] < events["restart"])]
    assert len(during) and (during["outcome"] == "ok").all() and "qdrant_node1" not in set(during["node"])
    calls = docker.compose_calls()
    assert ["kill", "-s", "SIGKILL", "qdrant_node1"] in calls and ["start", "qdrant_node1"] in calls
    assert calls[-1] == ["down", "-v"]  # the CLI started the cluster, so it brought it down
    assert cluster.problems() == []


def quick_steps(fail: str | None = None):
    """Stand-in steps: real subprocesses that check what each real step is handed."""
    import sys

    real_plan = cluster_check.plan

    def plan(cluster, out, failover_seconds, cases, **options):
        check = ("import os, sys, httpx; "
                 "assert httpx.get(os.environ['QDRANT_URL'] + '/readyz').status_code == 200; "
                 "assert os.path.exists(os.environ['QIS_COMPOSE_FILE']); print('1 passed in 0.1s')")
        steps = real_plan(cluster, out, failover_seconds, cases, **options)
        for step in steps:
            step.argv = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)" if step.name == fail else check]
        return steps
    return plan


def test_cluster_check_starts_waits_runs_writes_and_stops(stand_in, tmp_path, capsys, monkeypatch):
    cluster, docker, compose = stand_in
    monkeypatch.setattr(cluster_check, "plan", quick_steps())
    out = tmp_path / "results"
    assert cluster_check.main(["--out", str(out), "--timeout", "20"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == ["server-conformance", "live-cluster", "failover"]
    assert all(s["returncode"] == 0 and s["closing"] == "1 passed in 0.1s" for s in summary["steps"])
    assert summary["project"] == "qis-qdrant" and summary["reused_running_cluster"] is False
    assert docker.compose_calls() == [["up", "-d", "qdrant_node1"], ["up", "-d", "qdrant_node2", "qdrant_node3"],
                                      ["down", "-v"]]
    assert "cluster-test: 3 peers ready, leader peer 101; 0 collection(s), every replica Active" in printed
    assert "cluster-test: all 3 steps passed" in printed


def test_cluster_check_reuses_a_running_cluster_and_reports_a_failed_step(stand_in, tmp_path, capsys, monkeypatch):
    cluster, docker, compose = stand_in
    docker.running_project = "by-hand"
    cluster.up()
    monkeypatch.setattr(cluster_check, "plan", quick_steps(fail="live-cluster"))
    out = tmp_path / "results"
    assert cluster_check.main(["--out", str(out), "--timeout", "20"]) == 1
    printed = capsys.readouterr().out
    assert "reusing the running cluster of docker-compose.yml (compose project by-hand" in printed
    assert "[2/3] live-cluster: FAILED" in printed and "FAILED: live-cluster" in printed
    assert (out / "live-cluster.log").read_text() == "boom\n"
    assert ["down", "-v"] not in docker.compose_calls() and all(cluster.running(n) for n in NAMES)


def test_the_makefile_target_runs_cluster_check():
    makefile = (cluster_check.REPO_ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\ncluster-test:"):].split("\n\n")[0]
    assert "-m qis_lib.infra.cluster_check" in target and "results/cluster-test" in target


@pytest.mark.skipif(not os.environ.get("QIS_CLUSTER_CHECK_E2E"),
                    reason="the whole command with its real steps takes minutes on a loaded 2-core machine: "
                           "set QIS_CLUSTER_CHECK_E2E=1 to run it")
def test_cluster_check_runs_every_step_and_writes_results(stand_in, tmp_path, capsys):
    """The whole command on the stand-in: up, wait, the three steps (a few conformance tests,
    the live cluster tests, one short failover case), summary.json, down."""
    cluster, docker, compose = stand_in
    out = tmp_path / "results"
    code = cluster_check.main(["--out", str(out), "--failover-seconds", "4", "--cases", "kill-entry-rf2",
                               "--select", "qdrant-server and (starts_empty or packets_come_back)", "--timeout", "30",
                               "--preload", "30", "--embedder", "hash"])
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    with capsys.disabled():
        print(printed, {name: s["seconds"] for name, s in steps.items()}, os.getloadavg())
    assert code == 0, printed + "\n".join(open(s["log"]).read()[-1500:] for s in summary["steps"])
    assert steps["server-conformance"]["closing"].startswith("2 passed")
    assert "passed" in steps["live-cluster"]["closing"] and "skipped" not in steps["live-cluster"]["closing"]
    assert (out / "failover" / "kill-entry-rf2" / "loss.csv").exists() and (out / "failover" / "compare.csv").exists()
    assert summary["project"] == "qis-qdrant" and summary["reused_running_cluster"] is False
    calls = docker.compose_calls()
    assert calls[0] == ["up", "-d", "qdrant_node1"] and calls[-1] == ["down", "-v"]
    assert ["kill", "-s", "SIGKILL", "qdrant_node1"] in calls  # the failover case killed the entry node
    assert "cluster-test: all 3 steps passed" in printed
    assert cluster.problems() == []
