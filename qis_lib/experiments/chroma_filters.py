"""What Chroma (embedded, `path=`) keeps over metadata, read from its own SQLite file.

chromadb stores each metadata field as rows of `embedding_metadata` (scalars) and
`embedding_metadata_array` (list values such as `domain_tags`), and its migrations
create B-tree indexes on (key, value) over both. `metadata_indexes` lists them;
`query_plans` asks SQLite how it would find the rows for the router's filters
(`EXPLAIN QUERY PLAN`), which says whether an index is used. Read-only: the file is
opened with `mode=ro`, so call these on a closed store's folder.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pandas as pd

TABLES = ("embedding_metadata", "embedding_metadata_array")
# the lookups behind the router's filters: one per field kind
LOOKUPS = {
    "domain (array contains)": "SELECT id FROM embedding_metadata_array WHERE key = 'domain_tags' AND string_value = 'd07'",
    "agent_id equal": "SELECT id FROM embedding_metadata WHERE key = 'agent_id' AND string_value = 'agent-7'",
    "confidence >= x": "SELECT id FROM embedding_metadata WHERE key = 'confidence' AND float_value >= 0.7",
    "expires_at > now": "SELECT id FROM embedding_metadata WHERE key = 'expires_at' AND float_value > 0",
}


def _connect(folder: str | os.PathLike) -> sqlite3.Connection:
    db = Path(folder) / "chroma.sqlite3"
    if not db.is_file():
        raise FileNotFoundError(f"no chroma.sqlite3 in {folder}: give the folder of an embedded Chroma store (path=)")
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def metadata_indexes(folder: str | os.PathLike) -> pd.DataFrame:
    """The indexes on Chroma's metadata tables: table, index name, its SQL."""
    with _connect(folder) as db:
        rows = db.execute("SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name IN "
                          f"({', '.join('?' * len(TABLES))}) ORDER BY tbl_name, name", TABLES).fetchall()
    return pd.DataFrame(rows, columns=["table", "index", "sql"])


def query_plans(folder: str | os.PathLike) -> pd.DataFrame:
    """SQLite's plan for each lookup in `LOOKUPS` ("SEARCH ... USING INDEX" or "SCAN")."""
    with _connect(folder) as db:
        rows = [{"filter": name, "plan": " | ".join(r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}"))}
                for name, sql in LOOKUPS.items()]
    return pd.DataFrame(rows)
