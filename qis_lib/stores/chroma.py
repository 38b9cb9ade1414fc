"""ChromaDB transport: embedded (ephemeral or a persistent path) or a `chroma run` server.

We always pass our own embeddings: Chroma's default embedding function would
download a model. Domain tags are a list metadata field matched with `$contains`.
"""
from __future__ import annotations

import uuid
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np

from .contract import Capabilities, FolderManifest, QueryFilter, Store, check_dim, lock_folder, opening_error
from .options import warn_ignored


QUERY_ATTEMPTS = 3


def heartbeat_problem(url: str, timeout: float = 1.0) -> str | None:
    """None if a Chroma server answers its heartbeat at `url` within `timeout`, else why not."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v2/heartbeat", timeout=timeout) as response:
            return None if response.status == 200 else f"heartbeat answered HTTP {response.status}"
    except OSError as exc:  # refused, timed out, DNS, HTTP errors
        return f"{type(exc).__name__}: {exc}"


def chroma_where(flt: QueryFilter) -> dict[str, Any]:
    """The router's filter as a Chroma `where` clause. A condition that keeps every packet is left
    out (confidence >= 0.0: an OutcomePacket's confidence is from 0 to 1)."""
    clauses: list[dict[str, Any]] = [{"expires_at": {"$gt": flt.now}}]
    if flt.min_confidence > 0.0:
        clauses.append({"confidence": {"$gte": flt.min_confidence}})
    if flt.domain is not None:
        clauses.append({"domain_tags": {"$contains": flt.domain}})
    if flt.exclude_agent is not None:
        clauses.append({"agent_id": {"$ne": flt.exclude_agent}})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}  # Chroma's $and takes two or more


def _to_metadata(payload: dict) -> dict:
    # Chroma refuses empty lists, and an upsert merges metadata: a key left out keeps its
    # old value (and, in chromadb 1.5.9, may even show a value from a deleted collection).
    # None deletes the key; _from_metadata puts the empty list back.
    return {k: None if isinstance(v, list) and not v else v for k, v in payload.items()}


def _from_metadata(metadata: dict | None) -> dict:
    payload = dict(metadata or {})
    payload.setdefault("domain_tags", [])
    return payload


