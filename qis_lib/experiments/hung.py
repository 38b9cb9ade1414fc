"""Hung and slow servers: every client call must fail within its timeout (+1 s), naming the address.

A `StallingProxy` sits on a loopback port. With no target it is a server that accepts
connections and never answers. With a target (a real `chroma run`) it passes traffic
until it is told to `hang` (accept, read, never answer) or to be `slow` (answer, but
only after a delay longer than the client's timeout). Each case times one client call:

- Chroma: opening against a silent and a slow server; then, on a store opened through
  the proxy, upsert, query, get and count while the proxy hangs and while it is slow.
- Qdrant (qdrant-client, REST): opening against a silent and a slow node; and two node
  urls that both stall: the store tries one, then the next (each connection seen by its
  proxy) and fails naming both, within two timeouts (+1 s each).
- The routing service (`python -m qis_lib.serve`): Chroma's cases through its vector API
  (HttpStore), plus a deposit and a query through the agents' text API (RemoteRouter).

(No Qdrant server runs here, so a Qdrant store cannot be opened before its node stalls.)

    python -m qis_lib.experiments.hung --out results/reliability/
"""
from __future__ import annotations

import argparse
import contextlib
import secrets
import socket
import threading
import time
from typing import Callable

import numpy as np
import pandas as pd

from ..serve.process import RoutingService
from ..stores import QueryFilter, open_store
from .reliability.base import make_packet, save_results


class StallingProxy:
    """A loopback TCP server: `pass` (forward to target), `hang` (never answer) or `slow` (answer late)."""

    def __init__(self, target: tuple[str, int] | None = None, mode: str = "hang", delay: float = 0.0):
        self.target, self.mode, self.delay = target, mode, delay
        self.connections = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        if self.target is not None:
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                upstream = None
            else:
                self._open.append(upstream)
                threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, sink: socket.socket | None) -> None:
        """Copy source to sink while passing; while hanging, swallow; while slow, hold each chunk `delay` s."""
        while not self._stop.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.mode == "hang" or sink is None:
                continue
            if self.mode == "slow":
                time.sleep(self.delay)
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        for s in [self._sock, *self._open]:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> "StallingProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_client(name: str) -> None:
    """Import store `name` and its client library now: the cases time calls, not imports."""
    from ..stores import store_spec

    spec = store_spec(name)
    spec.load()
    for module in spec.requires:
        __import__(module)


def timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def _row(target: str, case: str, timeout: float, seconds: float, exc: BaseException | None, address: str,
         limit: float | None = None) -> dict:
    limit = timeout + 1.0 if limit is None else limit
    text = "" if exc is None else f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return {"target": target, "case": case, "timeout": timeout, "seconds": round(seconds, 2), "limit": limit,
            "failed": exc is not None, "within_limit": exc is not None and seconds <= limit,
            "names_address": address in text, "error": text[:300]}


def _open_cases(target: str, open_at, server: tuple[str, int], timeout: float) -> list[dict]:
    """Opening against a server that never answers, and against one that answers too late."""
    rows = []
    with StallingProxy(mode="hang") as silent:
        seconds, exc = timed(lambda: open_at(silent.url))
        rows.append(_row(target, "open, server silent", timeout, seconds, exc, silent.url))
    with StallingProxy(server, mode="slow", delay=timeout + 2) as slow:
        seconds, exc = timed(lambda: open_at(slow.url))
        rows.append(_row(target, f"open, server answers after {timeout + 2:.0f} s", timeout, seconds, exc, slow.url))
    return rows


def _call_cases(target: str, open_at, server: tuple[str, int], timeout: float) -> list[dict]:
    """On a store opened through a proxy in front of `server`: upsert, query, get and count
    while the proxy never answers, then while it answers only after the timeout."""
    rows = []
    packet = make_packet("hung", 0)
    for mode in ("hang", "slow"):
        with StallingProxy(server, mode="pass", delay=timeout + 2) as proxy:
            store = open_at(proxy.url, mode)
            vector = np.ones((1, store.dim), dtype=np.float32)
            calls = {
                "upsert": lambda s: s.upsert([packet.packet_id], vector, [packet.to_payload()]),
                "query": lambda s: s.query(vector[0], 5, QueryFilter(now=0.0)),
                "get": lambda s: s.get([packet.packet_id]),
                "count": lambda s: s.count(),
            }
            try:
                calls["upsert"](store)  # it answers while passing
                proxy.mode = mode
                for name, call in calls.items():
                    seconds, exc = timed(lambda: call(store))
                    what = "never answers" if mode == "hang" else f"answers after {timeout + 2:.0f} s"
                    rows.append(_row(target, f"{name}, server {what}", timeout, seconds, exc, proxy.url))
            finally:
                proxy.mode = "pass"
                store.close()
    return rows


