"""Many agent processes through one server, and an exact history check of what they saw
(Jepsen-style: ok, fail, info)."""
from __future__ import annotations

import contextlib
import json
import random
import subprocess
import tempfile
import threading
import time
from pathlib import Path


from ...core.packet import OutcomePacket
from ...core.router import make_router
from .base import WORDS, _run_module, make_packet


def outcome_of(exc: BaseException) -> str:
    """A failed deposit's history type: "fail" only when the request surely never reached the
    server (connection refused, or refused by our own validation); anything else may have been
    applied, so "info" (indeterminate)."""
    import httpx

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (httpx.ConnectError, ConnectionRefusedError, ValueError, TypeError)):
            return "fail"
        exc = exc.__cause__ or exc.__context__
    return "info"


def agents_child(store: str, options: dict, process: str, threads: int, ops: int, history_path: str) -> None:
    """Child: `threads` agents deposit, retry and query through one store client; every deposit's
    outcome goes to this process's history; prints `done` and its counts as JSON."""
    from ..ledger import History

    history = History(history_path, process)
    router = make_router(store, embedder="hash", **options)
    counts = {"deposits": 0, "retries": 0, "queries": 0, "query_errors": 0}
    lock = threading.Lock()
    started = time.perf_counter()

    def agent(number: int) -> None:
        rng = random.Random(f"{process}/{number}")
        mine: list[OutcomePacket] = []
        for i in range(ops):
            roll = rng.random()
            if roll < 0.6 or not mine:
                packet, kind = make_packet(f"{process}-{number}", i), "deposits"
            elif roll < 0.7:
                packet, kind = rng.choice(mine), "retries"
            else:
                try:
                    router.query(" ".join(rng.choices(WORDS, k=5)), top_k=5, now=0.0)
                except Exception:
                    with lock:
                        counts["query_errors"] += 1
                with lock:
                    counts["queries"] += 1
                continue
            try:
                router.deposit(packet)
            except Exception as exc:
                history.record(packet.packet_id, outcome_of(exc), time.perf_counter() - started)
                time.sleep(0.05)
            else:
                history.record(packet.packet_id, "ok", time.perf_counter() - started)
                mine.append(packet)
            with lock:
                counts[kind] += 1

    workers = [threading.Thread(target=agent, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    history.close()
    router.close()
    print("done", json.dumps(counts), flush=True)


def processes_run(processes: int = 4, threads: int = 8, ops: int = 200, kill_after_ops: int | None = 400,
                  down_seconds: float = 2.0, folder: Path | None = None) -> dict:
    """`processes` processes x `threads` agents through one `chroma run` server, the server
    SIGKILLed once `kill_after_ops` deposits are in the histories and restarted `down_seconds`
    later; then the histories are checked (`check_history`) through a new client."""
    from ...infra.servers import ChromaServer
    from ..ledger import History, check_history

    with contextlib.ExitStack() as stack:
        tmp = Path(folder) if folder is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        server = stack.enter_context(ChromaServer(path=tmp / "server", start_timeout=120.0))
        options = {"url": server.url, "collection": "processes"}
        make_router("chroma", embedder="hash", **options).close()  # the collection exists before the agents start
        paths = [tmp / f"history-{p}.jsonl" for p in range(processes)]
        started = time.monotonic()
        children = [_run_module("agents", "--store", "chroma", "--options", json.dumps(options), "--process", f"p{p}",
                                "--threads", str(threads), "--ops", str(ops), "--history", str(path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    for p, path in enumerate(paths)]
        kills = 0
        if kill_after_ops is not None:
            while sum(len(History.read([p])) for p in paths if p.exists()) < kill_after_ops:
                if all(c.poll() is not None for c in children):
                    break
                time.sleep(0.2)
            server.kill()
            kills = 1
            time.sleep(down_seconds)
            server.start()
        outputs = [c.communicate() for c in children]
        seconds = time.monotonic() - started
        for child, (out, err) in zip(children, outputs):
            if child.returncode != 0:
                raise RuntimeError(f"an agent process failed: {err[-1500:]}")
        counts = [json.loads(out.split("done ", 1)[1]) for out, _ in outputs]
        ops_log = History.read(paths)
        tried = {op["id"] for op in ops_log}
        sent = {}
        for p in range(processes):
            for n in range(threads):
                sent.update((q.packet_id, q) for q in (make_packet(f"p{p}-{n}", i) for i in range(ops))
                            if q.packet_id in tried)
        with make_router("chroma", embedder="hash", **options) as router:
            report = check_history("chroma-server", ops_log, sent, router.store.get, router.store.count,
                                   stored_ids=router.store.scroll_ids)
    return {"processes": processes, "threads_per_process": threads, "operations": processes * threads * ops,
            "deposit_ops": len(ops_log), "server_kills": kills,
            "queries": sum(c["queries"] for c in counts), "query_errors": sum(c["query_errors"] for c in counts),
            "acknowledged": report.acknowledged, "lost": report.lost, "changed": report.corrupted,
            "duplicated": report.duplicated, "phantoms": report.phantoms,
            "failed": report.failed, "failed_but_stored": report.failed_but_stored,
            "indeterminate": report.indeterminate, "indeterminate_stored": report.indeterminate_stored,
            "count": report.store_count, "scrolled": report.scrolled, "seconds": round(seconds, 1)}
