import json

import numpy as np
import pandas as pd
import pytest

from qis_lib import OutcomePacket, OutcomeRouter
from qis_lib.embedders import HashEmbedder
from qis_lib.experiments.coldstart import (COLUMNS, arrival_curves, arrivals, random_orders, router_arrivals,
                                           summarise_curve)
from qis_lib.infra.seeds import load_problem_labels, load_seed_packets
from qis_lib.stores.memory import MemoryStore

NOW = 1_800_000_000.0


def basis(*rows):
    """Unit vectors in 3-d, one per row."""
    v = np.array(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# Items 0 and 1 point the same way (label "a"); item 2 elsewhere (label "b"); item 3 close to 2 but label "c".
VECTORS = basis([1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 1, 0.2])
LABELS = ["a", "a", "b", "c"]


def test_first_agent_finds_nothing_and_paraphrase_is_found_later():
    table = arrivals(VECTORS, LABELS, top_k=1)
    assert list(table.columns) == COLUMNS
    first, second, third, fourth = table.to_dict("records")
    assert first["matches"] == 0 and first["found"] == 0 and first["available"] == 0
    assert np.isnan(first["best_score"])
    assert second["available"] == 1 and second["found"] == 1 and second["top1_relevant"]
    # Item 2 has no earlier agent with its label: a hit, but not a relevant one.
    assert third["available"] == 0 and third["matches"] == 1 and third["found"] == 0
    # Item 3's nearest earlier item is 2, which has another label.
    assert fourth["found"] == 0 and not fourth["top1_relevant"]
    assert fourth["best_score"] == pytest.approx(float(VECTORS[3] @ VECTORS[2]), abs=1e-6)


def test_order_decides_who_can_find_what():
    table = arrivals(VECTORS, LABELS, order=[1, 3, 0, 2], top_k=3)
    assert table["item"].tolist() == [1, 3, 0, 2]
    assert table["available"].tolist() == [0, 0, 1, 0]
    assert table["found"].tolist() == [0, 0, 1, 0]
    assert table["matches"].tolist() == [0, 1, 2, 3]


def test_min_score_drops_weak_hits():
    table = arrivals(VECTORS, LABELS, top_k=3, min_score=0.5)
    # Item 2 is orthogonal to items 0 and 1: nothing above 0.5 for it.
    assert table.loc[2, "matches"] == 0
    assert table.loc[1, "matches"] == 1 and table.loc[1, "found"] == 1
    assert table.loc[3, "matches"] == 1  # item 2, cosine about 0.98


def test_top_k_limits_found():
    vectors = basis([1, 0, 0], [1, 0.05, 0], [1, 0.1, 0], [1, 0.15, 0])
    table = arrivals(vectors, ["x"] * 4, top_k=2)
    assert table["available"].tolist() == [0, 1, 2, 3]
    assert table["found"].tolist() == [0, 1, 2, 2]


@pytest.mark.parametrize("kwargs, message", [
    ({"order": [0, 0, 1, 2]}, "distinct"),
    ({"order": [0, 1, 2, 4]}, "distinct"),
    ({"order": [0.0, 1.0]}, "indices"),
    ({"top_k": 0}, "top_k"),
])
def test_arrivals_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        arrivals(VECTORS, LABELS, **kwargs)


def test_arrivals_rejects_label_count_mismatch():
    with pytest.raises(ValueError, match="labels"):
        arrivals(VECTORS, LABELS[:3])


def test_random_orders_are_permutations_and_reproducible():
    orders = random_orders(10, 5, seed=3)
    assert all(sorted(o.tolist()) == list(range(10)) for o in orders)
    assert [o.tolist() for o in orders] == [o.tolist() for o in random_orders(10, 5, seed=3)]
    assert len({tuple(o) for o in orders}) > 1


def test_curves_and_summary():
    curves = arrival_curves(VECTORS, LABELS, n_orders=30, top_k=1, seed=1)
    assert len(curves) == 30 * 4 and sorted(curves["order"].unique()) == list(range(30))
    summary = summarise_curve(curves)
    assert summary.index.tolist() == [1, 2, 3, 4]
    assert (summary["agents"] == 30).all()
    # Nobody can find anything on arrival 1; from arrival 2 on every agent gets a hit.
    assert summary.loc[1, "share_any_match"] == 0 and (summary.loc[2:, "share_any_match"] == 1).all()
    # Found never exceeds what was available.
    assert (summary["share_found"] <= summary["share_available"]).all()
    # Only the two "a" items can ever match: by arrival 4 the later of them always has the other.
    by_hand = curves.groupby("order").apply(lambda t: int(t.loc[t["label"] == "a", "found"].sum()), include_groups=False)
    assert (by_hand == 1).all()


def test_summarise_curve_needs_arrival_columns():
    with pytest.raises(ValueError, match="column"):
        summarise_curve(pd.DataFrame({"arrival": [1]}))


def packets(texts):
    return [OutcomePacket(problem_description=t, outcome_type="resolved", confidence=0.8, domain_tags=["d"],
                          timestamp=NOW, agent_id=f"agent-{i}") for i, t in enumerate(texts)]


TEXTS = [
    "postgres connection pool exhausted under load",
    "react component renders in an endless loop",
    "connection pool exhausted postgres timeouts",
    "pods restart with crashloopbackoff",
    "react endless render loop freezes tab",
    "kubernetes pods crashloopbackoff after deploy",
]
TEXT_LABELS = ["db", "fe", "db", "k8s", "fe", "k8s"]


@pytest.mark.parametrize("order", [None, [5, 2, 0, 4, 1, 3]])
def test_router_walk_matches_the_exact_computation(order):
    """The router over the memory store must find exactly what brute force over the same vectors finds."""
    embedder = HashEmbedder()
    with OutcomeRouter(MemoryStore(dim=embedder.dim), embedder) as router:
        through_router = router_arrivals(router, packets(TEXTS), TEXT_LABELS, order=order, top_k=2, now=NOW)
        assert router.stats()["packets"] == len(TEXTS)
    exact = arrivals(embedder.encode(TEXTS), TEXT_LABELS, order=order, top_k=2)
    pd.testing.assert_frame_equal(through_router.drop(columns="best_score"), exact.drop(columns="best_score"))
    np.testing.assert_allclose(through_router["best_score"], exact["best_score"], atol=1e-5)
    assert exact["found"].sum() > 0  # the case is not trivially empty


def test_router_walk_needs_distinct_agents():
    embedder = HashEmbedder()
    same = [OutcomePacket(problem_description=t, outcome_type="open", confidence=0.5, timestamp=NOW, agent_id="x")
            for t in TEXTS[:2]]
    with OutcomeRouter(MemoryStore(dim=embedder.dim), embedder) as router:
        with pytest.raises(ValueError, match="distinct agent_id"):
            router_arrivals(router, same, ["a", "b"], now=NOW)
        assert router.stats()["packets"] == 0


def test_seed_packets_have_problem_labels_within_one_domain():
    labels = load_problem_labels()
    seed = load_seed_packets(now=NOW)
    assert set(labels) == {p.agent_id for p in seed}
    domains = {}
    for p in seed:
        domains.setdefault(labels[p.agent_id], set()).add(p.domain_tags[0])
    assert all(len(d) == 1 for d in domains.values()), "a problem label spans domains"
    assert any(list(labels.values()).count(v) > 1 for v in labels.values()), "no paraphrase groups"


def test_load_problem_labels_names_the_bad_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"agent_id": "a", "problem": "x"}) + "\n" + json.dumps({"agent_id": "b"}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:2: .*'b'"):
        load_problem_labels(path)