def _address(url: str) -> tuple[str, int]:
    host, port = url.split("//")[1].rstrip("/").split(":")
    return host, int(port)


def chroma_cases(server_url: str, timeout: float = 2.0) -> list[dict]:
    """The Chroma cases, through proxies in front of the `chroma run` at `server_url`."""
    load_client("chroma")
    server = _address(server_url)
    rows = _open_cases("chroma", lambda url: open_store("chroma", url=url, timeout=timeout, dim=8), server, timeout)
    return rows + _call_cases("chroma", lambda url, mode: open_store("chroma", url=url, timeout=timeout, dim=8,
                                                                     collection=f"hung-{mode}"), server, timeout)


def http_cases(service_url: str, timeout: float = 2.0, api_key: str | None = None) -> list[dict]:
    """The routing service's cases, through proxies in front of the service at `service_url`
    (an admin `api_key` if it has keys): its vector API (HttpStore) as Chroma's, and the agents'
    text API (deposit, query)."""
    from ..core.router import make_router

    load_client("http")
    server = _address(service_url)
    dim = _service_dim(service_url)

    def open_at(url: str, mode: str = "open"):
        return open_store("http", url=url, timeout=timeout, dim=dim, namespace=f"hung-{mode}", api_key=api_key)

    rows = _open_cases("http", open_at, server, timeout) + _call_cases("http", open_at, server, timeout)
    packet = make_packet("hung", 1)
    for mode in ("hang", "slow"):
        with StallingProxy(server, mode="pass", delay=timeout + 2) as proxy:
            with make_router(proxy.url, timeout=timeout, api_key=api_key) as router:  # it connects (and checks) while passing
                proxy.mode = mode
                what = "never answers" if mode == "hang" else f"answers after {timeout + 2:.0f} s"
                for name, call in {"deposit (text)": lambda: router.deposit(packet),
                                   "query (text)": lambda: router.query(packet.problem_description, top_k=5)}.items():
                    seconds, exc = timed(call)
                    rows.append(_row("http", f"{name}, service {what}", timeout, seconds, exc, proxy.url))
    return rows


def _service_dim(url: str) -> int:
    """The service's vector size, asked through the project's own client (its errors name the address)."""
    from ..stores.http import ServiceClient

    with ServiceClient(url, timeout=30) as client:
        return int(client.call("GET", "/health")["dim"])


def qdrant_cases(timeout: int = 2) -> list[dict]:
    """The Qdrant cases: a silent node, a slow node, two stalling nodes in turn."""
    load_client("qdrant")
    rows = []
    with StallingProxy(mode="hang") as silent:
        seconds, exc = timed(lambda: open_store("qdrant", url=silent.url, timeout=timeout, dim=8))
        rows.append(_row("qdrant", "open, node silent", timeout, seconds, exc, silent.url))
    with StallingProxy(mode="hang") as upstream, StallingProxy(("127.0.0.1", upstream.port), mode="slow",
                                                               delay=timeout + 2) as slow:
        seconds, exc = timed(lambda: open_store("qdrant", url=slow.url, timeout=timeout, dim=8))
        rows.append(_row("qdrant", f"open, node answers after {timeout + 2} s", timeout, seconds, exc, slow.url))
    with StallingProxy(mode="hang") as first, StallingProxy(mode="hang") as second:
        seconds, exc = timed(lambda: open_store("qdrant", urls=[first.url, second.url], timeout=timeout, dim=8))
        row = _row("qdrant", "open, two node urls, both silent", timeout, seconds, exc, first.url,
                   limit=2 * (timeout + 1.0))
        row["names_address"] = row["names_address"] and second.url in row["error"]
        row["nodes_tried"] = int(first.connections > 0) + int(second.connections > 0)
        rows.append(row)
    return rows


def hung_runs(chroma_url: str | None = None) -> pd.DataFrame:
    rows = qdrant_cases()
    with contextlib.ExitStack() as stack:
        if chroma_url is None:
            from ..infra.servers import ChromaServer

            chroma_url = stack.enter_context(ChromaServer(start_timeout=120.0)).url
        rows += chroma_cases(chroma_url)
    key = secrets.token_urlsafe(24)
    with RoutingService("memory://", embedder="hash", api_key=key) as service:
        rows += http_cases(service.url, api_key=key)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    started = time.time()
    frame = hung_runs()
    print(frame.to_string(index=False))
    if args.out:
        save_results(frame, args.out, "hung.csv", "qis_lib.experiments.hung", argv, started)


if __name__ == "__main__":
    main()
