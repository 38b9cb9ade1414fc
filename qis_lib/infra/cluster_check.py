"""`make cluster-test`: the whole Qdrant cluster path in one command, for a machine with Docker.

    python -m qis_lib.infra.cluster_check [--out results/cluster-test] [--failover-seconds 40]

1. Checks that a docker engine with compose answers (else exits 2 saying why).
2. Brings docker-compose.yml's cluster up under its project name, or reuses the one already
   running from this compose file (started by hand, whatever its project name); waits until
   every node answers /readyz, the entry node sees every peer, and every replica of every
   collection is Active.
3. Runs, each with its output in OUT/<step>.log:
   - the store conformance suite on the `qdrant-server` mode (QDRANT_URL = the entry node),
   - the live cluster tests (tests/test_cluster.py),
   - the failover experiment's Qdrant cases (results under OUT/failover/).
4. Writes OUT/summary.json (each step's command, exit code, closing line, seconds), and
   brings the cluster down (`down -v`) only if step 2 started it.

Exits 0 when every step passed, 1 otherwise. Needs a clone of the repository (it runs the
tests in tests/).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .availability import docker_status
from .cluster import REPO_ROOT, DockerComposeCluster, compose_spec


@dataclass
class Step:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    returncode: int | None = None
    closing: str = ""
    seconds: float = 0.0
    log: str = ""


def plan(cluster: DockerComposeCluster, out: Path, failover_seconds: float, cases: str,
         python: str = sys.executable, select: str = "qdrant-server", preload: int = 1100,
         embedder: str | None = None) -> list[Step]:
    """The three steps against `cluster` (commands and environment; nothing runs)."""
    env = {"QDRANT_URL": cluster.url(cluster.entry), "QIS_COMPOSE_FILE": str(cluster.compose_file)}
    failover = [python, "-m", "qis_lib.experiments.failover", "qdrant", "--launcher", "docker",
                "--duration", f"{failover_seconds:g}", "--cases", cases, "--preload", str(preload),
                "--out", str(out / "failover")] + (["--embedder", embedder] if embedder else [])
    if failover_seconds < 60:  # the CLI's default outages (10-13 s, 30-33 s) need a 60 s run
        failover += ["--outages", f"{0.25 * failover_seconds:g}:{0.35 * failover_seconds:g}"]
    return [
        Step("server-conformance", [python, "-m", "pytest", "tests/test_conformance.py", "-k", select,
                                    "-q", "-p", "no:cacheprovider"], env),
        Step("live-cluster", [python, "-m", "pytest", "tests/test_cluster.py", "-q", "-p", "no:cacheprovider"], env),
        Step("failover", failover, env),
    ]


def run_step(step: Step, out: Path, cwd: Path = REPO_ROOT) -> Step:
    """Run one step, its output to OUT/<name>.log; record exit code, closing line and time."""
    log = out / f"{step.name}.log"
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") as f:
        done = subprocess.run(step.argv, cwd=cwd, env={**os.environ, **step.env}, stdout=f, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    step.seconds = round(time.monotonic() - start, 1)
    step.returncode = done.returncode
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    step.closing = lines[-1] if lines else ""
    step.log = str(log)
    return step


def main(argv: list[str] | None = None, compose_file: str | os.PathLike | None = None,
         cwd: Path = REPO_ROOT) -> int:
    p = argparse.ArgumentParser(prog="python -m qis_lib.infra.cluster_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/cluster-test")
    p.add_argument("--failover-seconds", type=float, default=40.0)
    p.add_argument("--cases", default="all", help="failover cases, comma list (default: all four)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for nodes and replicas")
    p.add_argument("--docker", default="docker")
    p.add_argument("--select", default="qdrant-server", help="pytest -k expression for the conformance step")
    p.add_argument("--preload", type=int, default=1100, help="packets deposited before each failover case")
    p.add_argument("--embedder", default=None, help="failover embedder (default: the real MiniLM model)")
    args = p.parse_args(argv)

    def say(text: str) -> None:
        print(f"cluster-test: {text}", flush=True)

    ok, why = docker_status()
    if not ok:
        say(f"cannot run: {why}")
        return 2
    say(why)
    out = Path(args.out)
    if not out.is_absolute():
        out = cwd / out
    out.mkdir(parents=True, exist_ok=True)
    cluster = DockerComposeCluster(compose_file, docker=args.docker, start_timeout=args.timeout)
    image = next(iter(compose_spec(cluster.compose_file)["services"].values())).get("image")
    reused = cluster.already_up()
    say(f"{'reusing the running' if reused else 'starting the'} cluster of {cluster.compose_file.name} "
        f"(compose project {cluster.project}, {image}, nodes {', '.join(cluster.urls)})")
    steps: list[Step] = []
    started = time.monotonic()
    with cluster:
        peers = cluster.wait_formed(args.timeout)
        collections = cluster.wait_all_replicas_active(args.timeout)
        leader = peers.loc[peers["is_leader"], "peer_id"].tolist()
        say(f"{len(peers)} peers ready, leader peer {leader[0] if leader else '?'}; "
            f"{len(collections)} collection(s), every replica Active")
        for n, step in enumerate(plan(cluster, out, args.failover_seconds, args.cases, select=args.select,
                                            preload=args.preload, embedder=args.embedder), 1):
            say(f"[{n}/3] {step.name}: {' '.join(step.argv[1:])}")
            run_step(step, out, cwd)
            say(f"[{n}/3] {step.name}: {'passed' if step.returncode == 0 else 'FAILED'} in {step.seconds:.0f}s: "
                f"{step.closing}")
            steps.append(step)
        if not reused:
            say(f"bringing the cluster down (docker compose -p {cluster.project} down -v)")
    summary = {"compose_file": str(cluster.compose_file), "project": cluster.project, "image": image,
               "reused_running_cluster": reused, "docker": why, "python": platform.python_version(),
               "cpus": os.cpu_count(), "seconds": round(time.monotonic() - started, 1),
               "steps": [asdict(s) for s in steps]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [s.name for s in steps if s.returncode != 0]
    say(f"{'FAILED: ' + ', '.join(failed) if failed else 'all 3 steps passed'}; wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
