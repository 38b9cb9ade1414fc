"""The one loss check: a ledger of acknowledged deposits, and what a store holds of them.

A deposit is *acknowledged* when the store's write returned without error; only then
does its id go to the `Ledger`. After the experiment (a kill, a restart, many threads),
`check_loss` asks the store for every id the experiment tried to write and compares:

- lost: acknowledged, and not there. Must be 0.
- corrupted: there, but its payload is not the packet that was sent. Must be 0.
- duplicated: rows in the store beyond the distinct ids it returned to us (a retried
  deposit stored twice, or a row nobody wrote). Must be 0 on a store of our own.
- failed: deposits answered with an error, never acknowledged; not lost if missing
  (failed_but_stored: present anyway, a failed write may be partly applied).
- indeterminate: deposits that timed out, or were in flight at a kill: the write may or
  may not have happened (indeterminate_stored: present).
- phantoms: ids in the store that nobody sent, when the caller can list the store's ids
  (then `scrolled`, how many ids a full scroll listed, must equal the store's count).

Both the failover experiment and the reliability experiments use it; `check_history`
reads a Jepsen-style history (ok / fail / info per operation) into the same check.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..core.packet import OutcomePacket


class Ledger:
    """Append-only record of acknowledged deposit ids, in the order they were acknowledged.

    With a `path`, each id is also written as one JSON line ({"id", "t"}) and flushed right
    after the acknowledgement, so the record outlives a crash of the experiment. Without
    one it is kept in memory only. Safe to share between threads.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.ids: list[str] = []
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    def append(self, packet_id: str, t: float) -> None:
        """Record that `packet_id` was acknowledged at time `t` (seconds, as the caller counts them)."""
        with self._lock:
            self.ids.append(packet_id)
            if self._file is not None:
                self._file.write(json.dumps({"id": packet_id, "t": round(t, 4)}) + "\n")
                self._file.flush()

    def close(self) -> None:
        """Close the file (the in-memory record stays readable)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def read(path: str | os.PathLike) -> list[str]:
        """The acknowledged ids of a ledger file, in ledger order (an id acknowledged twice appears twice)."""
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["id"] for line in f if line.strip()]


@dataclass
class LossReport:
    """What the check found through one verifier (a node, a new process, the same client)."""

    verifier: str
    acknowledged: int  # distinct ids in the ledger
    found: int  # of those, returned by get()
    lost: int  # acknowledged and missing: must be 0
    corrupted: int  # found, but the payload differs from what was sent: must be 0
    duplicated: int  # rows in the store beyond the distinct ids we wrote that it returned
    failed: int  # deposits answered with an error: never acknowledged
    failed_but_stored: int  # of those, present anyway (a failed write may be partly applied)
    indeterminate: int  # deposits that timed out or were in flight: unknown whether applied
    indeterminate_stored: int
    store_count: int
    lost_ids: list[str] = field(default_factory=list)  # the first 20
    phantoms: int | None = None  # stored ids nobody sent; None when the store's ids cannot be listed
    scrolled: int | None = None  # ids a full scroll listed (repeats included); must equal store_count

    @property
    def changed(self) -> int:
        """The reliability tables' name for `corrupted`."""
        return self.corrupted

    @property
    def extra(self) -> int:
        """The reliability tables' name for `duplicated`."""
        return self.duplicated

    @property
    def ok(self) -> bool:
        """Nothing acknowledged is lost or changed, and nothing is stored twice."""
        return (self.lost == 0 and self.corrupted == 0 and self.duplicated == 0 and not self.phantoms
                and self.scrolled in (None, self.store_count))

    def row(self) -> dict[str, Any]:
        """The report as a flat dict (phantoms and scrolled left out when not measured)."""
        row = asdict(self)
        for key in ("phantoms", "scrolled"):
            if row[key] is None:
                del row[key]
        return row


def _differs(payload: Any, packet: OutcomePacket) -> bool:
    try:
        return OutcomePacket.from_payload(payload) != packet
    except (ValueError, TypeError):  # not a valid packet any more
        return True


