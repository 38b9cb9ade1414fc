import pytest

from qis_lib import OutcomePacket, make_router
from qis_lib.embedders import HashEmbedder
from qis_lib.core.router import Synthesis
from qis_lib.core.urls import parse_store_url


@pytest.mark.parametrize("url, name, options", [
    ("memory://", "memory", {}),
    ("chroma://", "chroma", {}),
    ("chroma:///tmp/x", "chroma", {"path": "/tmp/x"}),
    ("chroma://localhost:8000", "chroma", {"url": "http://localhost:8000"}),
    ("qdrant://", "qdrant", {}),
    ("qdrant:///tmp/q", "qdrant", {"path": "/tmp/q"}),
    ("qdrant://localhost:6333", "qdrant", {"url": "http://localhost:6333"}),
    ("qdrant://h1:6333,h2:6343,h3:6353?replication_factor=2&collection=c",
     "qdrant", {"urls": ["http://h1:6333", "http://h2:6343", "http://h3:6353"], "replication_factor": 2,
                "collection": "c"}),
    ("qdrant-edge:///tmp/e", "qdrant-edge", {"path": "/tmp/e"}),
    ("http://localhost:8080", "http", {"url": "http://localhost:8080"}),  # a routing service
    ("https://localhost:8443", "http", {"url": "https://localhost:8443"}),  # ... over TLS
])
def test_parse_store_url(url, name, options):
    assert parse_store_url(url) == (name, options)


@pytest.mark.parametrize("url, message", [
    ("postgres://localhost", "bad store url"),
    ("ftp://localhost:6333", "bad store url"),
    ("https:///tmp/x", "takes no path"),
    ("qdrant://localhost", "HOST:PORT"),
    ("qdrant://localhost:notaport", "HOST:PORT"),
    ("qdrant-edge://somehost:1", "takes no host"),
    ("chroma://a:1,b:2", "one server"),
])
def test_bad_url_lists_the_valid_forms(url, message):
    with pytest.raises(ValueError, match=message):
        parse_store_url(url)


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="qdrant-edge"):
        make_router("pinecone", embedder="hash")


def test_make_router_every_embedded_store_by_name_and_url(tmp_path):
    packet = OutcomePacket("disk is full on the datanode", "resolved", 0.7, agent_id="a")
    for spec in ["memory", "chroma", "qdrant", "qdrant-edge", f"qdrant-edge://{tmp_path}/e", f"chroma://{tmp_path}/c",
                 f"qdrant://{tmp_path}/q"]:
        with make_router(spec, embedder="hash") as router:
            router.deposit(packet)
            assert router.query("datanode disk full")[0][0] == packet, spec


def test_embedder_and_store_dimensions_must_agree():
    with pytest.raises(ValueError, match="384-d"):
        make_router("memory", embedder=HashEmbedder(16), dim=384)


def test_retried_deposit_does_not_duplicate():
    router = make_router("memory", embedder="hash")
    packet = OutcomePacket("x happened", "open", 0.5)
    router.deposit(packet)
    router.deposit(packet)
    router.deposit_many([packet, packet])
    assert router.stats()["packets"] == 1


def test_foreign_payload_is_skipped_not_fatal(caplog):
    router = make_router("memory", embedder="hash")
    good = OutcomePacket("queue is stuck", "resolved", 0.9)
    router.deposit(good)
    vector = router.embedder.encode(["queue is stuck"])
    foreign = {"domain_tags": [], "confidence": 1.0, "expires_at": 4e9, "agent_id": "old-writer", "text": "v0 packet"}
    router.store.upsert(["foreign-1"], vector, [foreign])
    hits = router.query("queue is stuck")
    assert [p for p, _ in hits] == [good]
    assert router.stats()["skipped_payloads"] == 1
    assert "not a valid packet" in caplog.text


def test_synthesis_weights_outcomes():
    a = OutcomePacket("p", "resolved", 0.9, agent_id="a")
    b = OutcomePacket("p", "contradicted", 0.5, agent_id="b")
    result = Synthesis.of([(a, 0.8), (b, 0.9)])
    assert result.consensus == "resolved"
    assert result.support == pytest.approx(0.72 / (0.72 + 0.45))
    assert result.outcome_counts == {"resolved": 1, "contradicted": 1}
    assert Synthesis.of([]).consensus is None


def test_hybrid_is_refused_by_name_where_the_store_has_no_bm25():
    for name in ("memory", "chroma"):
        with pytest.raises(ValueError, match=r"hybrid.*\['qdrant', 'qdrant-edge'\]"):
            make_router(name, embedder=HashEmbedder(), hybrid=True)
    with pytest.raises(ValueError, match="rrf_k"):
        make_router("memory", embedder=HashEmbedder(), rrf_k=10)
    assert make_router("memory", embedder=HashEmbedder()).hybrid is False  # the default: dense there


def test_default_router_is_hybrid_on_qdrant_edge_and_keeps_an_existing_store_as_created(tmp_path):
    new = make_router("qdrant-edge", embedder=HashEmbedder(), path=str(tmp_path / "new"))
    assert new.hybrid and new.store.capabilities.hybrid and new.stats()["hybrid_queries"]
    packet = OutcomePacket("zebrafish tank heater trips the breaker", "resolved", 0.9, agent_id="a")
    new.deposit(packet)
    new.close()
    dense = make_router("qdrant-edge", embedder=HashEmbedder(), path=str(tmp_path / "dense"), hybrid=False)
    dense.deposit(packet)
    dense.close()
    # reopened with the defaults: each folder keeps what it was created with
    again = make_router("qdrant-edge", embedder=HashEmbedder(), path=str(tmp_path / "dense"))
    assert not again.hybrid and again.query("zebrafish heater")[0][0] == packet
    again.close()
    with pytest.raises(ValueError, match="hybrid"):
        make_router("qdrant-edge", embedder=HashEmbedder(), path=str(tmp_path / "dense"), hybrid=True)
    with pytest.raises(ValueError, match="hybrid"):
        make_router("qdrant-edge", embedder=HashEmbedder(), path=str(tmp_path / "new"), hybrid=False)
    hybrid = make_router("qdrant-edge", embedder=HashEmbedder(), path=str(tmp_path / "new"))
    assert hybrid.hybrid and hybrid.query("zebrafish heater")[0][0] == packet
    hybrid.close()


def test_qdrant_collection_keeps_its_hybrid_setting(tmp_path):
    router = make_router("qdrant", embedder=HashEmbedder(), path=str(tmp_path / "q"), hybrid=True)
    router.close()
    with pytest.raises(ValueError, match="hybrid=True or hybrid=None"):
        make_router("qdrant", embedder=HashEmbedder(), path=str(tmp_path / "q"), hybrid=False)
    again = make_router("qdrant", embedder=HashEmbedder(), path=str(tmp_path / "q"))
    assert again.hybrid
    again.close()


def test_the_demo_says_in_words_what_it_showed():
    import pandas as pd

    from qis_lib.experiments.demo import summary_line

    table = pd.DataFrame({"arrival": [1, 2, 3, 4], "agent": ["db-01", "k8s-01", "db-02", "k8s-02"],
                          "top1_same_domain": [False, False, True, False]})
    line = summary_line(table)
    assert line.startswith("1 of 4 agents got, as their best match, the outcome of an agent who had met the same kind")
    assert "(the same domain, of 2)" in line and "The first was agent 3" in line
    assert "The first" not in summary_line(table.assign(top1_same_domain=False))
