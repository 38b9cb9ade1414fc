"""A full disk: deposits into a store folder that runs out of space.

A store folder is made with some packets and closed; then a writer process deposits into
it until the file system refuses a write, printing each acknowledged deposit. Then the
space comes back and a new process opens the folder: every acknowledged packet must be
there unchanged, and new deposits must work. Two ways to run out of space:

- `rlimit`: the writer runs under RLIMIT_FSIZE of 1 MiB (no write may reach past 1 MiB
  into a file; it fails with EFBIG). Works anywhere. The stores' files pass 1 MiB at
  different moments: SQLite files after a few hundred packets, qdrant-edge's write-ahead
  log segments (32 MiB, preallocated) on the first write past their first MiB.
- `tmpfs`: the folder is on a small tmpfs mounted in a user and mount namespace of its own
  (`unshare -rm`, no root needed where user namespaces are allowed): writes fail with
  ENOSPC, as on a full disk; then the tmpfs is remounted larger. Skipped, with the reason,
  where `unshare` cannot mount.

    python -m qis_lib.experiments.fulldisk --out results/reliability/
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ..core.router import make_router
from ..bench.modes import ModeContext
from .damage import path_modes
from .ledger import check_loss
from .reliability.base import make_packet, mode_options, save_results

WRITER = "full"


def fill_child(store: str, options: dict, start: int, limit: int, fsize: int | None) -> None:
    """Child: deposit packets start.. until a write fails (or `limit`), printing `ack I`, then `error ...`."""
    if fsize is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    try:
        router = make_router(store, embedder="hash", **options)
    except Exception as exc:
        print("error", json.dumps({"at": "open", "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"}),
              flush=True)
        return
    for index in range(start, start + limit):
        try:
            router.deposit(make_packet(WRITER, index))
        except Exception as exc:
            print("error", json.dumps({"at": index, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"}),
                  flush=True)
            break
        print(f"ack {index}", flush=True)
    try:
        router.close()
    except Exception as exc:
        print("close-error", json.dumps({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"}),
              flush=True)


def reopen_child(store: str, options: dict, acked: int, more: int) -> None:
    """Child: open, check packets 0..acked-1 (the next one was in flight), deposit `more` new ones; print JSON."""
    router = make_router(store, embedder="hash", **options)
    sent = {p.packet_id: p for p in (make_packet(WRITER, i) for i in range(acked + 1))}
    ids = list(sent)
    report = check_loss(store, ids[:acked], sent, (), ids[acked:], router.store.get, router.store.count,
                        stored_ids=router.store.scroll_ids)
    new = [make_packet(WRITER, i) for i in range(acked + 1, acked + 1 + more)]
    for packet in new:
        router.deposit(packet)
    after = len(router.store.get([p.packet_id for p in new]))
    router.close()
    print(json.dumps({**report.row(), "new_deposits": more, "new_found": after}), flush=True)


def _child(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qis_lib.experiments.fulldisk", *args], text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def full_disk_case(kind: str, folder: Path, method: str, preload: int = 50, limit: int = 50_000,
                   fsize_limit: int = 1 << 20, timeout: float = 600.0, remount=None) -> dict:
    """Fill a store of mode `kind` in `folder` until a write fails, then check it with space back."""
    with contextlib.ExitStack() as stack:
        store, options = mode_options(kind, ModeContext(folder, stack, collection="full"))
    opts = json.dumps(options)
    started = time.monotonic()
    pre = _child(["fill", "--store", store, "--options", opts, "--start", "0", "--limit", str(preload)], timeout)
    if pre.returncode != 0 or "error" in pre.stdout:
        raise RuntimeError(f"making the {kind} store for the full-disk run failed: {pre.stdout[-500:]} {pre.stderr[-1500:]}")
    fsize = fsize_limit if method == "rlimit" else None
    fill_args = ["fill", "--store", store, "--options", opts, "--start", str(preload), "--limit", str(limit)]
    if fsize is not None:
        fill_args += ["--fsize", str(fsize)]
    fill = _child(fill_args, timeout)
    lines = fill.stdout.splitlines()
    acks = [int(line.split()[1]) for line in lines if line.startswith("ack ")]
    errors = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("error ")]
    close_errors = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("close-error ")]
    acked = preload + len(acks)
    if fill.returncode != 0:
        verdict = "crash" if fill.returncode < 0 else "uncaught error"
    elif not errors:
        verdict = "never filled"
    else:
        verdict = "error"
    if remount is not None:
        remount()  # space is back
    reopen = _child(["reopen", "--store", store, "--options", opts, "--acked", str(acked), "--more", "20"], timeout)
    row = {"mode": kind, "method": method, "fsize_limit": fsize, "preloaded": preload, "acked_before_full": len(acks),
           "acknowledged": acked, "writer": verdict, "writer_exit": fill.returncode,
           "error": errors[0]["error"] if errors else (fill.stderr.strip().splitlines() or [""])[-1][:300],
           "close_error": close_errors[0]["error"] if close_errors else ""}
    if reopen.returncode != 0:
        row.update({"reopened": False, "reopen_error": (reopen.stderr.strip().splitlines() or [""])[-1][:300]})
    else:
        report = json.loads(reopen.stdout.strip().splitlines()[-1])
        row.update({"reopened": True, "found": report["found"], "lost": report["lost"],
                    "changed": report["corrupted"], "phantoms": report.get("phantoms"),
                    "count": report["store_count"], "scrolled": report.get("scrolled"),
                    "new_deposits_found": f"{report['new_found']}/{report['new_deposits']}"})
    row["seconds"] = round(time.monotonic() - started, 1)
    return {k: (str(v).replace(str(folder), "FOLDER") if isinstance(v, str) else v) for k, v in row.items()}


def tmpfs_problem() -> str | None:
    """None if `unshare -rm` can mount a tmpfs here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    with tempfile.TemporaryDirectory() as tmp:
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {tmp}"],
                               capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -rm cannot mount a tmpfs: {probe.stderr.strip()[:200]}"


