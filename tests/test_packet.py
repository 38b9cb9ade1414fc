import math

import msgpack
import pytest

from qis_lib import OutcomePacket
from qis_lib.core.packet import MAX_PACKET_BYTES


def make(**overrides):
    fields = dict(problem_description="namenode heap exhausted", outcome_type="resolved", confidence=0.8,
                  delta_summary="raised heap", domain_tags=["hdfs"], timestamp=1_700_000_000.0, agent_id="a1",
                  ttl=3600.0)
    fields.update(overrides)
    return OutcomePacket(**fields)


@pytest.mark.parametrize("field, value, error", [
    ("problem_description", "", ValueError),
    ("problem_description", "   ", ValueError),
    ("problem_description", None, TypeError),
    ("outcome_type", "fixed", ValueError),
    ("confidence", 1.5, ValueError),
    ("confidence", -0.1, ValueError),
    ("confidence", math.nan, ValueError),
    ("confidence", "0.5", TypeError),
    ("confidence", True, TypeError),
    ("delta_summary", "x" * 201, ValueError),
    ("delta_summary", 5, TypeError),
    ("domain_tags", "hdfs", TypeError),
    ("domain_tags", ["hdfs", ""], ValueError),
    ("domain_tags", ["hdfs", 3], ValueError),
    ("timestamp", -1.0, ValueError),
    ("timestamp", math.inf, ValueError),
    ("agent_id", "", ValueError),
    ("ttl", 0, ValueError),
    ("ttl", -5, ValueError),
    ("ttl", 0.0004, ValueError),  # rounds to 0 at millisecond precision
])
def test_bad_field_is_named_in_the_error(field, value, error):
    with pytest.raises(error, match=field):
        make(**{field: value})


def test_bad_value_is_shown_in_the_error():
    with pytest.raises(ValueError, match="1.5"):
        make(confidence=1.5)
    with pytest.raises(ValueError, match="'fixed'"):
        make(outcome_type="fixed")


def test_packet_is_frozen():
    packet = make()
    with pytest.raises(AttributeError):
        packet.confidence = 2.0


def test_packet_id_is_deterministic_and_distinguishes():
    assert make().packet_id == make().packet_id
    assert make().packet_id == make(confidence=0.1, delta_summary="other").packet_id  # same agent, time, problem
    assert make().packet_id != make(agent_id="a2").packet_id
    assert make().packet_id != make(timestamp=1_700_000_000.5).packet_id
    assert make().packet_id != make(problem_description="other problem").packet_id


def test_expiry():
    packet = make(timestamp=1000.0, ttl=10.0)
    assert packet.expires_at == 1010.0
    assert not packet.is_expired(now=1009.9)
    assert packet.is_expired(now=1010.0)


def test_payload_round_trip():
    packet = make()
    payload = packet.to_payload()
    assert payload["expires_at"] == packet.timestamp + packet.ttl
    assert payload["domain_tags"] == ["hdfs"]
    assert OutcomePacket.from_payload(payload) == packet


def test_from_payload_names_missing_fields():
    payload = make().to_payload()
    del payload["agent_id"], payload["ttl"]
    with pytest.raises(ValueError, match="agent_id"):
        OutcomePacket.from_payload(payload)


def test_bytes_round_trip_and_size():
    packet = make()
    data = packet.to_bytes()
    assert len(data) == packet.size_bytes <= MAX_PACKET_BYTES
    assert OutcomePacket.from_bytes(data) == packet


def test_oversized_packet_says_its_size():
    packet = make(problem_description="word " * 120)
    size = packet.size_bytes
    assert size > MAX_PACKET_BYTES
    with pytest.raises(ValueError, match=f"{size} bytes"):
        packet.to_bytes()
    assert OutcomePacket.from_bytes(packet.to_bytes(max_bytes=None)) == packet


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb({"x": 1}), msgpack.packb(3)])
def test_from_bytes_rejects_garbage_with_value_error(data):
    with pytest.raises(ValueError):
        OutcomePacket.from_bytes(data)


def test_from_bytes_rejects_non_bytes():
    with pytest.raises(TypeError):
        OutcomePacket.from_bytes("not bytes")


def test_numbers_are_kept_to_a_precision_stores_return_exactly():
    packet = make(timestamp=1_795_680_911.4187121, confidence=0.123456789, ttl=10.00049)
    assert (packet.timestamp, packet.confidence, packet.ttl) == (1_795_680_911.419, 0.123457, 10.0)
    assert packet.packet_id == make(timestamp=1_795_680_911.419, confidence=0.5, ttl=1).packet_id
