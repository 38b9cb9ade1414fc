"""The reconstruction of the article's Qdrant router fails where the library does not."""
import time

import pytest

from qis_lib import make_router
from qis_lib.embedders import HashEmbedder
from qis_lib.experiments.article import ArticleQdrantRouter, starving_packets

PROBLEM = "Postgres connection pool exhausted under load"


def test_article_calls_fail_and_the_library_does_not():
    embedder, now = HashEmbedder(), time.time()
    packets = starving_packets(now, n_expired=5, n_live=5, problem=PROBLEM)
    article = ArticleQdrantRouter(embedder, location=":memory:")
    for packet in packets + packets[-1:]:  # the last deposit retried
        article.deposit(packet)
    with pytest.raises(AttributeError, match="search"):
        article.synthesize(PROBLEM, domain_filter="database", top_k=5)
    article.query_call = "query_points"
    assert article.synthesize(PROBLEM, domain_filter="database", top_k=5, now=now) == []  # expired took the top 5
    assert article.collection_stats()["points_count"] == 11  # the retry is a second point
    article.close()
    with make_router("qdrant", embedder=embedder) as ours:
        ours.deposit_many(packets + packets[-1:])
        hits = ours.query(PROBLEM, top_k=5, domain_filter="database", now=now)
        assert len(hits) == 5 and all(not p.is_expired(now=now) for p, _ in hits)
        assert ours.stats()["store_info"]["points"] == 10


def test_literal_demo_counts_the_agents_own_packet():
    from qis_lib.experiments.article import literal_demo

    with make_router("memory", embedder=HashEmbedder()) as router:
        demo = literal_demo(router, n_agents=7, top_k=5)
    assert demo["article_matches"].tolist() == [1, 2, 3, 4, 5, 5, 5]  # agent 1 "finds" itself
    assert demo["own_packet_counted"][:5].all()  # while the store holds <= 5 packets, one is its own
    assert demo["matches_from_others"].tolist() == [0, 1, 2, 3, 4, 5, 5]
    assert (demo["distinct_scores"] == 1).all()  # identical texts: every score the same
