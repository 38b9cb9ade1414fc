"""Server processes that tests, notebooks and experiments start and stop themselves."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..stores.chroma import heartbeat_problem


def wait_until(check, timeout: float, what: str, interval: float = 0.25):
    """Call check() until it returns something truthy, and return that.

    Exceptions from check() count as "not yet" (a server still starting answers with all
    sorts of errors); if `timeout` seconds pass first, raise TimeoutError naming `what`
    and the last error seen.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # a node still starting answers with all sorts of errors
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s{detail}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def chroma_executable() -> str:
    """The `chroma` command of the running interpreter's environment, else PATH's."""
    candidate = Path(sys.executable).with_name("chroma")
    found = str(candidate) if candidate.exists() else shutil.which("chroma")
    if not found:
        raise FileNotFoundError("no `chroma` command: pip install chromadb (it ships `chroma run`)")
    return found


class ServerProcess:
    """A server in a child process (`self.process`): the subclass writes `start()`; `kill()` is a
    crash (SIGKILL), `stop()` a clean stop (SIGTERM, then SIGKILL after `timeout`)."""

    process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to flush or clean up."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> "ServerProcess":
        self.stop()
        return self.start()

    def start(self) -> "ServerProcess":
        raise NotImplementedError


class ChromaServer(ServerProcess):
    """A `chroma run` process on a free loopback port, with its data in `path`.

    with ChromaServer() as server:
        router = make_router("chroma", url=server.url)

    `kill()` sends SIGKILL (a crash), `restart()` starts it again on the same port and path.
    """

    def __init__(self, path: str | os.PathLike | None = None, port: int | None = None, host: str = "127.0.0.1",
                 start_timeout: float = 30.0):
        self._tmpdir = tempfile.mkdtemp(prefix="qis-chroma-") if path is None else None
        self.path = str(path) if path is not None else self._tmpdir
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.log_path = os.path.join(tempfile.gettempdir(), f"qis-chroma-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def heartbeat(self, timeout: float = 1.0) -> bool:
        return heartbeat_problem(self.url, timeout) is None

    def start(self) -> "ChromaServer":
        """Start `chroma run` (if not running) and return once its heartbeat answers."""
        if self.running:
            return self
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [chroma_executable(), "run", "--path", self.path, "--host", self.host, "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # our Ctrl-C does not reach it; stop() ends it
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self.process.returncode}; see {self.log_path}")
            if self.heartbeat():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"chroma run did not answer on {self.url} within {self.start_timeout}s; see {self.log_path}")

    def close(self) -> None:
        self.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> "ChromaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
