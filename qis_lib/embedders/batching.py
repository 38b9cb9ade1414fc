"""Micro-batching: the texts of concurrent `encode` calls embedded together, one model call at a time.

A service answering many agents at once calls `encode` from many threads with one text each.
Run one by one, those calls either queue behind each other or (each model call using every
core) fight over the cores. `BatchingEmbedder` puts one worker thread in front of the model:
callers queue their texts and wait; the worker takes up to `max_batch` texts from the queue,
one from each waiting call in turn (so a 1,000-text deposit shares its batches with the
one-text queries that arrive during it), and runs them as one `encode` of the model it wraps.
A text that arrives while the model is idle waits at most `max_wait_ms` for companions; under
load the queue fills while the model runs, so batches form without waiting.

It is an `Embedder` (name, dim, encode), so a router uses it unchanged. `spent()` is the time
the calling thread spent in `encode` since `reset()` (queue wait included), which the service
reports as its `embed` span. `stats()`: calls, texts, batches, the largest batch.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Sequence

import numpy as np

from .base import Embedder, check_texts

# Chosen from the routing service's capacity runs alone on the 2-core machine (int8 MiniLM,
# results/http/batching/: wrk at 1, 64 and 1,000 connections per setting). Waiting for
# companions only slows an idle service (1 connection: 150 queries/s at a 2 ms wait against
# 264 at none, same batch): under load the queue fills while the model runs. Batches of 8 to 64
# texts per model call came out within the run-to-run spread of each other (the embedder alone
# varied 370-580 texts/s between runs); 32 gives the length sort of OnnxEmbedder texts to order.
DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_WAIT_MS = 0.0


class _Call:
    __slots__ = ("texts", "taken", "vectors", "error", "done", "arrived")

    def __init__(self, texts: list[str], dim: int):
        self.texts, self.taken = texts, 0
        self.vectors = np.empty((len(texts), dim), dtype=np.float32)
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.arrived = time.monotonic()


class BatchingEmbedder:
    """`embedder` behind a queue and one worker thread (see the module docstring). Thread-safe."""

    def __init__(self, embedder: Embedder, max_batch: int = DEFAULT_MAX_BATCH,
                 max_wait_ms: float = DEFAULT_MAX_WAIT_MS):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or not 0 <= max_wait_ms <= 1000:
            raise ValueError(f"max_wait_ms must be a number from 0 to 1000, got {max_wait_ms!r}")
        self.embedder, self.max_batch, self.max_wait = embedder, max_batch, max_wait_ms / 1000.0
        self.name, self.dim = embedder.name, embedder.dim
        self._queue: deque[_Call] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._local = threading.local()
        self._stats = {"calls": 0, "texts": 0, "batches": 0, "largest_batch": 0}
        self._worker = threading.Thread(target=self._run, daemon=True, name=f"embed-batcher {self.name}")
        self._worker.start()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        start = time.perf_counter()
        try:
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            call = _Call(texts, self.dim)
            with self._cv:
                if self._closed:
                    raise RuntimeError(f"the batching embedder of {self.name} is closed")
                self._queue.append(call)
                self._stats["calls"] += 1
                self._cv.notify()
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.vectors
        finally:
            self._local.spent = getattr(self._local, "spent", 0.0) + time.perf_counter() - start

    def reset(self) -> None:
        """Start counting this thread's time in `encode` from zero."""
        self._local.spent = 0.0

    def spent(self) -> float:
        """Seconds this thread spent in `encode` since `reset()`."""
        return getattr(self._local, "spent", 0.0)

    def stats(self) -> dict[str, int]:
        with self._cv:
            return dict(self._stats)

    def _take(self) -> list[tuple[_Call, int]]:
        """Up to max_batch (call, index) pairs, one text of each waiting call in turn; the caller holds the lock."""
        batch: list[tuple[_Call, int]] = []
        while self._queue and len(batch) < self.max_batch:
            call = self._queue.popleft()
            batch.append((call, call.taken))
            call.taken += 1
            if call.taken < len(call.texts):
                self._queue.append(call)  # its next text waits for the next turn
        return batch

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed and not self._queue:
                    return
                # Idle model: wait for companions until max_batch texts or max_wait after the first arrived.
                while sum(len(c.texts) - c.taken for c in self._queue) < self.max_batch and not self._closed:
                    left = self._queue[0].arrived + self.max_wait - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                batch = self._take()
                self._stats["texts"] += len(batch)
                self._stats["batches"] += 1
                self._stats["largest_batch"] = max(self._stats["largest_batch"], len(batch))
            calls = list(dict.fromkeys(call for call, _ in batch))
            try:
                vectors = self.embedder.encode([call.texts[i] for call, i in batch])
            except BaseException as exc:  # every call in the batch gets the model's error
                for call in calls:
                    call.error = exc
                    with self._cv:
                        if call in self._queue:
                            self._queue.remove(call)
                    call.done.set()
                continue
            for (call, i), vector in zip(batch, vectors):
                call.vectors[i] = vector
            for call in calls:
                if call.taken == len(call.texts) and call not in self._queue:
                    call.done.set()

    def close(self) -> None:
        """Finish the queued calls, then stop the worker (encode after close raises RuntimeError)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._worker.join(60)
