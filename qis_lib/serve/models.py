"""The service's request and response bodies (pydantic), and how a broken rule becomes a 422.

The models give JSON types only (strict: "0.5" is not a number, unknown fields are
refused). The rules (confidence in [0, 1], ttl > 0, top_k range, ...) are the
library's: each model's validator builds the library's own object (`OutcomePacket`,
`QueryFilter`) or calls its check, so there is one copy of every rule. A broken rule is
reported with the field it concerns in `loc` and the library's message as `msg`.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from ..core.packet import DEFAULT_TTL, OUTCOME_TYPES, OutcomePacket, _check_text
from ..stores.contract import MAX_TOP_K, QueryFilter, check_top_k
from ..stores.http import MAX_BATCH

RULE = "rule"  # the error type of a broken library rule


def rule_error(exc: Exception, fields) -> PydanticCustomError:
    """The library's ValueError/TypeError as a pydantic error naming its field.

    The library's messages start with the name of what was wrong ("confidence must be ...")."""
    message = str(exc)
    words = message.split(maxsplit=1)
    field = words[0] if words and words[0] in fields else None
    return PydanticCustomError(RULE, "{rule}", {"rule": message, "field": field})


def checked(build, fields, **values):
    """build(**values), a library rule broken -> a pydantic error naming the field."""
    try:
        return build(**values)
    except (ValueError, TypeError) as exc:
        raise rule_error(exc, fields) from None


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PacketIn(Body):
    """An outcome packet as an agent sends it; `timestamp` defaults to the service's clock, and
    `agent_id` to the agent the caller's key acts as (another agent's id is refused)."""

    problem_description: str
    outcome_type: Literal[OUTCOME_TYPES]  # type: ignore[valid-type]
    confidence: float
    delta_summary: str = ""
    domain_tags: list[str] = Field(default_factory=list, max_length=64)
    timestamp: float | None = None
    agent_id: str | None = Field(None, description="default: the agent the caller's key acts as")
    ttl: float = DEFAULT_TTL
    _packet: OutcomePacket | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _library_rules(self) -> "PacketIn":
        values = self.model_dump(exclude_none=True)
        self._packet = checked(OutcomePacket, type(self).model_fields, **values)
        return self

    @property
    def packet(self) -> OutcomePacket:
        """The packet as sent (agent "anonymous" if none was given: see `agent_given`)."""
        return self._packet

    @property
    def agent_given(self) -> bool:
        return self.agent_id is not None

    @property
    def owned(self) -> tuple[OutcomePacket, bool]:
        """(packet, agent_given): what `Gate.deposit` takes."""
        return self._packet, self.agent_id is not None


class PacketsIn(Body):
    packets: list[PacketIn] = Field(max_length=MAX_BATCH)


class FilterIn(Body):
    """A `QueryFilter`: `now` (seconds) defaults to the service's clock."""

    now: float | None = None
    domain: str | None = None
    min_confidence: float = 0.0
    exclude_agent: str | None = None

    @model_validator(mode="after")
    def _library_rules(self) -> "FilterIn":
        checked(QueryFilter, type(self).model_fields, now=self.now or 0.0, domain=self.domain,
                min_confidence=self.min_confidence, exclude_agent=self.exclude_agent)
        return self


class QueryIn(FilterIn):
    problem: str
    top_k: int = 10

    @model_validator(mode="after")
    def _top_k(self) -> "QueryIn":
        checked(_check_text, type(self).model_fields, name="problem", value=self.problem)  # the router's rule
        checked(check_top_k, type(self).model_fields, top_k=self.top_k)
        return self

    def filters(self) -> dict[str, Any]:
        return self.model_dump(exclude={"problem", "top_k"})


