"""Damaged store folders: truncate, zero, garble or delete each kind of file a store keeps, then open it.

For every persistent mode that keeps a folder (its options have a `path`), a template
folder is made the way a bad day leaves one: a writer deposits packets, builds the index
(`after_bulk_load`) halfway, and is killed with SIGKILL without closing. For each kind of
file the store keeps there (write-ahead log segments, segment files, the SQLite database
and its journal, the lock file...), a copy of the template is damaged one way, then opened
by a child process with a timeout, so a segfault or a hang is observed rather than suffered.
The child counts, reads back every acknowledged packet and scrolls.

Verdicts (`OK_VERDICTS` are the acceptable ones):
- error: opening or reading raised an error that names the folder (what we require);
- error-unnamed: an error that does not name the folder (a user cannot tell what broke);
- intact: it opened and every acknowledged packet is there unchanged (the damage hit
  nothing the store needs, e.g. a lock file);
- partial / empty: it opened and silently lost packets (some / all): never acceptable;
- crash: the interpreter died on a signal (segfault, abort); hang: no answer in time.

    python -m qis_lib.experiments.damage --out results/reliability/
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pandas as pd

from ..core.router import make_router
from ..bench.modes import ModeContext
from .ledger import check_loss
from .reliability.base import make_packet, mode_options, runnable_modes, save_results
from .reliability.children import _Child, _ForkedChild

COLLECTION = "damage"
WRITER = "damage"
OK_VERDICTS = ("error", "intact")

# The kinds of file each store keeps, as glob patterns relative to the store's folder.
# A pattern that matches nothing in the template is reported as absent (not damaged).
FILE_KINDS = {
    "chroma": {
        "sqlite database": "chroma.sqlite3",
        "sqlite journal (WAL)": "chroma.sqlite3-wal",
        "sqlite shared memory": "chroma.sqlite3-shm",
        "hnsw vectors": "*/data_level0.bin",
        "hnsw header": "*/header.bin",
        "hnsw lengths": "*/length.bin",
        "hnsw links": "*/link_lists.bin",
        "lock file": ".qis-lock",
    },
    "qdrant": {
        "sqlite database": "collection/*/storage.sqlite",
        "sqlite journal": "collection/*/storage.sqlite-journal",
        "meta.json": "meta.json",
        "lock file": ".lock",
    },
    "qdrant-edge": {
        "wal segment": "wal/open-1",
        "wal first-index": "wal/first-index",
        "edge config": "edge_config.json",
        "segment config": "segments/*/segment.json",
        "segment version": "segments/*/version.info",
        "vectors": "segments/*/vector_storage/vectors/chunk_0.mmap",
        "payloads": "segments/*/payload_storage/page_0.dat",
        "payload tracker": "segments/*/payload_storage/tracker.dat",
        "id tracker": "segments/*/mutable_id_tracker.mappings",
        "payload index": "segments/*/payload_index/*-agent_id-map/page_0.dat",
    },
}
DAMAGES = ("truncate", "zero", "garble", "delete")


def damage_file(path: Path, how: str, seed: int = 0) -> None:
    """Damage one file in place: truncate to half, zero its first 64 KiB, garble 16 spots, or delete it."""
    size = path.stat().st_size
    if how == "truncate":
        os.truncate(path, size // 2)
    elif how == "zero":
        with open(path, "r+b") as f:
            f.write(b"\0" * min(size, 65536))
    elif how == "garble":
        rng = random.Random(f"{path.name}/{seed}")
        with open(path, "r+b") as f:
            # the head (headers, magic numbers) and 15 spots anywhere in the file
            for offset in [0] + [rng.randrange(max(1, size)) for _ in range(15)]:
                f.seek(offset)
                f.write(rng.randbytes(min(64, max(0, size - offset))))
    elif how == "delete":
        path.unlink()
    else:
        raise ValueError(f"unknown damage {how!r}; choose one of {DAMAGES}")


def probe_child(store: str, options: dict, count: int) -> None:
    """Child: open the store, read back packets 0..count-1 of the writer, scroll; print the result as JSON."""
    router = make_router(store, embedder="hash", **options)
    sent = {p.packet_id: p for p in (make_packet(WRITER, i) for i in range(count + 1))}
    acked = list(sent)[:count]
    report = check_loss(store, acked, sent, (), list(sent)[count:], router.store.get, router.store.count,
                        stored_ids=router.store.scroll_ids)
    router.close()
    print(json.dumps(report.row()), flush=True)


def _forked_probe(conn, store: str, options: dict, count: int) -> None:
    import contextlib as _contextlib
    import io

    out = io.StringIO()
    try:
        with _contextlib.redirect_stdout(out):
            probe_child(store, options, count)
    except BaseException as exc:
        conn.send(("err", f"{type(exc).__name__}: {' '.join(str(exc).split())}"))
        raise SystemExit(1)
    conn.send(("out", out.getvalue()))


def _run(store: str, options: dict, count: int, timeout: float) -> tuple[int | None, str, str, float]:
    """Probe in a child forked from a server that has the clients imported: (exit code or None
    on a hang, stdout, error text, seconds). A segfault shows as a negative exit code."""
    ctx = _ForkedChild.context()
    started = time.monotonic()
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_forked_probe, args=(send, store, options, count), daemon=True)
    child.start()
    send.close()
    child.join(timeout)
    if child.exitcode is None:
        child.kill()
        child.join()
        return None, "", "", time.monotonic() - started
    out = err = ""
    with contextlib.suppress(EOFError, OSError):
        if receive.poll(0):
            kind, text = receive.recv()
            out, err = (text, "") if kind == "out" else ("", text)
    receive.close()
    return child.exitcode, out, err, time.monotonic() - started


def make_template(kind: str, folder: Path, acks: int = 60, timeout: float = 180.0) -> int:
    """A store folder of mode `kind` left by a writer killed after `acks` deposits (index built at 2/3)."""
    with contextlib.ExitStack() as stack:
        store, options = mode_options(kind, ModeContext(folder, stack, collection=COLLECTION))
    ledger = folder.parent / f"{kind}-ledger.json"
    ledger.write_text(json.dumps({"acked": [], "in_flight": []}))
    child = _Child(["cycle", "--store", store, "--options", json.dumps(options), "--ledger", str(ledger),
                    "--writer", WRITER, "--plan", json.dumps({"optimize_every": acks * 2 // 3})],
                   folder.parent / f"{kind}-stderr.txt")
    deadline = time.monotonic() + timeout
    acked = 0
    while acked < acks and time.monotonic() < deadline:
        line = child.next_line(deadline - time.monotonic())
        if line is None:
            break
        if isinstance(line, str) and line.startswith("ack "):
            acked += 1
    child.kill()
    _, err = child.finish()
    if acked < acks:
        raise RuntimeError(f"the writer of the {kind} template stopped after {acked} acks: {err}")
    return acked


def path_modes() -> list[str]:
    """Persistent modes here whose store lives in a folder of ours (the options name a path)."""
    names = []
    for name in runnable_modes():
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            store, options = mode_options(name, ModeContext(Path(tmp), stack))
            if "path" in options and store in FILE_KINDS:
                names.append(name)
    return names


def verdict(code: int | None, out: str, err: str, folder: str, acked: int) -> tuple[str, str]:
    """(verdict, detail) of one probe, as the module docstring defines them."""
    if code is None:
        return "hang", ""
    if code < 0:
        return "crash", f"signal {signal.Signals(-code).name}"
    if code != 0:
        message = err or f"exit code {code}"
        return ("error" if folder in err else "error-unnamed"), message[:300]
    report = json.loads(out.strip().splitlines()[-1])
    detail = (f"found {report['found']}/{acked}, changed {report['corrupted']}, count {report['store_count']}, "
              f"scrolled {report.get('scrolled')}")
    if report["found"] == acked and report["corrupted"] == 0 and report["store_count"] == report.get("scrolled"):
        return "intact", detail
    return ("empty" if report["found"] == 0 else "partial"), detail


def damage_runs(kinds: list[str] | None = None, damages: tuple[str, ...] = DAMAGES, acks: int = 60,
                timeout: float = 90.0, files: list[str] | None = None, progress: bool = False) -> pd.DataFrame:
    """Every (mode, file kind, damage): its verdict, detail and seconds. `files` limits the file kinds."""
    rows = []
    for kind in kinds or path_modes():
        with tempfile.TemporaryDirectory(prefix=f"qis-damage-{kind}-") as tmp:
            template = Path(tmp) / "template"
            acked = make_template(kind, template, acks=acks)
            with contextlib.ExitStack() as stack:
                store, options = mode_options(kind, ModeContext(template, stack, collection=COLLECTION))
            store_dir = Path(options["path"])
            for file_kind, pattern in FILE_KINDS[store].items():
                if files is not None and file_kind not in files:
                    continue
                matches = sorted(p for p in store_dir.rglob("*") if p.is_file()
                                 and fnmatch.fnmatch(str(p.relative_to(store_dir)), pattern))
                if not matches:
                    rows.append({"mode": kind, "file": file_kind, "damage": "", "verdict": "absent",
                                 "detail": f"no {pattern} in the folder", "seconds": 0.0})
                    continue
                for how in damages:
                    case = Path(tmp) / f"case-{file_kind.replace(' ', '-')}-{how}"
                    shutil.copytree(template, case)
                    case_dir = case / store_dir.relative_to(template)
                    target = case_dir / matches[0].relative_to(store_dir)
                    if how != "delete" and target.stat().st_size == 0:
                        rows.append({"mode": kind, "file": file_kind, "damage": how, "verdict": "empty-file",
                                     "detail": "the file is empty: nothing to damage", "seconds": 0.0})
                        shutil.rmtree(case)
                        continue
                    damage_file(target, how)
                    case_options = {**options, "path": str(case_dir)}
                    code, out, err, seconds = _run(store, case_options, acked, timeout)
                    result, detail = verdict(code, out, err, str(case_dir), acked)
                    rows.append({"mode": kind, "file": file_kind, "damage": how, "verdict": result,
                                 "detail": detail.replace(str(case), "FOLDER"), "seconds": round(seconds, 2)})
                    if progress:
                        print(kind, file_kind, how, result, rows[-1]["detail"][:160], flush=True)
                    shutil.rmtree(case, ignore_errors=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    probe = sub.add_parser("probe", help="(child) open a store, read back the writer's packets, print JSON")
    probe.add_argument("--store", required=True)
    probe.add_argument("--options", type=json.loads, required=True)
    probe.add_argument("--count", type=int, required=True)
    parser.add_argument("--kinds", nargs="*", default=None, help="mode names (default: every mode with a folder)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds a probe may take before it is a hang")
    parser.add_argument("--out", default=None, help="folder for damage.csv")
    args = parser.parse_args(argv)
    if args.command == "probe":
        probe_child(args.store, args.options, args.count)
        return
    started = time.time()
    frame = damage_runs(args.kinds, timeout=args.timeout, progress=True)
    print(frame.to_string(index=False))
    if args.out:
        save_results(frame, args.out, "damage.csv", "qis_lib.experiments.damage", argv, started)


if __name__ == "__main__":
    main()
