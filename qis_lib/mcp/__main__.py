"""python -m qis_lib.mcp: the outcome router's tools for MCP hosts (LLM agents).

    python -m qis_lib.mcp --store URL --agent ID [--role reader]          # stdio: the MCP host starts it
    python -m qis_lib.mcp --store URL --http HOST:PORT --auth keys.json   # streamable HTTP at /mcp

Over stdio the router runs in this process over the store url and every call acts as the one
caller fixed here: agent ID (deposits as ID, deletes only ID's packets), or a reader (queries
and reads only). Over HTTP this is the routing service (`python -m qis_lib.serve`, every option
of which it takes) with its MCP endpoint at /mcp beside /v1: the key of each request decides
its agent and role, with the service's keys file, limits and audit file.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys

from ..stores.folders import StoreBusyError, StoreDamagedError


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m qis_lib.mcp", description=(
        "Serve the outcome router's tools (deposit_outcome, query_outcomes, synthesize, get_packet, "
        "delete_my_packets) over MCP: on stdio as one agent, or with --http on the routing service's port at /mcp, "
        "where each request's key decides who calls. With --http, any other option of python -m qis_lib.serve "
        "(--auth, --api-key, --audit, TLS, limits) is passed on to it."))
    parser.add_argument("--store", required=True,
                        help="store url or name: memory://, qdrant-edge:///PATH (persistent), chroma:///PATH, "
                             "qdrant://HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--agent", default=None, help="stdio: the agent id every call acts as (--role agent)")
    parser.add_argument("--role", choices=("agent", "reader"), default=None,
                        help="stdio: 'agent' (deposit, synthesize, delete its own packets, query, read; the default) "
                             "or 'reader' (query and read only)")
    parser.add_argument("--http", default=None, metavar="HOST:PORT",
                        help="serve streamable HTTP at http://HOST:PORT/mcp (and the routing service's /v1) "
                             "instead of stdio")
    parser.add_argument("--embedder", default=None, help="embedder backend (default: the fastest installed)")
    parser.add_argument("--audit", default=None, metavar="FILE",
                        help="append one JSON line per write and per refused call (never a key)")
    parser.add_argument("--log-level", default="info")
    args, rest = parser.parse_known_args(argv)
    if args.http is None:
        args.role = args.role or "agent"
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)} (options of the routing service go with --http)")
        if args.role == "agent" and (args.agent is None or not args.agent.strip()):
            parser.error("--agent ID is required with --role agent: the agent id every call acts as")
        if args.role == "reader" and args.agent is not None:
            parser.error("--agent is for --role agent; a reader acts as no agent")
    else:
        if args.agent is not None or args.role is not None:
            parser.error("--agent and --role are for stdio; over --http each request's key decides its agent and role")
        host, _, port = args.http.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            parser.error(f"--http must be HOST:PORT (e.g. 127.0.0.1:8080), got {args.http!r}")
        args.host, args.port = host.strip("[]"), int(port)
    return args, rest


def serve_http(args: argparse.Namespace, rest: list[str]) -> int:
    """The routing service with the MCP endpoint mounted (qis_lib.mcp.http)."""
    from ..serve.__main__ import main as serve_main
    from .http import PATH, mount

    def extend(app, service_args) -> None:
        mount(app, host=service_args.host)
        scheme = "https" if service_args.ssl_certfile else "http"
        print(f"MCP endpoint (streamable HTTP, stateless, the service's keys): "
              f"{scheme}://{args.http}{PATH}", file=sys.stderr, flush=True)

    argv = ["--store", args.store, "--host", args.host, "--port", str(args.port), "--log-level", args.log_level]
    argv += (["--embedder", args.embedder] if args.embedder else []) + (["--audit", args.audit] if args.audit else [])
    return serve_main(argv + rest, extend=extend)


def serve_stdio(args: argparse.Namespace) -> int:
    """One MCP client on stdin/stdout, as the caller of --agent / --role."""
    from ..embedders import get_embedder
    from ..serve.audit import Audit
    from ..serve.gate import Caller, Gate
    from ..serve.namespaces import Namespaces
    from .server import build_server

    try:  # stdout is the MCP channel: what opening the store or the model prints goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            namespaces = Namespaces(args.store, get_embedder(args.embedder), limit=1)
    except (ValueError, ImportError, OSError, StoreBusyError, StoreDamagedError) as exc:
        print(f"MCP server not started: {exc}", file=sys.stderr, flush=True)
        return 2
    audit = Audit(args.audit)
    caller = Caller(None, args.role, args.agent)
    router = namespaces.default
    print(f"qis-routing MCP server on stdio: {router.store.name} store ({args.store}), embedder "
          f"{router.embedder.name}; every call as {caller.describe()}", file=sys.stderr, flush=True)
    # An MCP host ends the server by closing stdin (a clean return) or with SIGTERM: both close the store.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        build_server(Gate(namespaces, audit), caller).run("stdio")
    except KeyboardInterrupt:
        pass
    finally:
        namespaces.close()  # flushes a persistent store
        audit.close()
    return 0


def main(argv=None) -> int:
    args, rest = parse_args(argv)
    if args.http is not None:
        return serve_http(args, rest)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return serve_stdio(args)


if __name__ == "__main__":
    sys.exit(main())
