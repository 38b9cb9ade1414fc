"""A routing service process on a free loopback port, started and stopped by its user.

    with RoutingService("memory://") as service:
        router = make_router(service.url)

`kill()` sends SIGKILL (a crash), `stop()` SIGTERM (uvicorn finishes the requests in flight
and the store is closed, so flushed); `restart()` starts it again on the same port and store.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..infra.servers import ServerProcess, free_port, wait_until


class RoutingService(ServerProcess):
    """`python -m qis_lib.serve` as a child process (its output in `log_path`).

    `api_key`: one admin key; `auth`: a keys file (--auth); `audit`: the audit file;
    `tls`: (certfile, keyfile) to serve HTTPS, with `ca_file` the authority this side trusts."""

    def __init__(self, store: str = "memory://", host: str = "127.0.0.1", port: int | None = None,
                 api_key: str | None = None, embedder: str | None = None, folder: str | os.PathLike | None = None,
                 start_timeout: float = 120.0, args: tuple[str, ...] = (), auth: str | os.PathLike | None = None,
                 audit: str | os.PathLike | None = None, tls: tuple[str, str] | None = None,
                 ca_file: str | os.PathLike | None = None):
        if api_key and auth:
            raise ValueError("give api_key or auth, not both")
        self.store, self.host, self.api_key, self.embedder = store, host, api_key, embedder
        self.auth, self.audit, self.tls, self.ca_file = auth, audit, tls, ca_file
        self.port = port or free_port(host)
        self.start_timeout = start_timeout
        self.args = tuple(args)
        folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = str(folder / f"qis-serve-{self.port}.log")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "qis_lib.serve", "--store", self.store, "--host", self.host,
               "--port", str(self.port), *self.args]
        if self.embedder:
            cmd += ["--embedder", self.embedder]
        if self.auth:
            cmd += ["--auth", str(self.auth)]
        if self.audit:
            cmd += ["--audit", str(self.audit)]
        if self.tls:
            cmd += ["--ssl-certfile", str(self.tls[0]), "--ssl-keyfile", str(self.tls[1])]
        return cmd

    def healthy(self, timeout: float = 1.0) -> bool:
        import httpx

        from ..stores.http import tls_verify

        return httpx.get(f"{self.url}/health", timeout=timeout, verify=tls_verify(self.ca_file)).status_code == 200

    def start(self) -> "RoutingService":
        """Start the service (if not running) and return once /health answers."""
        if self.running:
            return self
        # The child imports the same qis_lib as this process, wherever it was started from.
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        env.pop("QIS_API_KEY", None)
        env.pop("QIS_AUTH_FILE", None)  # only the keys given here
        if self.api_key:
            env["QIS_API_KEY"] = self.api_key  # not on the command line, where `ps` shows it
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"the routing service exited with {self.process.returncode}; see {self.log_path}")
            return self.healthy()

        try:
            wait_until(up, self.start_timeout, f"the routing service on {self.url}", interval=0.1)
        except RuntimeError:
            raise
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}; see {self.log_path}") from None
        return self

    def __enter__(self) -> "RoutingService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
