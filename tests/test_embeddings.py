"""Embedders: the ONNX backend against the sentence-transformers reference (every
configuration the limit benchmark measures), the text cache, backend choice, the export's
atomic write, and the commands that measure configurations and int8 (tiny sizes, no speed
asserted).

The ONNX models are exported once per test module into a temporary QIS_CACHE_DIR
(about 10-30 s on 2 cores), so the export itself is tested on every run.
"""
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qis_lib import embedders as embeddings
from qis_lib.bench import embedding_limit as limit
from qis_lib.bench.embedding import BACKENDS as BENCH_BACKENDS
from qis_lib.bench.embedding import measure, routing_ids
from qis_lib.infra.seeds import load_seed_packets, seed_texts as real_texts
from qis_lib.embedders import (CachedEmbedder, EmbeddingCache, HashEmbedder, check_texts, get_embedder,
                               normalise)
from qis_lib.embedders.minilm_torch import SentenceTransformerEmbedder
from qis_lib.experiments import int8_recall
from qis_lib.experiments.quality import exact_ranks, recall_summary
from qis_lib.infra.datasets import load_gitbugs

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")
onnx_embedder = pytest.importorskip("qis_lib.embedders.onnx")

LONG = " ".join(["the connection pool was exhausted under load and requests timed out"] * 40)  # > 256 pieces
ODD = ["", "   ", "naïve café — Ünïcödé, 東京のサーバー 🙂", "x" * 3000, LONG, "a", "SELECT * FROM t;\n\t-- ?"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("qis-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QIS_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def onnx_fp32(cache_dir):
    return onnx_embedder.OnnxEmbedder(quantize=False, cache_size=0)


@pytest.fixture(scope="module")
def onnx_int8(cache_dir, onnx_fp32):
    return onnx_embedder.OnnxEmbedder(quantize=True, cache_size=0)


@pytest.fixture(scope="module")
def reference():
    # Cache on: the reference embeds each text once for the whole module (torch is the slow part).
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="module")
def texts():
    return real_texts() + ODD


def cosines(a, b):
    return np.sum(a * b, axis=1)


def test_export_lands_in_the_cache_dir(cache_dir, onnx_fp32, onnx_int8):
    files = sorted(p.name for p in (cache_dir / "onnx").iterdir())
    assert files == sorted([onnx_fp32.path.name, onnx_int8.path.name]), "temp files left behind?"
    assert onnx_int8.path.stat().st_size < onnx_fp32.path.stat().st_size


def test_the_long_text_is_longer_than_the_model_takes(onnx_fp32):
    """Otherwise the truncation check below proves nothing."""
    onnx_fp32.tokenizer.no_truncation()
    try:
        assert len(onnx_fp32.tokenizer.encode(LONG).ids) > onnx_fp32.max_length == 256
    finally:
        onnx_fp32.tokenizer.enable_truncation(max_length=onnx_fp32.max_length)


def test_onnx_fp32_agrees_with_sentence_transformers(onnx_fp32, reference, texts):
    """Cosine >= 0.999 on every text, batched (with padding) and one at a time.
    A failure on the long text means truncation differs (256 pieces); on every text,
    pooling or the export."""
    expected = reference.encode(texts)
    batched = onnx_fp32.encode(texts)  # the ONNX embedders have their cache off: every call runs the model
    single = np.stack([onnx_fp32.encode([t])[0] for t in texts])
    assert batched.shape == (len(texts), 384) and batched.dtype == np.float32
    assert cosines(batched, expected).min() >= 0.999
    assert cosines(single, expected).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_onnx_int8_stays_close(onnx_int8, reference, texts):
    """int8 agrees less closely (measured by the benchmark: mean about 0.993); this
    only guards against a broken quantization."""
    similarity = cosines(onnx_int8.encode(texts), reference.encode(texts))
    assert similarity.min() >= 0.95 and similarity.mean() >= 0.98


def test_length_sorted_batches_keep_the_callers_order(onnx_fp32, texts):
    mixed = texts[::-1]
    batched = onnx_fp32.encode(mixed)
    for i in (0, 3, len(mixed) - 1):
        np.testing.assert_allclose(batched[i], onnx_fp32.encode([mixed[i]])[0], atol=1e-5)


def test_batches_smaller_than_the_input(cache_dir, onnx_fp32, texts):
    small = onnx_embedder.OnnxEmbedder(batch_size=3, cache_size=0, path=onnx_fp32.path)
    some = texts[:10] + ODD
    np.testing.assert_allclose(small.encode(some), onnx_fp32.encode(some), atol=1e-5)


def test_routing_is_identical_on_the_seed_packets(onnx_fp32, reference):
    packets = load_seed_packets(now=1_700_000_000.0)
    assert routing_ids(onnx_fp32, packets) == routing_ids(reference, packets)


@pytest.mark.parametrize("bad, error", [("one text", TypeError), ([1], TypeError), (["ok", None], TypeError)])
def test_onnx_rejects_bad_input(onnx_fp32, bad, error):
    with pytest.raises(error, match="text|str"):
        onnx_fp32.encode(bad)


def test_onnx_empty_list(onnx_fp32):
    assert onnx_fp32.encode([]).shape == (0, 384)


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 0}, "batch_size must be an int >= 1, got 0"), ({"batch_size": True}, "batch_size .* got True"),
    ({"threads": 0}, "threads must be None or an int >= 1, got 0"), ({"cache_size": -1}, "cache_size"),
    ({"sort_by_length": "yes"}, "sort_by_length must be True or False, got 'yes'"),
    ({"io_binding": 1}, "io_binding must be True or False, got 1"),
    ({"optimization": "max"}, "optimization must be one of .*'all', got 'max'"),
    ({"execution_mode": "async"}, "execution_mode must be one of 'sequential', 'parallel', got 'async'"),
    ({"inter_op_threads": 2}, "inter_op_threads=2 needs execution_mode='parallel'"),
    ({"inter_op_threads": 0, "execution_mode": "parallel"}, "inter_op_threads must be None or an int >= 1, got 0"),
])
def test_onnx_bad_options(options, message, onnx_fp32):
    with pytest.raises(ValueError, match=message):
        onnx_embedder.OnnxEmbedder(path=onnx_fp32.path, **options)
    with pytest.raises(ValueError, match="with_options takes only batch_size, sort_by_length, io_binding"):
        onnx_fp32.with_options(threads=1)


