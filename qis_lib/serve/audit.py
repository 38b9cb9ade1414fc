"""The routing service's audit file (`--audit FILE`): one JSON line per write and per refused request.

    {"time": "2026-12-04T18:00:00.123Z", "ts": 1796407200.123, "key": "alice-laptop", "role": "agent",
     "agent": "alice", "action": "deposit", "ids": ["5b0c..."], "status": 200}

`key` is the key's id from the auth file, never the secret. `status` is what the caller got
(200 done, 401 no or unknown key, 403 not allowed, 422 refused by a rule, 429 over the key's
limits, 5xx the store failed). The file is appended to through `logging`'s WatchedFileHandler,
so a log rotator may move it away: the next line opens a new file.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
from typing import Any, Sequence

MAX_IDS = 1000  # ids listed in one line; a larger batch also records how many there were


class Audit:
    """Appends audit lines to `path` (None: records nothing)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = None if path is None else str(path)
        self._log: logging.Logger | None = None
        if self.path is not None:
            handler = logging.handlers.WatchedFileHandler(self.path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._log = logging.getLogger(f"qis_lib.serve.audit.{id(self)}")
            self._log.propagate = False
            self._log.setLevel(logging.INFO)
            self._log.addHandler(handler)

    def record(self, caller, action: str, status: int, ids: Sequence[str] = (), **extra: Any) -> None:
        """One line: who (`caller`: key id, role, agent, or None for no key), did what, to which ids, with what status."""
        if self._log is None:
            return
        now = dt.datetime.now(dt.timezone.utc)
        ids = list(ids)
        line = {"time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "ts": round(now.timestamp(), 3),
                "key": getattr(caller, "key_id", None), "role": getattr(caller, "role", None),
                "agent": getattr(caller, "agent", None), "action": action, "ids": ids[:MAX_IDS], "status": status}
        if len(ids) > MAX_IDS:
            line["ids_total"] = len(ids)
        line.update(extra)
        self._log.info(json.dumps(line, default=str))

    def close(self) -> None:
        if self._log is not None:
            for handler in list(self._log.handlers):
                handler.close()
                self._log.removeHandler(handler)
            self._log = None