class SynthesizeIn(Body):
    problem: str
    outcome: PacketIn
    top_k: int = 10
    domain: str | None = None
    min_confidence: float = 0.0
    now: float | None = None

    @model_validator(mode="after")
    def _library_rules(self) -> "SynthesizeIn":
        checked(_check_text, type(self).model_fields, name="problem", value=self.problem)
        checked(check_top_k, type(self).model_fields, top_k=self.top_k)
        checked(QueryFilter, type(self).model_fields, now=self.now or 0.0, domain=self.domain,
                min_confidence=self.min_confidence)
        return self


class IdsIn(Body):
    ids: list[str] = Field(max_length=10 * MAX_BATCH)


class PurgeIn(Body):
    now: float | None = None
    agent_id: str | None = Field(None, description="only this agent's packets (an agent key: its own, the default)")

    @model_validator(mode="after")
    def _library_rules(self) -> "PurgeIn":
        if self.agent_id is not None:
            checked(_check_text, type(self).model_fields, name="agent_id", value=self.agent_id)
        checked(QueryFilter, type(self).model_fields, now=0.0 if self.now is None else self.now)
        return self


class DeleteIn(Body):
    ids: list[str] = Field(max_length=10 * MAX_BATCH)


class EmbedIn(Body):
    texts: list[str] = Field(max_length=MAX_BATCH)


class UpsertIn(Body):
    """Vectors and payloads for the store, checked by the store contract (`Store.upsert`)."""

    ids: list[str] = Field(max_length=10 * MAX_BATCH)
    vectors: list[list[float]] = Field(max_length=10 * MAX_BATCH)
    payloads: list[dict[str, Any]] = Field(max_length=10 * MAX_BATCH)


class VectorQueryIn(Body):
    vector: list[float] = Field(max_length=8192)
    top_k: int = Field(10, description=f"1 to {MAX_TOP_K}")
    filter: FilterIn


# --- answers ------------------------------------------------------------------------

class PacketOut(BaseModel):
    problem_description: str
    outcome_type: str
    confidence: float
    delta_summary: str
    domain_tags: list[str]
    timestamp: float
    agent_id: str
    ttl: float
    expires_at: float
    packet_id: str

    @classmethod
    def of(cls, packet: OutcomePacket) -> "PacketOut":
        return cls(**packet_json(packet))


def packet_json(packet: OutcomePacket) -> dict[str, Any]:
    """A packet's fields as `PacketOut` has them (its payload and its id)."""
    out = packet.to_payload()
    out["packet_id"] = packet.packet_id
    return out


class HitOut(BaseModel):
    packet: PacketOut
    score: float


class HitsOut(BaseModel):
    hits: list[HitOut]


class SynthesisOut(BaseModel):
    matches: list[HitOut]
    outcome_counts: dict[str, int]
    consensus: str | None
    support: float


class IdOut(BaseModel):
    id: str


class IdsOut(BaseModel):
    ids: list[str]


class PacketsOut(BaseModel):
    packets: dict[str, PacketOut]


class PurgeOut(BaseModel):
    purged: int


class DeletedOut(BaseModel):
    deleted: list[str]


class WhoAmIOut(BaseModel):
    key: str | None
    role: Literal["agent", "reader", "admin"]
    agent: str | None
    may: list[str]


class EmbedOut(BaseModel):
    embedder: str
    vectors: list[list[float]]


class HealthOut(BaseModel):
    status: Literal["ok"]
    store: str
    embedder: str
    dim: int
    namespaces: int


class VectorHitOut(BaseModel):
    payload: dict[str, Any]
    score: float


class VectorHitsOut(BaseModel):
    hits: list[VectorHitOut]


class PayloadsOut(BaseModel):
    payloads: dict[str, dict[str, Any]]


class CapabilitiesOut(BaseModel):
    persistent: bool
    shared: bool
    server: bool


class InfoOut(BaseModel):
    namespace: str
    store: str
    dim: int
    count: int
    capabilities: CapabilitiesOut
    uuid_ids: bool


class Done(BaseModel):
    done: Literal[True] = True