def test_the_default_configuration_is_the_named_constant(onnx_fp32):
    assert onnx_fp32.config == replace(onnx_embedder.DEFAULT_CONFIG, quantize=False)
    assert onnx_fp32.batch_size == onnx_embedder.DEFAULT_CONFIG.batch_size


# Each set of session options the benchmark can give (levels, threads, modes, precisions),
# every level on fp32 and two on int8, to keep the module short.
SESSIONS = [{"optimization": level, "threads": 1} for level in onnx_embedder.OPTIMIZATION_LEVELS] + [
    {"threads": 2, "optimization": "all"}, {"execution_mode": "parallel", "inter_op_threads": 2},
    {"quantize": True, "threads": 1, "optimization": "basic"}, {"quantize": True, "threads": 2, "optimization": "all"}]


@pytest.mark.parametrize("session", SESSIONS, ids=lambda o: " ".join(f"{k}={v}" for k, v in o.items()))
def test_every_configuration_agrees_with_the_reference(session, onnx_fp32, onnx_int8, reference, texts):
    """Every per-call option (batch size, sorting, IO binding) on each session: cosine to
    sentence-transformers >= 0.999 for fp32; int8 only close (see test_onnx_int8_stays_close).
    IO binding gives the same vectors as session.run; for fp32, so does any batching."""
    some = texts[:6] + ODD[:3] + ["a", LONG]
    path = (onnx_int8 if session.get("quantize") else onnx_fp32).path
    embedder = onnx_embedder.OnnxEmbedder(path=path, cache_size=0, **session)
    expected = reference.encode(some)
    plain = embedder.with_options(batch_size=32, sort_by_length=True, io_binding=False).encode(some)
    for batch_size, sort, io_binding in [(1, True, True), (3, False, False), (3, False, True), (32, True, True)]:
        got = embedder.with_options(batch_size=batch_size, sort_by_length=sort, io_binding=io_binding).encode(some)
        similarity = cosines(got, expected)
        if session.get("quantize"):
            assert similarity.min() >= 0.95 and similarity.mean() >= 0.98
        else:
            assert similarity.min() >= 0.999
            np.testing.assert_allclose(got, plain, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    unbound = embedder.with_options(batch_size=3, sort_by_length=False)
    np.testing.assert_array_equal(unbound.with_options(io_binding=True).encode(some), unbound.encode(some))


def test_batches_sorted_by_length_or_in_the_callers_order(onnx_fp32):
    lengths = [5, 9, 2, 7, 9]
    assert onnx_fp32.with_options(batch_size=2, sort_by_length=True).batches(lengths) == [[1, 4], [3, 0], [2]]
    assert onnx_fp32.with_options(batch_size=2, sort_by_length=False).batches(lengths) == [[0, 1], [2, 3], [4]]


def test_cache_repeats_cost_no_model_call(onnx_fp32):
    calls = []

    def compute(batch):
        calls.append(list(batch))
        return onnx_fp32.encode(batch)

    cache = EmbeddingCache(maxsize=2)
    first = cache.encode(["a b", "c d", "a b"], compute, 384)
    assert calls == [["a b", "c d"]]  # duplicates inside a call are computed once
    np.testing.assert_array_equal(first[0], first[2])
    again = cache.encode(["c d", "a b"], compute, 384)
    assert len(calls) == 1
    np.testing.assert_array_equal(again, first[[1, 0]])
    assert cache.info() == {"hits": 3, "misses": 2, "size": 2, "maxsize": 2}
    again[0] += 1  # callers get copies: the cached vector is not changed
    np.testing.assert_array_equal(cache.encode(["c d"], compute, 384)[0], first[1])


def test_cache_evicts_least_recently_used():
    cache = EmbeddingCache(maxsize=2)
    hash_embed = HashEmbedder(8).encode
    cache.encode(["a"], hash_embed, 8)
    cache.encode(["b"], hash_embed, 8)
    cache.encode(["a"], hash_embed, 8)  # "a" is now the most recent
    cache.encode(["c"], hash_embed, 8)  # evicts "b"
    misses = cache.info()["misses"]
    cache.encode(["a", "c"], hash_embed, 8)
    assert cache.info()["misses"] == misses
    cache.encode(["b"], hash_embed, 8)
    assert cache.info()["misses"] == misses + 1


def test_cache_size_zero_always_computes():
    calls = []
    cache = EmbeddingCache(maxsize=0)
    for _ in range(2):
        cache.encode(["a"], lambda t: calls.append(t) or HashEmbedder(8).encode(t), 8)
    assert len(calls) == 2 and len(cache) == 0


@pytest.mark.parametrize("size", [-1, 1.5, "10", True])
def test_cache_bad_size(size):
    with pytest.raises(ValueError, match="cache_size"):
        EmbeddingCache(size)


def test_cache_prefill_and_strict_mode():
    vectors = HashEmbedder(8).encode(["a", "b"])
    strict = EmbeddingCache(maxsize=None, strict=True)
    strict.prefill(["a", "b"], vectors)
    assert np.array_equal(strict.encode(["b", "a"], lambda t: pytest.fail("computed"), 8), vectors[[1, 0]])
    with pytest.raises(KeyError, match="not embedded beforehand"):
        strict.encode(["a", "c"], lambda t: HashEmbedder(8).encode(t), 8)
    with pytest.raises(ValueError, match="one vector per text"):
        strict.prefill(["a", "b", "c"], vectors)
    with pytest.raises(ValueError, match="does not fit"):
        EmbeddingCache(maxsize=1).prefill(["a", "b"], vectors)


def test_cached_embedder_computes_up_front_and_counts_misses():
    calls = []

    class Counting(HashEmbedder):
        def encode(self, texts):
            calls.append(list(texts))
            return super().encode(texts)

    cached = CachedEmbedder(Counting(8), ["a", "b", "a"])
    assert calls == [["a", "b"]] and cached.misses == 0  # one batch, distinct texts
    assert np.array_equal(cached.encode(["b"]), HashEmbedder(8).encode(["b"]))
    assert len(calls) == 1
    cached.encode(["c"])  # not filled: goes to the model, and is counted
    assert calls[-1] == ["c"] and cached.misses == 1
    with pytest.raises(ValueError, match="needs an embedder"):
        CachedEmbedder(None, ["a"])


@pytest.mark.parametrize("io_binding", [False, True])
def test_encode_from_many_threads_matches_serial(onnx_fp32, texts, io_binding):
    """The router may be called from many threads: shared session, locked cache, a binding per call."""
    shared = onnx_embedder.OnnxEmbedder(cache_size=16, path=onnx_fp32.path, io_binding=io_binding)
    texts = texts[:50]
    expected = onnx_fp32.encode(texts)
    jobs = [texts[i:i + 4] for i in range(0, 46, 2)]  # overlapping, so threads share cache entries
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(shared.encode, jobs))
    index = {t: i for i, t in enumerate(texts)}
    for job, vectors in zip(jobs, results):
        np.testing.assert_allclose(vectors, expected[[index[t] for t in job]], atol=1e-5)
    assert len(shared.cache) <= 16


