"""Micro-batching of concurrent encode calls: the same vectors as the wrapped embedder, batches
that form under concurrency, a large call sharing its batches with small ones, errors handed
to every caller of the failed batch, and the options' checks."""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from qis_lib.embedders import HashEmbedder
from qis_lib.embedders.batching import BatchingEmbedder
from qis_lib.infra.servers import wait_until


class Recording(HashEmbedder):
    """A hash embedder that records each batch it is given, and can be held before answering."""

    def __init__(self):
        super().__init__()
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail_on: str | None = None

    def encode(self, texts):
        self.batches.append(list(texts))
        self.entered.set()
        self.hold.wait(30)
        if self.fail_on in texts:
            raise RuntimeError(f"model failed on {self.fail_on!r}")
        return super().encode(texts)


def test_concurrent_calls_get_the_wrapped_embedders_vectors_in_fewer_model_calls():
    inner = Recording()
    batcher = BatchingEmbedder(inner, max_batch=16, max_wait_ms=20)
    reference = HashEmbedder()
    calls = [[f"text {i}"] for i in range(60)] + [[f"big {j}" for j in range(40)], [], ["text 3", "text 3"]]
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(batcher.encode, calls))
    for texts, vectors in zip(calls, results):
        assert vectors.shape == (len(texts), 384)
        if texts:
            np.testing.assert_allclose(vectors, reference.encode(texts), atol=1e-6)
    stats = batcher.stats()
    assert stats["texts"] == sum(map(len, calls)) and stats["calls"] == len(calls) - 1  # the empty call needs no model
    assert stats["batches"] == len(inner.batches) < stats["calls"]
    assert max(map(len, inner.batches)) <= 16 == stats["largest_batch"]
    batcher.close()


def test_a_large_call_shares_its_batches_with_the_small_calls_that_arrive_during_it():
    inner = Recording()
    batcher = BatchingEmbedder(inner, max_batch=8, max_wait_ms=0)
    inner.hold.clear()
    first = threading.Thread(target=batcher.encode, args=(["first"],))
    first.start()
    assert inner.entered.wait(10)  # the model is busy with "first"
    done: dict[str, threading.Event] = {}

    def call(name, texts):
        batcher.encode(texts)
        done[name].set()

    threads = []
    for name, texts in [("big", [f"big {i}" for i in range(40)])] + [(f"small {i}", [f"small {i}"]) for i in range(3)]:
        done[name] = threading.Event()
        threads.append(threading.Thread(target=call, args=(name, texts)))
        threads[-1].start()
    wait_until(lambda: batcher.stats()["calls"] == 5, 10, "every call queued")
    inner.hold.set()
    for t in threads + [first]:
        t.join(30)
    second = inner.batches[1]  # the batch after "first": one text of each waiting call in turn, then the big call's
    assert {"small 0", "small 1", "small 2"} <= set(second) and len(second) == 8
    assert all(e.is_set() for e in done.values())
    batcher.close()


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_works():
    inner = Recording()
    inner.fail_on = "poison"
    batcher = BatchingEmbedder(inner, max_batch=4, max_wait_ms=50)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(batcher.encode, ["poison"]), pool.submit(batcher.encode, ["innocent"])]
        errors = [f.exception(timeout=30) for f in futures]
    assert all(isinstance(e, RuntimeError) and "poison" in str(e) for e in errors)
    assert batcher.encode(["after"]).shape == (1, 384)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.encode(["late"])


def test_the_thread_spent_counter_covers_its_own_calls_only():
    batcher = BatchingEmbedder(HashEmbedder(), max_batch=4, max_wait_ms=0)
    batcher.reset()
    batcher.encode(["one"])
    mine = batcher.spent()
    other = threading.Thread(target=lambda: (batcher.reset(), batcher.encode(["two"] * 50)))
    other.start()
    other.join()
    assert 0 < mine == batcher.spent()
    batcher.close()


@pytest.mark.parametrize("options,message", [({"max_batch": 0}, "max_batch"), ({"max_batch": 2.5}, "max_batch"),
                                             ({"max_wait_ms": -1}, "max_wait_ms"), ({"max_wait_ms": "2"}, "max_wait_ms")])
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        BatchingEmbedder(HashEmbedder(), **options)
