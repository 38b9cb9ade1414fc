"""python -m qis_lib.serve --store STORE_URL [--auth FILE | --api-key KEY] [--audit FILE] [--ssl-certfile F --ssl-keyfile F]"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from ..embedders import SERVICE_EMBEDDER
from ..embedders.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS
from ..stores.http import API_KEY_HEADER
from .access import DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BODY, DEFAULT_REFUSAL_DELAY_S
from .gate import DEFAULT_THREADS
from .server import DEFAULT_HEADER_TIMEOUT_S

log = logging.getLogger("qis_lib.serve")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m qis_lib.serve", description=(
        "Serve one outcome router over HTTP: agents deposit and query text, the service embeds it. "
        "OpenAPI document at /openapi.json, docs page at /docs."))
    parser.add_argument("--store", default="qdrant-edge:///data/router",
                        help="store url or name: memory://, qdrant-edge:///PATH (persistent), chroma:///PATH, "
                             "qdrant://HOST:PORT[,HOST:PORT...] (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8080)
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--auth", default=os.environ.get("QIS_AUTH_FILE"), metavar="FILE",
                      help="the keys file: each key's id, role (agent, reader, admin), agent and limits (README, "
                           "'Who may do what'); read again on SIGHUP or when it changes (default: $QIS_AUTH_FILE)")
    keys.add_argument("--api-key", default=None,
                      help=f"one admin key, required in the {API_KEY_HEADER} header or as a bearer token "
                           "(default: $QIS_API_KEY; neither: no key needed, every caller is an admin)")
    parser.add_argument("--audit", default=None, metavar="FILE",
                        help="append one JSON line per write and per refused request (never a key)")
    parser.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--ssl-keyfile", default=None, help="... and this private key (PEM)")
    parser.add_argument("--embedder", default=SERVICE_EMBEDDER,
                        help="embedder backend (default: qis_lib.embedders.SERVICE_EMBEDDER, else the fastest installed)")
    parser.add_argument("--embedder-threads", type=int, default=None,
                        help="the ONNX embedder's intra-op threads (default: one per core)")
    parser.add_argument("--embedder-spinning", choices=("on", "off"), default="off",
                        help="ONNX Runtime's threads busy-wait between model calls (its default) or sleep "
                             "(this service's default: the event loop and the store need the cores meanwhile)")
    parser.add_argument("--batch-max", type=int, default=DEFAULT_MAX_BATCH,
                        help="texts of concurrent requests embedded together, at most this many a model call "
                             "(default: %(default)s)")
    parser.add_argument("--batch-wait-ms", type=float, default=DEFAULT_MAX_WAIT_MS,
                        help="an idle model waits this long for more texts before it runs (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="worker threads for the store and the model's callers (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY,
                        help="larger request bodies are refused with 413 (default: %(default)s)")
    parser.add_argument("--max-connections", type=int, default=None,
                        help="more open connections are answered 503 and closed (default: the open files this "
                             "process may have, less 256 for the store, at most 8,192)")
    parser.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S,
                        help="seconds a request's headers may take to arrive (default: %(default)s)")
    parser.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S,
                        help="seconds a request's body may take after its headers (default: %(default)s)")
    parser.add_argument("--refusal-delay", type=float, default=DEFAULT_REFUSAL_DELAY_S,
                        help="a request over its key's limits is answered 429 after this many seconds, so a client "
                             "retrying at once cannot turn refusals into load; 0: at once "
                             "(default: %(default)s)")
    parser.add_argument("--max-namespaces", type=int, default=64)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.api_key is None and args.auth is None:
        args.api_key = os.environ.get("QIS_API_KEY") or None
    for name in ("max_body_bytes", "max_connections", "header_timeout", "body_timeout", "max_namespaces", "batch_max",
                 "threads", "embedder_threads"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.batch_wait_ms <= 1000:
        parser.error(f"--batch-wait-ms must be from 0 to 1000, got {args.batch_wait_ms}")
    if args.refusal_delay < 0:
        parser.error(f"--refusal-delay must be 0 or more seconds, got {args.refusal_delay}")
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        parser.error("TLS needs both --ssl-certfile and --ssl-keyfile")
    return args


def main(argv=None, extend=None) -> int:
    """Run the service; `extend(app, args)`, if given, adds to the app before it serves
    (python -m qis_lib.mcp --http mounts its MCP endpoint this way)."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from .audit import Audit
    from .auth import AuthFile

    try:  # the keys first: a broken file stops the service before it opens the store
        auth = AuthFile(args.auth) if args.auth else None
    except ValueError as exc:
        print(f"routing service not started: {exc}", file=sys.stderr, flush=True)
        return 2
    from ..embedders import service_embedder
    from ..embedders.batching import BatchingEmbedder
    from .app import create_app
    from .namespaces import Namespaces
    from .server import serve

    model = service_embedder(args.embedder, threads=args.embedder_threads, spinning=args.embedder_spinning == "on")
    embedder = BatchingEmbedder(model, max_batch=args.batch_max, max_wait_ms=args.batch_wait_ms)
    namespaces = Namespaces(args.store, embedder, limit=args.max_namespaces)
    audit = Audit(args.audit)
    app = create_app(namespaces, api_key=args.api_key, auth=auth, audit=audit, max_body_bytes=args.max_body_bytes,
                     body_timeout=args.body_timeout, refusal_delay=args.refusal_delay, threads=args.threads)
    if auth is not None:
        signal.signal(signal.SIGHUP, lambda *_: auth.reload())
    scheme = "https" if args.ssl_certfile else "http"
    reach = ("this machine only (loopback); pass --host 0.0.0.0 to accept other machines"
             if args.host in ("127.0.0.1", "localhost", "::1") else "other machines too")
    keys = (f"{len(auth.credentials)} keys from {args.auth} (SIGHUP or a change reloads it)" if auth is not None
            else "one admin key (--api-key)" if args.api_key else "NO KEYS: every caller may do everything")
    router = namespaces.default
    print(f"routing service: {router.store.name} store ({args.store}), embedder {router.embedder.name} "
          f"(batches of up to {args.batch_max} texts, {args.batch_wait_ms:g} ms wait), "
          f"on {scheme}://{args.host}:{args.port} ({reach}); {keys}; docs at /docs", file=sys.stderr, flush=True)
    try:
        if extend is not None:
            extend(app, args)
        serve(app, args.host, args.port, log_level=args.log_level, ssl_certfile=args.ssl_certfile,
              ssl_keyfile=args.ssl_keyfile, max_connections=args.max_connections, header_timeout=args.header_timeout)
    finally:
        namespaces.close()  # flushes persistent stores on a clean stop (SIGTERM, Ctrl-C)
        embedder.close()
        audit.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
