"""The child processes of the kill cycles: each opens the store, checks the ledger, writes as
its plan says and is killed; started fresh or forked from a preloaded fork server."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


from ...core.router import make_router
from ..ledger import check_loss
from .base import _run_module, make_packet, runnable_modes


KILL_PLANS = {
    "open": "during the open (recovery): a random moment after the child starts opening",
    "acks": "after a random number (1 to max_acks) of acknowledged deposits",
    "time": "a random time (0 to 1 s) into the writes",
    "optimize": "during an index build: a random moment inside the n-th after_bulk_load()",
    "close": "during close (flush): a random moment after close() starts",
    "server": "the server killed (SIGKILL) after a random number of acks, then restarted",
}


def _print(line: str) -> None:
    print(line, flush=True)


def cycle_child(store: str, options: dict, ledger_path: str, writer: str, plan: dict, emit=_print) -> None:
    """Child of a kill cycle: open, check the ledger's acknowledged packets, then write (see above).

    `ledger_path`: JSON {"acked": [[writer, index], ...], "in_flight": [[writer, index], ...]}.
    `plan`: count (deposits before close, None for no close), optimize_every (0: never),
    retry_every (0: never), check_only.
    """
    with open(ledger_path, encoding="utf-8") as f:
        ledger = json.load(f)
    preload_client(store)  # so that a kill "during the open" lands in the store's recovery, not in imports
    emit("open")
    started = time.perf_counter()
    router = make_router(store, embedder="hash", **options)
    opened = time.perf_counter() - started
    emit("opened")
    acked = [make_packet(w, i) for w, i in ledger["acked"]]
    in_flight = [make_packet(w, i) for w, i in ledger["in_flight"]]
    sent = {p.packet_id: p for p in acked + in_flight}
    started = time.perf_counter()
    report = check_loss(store, [p.packet_id for p in acked], sent, (), [p.packet_id for p in in_flight],
                        router.store.get, router.store.count, stored_ids=router.store.scroll_ids)
    emit("check " + json.dumps({**report.row(), "open_seconds": round(opened, 3),
                                "check_seconds": round(time.perf_counter() - started, 3)}))
    if plan.get("check_only"):
        router.close()
        return
    count = plan.get("count") or 1_000_000
    for index in range(count):
        packet = make_packet(writer, index)
        router.deposit(packet)
        emit(f"ack {index}")
        if plan.get("retry_every") and index % plan["retry_every"] == 0:
            router.deposit(make_packet(writer, index // 2))  # a retried deposit: must not duplicate
        if plan.get("optimize_every") and (index + 1) % plan["optimize_every"] == 0:
            emit("optimize")
            router.store.after_bulk_load()
            emit("optimized")
    emit("close")
    router.close()
    emit("closed")


def preload_client(store: str) -> None:
    """Import the store's client now (a child's open then times recovery, not imports).

    jsonschema builds an IRI grammar (package rfc3987_syntax) when imported, which chromadb
    does: about 2.5 s of a child's start on a quiet machine and 9 s on a loaded one, in every
    one of hundreds of children. No store validates IRIs, so the children skip it.
    """
    import importlib

    from ...stores.registry import store_spec

    sys.modules.setdefault("rfc3987_syntax", None)  # jsonschema then leaves out its "iri" format check
    for module in store_spec(store).requires:
        importlib.import_module(module)


def _drain(child) -> list[str]:
    """The lines a child's queue still holds (up to its end)."""
    rest = []
    while True:
        line = child.next_line(0)
        if line is None or line is False:
            return rest
        rest.append(line)


class _Child:
    """A child process whose stdout lines arrive in a queue (so the parent can wait with a timeout)."""

    def __init__(self, args: list[str], stderr_path: Path):
        import queue

        self._stderr = open(stderr_path, "w+", encoding="utf-8")
        self.process = _run_module(*args, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.endswith("\n"):  # a line cut short by the kill was never a complete ack
                self.lines.put(line[:-1])
        self.lines.put(None)  # EOF

    def next_line(self, timeout: float) -> str | None | bool:
        """The next line; None at EOF; False if nothing came within `timeout` seconds."""
        import queue

        try:
            return self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return False

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def finish(self) -> tuple[list[str], str]:
        """Wait for the process and return the lines not read yet and its stderr's tail."""
        self.process.wait()
        self._reader.join(10)
        rest = _drain(self)
        self._stderr.seek(0)
        tail = self._stderr.read()[-1500:]
        self._stderr.close()
        return rest, tail


def _forked_cycle(conn, store: str, options: dict, ledger_path: str, writer: str, plan: dict) -> None:
    """A kill-cycle child forked from the fork server: its lines go through `conn`."""
    import traceback

    try:
        cycle_child(store, options, ledger_path, writer, plan, emit=conn.send)
    except BaseException:
        conn.send("error " + traceback.format_exc()[-1500:])
        raise SystemExit(1)


class _ForkedChild:
    """A kill-cycle child forked from a fork server that has the store's client imported already.

    Hundreds of children each importing chromadb (seconds each, far more on a loaded machine)
    would make the import the experiment; forked from a preloaded server, a child starts at
    once and its time goes to opening, checking and writing. Same interface as `_Child`.
    """

    _context = None

    @classmethod
    def context(cls):
        """The fork server's context, preloading this module and every runnable store's client."""
        import multiprocessing

        if cls._context is None:
            clients = dict.fromkeys(m for spec, _ in runnable_modes().values() for m in spec.requires)
            cls._context = multiprocessing.get_context("forkserver")
            cls._context.set_forkserver_preload([__name__, *clients])
        return cls._context

    def __init__(self, store: str, options: dict, ledger_path: str, writer: str, plan: dict):
        ctx = self.context()
        self._conn, send = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_forked_cycle, args=(send, store, options, ledger_path, writer, plan),
                                   daemon=True)
        self.process.start()
        send.close()
        self._error = ""

    def next_line(self, timeout: float) -> str | None | bool:
        try:
            if not self._conn.poll(max(0.0, timeout)):
                return False
            line = self._conn.recv()
        except (EOFError, OSError):  # the child is gone (a message cut short by the kill too)
            return None
        if line.startswith("error "):
            self._error = line[6:]
            return self.next_line(timeout)
        return line

    def kill(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def finish(self) -> tuple[list[str], str]:
        self.process.join()
        rest = _drain(self)
        self._conn.close()
        return rest, self._error
