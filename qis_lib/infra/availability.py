"""Can a local Qdrant cluster start here, and with which launcher? (docker compose, or
`qdrant` processes); and if not, why not."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Availability:
    """Whether a local cluster can be started here; truthy when it can."""

    available: bool
    launcher: str | None  # "docker" or "process"
    reason: str

    def __bool__(self) -> bool:
        return self.available


def qdrant_executable(qdrant_bin: str | os.PathLike | None = None) -> str | None:
    """The qdrant executable: the argument, else $QDRANT_BIN, else `qdrant` on PATH; None if none."""
    candidate = qdrant_bin or os.environ.get("QDRANT_BIN")
    if candidate:
        return str(candidate) if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None
    return shutil.which("qdrant")


def docker_status(timeout: float = 15.0) -> tuple[bool, str]:
    """(usable, why): the docker CLI, a docker engine that answers, and the compose plugin."""
    docker = shutil.which("docker")
    if docker is None:
        return False, "no `docker` command on PATH"
    try:
        info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"`docker info` did not answer within {timeout:.0f}s"
    if info.returncode != 0 or not info.stdout.strip():
        detail = (info.stderr or info.stdout).strip().splitlines()
        return False, "the docker CLI is installed but no docker engine answers" + (f" ({detail[-1]})" if detail else "")
    compose = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=timeout)
    if compose.returncode != 0:
        return False, f"docker engine {info.stdout.strip()} answers, but `docker compose` is missing"
    return True, f"docker engine {info.stdout.strip()} with compose"


def cluster_available() -> Availability:
    """Can a local Qdrant cluster start here? A qdrant executable named by QDRANT_BIN wins,
    then a docker engine with compose, then `qdrant` on PATH."""
    if os.environ.get("QDRANT_BIN"):
        found = qdrant_executable()
        if found:
            return Availability(True, "process", f"qdrant executable {found} (QDRANT_BIN)")
        reasons = [f"QDRANT_BIN={os.environ['QDRANT_BIN']} is not an executable file"]
    else:
        reasons = []
    ok, why = docker_status()
    if ok:
        return Availability(True, "docker", why)
    reasons.append(why)
    found = shutil.which("qdrant")
    if found:
        return Availability(True, "process", f"qdrant executable {found} on PATH")
    if not os.environ.get("QDRANT_BIN"):
        reasons.append("no `qdrant` executable (set QDRANT_BIN or put it on PATH)")
    return Availability(False, None, "; ".join(reasons))


__all__ = ["Availability", "cluster_available", "docker_status", "qdrant_executable"]
