"""A tiny deterministic embedder for unit tests."""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np

from .base import DIM, check_texts, normalise

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