def test_atomic_build_never_shows_a_partial_file(tmp_path):
    dest = tmp_path / "sub" / "model.onnx"
    payload = b"x" * 200_000
    seen = []
    done = threading.Event()

    def slow_build(out):
        with open(out, "wb") as f:
            for i in range(0, len(payload), 20_000):
                f.write(payload[i:i + 20_000])
                f.flush()
                done.wait(0.002)

    def reader():
        while not done.is_set():
            if dest.exists():
                seen.append(dest.stat().st_size)

    watcher = threading.Thread(target=reader)
    watcher.start()
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda _: onnx_embedder.atomic_build(dest, slow_build), range(3)))
    done.set()
    watcher.join()
    assert dest.read_bytes() == payload
    assert set(seen) <= {len(payload)}
    assert [p.name for p in dest.parent.iterdir()] == ["model.onnx"]


def test_atomic_build_failure_leaves_nothing(tmp_path):
    dest = tmp_path / "model.onnx"

    def broken(out):
        out.write_bytes(b"half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        onnx_embedder.atomic_build(dest, broken)
    assert list(tmp_path.iterdir()) == []


def test_model_file_follows_qis_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("QIS_CACHE_DIR", str(tmp_path))
    assert onnx_embedder.model_file(quantize=True).parent == tmp_path / "onnx"
    assert onnx_embedder.model_file(True).name.endswith("-int8.onnx")
    monkeypatch.delenv("QIS_CACHE_DIR")
    import platformdirs

    # without the variable: the user's cache folder, never the source tree or the installed package
    assert onnx_embedder.model_file().parent == Path(platformdirs.user_cache_dir("qis-routing")) / "onnx"
    assert Path(onnx_embedder.__file__).parents[2] not in onnx_embedder.model_file().parents


def test_export_without_onnx_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("QIS_CACHE_DIR", str(tmp_path))
    real_find_spec = onnx_embedder.importlib.util.find_spec
    monkeypatch.setattr(onnx_embedder.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real_find_spec(name, *a))
    assert "onnx" in onnx_embedder.unavailable_reason()
    with pytest.raises(ImportError, match="onnx"):
        onnx_embedder.OnnxEmbedder()


@pytest.fixture
def fresh_registry(monkeypatch):
    """get_embedder's shared instances, emptied for one test."""
    monkeypatch.setattr(embeddings, "_cache", {})
    return embeddings._cache


def test_get_embedder_default_is_onnx_and_says_so(fresh_registry, cache_dir, onnx_fp32, caplog):
    with caplog.at_level(logging.INFO, logger="qis_lib.embedders"):
        chosen = get_embedder()
        again = get_embedder()
    assert chosen is again and chosen is get_embedder("onnx")
    assert chosen.name == "onnx:all-MiniLM-L6-v2:fp32"
    messages = [r.getMessage() for r in caplog.records if "embedder: using" in r.getMessage()]
    assert len(messages) == 1 and "onnx" in messages[0]


def test_get_embedder_falls_back_and_says_why(fresh_registry, monkeypatch, caplog):
    monkeypatch.setattr(embeddings, "unavailable_reason",
                        lambda b: "missing packages: onnx" if b == "onnx" else None)
    monkeypatch.setitem(embeddings.BACKENDS, "sentence-transformers", lambda: HashEmbedder())
    with caplog.at_level(logging.INFO, logger="qis_lib.embedders"):
        chosen = get_embedder()
    assert chosen.name == "hash:384"  # the stand-in registered as sentence-transformers above
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "onnx: missing packages: onnx" in warning[0].getMessage()


def test_get_embedder_falls_back_when_the_fast_path_breaks(fresh_registry, monkeypatch, caplog):
    def broken():
        raise OSError("disk full")

    monkeypatch.setitem(embeddings.BACKENDS, "onnx", broken)
    monkeypatch.setitem(embeddings.BACKENDS, "sentence-transformers", lambda: HashEmbedder())
    monkeypatch.setattr(embeddings, "unavailable_reason", lambda b: None)
    with caplog.at_level(logging.WARNING, logger="qis_lib.embedders"):
        assert get_embedder().name == "hash:384"
    assert "OSError: disk full" in caplog.text


def test_get_embedder_unknown_backend():
    with pytest.raises(ValueError, match="unknown embedder backend 'bert'"):
        get_embedder("bert")


def test_benchmark_measures_every_backend(onnx_fp32, onnx_int8, reference):
    """A tiny run of the benchmark's measuring loop: shape and sanity, no speed asserted."""
    table = measure({"sentence-transformers": reference, "onnx": onnx_fp32, "onnx-int8": onnx_int8},
                    real_texts()[:6], rounds=1, warmup=1)
    assert list(table["backend"]) == list(BENCH_BACKENDS)
    assert (table["single_p50_ms"] > 0).all() and (table["batch_texts_per_s"] > 0).all()
    reference_row = table.set_index("backend").loc["sentence-transformers"]
    assert reference_row["single_speedup"] == 1.0 and reference_row["cosine_min"] > 0.9999
    assert table.set_index("backend").loc["onnx", "same_top5"] == 1.0


def test_hash_embedder_is_deterministic_and_unit_length():
    a = HashEmbedder(32).encode(["same words here", "other"])
    b = HashEmbedder(32).encode(["same words here", "other"])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="dim"):
        HashEmbedder(0)


