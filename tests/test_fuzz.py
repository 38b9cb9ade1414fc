"""Property-based tests: any input either works or raises ValueError/TypeError naming
the problem; no other exception escapes, and a failed call leaves the store unchanged."""
import math
import tempfile

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qis_lib import OutcomePacket, make_router

ANY = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
                st.binary(max_size=10), st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
FIELDS = ["problem_description", "outcome_type", "confidence", "delta_summary", "domain_tags", "timestamp",
          "agent_id", "ttl"]
GOOD = dict(problem_description="disk full", outcome_type="resolved", confidence=0.5, delta_summary="",
            domain_tags=["hdfs"], timestamp=1_800_000_000.0, agent_id="a", ttl=60.0)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(field=st.sampled_from(FIELDS), value=ANY)
def test_any_field_value_is_accepted_or_named(field, value):
    try:
        packet = OutcomePacket(**{**GOOD, field: value})
    except (ValueError, TypeError) as exc:
        assert field in str(exc)
    else:
        assert OutcomePacket.from_payload(packet.to_payload()) == packet


@FUZZ
@given(data=st.binary(max_size=600))
def test_from_bytes_on_any_bytes(data):
    try:
        OutcomePacket.from_bytes(data)
    except (ValueError, TypeError):
        pass


@FUZZ
@given(mutations=st.dictionaries(st.sampled_from(FIELDS + ["expires_at", "extra"]), ANY, max_size=3),
       drop=st.sets(st.sampled_from(FIELDS), max_size=2))
def test_from_payload_and_msgpack_on_mutated_payloads(mutations, drop):
    payload = {k: v for k, v in {**OutcomePacket(**GOOD).to_payload(), **mutations}.items() if k not in drop}
    attempts = [lambda: OutcomePacket.from_payload(payload)]
    try:
        data = msgpack.packb(payload, use_bin_type=True)
        attempts.append(lambda: OutcomePacket.from_bytes(data))
    except (OverflowError, TypeError):
        pass  # msgpack cannot encode this payload (e.g. a 65-bit int): nothing to decode
    for attempt in attempts:
        try:
            attempt()
        except (ValueError, TypeError):
            pass


@FUZZ
@given(d=st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=5), st.integers()), ANY, max_size=8))
def test_from_payload_on_arbitrary_dicts(d):
    try:
        OutcomePacket.from_payload(d)
    except (ValueError, TypeError):
        pass


STORES = ["memory", "chroma", "qdrant", "qdrant-edge"]


@pytest.fixture(scope="module", params=STORES)
def router(request):
    with make_router(request.param, embedder="hash") as r:
        r.deposit(OutcomePacket(**{**GOOD, "timestamp": 1e9, "ttl": 1e10}))
        yield r


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=ANY, top_k=ANY, domain=ANY, min_confidence=ANY, exclude_agent=ANY,
       now=st.one_of(st.none(), st.floats(allow_nan=True), st.integers(), st.text(max_size=3)))
@example(problem="disk", top_k=2**63, domain=None, min_confidence=0.0, exclude_agent=None, now=None)
@example(problem="disk", top_k=10**30, domain=None, min_confidence=0.0, exclude_agent=None, now=None)
def test_query_arguments(router, problem, top_k, domain, min_confidence, exclude_agent, now):
    before = router.stats()["packets"]
    try:
        hits = router.query(problem, top_k=top_k, domain=domain, min_confidence=min_confidence,
                            exclude_agent=exclude_agent, now=now)
    except (ValueError, TypeError):
        pass
    else:
        assert all(isinstance(p, OutcomePacket) and math.isfinite(s) for p, s in hits)
    assert router.stats()["packets"] == before


texts = st.text(min_size=1, max_size=120).filter(lambda s: s.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=texts, delta=st.text(max_size=200), tags=st.lists(texts, max_size=3), agent=texts,
       confidence=st.floats(0, 1), timestamp=st.floats(0, 4e9), ttl=st.floats(0.001, 1e9))
def test_any_valid_packet_comes_back_unchanged(router, problem, delta, tags, agent, confidence, timestamp, ttl):
    """Unicode, NUL bytes, odd tags: whatever passes validation is stored and read back exactly."""
    packet = OutcomePacket(problem, "partial", confidence, delta, tags, timestamp=timestamp, agent_id=agent, ttl=ttl)
    router.deposit(packet)
    assert router.get([packet.packet_id]) == {packet.packet_id: packet}
