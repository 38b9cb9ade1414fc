"""A store folder: who may open it (`lock_folder`, `StoreBusyError`), and whether it still
holds what it held (`FolderManifest`, `StoreDamagedError`, `opening_error`)."""
from __future__ import annotations

from typing import Callable

class StoreBusyError(RuntimeError):
    """The store is opened by another client that holds it exclusively."""


class StoreDamagedError(RuntimeError):
    """A store folder that cannot be opened or read as it is, or holds fewer packets than it
    held before: files in it are missing or damaged. The message names the folder."""


MANIFEST = ".qis-manifest.json"


class FolderManifest:
    """How many packets a store folder held at least, kept by us beside the engine's own files.

    Engines open a folder whose files were deleted or damaged as an empty or smaller store
    without a word (qdrant-edge with its write-ahead log gone, for one). So a store that
    lives in a folder records its count here (on open, on close, and at most once a second
    while it writes), lowers it before it deletes, and on open compares: fewer packets than
    the manifest says is a StoreDamagedError, never a silently smaller store.
    """

    def __init__(self, folder: str, store: str, interval: float = 1.0):
        import os
        import threading

        self._lock = threading.Lock()  # a store is called from many threads
        self.path = os.path.join(str(folder), MANIFEST)
        self.folder, self.store, self.interval = str(folder), store, interval
        self.known: int | None = None
        self._written_at = float("-inf")

    def read(self) -> int | None:
        """The count recorded, or None if there is no readable manifest (a damaged one is warned about)."""
        import json
        import warnings

        try:
            with open(self.path, encoding="utf-8") as f:
                value = json.load(f)["packets"]
            if isinstance(value, int) and value >= 0:
                return value
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            pass
        warnings.warn(f"{self.path} is unreadable; the {self.store} store at {self.folder} cannot be checked "
                      f"against it this time (it is written again)", UserWarning, stacklevel=3)
        return None

    def check(self, count: int) -> None:
        """Raise StoreDamagedError if the store now holds fewer packets than recorded; then record `count`."""
        recorded = self.read()
        if recorded is not None and count < recorded:
            raise StoreDamagedError(
                f"the {self.store} store at {self.folder} opened with {count} packets, but it held at least "
                f"{recorded} ({self.path}): files in the folder are missing or damaged. Restore the folder from "
                f"a copy; to accept the {count} packets as they are, delete {MANIFEST}")
        self.record(count)

    def record(self, count: int) -> None:
        """Write `count` (atomically: a temporary file renamed over the manifest; not fsynced)."""
        import json
        import os
        import time

        with self._lock:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"store": self.store, "packets": int(count)}, f)
            os.replace(tmp, self.path)
            self.known = int(count)
            self._written_at = time.monotonic()

    def after_write(self, count: Callable[[], int]) -> None:
        """Called after an upsert: record count() if the last record is older than `interval` or was 0."""
        import time

        if not self.known or time.monotonic() - self._written_at >= self.interval:
            self.record(count())

    def before_delete(self, n: int) -> None:
        """Called before deleting up to `n` packets: lower the record so it stays a lower bound."""
        known = self.known
        if known is not None:
            self.record(max(0, known - n))


def opening_error(store: str, folder: str, exc: BaseException) -> StoreDamagedError:
    """The error for a folder the engine failed to open or read: names the folder, keeps the engine's words."""
    text = " ".join(str(exc).split())
    return StoreDamagedError(f"cannot open the {store} store at {folder}: its files are damaged or incomplete "
                             f"({type(exc).__name__}: {text[:600]})")


def lock_folder(path: str, store: str):
    """Take an exclusive lock on a store folder, or raise StoreBusyError naming who may share it.

    Chroma does not guard a path against a second process (several writers on one
    SQLite file read stale data or wait on its busy timeout), so we refuse at open time.
    """
    import fcntl
    import os

    os.makedirs(path, exist_ok=True)
    handle = open(os.path.join(path, ".qis-lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreBusyError(
            f"{path} is already open in another {store} client; an embedded store has one opener at a time. "
            f"Close the other one, or share the store through a server (chroma run)") from None
    return handle