def test_check_texts_and_normalise():
    assert check_texts(("a", "b")) == ["a", "b"]
    with pytest.raises(TypeError, match="single str"):
        check_texts("a")
    np.testing.assert_allclose(normalise(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


def test_flops_per_text_by_hand():
    shape = limit.model_shape()
    assert shape == limit.ModelShape(layers=6, hidden=384, ffn=1536)
    # n = 10: projections 8*10*384^2 = 11,796,480; feed-forward 4*10*384*1536 = 23,592,960;
    # attention 4*10^2*384 = 153,600; 6 layers: 6 * 35,543,040 = 213,258,240
    assert limit.flops_per_text([10], shape).tolist() == [213_258_240]
    assert limit.flops_per_text(1, shape) == 6 * (8 * 384 ** 2 + 4 * 384 * 1536 + 4 * 384)


def test_grid_is_the_product_of_the_options():
    configs = limit.grid(["fp32", "int8"], [1, 2], [1, 8], [True, False], [False, True], ["all"])
    # one text a batch is the same sorted or not: 2 * 2 * (1 * 2 + 1 * 2 * 2) = 24
    assert len(configs) == len(set(configs)) == 24
    assert all(c.sort_by_length for c in configs if c.batch_size == 1)
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'int8', got 'fp16'"):
        limit.grid(["fp16"])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        limit.grid(batch_sizes=[0])
    default = onnx_embedder.DEFAULT_CONFIG
    assert limit.same_config(replace(default, threads=None), replace(default, threads=os.cpu_count()))
    assert not limit.same_config(default, replace(default, batch_size=default.batch_size + 1))


def test_matmul_peak_runs_the_models_shapes(cache_dir):
    for quantize in (False, True):
        peak = limit.matmul_peak(1, quantize, rows=[8], min_seconds=0.001)
        assert peak["precision"] == ("int8" if quantize else "fp32") and peak["threads"] == 1
        assert peak["gflops"] > 0 and peak["rows"] == 8 and {peak["k"], peak["n"]} == {384, 1536}


def test_limit_rows_have_the_documented_columns(onnx_fp32, onnx_int8, reference, texts):
    some = texts[:5] + ["x", LONG]
    configs = limit.grid(["fp32", "int8"], [1], [1, 3], [True, False], [True], ["all"])
    table = limit.measure(configs, some, reference.encode(some), rounds=1)
    assert list(table.columns) == list(limit.COLUMNS) and len(table) == len(configs) == 6
    tokens = [len(ids) for ids in onnx_fp32.token_ids(some)]
    expected = limit.flops_per_text(tokens, limit.model_shape())
    np.testing.assert_allclose(table["gflop_per_text"], expected.mean() / 1e9)
    np.testing.assert_allclose(table["gflops"], expected.sum() / table["seconds"] / 1e9)
    np.testing.assert_allclose(table["tokens_per_s"] / table["texts_per_s"], np.mean(tokens))
    by_batch = table.set_index(["precision", "batch_size", "sort_by_length"])
    assert (by_batch.loc[(slice(None), 1), "padding"] == 0).all()
    for sort, order in ((False, tokens), (True, sorted(tokens, reverse=True))):  # padded tokens by hand
        computed = sum(len(order[i:i + 3]) * max(order[i:i + 3]) for i in range(0, len(order), 3))
        np.testing.assert_allclose(by_batch.loc[(slice(None), 3, sort), "padding"], computed / sum(tokens) - 1)
    in_calls = limit.measure(configs[1:2], some, reference.encode(some), rounds=1, call_size=4)
    assert configs[1].batch_size == 3 and configs[1].sort_by_length and in_calls.loc[0, "call_size"] == 4 and table.loc[0, "call_size"] == 7
    calls = [sorted(tokens[:4], reverse=True), sorted(tokens[4:], reverse=True)]  # sorted within each call
    computed = sum(len(c[i:i + 3]) * max(c[i:i + 3]) for c in calls for i in range(0, len(c), 3))
    assert in_calls.loc[0, "padding"] == pytest.approx(computed / sum(tokens) - 1)
    assert table["qualifies"].tolist() == (table["cosine_min"] >= limit.THRESHOLD).tolist()
    assert table[table["precision"] == "fp32"]["qualifies"].all()
    best = limit.choose(table, configs)  # no reference given: no check on every text
    fastest = table[table["qualifies"]].sort_values("texts_per_s").iloc[-1]
    assert best["label"] == fastest["label"] and best["config"]["quantize"] is False and best["all_texts"] is None
    assert limit.choose(table.assign(qualifies=False), configs) is None


def test_choice_falls_to_the_next_when_the_full_check_fails(monkeypatch):
    configs = limit.grid(["fp32"], [1], [1, 8, 16], [True], [False], ["all"])
    table = pd.DataFrame({"label": [c.label for c in configs], "texts_per_s": [30.0, 50.0, 40.0],
                          "qualifies": True, "cosine_min": 1.0})
    checked = []
    monkeypatch.setattr(limit, "gitbugs_texts", lambda: ["a text"])
    monkeypatch.setattr(limit, "full_check", lambda config, texts, reference: checked.append(config.batch_size)
                        or {"qualifies": config.batch_size != 8})
    assert limit.choose(table, configs, reference=object())["config"]["batch_size"] == 16
    assert checked == [8, 16]


def test_limit_command_writes_its_rows_and_context(cache_dir, tmp_path, capsys):
    out = tmp_path / "limit"
    table, record = limit.main(["--texts", "3", "--rounds", "1", "--precision", "fp32", "--threads", "1",
                                "--batch-sizes", "1,2", "--sort", "on", "--io-binding", "off",
                                "--optimization", "all", "--peak-rows", "16", "--no-full-check", "--out", str(out)])
    assert len(pd.read_csv(out / "limit.csv")) == len(table) == 2
    written = json.loads((out / "limit.json").read_text())
    assert written["command"].startswith("python -m qis_lib.bench.embedding_limit --texts 3")
    assert {"machine", "load_average_start", "load_average_end", "peaks_before", "peaks_after"} <= set(written)
    assert written["machine"]["onnxruntime"] == onnxruntime.__version__
    assert (table["peak_gflops"] > 0).all() and (table["share_of_peak"] > 0).all()
    assert written["fastest_qualifying"]["label"] in set(table["label"])
    assert "fastest with cosine_min >= 0.999: fp32 threads=1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        limit.main(["--sort", "maybe"])
    assert "choose from" in capsys.readouterr().err


def test_full_check_covers_every_text_given(cache_dir, texts, reference):
    check = limit.full_check(replace(onnx_embedder.DEFAULT_CONFIG, threads=1), texts[:4], reference)
    assert check["texts"] == 4 and check["cosine_min"] >= 0.999 and check["qualifies"]


def test_int8_recall_compares_with_the_quality_codes_recall(onnx_fp32, reference):
    ds = load_gitbugs(Path(__file__).parent / "fixtures" / "gitbugs_mini" / "jira")
    twin = onnx_fp32.with_options(batch_size=2)  # other batches, the same vectors: no change

    class Scrambled(HashEmbedder):  # vectors that know nothing of the texts' meaning
        def encode(self, texts):
            return normalise(np.random.default_rng(7).standard_normal((len(texts), 384)))

    table, verdict = int8_recall.compare({"onnx": onnx_fp32, "twin": twin, "noise": Scrambled(384)}, reference,
                                         ds.packets, ds.duplicate_pairs, rounds=1, k=1)
    rows = table.set_index("embedder")
    ranks = exact_ranks(onnx_fp32.encode([p.problem_description for p in ds.packets]), ds.packets, ds.duplicate_pairs)
    assert rows.loc["onnx", "recall@1"] == recall_summary(ranks, ks=(1,))["recall@1"] > 0.5
    assert verdict == {"twin": True, "noise": False}
    assert rows.loc["twin", "recall@1_change"] == 0 and rows.loc["twin", "lost"] == rows.loc["twin", "gained"] == 0
    noise = rows.loc["noise"]
    assert noise["recall@1_change"] < -0.01 and noise["cosine_min"] < 0.5
    assert noise["lost"] - noise["gained"] == round(-noise["recall@1_change"] * noise["queries"])


def test_service_embedder_is_a_backend_the_service_starts_with():
    from qis_lib.serve.__main__ import parse_args

    assert embeddings.SERVICE_EMBEDDER is None or embeddings.SERVICE_EMBEDDER in embeddings.BACKENDS
    assert parse_args([]).embedder == embeddings.SERVICE_EMBEDDER
