"""The outcome packet: what one agent learned about one problem.

A packet is validated when it is built, so nothing invalid can reach a store.
It is frozen: a packet that passed validation cannot be edited into an invalid one.
"""
from __future__ import annotations

import functools
import math
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import msgpack

OUTCOME_TYPES = ("resolved", "partial", "contradicted", "open")
MAX_DELTA_CHARS = 200
MAX_PACKET_BYTES = 512  # the series' target for one serialized packet
DEFAULT_TTL = 7 * 24 * 3600.0
ANONYMOUS = "anonymous"  # the agent id of a packet built without one

# Fixed namespace so packet ids are the same on every machine and in every run.
PACKET_NAMESPACE = uuid.UUID("6f1c3c52-7d0e-4c7a-9a43-2f5b8f6d1e0a")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _check_number(name: str, value: Any) -> float:
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


@dataclass(frozen=True)
class OutcomePacket:
    """What one agent learned about one problem: validated when built, frozen after.

    The id is derived from (agent, time, problem), so depositing the same packet again
    overwrites it instead of adding a copy.
    """

    problem_description: str
    outcome_type: str
    confidence: float
    delta_summary: str = ""
    domain_tags: tuple[str, ...] = ()
    timestamp: float = field(default_factory=time.time)  # seconds, kept to the millisecond
    agent_id: str = ANONYMOUS
    ttl: float = DEFAULT_TTL

    def __post_init__(self) -> None:
        _check_text("problem_description", self.problem_description)
        if self.outcome_type not in OUTCOME_TYPES:
            raise ValueError(f"outcome_type must be one of {OUTCOME_TYPES}, got {self.outcome_type!r}")
        confidence = _check_number("confidence", self.confidence)
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be between 0.0 and 1.0, got {self.confidence!r}")
        if not isinstance(self.delta_summary, str):
            raise TypeError(f"delta_summary must be a str, got {type(self.delta_summary).__name__}: {self.delta_summary!r}")
        if len(self.delta_summary) > MAX_DELTA_CHARS:
            raise ValueError(
                f"delta_summary must be at most {MAX_DELTA_CHARS} characters, got {len(self.delta_summary)}: "
                f"{self.delta_summary[:40]!r}..."
            )
        tags = self.domain_tags
        if isinstance(tags, (str, bytes)) or not isinstance(tags, (list, tuple)):
            raise TypeError(f"domain_tags must be a list of strings, got {type(tags).__name__}: {tags!r}")
        for tag in tags:
            if not isinstance(tag, str) or not tag.strip():
                raise ValueError(f"domain_tags must hold non-empty strings, got {tag!r} in {list(tags)!r}")
        timestamp = round(_check_number("timestamp", self.timestamp), 3)
        if timestamp < 0:
            raise ValueError(f"timestamp must be seconds since the epoch (>= 0), got {self.timestamp!r}")
        _check_text("agent_id", self.agent_id)
        ttl = round(_check_number("ttl", self.ttl), 3)
        if ttl <= 0:
            raise ValueError(f"ttl must be at least 0.001 seconds, got {self.ttl!r}")
        # Numbers are kept to a precision every store returns exactly. The stores' JSON
        # layers (Rust serde_json) may parse a float with 17 significant digits 1 ulp off,
        # which would change the packet, and its id, on the way back.
        object.__setattr__(self, "confidence", round(confidence, 6))
        object.__setattr__(self, "domain_tags", tuple(tags))
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "ttl", ttl)

    @functools.cached_property
    def packet_id(self) -> str:
        """Same agent, time and problem -> same id, so a retried deposit overwrites. Computed once
        per packet (a frozen packet's id cannot change)."""
        key = f"{self.agent_id}\x1f{self.timestamp!r}\x1f{self.problem_description}"
        return str(uuid.uuid5(PACKET_NAMESPACE, key))

    @property
    def expires_at(self) -> float:
        return round(self.timestamp + self.ttl, 3)

    def is_expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def to_payload(self) -> dict[str, Any]:
        """A flat dict for the stores: the fields plus expires_at, which filters use."""
        payload = {name: getattr(self, name) for name in _FIELD_NAMES}
        payload["domain_tags"] = list(self.domain_tags)
        payload["expires_at"] = self.expires_at
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "OutcomePacket":
        """Rebuild a packet from a store's payload; extra keys (expires_at, ...) are ignored."""
        if not isinstance(payload, Mapping):
            raise TypeError(f"payload must be a mapping, got {type(payload).__name__}")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in payload]
        if missing:
            raise ValueError(f"payload is missing field(s) {missing}; has {sorted(map(str, payload))}")
        values = {n: payload[n] for n in names}
        if isinstance(values["domain_tags"], list):
            values["domain_tags"] = tuple(values["domain_tags"])
        return cls(**values)

    def to_bytes(self, max_bytes: int | None = MAX_PACKET_BYTES) -> bytes:
        data = msgpack.packb({k: v for k, v in self.to_payload().items() if k != "expires_at"})
        if max_bytes is not None and len(data) > max_bytes:
            raise ValueError(
                f"packet serializes to {len(data)} bytes, over the {max_bytes}-byte limit "
                f"(problem_description is {len(self.problem_description)} chars)"
            )
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> "OutcomePacket":
        """The packet `to_bytes` wrote; anything else is a ValueError or TypeError naming the problem."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"from_bytes needs bytes, got {type(data).__name__}")
        try:
            payload = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ValueError(f"not a msgpack-encoded packet ({len(data)} bytes): {exc}") from None
        if not isinstance(payload, dict):
            raise ValueError(f"not a packet: msgpack holds a {type(payload).__name__}, not a map")
        return cls.from_payload(payload)

    @property
    def size_bytes(self) -> int:
        return len(self.to_bytes(max_bytes=None))


_FIELD_NAMES = tuple(f.name for f in fields(OutcomePacket))