def tmpfs_inner(kind: str, size_mb: int) -> None:
    """Inside `unshare -rm`: mount a small tmpfs, fill a store on it, remount it larger, check; print JSON."""
    with tempfile.TemporaryDirectory(prefix="qis-full-") as mount:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", mount], check=True)
        try:
            def remount():
                subprocess.run(["mount", "-o", f"remount,size={size_mb * 8}m", mount], check=True)

            row = full_disk_case(kind, Path(mount) / "store", "tmpfs", remount=remount)
            row["tmpfs_mb"] = size_mb
            print(json.dumps(row), flush=True)
        finally:
            subprocess.run(["umount", mount], check=False)


def full_disk_runs(kinds: list[str] | None = None, methods=("rlimit", "tmpfs"), progress: bool = False) -> pd.DataFrame:
    rows = []
    problem = tmpfs_problem() if "tmpfs" in methods else None
    for kind in kinds or path_modes():
        for method in methods:
            if method == "rlimit":
                with tempfile.TemporaryDirectory(prefix=f"qis-full-{kind}-") as tmp:
                    rows.append(full_disk_case(kind, Path(tmp) / "store", "rlimit"))
            elif problem is not None:
                rows.append({"mode": kind, "method": "tmpfs", "writer": "skipped", "error": problem})
            else:
                # qdrant-edge preallocates 32 MiB write-ahead log segments and keeps 96 MiB free
                size_mb = 200 if kind == "qdrant-edge" else 8
                done = subprocess.run(["unshare", "-rm", sys.executable, "-m", "qis_lib.experiments.fulldisk",
                                       "tmpfs-inner", "--kind", kind, "--size-mb", str(size_mb)],
                                      capture_output=True, text=True, timeout=1200)
                if done.returncode != 0:
                    rows.append({"mode": kind, "method": "tmpfs", "writer": "harness failed",
                                 "error": done.stderr.strip()[-300:]})
                else:
                    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if progress:
                print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    fill = sub.add_parser("fill", help="(child) deposit until a write fails")
    reopen = sub.add_parser("reopen", help="(child) check the acknowledged packets, deposit more")
    inner = sub.add_parser("tmpfs-inner", help="(inside unshare -rm) the tmpfs case")
    for p in (fill, reopen):
        p.add_argument("--store", required=True)
        p.add_argument("--options", type=json.loads, required=True)
    fill.add_argument("--start", type=int, required=True)
    fill.add_argument("--limit", type=int, required=True)
    fill.add_argument("--fsize", type=int, default=None)
    reopen.add_argument("--acked", type=int, required=True)
    reopen.add_argument("--more", type=int, default=20)
    inner.add_argument("--kind", required=True)
    inner.add_argument("--size-mb", type=int, required=True)
    parser.add_argument("--kinds", nargs="*", default=None)
    parser.add_argument("--methods", nargs="*", default=["rlimit", "tmpfs"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.command == "fill":
        fill_child(args.store, args.options, args.start, args.limit, args.fsize)
    elif args.command == "reopen":
        reopen_child(args.store, args.options, args.acked, args.more)
    elif args.command == "tmpfs-inner":
        tmpfs_inner(args.kind, args.size_mb)
    else:
        started = time.time()
        frame = full_disk_runs(args.kinds, tuple(args.methods), progress=True)
        print(frame.to_string(index=False))
        if args.out:
            save_results(frame, args.out, "fulldisk.csv", "qis_lib.experiments.fulldisk", argv, started)


if __name__ == "__main__":
    main()
