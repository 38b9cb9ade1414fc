"""The MCP tools' arguments and answers: JSON schemas an LLM can read, taken from the library's rules.

Every argument type carries its rule in the schema the tools publish (an enum of the outcome
types, confidence from 0 to 1, delta_summary at most MAX_DELTA_CHARS characters, a ttl of at
least 1 ms, non-blank strings, top_k from 1 to MAX_TOOL_TOP_K), and the SDK validates the
arguments against it before a tool runs, so a call that breaks one is refused naming the field
and nothing is stored. The library checks every packet again when it is built
(`OutcomePacket`), so its rules keep one authority. Arguments are strict ("0.5" is not a
number, true is not 1) and unknown arguments are refused, as by the routing service.

The answers reuse the routing service's response models (qis_lib.serve.models), so a packet
reads the same over MCP as over /v1; `*_text` renders each one for a reader.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ..core.packet import DEFAULT_TTL, MAX_DELTA_CHARS, OUTCOME_TYPES, OutcomePacket
from ..core.router import Hit, Synthesis
from ..serve import models as m
from ..stores.http import MAX_BATCH

NON_BLANK = r"\S"  # the library's non-empty-string rule as a JSON-schema pattern
MAX_TAGS = 64  # as the routing service's PacketIn
MAX_TOOL_TOP_K = 50  # the store takes up to 10,000, but the answer goes into a model's context
MAX_IDS = MAX_BATCH  # ids one call deletes, as many packets as one batch deposits

Problem = Annotated[str, Field(pattern=NON_BLANK, description=(
    "The problem in plain words: symptoms, context, the component involved (what another agent meeting it would "
    "write). Packets are matched by meaning, so describe the situation rather than give an id."))]
OutcomeType = Annotated[Literal[OUTCOME_TYPES], Field(description=(  # type: ignore[valid-type]
    "What happened: 'resolved' (fixed), 'partial' (helped, not fixed), 'contradicted' (the approach tried did not "
    "work, or the advice found was wrong), 'open' (not solved yet)."))]
Confidence = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, description=(
    "How sure you are of this outcome, from 0.0 (a guess) to 1.0 (verified)."))]
DeltaSummary = Annotated[str, Field(max_length=MAX_DELTA_CHARS, description=(
    f"What worked or changed, at most {MAX_DELTA_CHARS} characters (e.g. 'raised the pool size to 50, added "
    "PgBouncer')."))]
Tags = Annotated[list[Annotated[str, Field(pattern=NON_BLANK)]], Field(max_length=MAX_TAGS, description=(
    "Domain tags, e.g. ['database', 'postgres']; queries can filter on one of them."))]
Ttl = Annotated[float, Field(ge=0.001, allow_inf_nan=False, description=(
    f"Seconds the packet stays live (default {DEFAULT_TTL:g}: {DEFAULT_TTL / 86400:g} days); an expired packet is "
    "never returned."))]
AgentId = Annotated[str | None, Field(pattern=NON_BLANK, description=(
    "Leave it out: the packet is yours (the agent this connection acts as). Another agent's id is refused "
    "unless the connection is an admin's."))]
TopK = Annotated[int, Field(ge=1, le=MAX_TOOL_TOP_K, description=f"How many packets at most (1 to {MAX_TOOL_TOP_K}).")]
Domain = Annotated[str | None, Field(pattern=NON_BLANK, description="Only packets carrying this domain tag.")]
MinConfidence = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, description=(
    "Only packets with at least this confidence (0.0 to 1.0)."))]
ExcludeAgent = Annotated[str | None, Field(pattern=NON_BLANK, description=(
    "Leave out this agent's packets (e.g. your own agent id, to see only what others found)."))]
PacketId = Annotated[str, Field(pattern=NON_BLANK, description="A packet's id, as a deposit or a query returned it.")]
PacketIds = Annotated[list[Annotated[str, Field(pattern=NON_BLANK)]], Field(min_length=1, max_length=MAX_IDS, description=(
    f"Ids of your packets (1 to {MAX_IDS}), as deposit_outcome or a query returned them."))]


class Deposited(BaseModel):
    """deposit_outcome's answer: the stored packet and its id."""

    id: str = Field(description="the packet's id (get_packet and delete_my_packets take it)")
    packet: m.PacketOut


class Synthesized(m.SynthesisOut):
    """synthesize's answer: the caller's deposited outcome, then what other agents found."""

    deposited: m.PacketOut


class Deleted(BaseModel):
    deleted: list[str] = Field(description="the ids that were stored and are deleted now")
    not_stored: list[str] = Field(description="ids given that the store did not hold (nothing to delete)")


def hits_out(hits: list[Hit]) -> list[m.HitOut]:
    return [m.HitOut(packet=m.PacketOut.of(p), score=s) for p, s in hits]


def packet_text(p: OutcomePacket) -> str:
    expires = dt.datetime.fromtimestamp(p.expires_at, dt.timezone.utc).isoformat(timespec="seconds")
    return (f"{p.outcome_type}, confidence {p.confidence:.2f}, by agent {p.agent_id}, tags "
            f"{', '.join(p.domain_tags) or '(none)'}\n   problem: {p.problem_description}\n"
            f"   what worked or changed: {p.delta_summary or '(not given)'}\n"
            f"   id {p.packet_id}, live until {expires.replace('+00:00', 'Z')}")


def hits_text(hits: list[Hit]) -> str:
    if not hits:
        return "No live packet matched (with these filters)."
    lines = [f"{len(hits)} packet(s), most similar first (similarity is the cosine of the problems, -1 to 1):"]
    lines += [f"{i}. similarity {score:.3f}: {packet_text(p)}" for i, (p, score) in enumerate(hits, 1)]
    return "\n".join(lines)


def synthesis_text(mine: OutcomePacket, result: Synthesis) -> str:
    if result.consensus is None:
        verdict = "No other agent's packet matched: no consensus yet."
    else:
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(result.outcome_counts.items()))
        verdict = (f"Consensus: {result.consensus} ({result.support:.0%} of the weight, similarity x confidence); "
                   f"outcomes: {counts}.")
    return f"Deposited your outcome as {mine.packet_id}.\n{verdict}\n{hits_text(result.matches)}"
