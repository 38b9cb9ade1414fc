"""The one embedding cache: text -> vector, thread-safe, with prefill and a strict mode.

Every real embedder keeps one (an LRU), so an agent that asks the same question again
pays a dict lookup, not a model call. `CachedEmbedder` puts one in front of any
embedder with its vectors filled beforehand, which is how the experiments take the
model off the clock: `strict=True` makes a text that was not filled an error instead
of a silent model call.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Iterable, Sequence

import numpy as np

from .base import Embedder, check_texts

CACHE_SIZE = 4096  # texts; 384 float32 = 1.5 kB each, so about 6 MB when full


class EmbeddingCache:
    """A thread-safe LRU of text -> vector. maxsize=0 turns it off; None never evicts.

    strict=True: a text that is not cached raises KeyError instead of being computed.
    """

    def __init__(self, maxsize: int | None = CACHE_SIZE, strict: bool = False):
        if maxsize is not None and (not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0):
            raise ValueError(f"cache_size must be None or an int >= 0, got {maxsize!r}")
        self.maxsize = maxsize
        self.strict = strict
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, text: str) -> bool:
        with self._lock:
            return text in self._data

    def _store(self, texts: Sequence[str], vectors: np.ndarray) -> dict[str, np.ndarray]:
        """Put vectors in (read-only copies), evicting the least recently used; caller holds the lock."""
        stored = {}
        for text, vector in zip(texts, vectors):
            vector = np.array(vector, dtype=np.float32)
            vector.flags.writeable = False
            self._data[text] = stored[text] = vector
            self._data.move_to_end(text)
        while self.maxsize is not None and len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return stored

    def prefill(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Cache `vectors[i]` for `texts[i]` (for vectors computed elsewhere, e.g. in one batch)."""
        texts = check_texts(texts)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(f"prefill needs one vector per text: {len(texts)} texts, vectors of shape "
                             f"{vectors.shape}")
        if self.maxsize is not None and len(set(texts)) > self.maxsize:
            raise ValueError(f"prefill of {len(set(texts))} texts does not fit a cache of {self.maxsize}")
        with self._lock:
            self._store(texts, vectors)

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
        if missing and self.strict:
            raise KeyError(f"{len(missing)} text(s) were not embedded beforehand (strict cache), "
                           f"e.g. {missing[0]!r}")
        if missing:
            # The model runs outside the lock, so threads asking different texts run in parallel.
            vectors = compute(missing)
            with self._lock:
                found.update(self._store(missing, vectors))
        with self._lock:
            self.misses += len(missing)
            self.hits += len(texts) - len(missing)
        return np.stack([found[t] for t in texts])

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def info(self) -> dict[str, int | None]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "size": len(self._data), "maxsize": self.maxsize}


class CachedEmbedder:
    """`embedder` behind a cache filled beforehand, so timed code pays a cache hit, not the model.

    Fill it with `texts` (encoded by `embedder` now, in one batch) or with `texts` and
    their `vectors` (computed elsewhere; `embedder` may then be None). With strict=True an
    unknown text raises KeyError; otherwise it is encoded by `embedder` and counted in
    `misses`. The cache never evicts.
    """

    def __init__(self, embedder: Embedder | None = None, texts: Iterable[str] = (), vectors: np.ndarray | None = None,
                 *, strict: bool = False, name: str | None = None):
        if embedder is None and (vectors is None or not strict):
            raise ValueError("CachedEmbedder needs an embedder, unless it is strict and given the vectors")
        self.embedder = embedder
        self.cache = EmbeddingCache(maxsize=None, strict=strict)
        texts = check_texts(list(texts))
        if vectors is not None:
            self.dim = int(np.asarray(vectors).shape[-1])
            self.cache.prefill(texts, vectors)
        else:
            self.dim = embedder.dim
            self.warm(texts)
        self.name = name or f"cached:{embedder.name if embedder is not None else 'prefilled'}"

    @property
    def misses(self) -> int:
        """Texts that were not filled beforehand and went to the model."""
        return self.cache.misses

    def warm(self, texts: Iterable[str]) -> None:
        """Encode the texts not cached yet, in one batch, without counting them as misses."""
        texts = list(dict.fromkeys(t for t in check_texts(list(texts)) if t not in self.cache))
        if texts:
            self.cache.prefill(texts, self.embedder.encode(texts))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.cache.encode(check_texts(texts), self._compute, self.dim)

    def _compute(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)
