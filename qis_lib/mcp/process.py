"""Starting the MCP server from Python: the stdio command an MCP client spawns, and the HTTP
service as a child process (for tests, notebooks and harnesses).

    params = stdio_parameters("memory://", agent="alice", embedder="hash")
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session: ...

    with McpService("memory://", auth="keys.json", embedder="hash") as service:
        ... streamable_http_client(service.mcp_url, http_client=...) ...
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from mcp.client.stdio import StdioServerParameters

from ..serve.process import RoutingService
from .http import PATH

ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding this qis_lib
# Variables the server needs from this process's environment: an MCP client passes the child only a
# few of its own (HOME, PATH, ...), so the model's offline switches and the cache folders go explicitly.
PASSED_ON = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "QIS_CACHE_DIR", "QIS_DATA_DIR", "ANONYMIZED_TELEMETRY")


def stdio_parameters(store: str, agent: str | None = None, role: str = "agent", embedder: str | None = None,
                     audit: str | os.PathLike | None = None) -> StdioServerParameters:
    """How an MCP client starts `python -m qis_lib.mcp` over stdio with this interpreter and this
    qis_lib: as `agent`, or as a reader (`role="reader"`, no agent)."""
    args = ["-m", "qis_lib.mcp", "--store", store]
    args += ["--agent", agent] if agent is not None else []
    args += ["--role", role] if role != "agent" else []
    args += ["--embedder", embedder] if embedder else []
    args += ["--audit", str(audit)] if audit else []
    env = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
    paths = [ROOT, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(filter(None, paths)))
    return StdioServerParameters(command=sys.executable, args=args, env=env)


class McpService(RoutingService):
    """`python -m qis_lib.mcp --http HOST:PORT` as a child process: the routing service with its
    MCP endpoint at `mcp_url` (same options as RoutingService)."""

    @property
    def mcp_url(self) -> str:
        return f"{self.url}{PATH}"

    def command(self) -> list[str]:
        service = super().command()
        head = [sys.executable, "-m", "qis_lib.serve", "--store", self.store, "--host", self.host, "--port",
                str(self.port)]
        if service[:len(head)] != head:
            raise RuntimeError(f"RoutingService.command() no longer starts with {head}: {service}")
        return [sys.executable, "-m", "qis_lib.mcp", "--store", self.store, "--http", f"{self.host}:{self.port}",
                *service[len(head):]]
