"""BM25 sparse vectors: the one tokenizer and encoder every hybrid store uses.

Hybrid search keeps two vectors per packet: the dense embedding of its problem text,
and a BM25 sparse vector of the same text (token hash -> term-frequency weight with
BM25's length normalisation). The engine multiplies each query token by its IDF over
the stored packets at query time (Qdrant's sparse vectors with the IDF modifier), so
the store's own contents decide which words are rare. Dense and BM25 results are then
fused by reciprocal rank fusion inside the engine (`HybridParams`).

The tokenizer is qdrant-edge's `Bm25` (the Qdrant engine's own: English stop words,
Snowball stemming, lower case); qdrant-client stores get the same sparse vectors from it,
so a packet written through any Qdrant store is indexed the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

SPARSE_NAME = "bm25"  # the sparse vector's name in every hybrid store
TEXT_FIELD = "problem_description"  # the payload field BM25 indexes


@dataclass(frozen=True)
class HybridParams:
    """How a hybrid store fuses its two searches.

    rrf_k: reciprocal rank fusion's k (score = sum 1 / (k + rank), ranks from 0 as
    Qdrant counts them): small k trusts the top ranks of each list, large k flattens.
    prefetch: how many candidates each branch (dense, BM25) hands to the fusion.
    avg_len: the average document length (tokens) in BM25's length normalisation.
    rrf_k and prefetch were chosen in notebook 06 on the earlier two thirds of the Hadoop
    duplicate pairs (of rrf_k 2 or 60, prefetch 20 or 100: the best recall@10); avg_len
    is the mean word count of the Hadoop packets' problem texts (33.7), no labels used.
    """

    rrf_k: int = 60
    prefetch: int = 20
    avg_len: float = 34.0

    def __post_init__(self) -> None:
        for name in ("rrf_k", "prefetch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "rrf_k" else 1):
                raise ValueError(f"{name} must be an int >= {0 if name == 'rrf_k' else 1}, got {value!r}")
        if isinstance(self.avg_len, bool) or not isinstance(self.avg_len, (int, float)) or not self.avg_len > 0:
            raise ValueError(f"avg_len must be a number > 0, got {self.avg_len!r}")


def check_text(text) -> str:
    """A hybrid query's text: a non-empty string."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string (the query's problem text), got {text!r}")
    return text


class Bm25Encoder:
    """Text -> BM25 sparse vector as (indices, values), for documents and for queries."""

    def __init__(self, avg_len: float = HybridParams.avg_len):
        import qdrant_edge as qe

        HybridParams(avg_len=avg_len)  # checks it
        self.avg_len = float(avg_len)
        self._model = qe.Bm25(qe.Bm25Config(avg_len=self.avg_len))

    def document_edge(self, text: str):
        """qdrant_edge.SparseVector of a stored text (term frequencies, length-normalised)."""
        return self._model.embed_document(text)

    def query_edge(self, text: str):
        """qdrant_edge.SparseVector of a query (each token once, weight 1; the engine applies IDF)."""
        return self._model.embed_query(text)

    def document(self, text: str) -> tuple[list[int], list[float]]:
        sparse = self.document_edge(text)
        return list(sparse.indices), [float(v) for v in sparse.values]

    def query(self, text: str) -> tuple[list[int], list[float]]:
        sparse = self.query_edge(text)
        return list(sparse.indices), [float(v) for v in sparse.values]

    def tokens(self, text: str) -> int:
        """How many distinct indexed tokens a text has (stop words and duplicates out)."""
        return len(self.query_edge(text).indices)
