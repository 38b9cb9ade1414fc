"""The article series' API where it can work: the Qdrant connection keywords, cluster
settings a mode cannot honour (a warning, never silence), `domain_filter=`, iterating a
synthesis, and the store's own view in `router.stats()["store_info"]`."""
import warnings

import pytest

from conftest import unique_name
from qis_lib import OutcomePacket, make_router
from qis_lib.infra.servers import free_port

NOW = 1_700_000_000.0


def packets():
    return [OutcomePacket(f"Postgres pool exhausted under load, case {i}", "resolved", 0.9, "Raised the pool size",
                          ["database" if i % 2 else "kubernetes"], timestamp=NOW, ttl=3600, agent_id=f"agent-{i}")
            for i in range(6)]


@pytest.mark.parametrize("prefer_grpc", [True, False])
def test_article_connection_keywords_with_no_server_are_a_connection_error(prefer_grpc):
    port, grpc_port = free_port(), free_port()  # loopback ports nobody listens on
    with pytest.raises(ConnectionError) as caught:
        make_router("qdrant", host="127.0.0.1", port=port, grpc_port=grpc_port, prefer_grpc=prefer_grpc,
                    replication_factor=2, shard_number=2, embedder="hash")
    message = str(caught.value)
    assert "no Qdrant server answered" in message
    assert (f"127.0.0.1:{grpc_port} (gRPC" if prefer_grpc else f"http://127.0.0.1:{port}") in message


def test_host_port_values_are_checked():
    for bad, match in (({"host": "http://x"}, "host must be"), ({"host": "x", "port": "6333"}, "port must be"),
                       ({"host": "x", "grpc_port": 0}, "grpc_port must be"),
                       ({"host": "x", "prefer_grpc": "yes"}, "prefer_grpc must be"),
                       ({"host": "x", "url": "http://y:6333"}, "one of location, path, url, urls, host")):
        with pytest.raises(ValueError, match=match):
            make_router("qdrant", embedder="hash", **bad)


@pytest.mark.parametrize("name,options", [("qdrant", {}), ("memory", {}), ("chroma", {}),
                                          ("qdrant-edge", {"path": None})])
def test_cluster_settings_a_mode_cannot_honour_are_a_warning(name, options, tmp_path):
    if "path" in options:
        options = {"path": str(tmp_path / "edge")}
    if name == "chroma":
        options = {"collection": unique_name()}
    with pytest.warns(UserWarning) as record:
        router = make_router(name, embedder="hash", replication_factor=2, shard_number=3, **options)
    with router:
        router.deposit_many(packets())
        assert router.stats()["packets"] == 6
    text = " ".join(str(w.message) for w in record)
    for setting in ("replication_factor=2", "shard_number=3"):
        assert setting in text
    assert "Qdrant server or cluster honours it" in text


def test_local_mode_warns_about_grpc_and_no_warning_without_settings():
    with pytest.warns(UserWarning, match="prefer_grpc=True has no effect in qdrant-client local mode"):
        make_router("qdrant", embedder="hash", prefer_grpc=True).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        make_router("qdrant", embedder="hash").close()


@pytest.mark.parametrize("name", ["memory", "qdrant"])
def test_domain_filter_is_the_article_name_for_domain(name):
    with make_router(name, embedder="hash") as router:
        router.deposit_many(packets())
        by_domain = router.query("Postgres pool exhausted", top_k=5, domain="database", now=NOW)
        by_article_name = router.query("Postgres pool exhausted", top_k=5, domain_filter="database", now=NOW)
        assert by_domain == by_article_name and len(by_domain) == 3
        assert all("database" in p.domain_tags for p, _ in by_article_name)
        with pytest.raises(ValueError, match="two names for one filter"):
            router.query("Postgres", domain="database", domain_filter="kubernetes")


def test_synthesis_iterates_as_the_article_loop():
    with make_router("memory", embedder="hash") as router:
        router.deposit_many(packets()[1:])
        mine = packets()[0]
        result = router.synthesize(mine.problem_description, mine, top_k=5, domain_filter="database", now=NOW)
        pairs = [(packet.agent_id, score) for packet, score in result]  # the article's loop
        assert pairs == [(p.agent_id, s) for p, s in result.matches] and len(result) == len(pairs) == 3
        assert result.consensus == "resolved" and "agent-0" not in dict(pairs)


def test_store_info_is_the_collection_stats():
    with make_router("qdrant", embedder="hash") as router:
        router.deposit_many(packets())
        info = router.stats()["store_info"]
        assert info["points"] == 6 and info["status"] == "green" and info["mode"] == "local"
        assert "indexed_vectors" in info and info["shard_number"] is None
    with make_router("memory", embedder="hash") as router:
        assert router.stats()["store_info"] == {}


def test_store_url_carries_grpc_settings():
    from qis_lib.core.urls import parse_store_url

    assert parse_store_url("qdrant://localhost:6333?prefer_grpc=true&grpc_port=6334") == (
        "qdrant", {"url": "http://localhost:6333", "prefer_grpc": True, "grpc_port": 6334})


def test_article_keywords_reach_qdrant_client(monkeypatch):
    """With a server named, host/port/grpc_port/prefer_grpc go to QdrantClient and the cluster
    settings to create_collection (recorded on a local-mode client standing in for the server)."""
    import qdrant_client

    seen = {}

    class Recording(qdrant_client.QdrantClient):
        def __init__(self, **kwargs):
            seen["client"] = kwargs
            super().__init__(location=":memory:")

        def create_collection(self, name, **kwargs):
            seen["collection"] = kwargs
            return super().create_collection(name, **kwargs)

    monkeypatch.setattr(qdrant_client, "QdrantClient", Recording)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # local mode's own warning about payload indexes
        router = make_router("qdrant", host="qdrant.example", port=7333, grpc_port=7334, prefer_grpc=True,
                             replication_factor=2, shard_number=3, embedder="hash")
    with router:
        assert router.store.active_url == "http://qdrant.example:7333"
        assert router.stats()["store_info"]["transport"] == "gRPC"
    client = seen["client"]
    assert (client["url"], client["grpc_port"], client["prefer_grpc"]) == ("http://qdrant.example:7333", 7334, True)
    assert seen["collection"]["replication_factor"] == 2 and seen["collection"]["shard_number"] == 3


def test_qdrant_edge_store_info(tmp_path):
    with make_router("qdrant-edge", path=str(tmp_path / "edge"), embedder="hash") as router:
        router.deposit_many(packets())
        before = router.stats()["store_info"]
        router.store.optimize()
        after = router.stats()["store_info"]
    assert before["points"] == after["points"] == 6
    assert {"domain_tags", "agent_id", "confidence", "expires_at"} <= set(after["payload_indexes"])
    assert 0 <= after["indexed_vectors"] <= 6
