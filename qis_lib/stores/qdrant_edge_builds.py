"""The index builder of a qdrant-edge store: the engine has no background optimizer, so this
plays a server's. It counts the points written since the last build and, once
`index_threshold` of them wait, builds in a background thread (`EdgeShard.optimize()`), one
build at a time: points written during a build start the next one when it ends. qdrant-edge-py
keeps Python's GIL for the whole of a build, so the shard's config bounds what one build does
(`max_segment_points`, qdrant_edge_params.edge_config); the store's own query lock is never
held by a build."""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class IndexBuilder:
    """Builds `store.shard`'s index in the background once `threshold` points were written
    (None: only when asked, `build_now()`). `builds`: one entry per automatic build (points,
    started: its time.perf_counter(), seconds, cpu_seconds: the process's CPU time meanwhile,
    which the GIL leaves almost all to the build, segments after it); `error`: the last failure
    (the points stay searchable by brute force). Between `hold()` and `resume()` (a bulk load)
    nothing is built on the way."""

    def __init__(self, store, threshold: int | None, unindexed: int):
        self.store, self.threshold = store, threshold
        self.builds: list[dict] = []
        self.error: Exception | None = None
        self.build_lock = threading.Lock()  # held by every build; close() takes it
        self._lock = threading.Lock()  # guards the counts below
        self._pending, self._running, self._held = unindexed, False, False
        self.thread: threading.Thread | None = None

    def _due(self) -> bool:
        return self.threshold is not None and not self._held and self._pending >= self.threshold

    def written(self, n: int) -> None:
        """Count `n` points written; start the builder thread if a build is due and none runs."""
        with self._lock:
            self._pending += n
            if self._running or not self._due():
                return
            self._running = True
            self.thread = threading.Thread(target=self._run, daemon=True, name=f"qdrant-edge-index {self.store.path}")
        self.thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._due():
                    self._running = False
                    return
                points, self._pending = self._pending, 0
            if not self._build(points):
                with self._lock:
                    self._running = False
                return

    def _build(self, points: int) -> bool:
        with self.build_lock:
            shard = self.store.shard
            if shard is None:  # closed since the build was asked for
                return False
            start, cpu = time.perf_counter(), time.process_time()
            try:
                shard.optimize()  # the engine's own locks let reads and writes go on (the GIL does not)
            except Exception as exc:
                self.error = exc
                log.warning("qdrant-edge index build in %s failed: %s", self.store.path, exc)
                return False
            self.builds.append({"points": points, "started": start, "seconds": time.perf_counter() - start,
                                "cpu_seconds": time.process_time() - cpu, "segments": shard.info().segments_count})
            return True

    def build_now(self) -> bool:
        """Build over everything written so far, in this thread (after any build under way)."""
        self.wait()
        with self.build_lock:
            with self._lock:
                self._pending = 0
            if self.store.shard is None:
                raise ValueError(f"the qdrant-edge store at {self.store.path} is closed")
            return self.store.shard.optimize()

    def wait(self) -> None:
        """Return once the builder thread has stopped."""
        thread = self.thread
        if thread is not None:
            thread.join()

    def hold(self) -> None:
        self._held = True

    def resume(self) -> None:
        self._held = False
