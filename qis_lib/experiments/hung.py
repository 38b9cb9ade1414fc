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

(No Qdrant server runs here, so a Qdrant store cannot be opened before its node stalls;
the HTTP routing service, once it is a registered store, gets the same cases.)

    python -m qis_lib.experiments.hung --out results/reliability/
"""
from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time
from typing import Callable

import numpy as np
import pandas as pd

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


def chroma_cases(server_url: str, timeout: float = 2.0) -> list[dict]:
    """The Chroma cases, through proxies in front of the `chroma run` at `server_url`."""
    rows = []
    host, port = server_url.split("//")[1].split(":")
    with StallingProxy(mode="hang") as silent:
        seconds, exc = timed(lambda: open_store("chroma", url=silent.url, timeout=timeout, dim=8))
        rows.append(_row("chroma", "open, server silent", timeout, seconds, exc, silent.url))
    with StallingProxy((host, int(port)), mode="slow", delay=timeout + 2) as slow:
        seconds, exc = timed(lambda: open_store("chroma", url=slow.url, timeout=timeout, dim=8))
        rows.append(_row("chroma", f"open, server answers after {timeout + 2:.0f} s", timeout, seconds, exc, slow.url))
    packet = make_packet("hung", 0)
    vector = np.ones((1, 8), dtype=np.float32)
    calls = {
        "upsert": lambda s: s.upsert([packet.packet_id], vector, [packet.to_payload()]),
        "query": lambda s: s.query(vector[0], 5, QueryFilter(now=0.0)),
        "get": lambda s: s.get([packet.packet_id]),
        "count": lambda s: s.count(),
    }
    for mode in ("hang", "slow"):
        with StallingProxy((host, int(port)), mode="pass", delay=timeout + 2) as proxy:
            store = open_store("chroma", url=proxy.url, timeout=timeout, dim=8, collection=f"hung-{mode}")
            try:
                store.upsert([packet.packet_id], vector, [packet.to_payload()])  # it answers while passing
                proxy.mode = mode
                for name, call in calls.items():
                    seconds, exc = timed(lambda: call(store))
                    what = "never answers" if mode == "hang" else f"answers after {timeout + 2:.0f} s"
                    rows.append(_row("chroma", f"{name}, server {what}", timeout, seconds, exc, proxy.url))
            finally:
                proxy.mode = "pass"
                store.close()
    return rows


def qdrant_cases(timeout: int = 2) -> list[dict]:
    """The Qdrant cases: a silent node, a slow node, two stalling nodes in turn."""
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


# Each target's cases: a function giving rows as `_row` makes them. The HTTP routing
# service gets an entry here once it is a registered store (open, deposit, query through a
# StallingProxy in front of it, as chroma_cases does for `chroma run`).


def hung_runs(chroma_url: str | None = None) -> pd.DataFrame:
    from ..stores import store_spec

    for name in ("qdrant", "chroma"):  # import the clients first: the cases time calls, not imports
        store_spec(name).load()
        for module in store_spec(name).requires:
            __import__(module)
    rows = qdrant_cases()
    with contextlib.ExitStack() as stack:
        if chroma_url is None:
            from ..infra.servers import ChromaServer

            chroma_url = stack.enter_context(ChromaServer(start_timeout=120.0)).url
        rows += chroma_cases(chroma_url)
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