class ChromaStore(Store):
    """ChromaDB: embedded ephemeral (no path, no url), embedded persistent (`path=`) or a
    `chroma run` server (`url=`), one collection in cosine space."""

    name = "chroma"

    def __init__(self, path: str | None = None, url: str | None = None, collection: str | None = None,
                 dim: int = 384, timeout: float = 10.0, *, quantization: str | None = None, m: int | None = None,
                 ef_construct: int | None = None, hnsw_ef: int | None = None):
        import chromadb

        warn_ignored("chroma", "qdrant or qdrant-edge", quantization=quantization, m=m, ef_construct=ef_construct,
                     hnsw_ef=hnsw_ef)
        from chromadb.config import Settings

        if path is not None and url is not None:
            raise ValueError("give chroma either path= (embedded) or url= (server), not both")
        self._lock_file = None
        self._timeout = timeout
        self.dim = check_dim(dim)
        settings = Settings(anonymized_telemetry=False)
        if url is not None:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"chroma url must look like http://host:port, got {url!r}")
            port = parsed.port or (443 if parsed.scheme == "https" else 8000)
            # chromadb's own first request has no timeout: a hung server would hang us here.
            problem = heartbeat_problem(url, timeout)
            if problem:
                raise ConnectionError(f"cannot reach the Chroma server at {url}: {problem}")
            try:
                self.client = chromadb.HttpClient(host=parsed.hostname, port=port, ssl=parsed.scheme == "https",
                                                  settings=settings)
            except Exception as exc:
                raise ConnectionError(f"cannot reach the Chroma server at {url}: {exc}") from None
            # chromadb's HTTP client waits forever (httpx timeout=None, no setting to change it),
            # so a hung server would hang every agent: give its session our timeout.
            session = getattr(getattr(self.client, "_server", None), "_session", None)
            if session is not None:
                import httpx

                session.timeout = httpx.Timeout(timeout)
        elif path is not None:
            self._lock_file = lock_folder(str(path), "chroma")
            try:
                self.client = chromadb.PersistentClient(path=str(path), settings=settings)
            except Exception as exc:
                self.close()
                raise opening_error("chroma", str(path), exc) from exc
        else:
            self.client = chromadb.EphemeralClient(settings=settings)
        self._ephemeral = path is None and url is None
        if collection is None:
            # Ephemeral clients in one process share one in-memory system: without a name
            # of its own, a second make_router("chroma") would see the first one's packets.
            collection = f"outcomes-{uuid.uuid4().hex[:12]}" if self._ephemeral else "outcomes"
        self.url, self.path = url, path
        self.capabilities = Capabilities(persistent=url is not None or path is not None,
                                         shared=url is not None, server=url is not None)
        self._manifest = FolderManifest(str(path), "chroma") if path is not None else None
        try:
            self.collection = self.client.get_or_create_collection(
                collection, embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
            )
            self._max_batch = self.client.get_max_batch_size()
            count = self.count() if self._manifest is not None else 0
        except Exception as exc:
            if path is None:
                raise
            self._manifest = None  # closing a store that failed to open must not overwrite the manifest
            self.close()
            raise opening_error("chroma", str(path), exc) from exc
        if self._manifest is not None:
            try:
                self._manifest.check(count)
            except Exception:
                self._manifest = None
                self.close()
                raise

    def _upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        metadatas = [_to_metadata(p) for p in payloads]
        for start in range(0, len(ids), self._max_batch):
            end = start + self._max_batch
            self._guard("an upsert", lambda: self.collection.upsert(
                ids=ids[start:end], embeddings=vectors[start:end], metadatas=metadatas[start:end]))
        if self._manifest is not None:
            self._manifest.after_write(self.count)

    def _native_query(self, vectors: np.ndarray, top_k: int, where: dict):
        return self._guard("a query", lambda: self.collection.query(
            query_embeddings=vectors, n_results=top_k, where=where, include=["metadatas", "distances"]))

    def _query(self, vector: np.ndarray, top_k: int, flt: QueryFilter) -> list[tuple[dict, float]]:
        where = chroma_where(flt)
        for attempt in range(QUERY_ATTEMPTS):
            try:
                result = self._native_query(vector[None, :], top_k, where)
                break
            except Exception as exc:
                # chromadb 1.5.9: a query racing an upsert in another thread sometimes fails with
                # "Error finding id" (measured by tests/test_reliability.py); asked again, it answers.
                if "Error finding id" not in str(exc) or attempt == QUERY_ATTEMPTS - 1:
                    raise
        # cosine space: distance = 1 - cosine similarity
        return [(_from_metadata(m), 1.0 - float(d)) for m, d in zip(result["metadatas"][0], result["distances"][0])]

    def native_query_fn(self, vectors: np.ndarray, filters: Sequence[QueryFilter], k: int):
        """`collection.query(...)` with every where clause and query batch built beforehand."""
        wheres = [chroma_where(f) for f in filters]
        batches = [v[None, :] for v in vectors]
        return lambda j: self._native_query(batches[j], k, wheres[j])

    def _get(self, ids: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for start in range(0, len(ids), self._max_batch):
            result = self._guard("a get", lambda: self.collection.get(ids=ids[start:start + self._max_batch],
                                                                     include=["metadatas"]))
            out.update({i: _from_metadata(m) for i, m in zip(result["ids"], result["metadatas"])})
        return out

    def _delete(self, ids: list[str]) -> None:
        if self._manifest is not None:
            self._manifest.before_delete(len(ids))
        for start in range(0, len(ids), self._max_batch):
            self._guard("a delete", lambda: self.collection.delete(ids=ids[start:start + self._max_batch]))

    def count(self) -> int:
        return self._guard("a count", self.collection.count)

    def _guard(self, what: str, call):
        """call(); on a server, a request that got no answer becomes a ConnectionError naming the
        server; in a folder, a write the disk refused becomes an OSError naming the folder."""
        if self.url is None:
            try:
                return call()
            except Exception as exc:
                if self.path is not None and what in ("an upsert", "a delete"):
                    raise OSError(f"the chroma store at {self.path} could not write {what} ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:300]}); if its disk is full, free space: what was "
                                  f"acknowledged before is kept") from exc
                raise
        import httpx

        try:
            return call()
        except httpx.TransportError as exc:  # timeouts, refused and dropped connections
            raise ConnectionError(f"the Chroma server at {self.url} did not answer {what} within {self._timeout}s "
                                  f"({type(exc).__name__}: {exc})") from exc

    def scroll_ids(self, page: int = 1000) -> list[str]:
        ids: list[str] = []
        while True:
            batch = self.collection.get(include=[], limit=page, offset=len(ids))["ids"]
            ids.extend(batch)
            if len(batch) < page:
                return ids

    def _purge_expired(self, now: float, agent_id: str | None) -> int:
        """Delete the packets expired at `now` (of `agent_id` only, if given): their ids by a
        `where` on expires_at, then a delete."""
        where = {"expires_at": {"$lte": now}}
        if agent_id is not None:
            where = {"$and": [where, {"agent_id": agent_id}]}
        ids = list(self.collection.get(where=where, include=[])["ids"])
        if ids and self._manifest is not None:
            self._manifest.before_delete(len(ids))
        for start in range(0, len(ids), self._max_batch):
            # ids and where together: a packet renewed since the get (a live one now) stays.
            self.collection.delete(ids=ids[start:start + self._max_batch], where=where)
        return len(ids)

    def close(self) -> None:
        """Release the client; an ephemeral store deletes its collection, a path its lock."""
        # PersistentClient keeps its SQLite files open until the process ends; dropping
        # our references is all a client can do.
        if getattr(self, "_manifest", None) is not None and getattr(self, "collection", None) is not None:
            self._manifest.record(self.count())
        if getattr(self, "_ephemeral", False) and getattr(self, "collection", None) is not None:
            self.client.delete_collection(self.collection.name)  # free its memory
        self.collection = None
        self.client = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None
