"""chromadb keeps B-tree indexes over metadata, and SQLite uses them for the router's filters."""
import time
import uuid

import numpy as np
import pytest

from qis_lib.experiments.chroma_filters import metadata_indexes, query_plans
from qis_lib.stores.chroma import ChromaStore


def test_chroma_metadata_is_indexed(tmp_path):
    store = ChromaStore(path=str(tmp_path), dim=8)
    store.upsert([str(uuid.UUID(int=i + 1)) for i in range(3)], np.random.default_rng(0).random((3, 8)),
                 [{"domain_tags": [f"d{i}"], "confidence": 0.5, "expires_at": time.time() + 60, "agent_id": f"a{i}"}
                  for i in range(3)])
    store.close()
    names = set(metadata_indexes(tmp_path)["index"])
    assert {"embedding_metadata_string_value", "embedding_metadata_float_value",
            "embedding_metadata_array_key_string"} <= names
    plans = query_plans(tmp_path)
    assert plans["plan"].str.contains("USING INDEX").all(), plans.to_string()
    with pytest.raises(FileNotFoundError, match="chroma.sqlite3"):
        metadata_indexes(tmp_path / "nowhere")