def check_loss(verifier: str, acked_ids: Iterable[str], sent: Mapping[str, OutcomePacket],
               failed_ids: Iterable[str], timeout_ids: Iterable[str], get: Callable[[list[str]], dict[str, dict]],
               count: Callable[[], int], batch: int = 500,
               stored_ids: Callable[[], Iterable[str]] | None = None) -> LossReport:
    """Compare what the ledger says was acknowledged with what the store returns now.

    `acked_ids`: the ledger (repeats allowed); `sent`: every packet the experiment tried
    to write, by id; `failed_ids` / `timeout_ids`: deposits answered with an error / a
    timeout (an id acknowledged on a retry counts as acknowledged). `get` and `count`
    are the store's (`Store.get` returns payloads by id); `stored_ids`, when the caller
    can list the store (`Store.scroll_ids`), measures phantoms and the scroll's length.
    """
    acked = list(dict.fromkeys(acked_ids))
    acked_set = set(acked)
    failed = set(failed_ids) - acked_set
    timeouts = set(timeout_ids) - acked_set - failed
    wanted = acked + sorted(failed) + sorted(timeouts)
    found: dict[str, dict] = {}
    for start in range(0, len(wanted), batch):
        found.update(get(wanted[start:start + batch]))
    lost = [pid for pid in acked if pid not in found]
    corrupted = sum(_differs(found[pid], sent[pid]) for pid in acked if pid in found and pid in sent)
    store_count = count()
    phantoms = scrolled = None
    if stored_ids is not None:
        listed = list(stored_ids())
        scrolled = len(listed)
        phantoms = len(set(listed) - set(sent) - acked_set - failed - timeouts)
    return LossReport(
        verifier=verifier, acknowledged=len(acked), found=len(acked) - len(lost), lost=len(lost), corrupted=corrupted,
        duplicated=store_count - len(found), failed=len(failed), failed_but_stored=sum(p in found for p in failed),
        indeterminate=len(timeouts), indeterminate_stored=sum(p in found for p in timeouts),
        store_count=store_count, lost_ids=lost[:20], phantoms=phantoms, scrolled=scrolled)


def check_store(verifier: str, store, acked_ids: Iterable[str], sent: Mapping[str, OutcomePacket],
                failed_ids: Sequence[str] = (), timeout_ids: Sequence[str] = ()) -> LossReport:
    """`check_loss` through a `Store` (its get and count)."""
    return check_loss(verifier, acked_ids, sent, failed_ids, timeout_ids, store.get, store.count)


OUTCOMES = ("ok", "fail", "info")  # Jepsen's words: acknowledged, definitely not applied, unknown


class History:
    """Append-only record of every deposit's outcome, one JSON line per completed operation.

    Each line is {"process", "id", "type", "t"}; `type` is "ok" (acknowledged), "fail" (an
    error that means the write did not happen) or "info" (a timeout, or a write cut off by a
    crash: it may or may not have happened). Written and flushed as each operation ends, so
    several processes can each keep one and the record outlives them. Safe to share between threads.
    """

    def __init__(self, path: str | os.PathLike, process: str):
        self.path, self.process = Path(path), process
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, packet_id: str, outcome: str, t: float) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        with self._lock:
            self._file.write(json.dumps({"process": self.process, "id": packet_id, "type": outcome,
                                         "t": round(t, 4)}) + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    @staticmethod
    def read(paths: Iterable[str | os.PathLike]) -> list[dict]:
        """Every operation of the given history files (a line cut off by a crash is left out)."""
        ops = []
        for path in paths:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    with contextlib.suppress(ValueError):
                        ops.append(json.loads(line))
        return ops


def check_history(verifier: str, ops: Iterable[Mapping[str, Any]], sent: Mapping[str, OutcomePacket],
                  get: Callable[[list[str]], dict[str, dict]], count: Callable[[], int],
                  stored_ids: Callable[[], Iterable[str]] | None = None) -> LossReport:
    """Jepsen's lost-write check over a history of deposits, after recovery.

    An id is acknowledged if any of its operations is "ok" (a retry that succeeded counts);
    else indeterminate if any is "info"; else failed. Then `check_loss`: an acknowledged id
    not readable now is lost; indeterminate ones are counted apart, never as lost or as
    success; `sent` ids a history never mentions were in flight when a process died, so
    they are indeterminate too.
    """
    by_id: dict[str, set[str]] = {}
    for op in ops:
        if op["type"] not in OUTCOMES:
            raise ValueError(f"operation type must be one of {OUTCOMES}, got {op!r}")
        by_id.setdefault(op["id"], set()).add(op["type"])
    acked = [pid for pid, kinds in by_id.items() if "ok" in kinds]
    info = [pid for pid, kinds in by_id.items() if "ok" not in kinds and "info" in kinds]
    failed = [pid for pid, kinds in by_id.items() if kinds == {"fail"}]
    unrecorded = [pid for pid in sent if pid not in by_id]
    return check_loss(verifier, acked, sent, failed, info + unrecorded, get, count, stored_ids=stored_ids)


__all__ = ["History", "Ledger", "LossReport", "OUTCOMES", "check_history", "check_loss", "check_store"]
