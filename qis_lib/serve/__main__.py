"""python -m qis_lib.serve --store STORE_URL [--host 127.0.0.1] [--port 8080] [--api-key KEY]"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..embedders import SERVICE_EMBEDDER
from ..stores.http import API_KEY_HEADER
from .app import DEFAULT_MAX_BODY

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
    parser.add_argument("--api-key", default=os.environ.get("QIS_API_KEY"),
                        help=f"require this key in the {API_KEY_HEADER} header (default: $QIS_API_KEY, else none)")
    parser.add_argument("--embedder", default=SERVICE_EMBEDDER,
                        help="embedder backend (default: qis_lib.embedders.SERVICE_EMBEDDER, else the fastest installed)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY,
                        help="larger request bodies are refused with 413 (default: %(default)s)")
    parser.add_argument("--max-namespaces", type=int, default=64)
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import uvicorn

    from ..embedders import get_embedder
    from .app import create_app
    from .namespaces import Namespaces

    namespaces = Namespaces(args.store, get_embedder(args.embedder), limit=args.max_namespaces)
    app = create_app(namespaces, api_key=args.api_key, max_body_bytes=args.max_body_bytes)
    reach = ("this machine only (loopback); pass --host 0.0.0.0 to accept other machines"
             if args.host in ("127.0.0.1", "localhost", "::1") else "other machines too")
    router = namespaces.default
    print(f"routing service: {router.store.name} store ({args.store}), embedder {router.embedder.name}, "
          f"on http://{args.host}:{args.port} ({reach}); "
          f"API key {'required' if args.api_key else 'not required'}; docs at /docs", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    finally:
        namespaces.close()  # flushes persistent stores on a clean stop (SIGTERM, Ctrl-C)
    return 0


if __name__ == "__main__":
    sys.exit(main())
