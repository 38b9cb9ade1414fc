"""The MCP server: the routing service's agents' operations as MCP tools, for LLM agents.

`build_server(gate, caller)` returns an `MCPServer` (the official SDK's) whose five tools call
the routing service's `Gate`, the one place that checks who may do what, runs the store and
the model off the event loop, and writes the audit line:

- `deposit_outcome`: store what the caller learned about a problem (one packet);
- `query_outcomes`: what agents found for problems like one (packets with scores);
- `synthesize`: deposit the caller's outcome, then what other agents found, with a consensus;
- `get_packet`: one packet by id;
- `delete_my_packets`: delete packets by id, the caller's own only (an admin's: any).

Who calls: over stdio the `caller` fixed at start (an agent id, or a reader); over HTTP the
key of each request, which the service's `Access` layer authenticated and put in the request's
state (`caller` is then None: a request without one is refused, never taken as someone).

Every answer is structured (the tool's output schema; packets as the service's `PacketOut`)
and readable text. What the caller may not do (a reader depositing, an agent writing as another
agent or deleting another agent's packet) and what breaks a rule is a tool error
(`is_error=True`) saying why and that nothing changed; the server keeps serving.
"""
from __future__ import annotations

from typing import Annotated, Any, Awaitable, Callable

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError, create_model

from ..core.packet import DEFAULT_TTL, OutcomePacket
from ..serve import models as m
from ..serve.gate import Caller, Gate, Refused
from . import schema as s

NAME = "qis-routing"
INSTRUCTIONS = """\
Outcome routing: a memory that agents share of what they learned about problems. Each outcome packet \
holds a problem description, what happened (outcome_type: resolved, partial, contradicted, open), a \
confidence from 0 to 1, a short delta_summary of what worked or changed, domain tags and a time to live. \
Before working on a problem, call query_outcomes with the problem in your own words to learn what other \
agents found. When you have an outcome (even 'open' or 'contradicted'), call deposit_outcome so others can \
use it; or call synthesize, which deposits your outcome and returns what other agents found for the same \
problem (your own packets left out) with a consensus. Packets are matched by meaning, so describe symptoms \
and context."""


def result(model: BaseModel, text: str) -> CallToolResult:
    """An answer: `model` as the structured content (the tool's output schema) and `text` for a reader."""
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=model.model_dump(mode="json"))


class StrictTool(Tool):
    """The SDK's Tool with the routing service's argument rules: strict types ("0.5" is not a
    number, true is not 1), unknown arguments refused (the schema says additionalProperties:
    false), and a bad argument reported by name and value, before the tool runs."""

    @classmethod
    def of(cls, fn: Callable, annotations: ToolAnnotations) -> "StrictTool":
        tool = cls.from_function(fn, annotations=annotations)
        tool.fn_metadata.arg_model = create_model(f"{tool.name}_arguments", __base__=tool.fn_metadata.arg_model,
                                                  __cls_kwargs__={"extra": "forbid", "strict": True})
        tool.parameters = tool.fn_metadata.arg_model.model_json_schema(by_alias=True)
        return tool

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            self.fn_metadata.validate_arguments(arguments)
        except ValidationError as exc:
            raise ToolError(f"Error executing tool {self.name}: invalid arguments, nothing was done: "
                            f"{argument_errors(exc)}") from exc
        return await super().run(arguments, context, convert_result)


def argument_errors(exc: ValidationError) -> str:
    """Each broken argument rule as "field: what is wrong (got value)"."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(map(str, error["loc"])) or "arguments"
        got = "" if error["type"] == "missing" else f" (got {error['input']!r})"
        parts.append(f"{where}: {error['msg']}{got}")
    return "; ".join(parts)


def build_server(gate: Gate, caller: Caller | None = None) -> MCPServer:
    """The MCP server over `gate`: as `caller` where a message comes without an HTTP request
    (stdio), else as the caller the service's access layer found for the request."""

    def who(ctx: Context) -> Caller:
        request = ctx.request_context.request
        if request is None:
            if caller is None:
                raise ToolError("refused: this server takes its caller from each HTTP request's key, and this "
                                "message came without one; nothing was changed")
            return caller
        found = request.scope.get("state", {}).get("caller")
        if found is None:  # the service's Access layer sets it on /mcp; a missing one is a wiring error
            raise ToolError("refused: no caller for this request (the service's access layer did not run); "
                            "nothing was changed")
        return found

    async def checked(what: str, call: Awaitable, argument: str | None = None):
        """The gate's answer, or a tool error naming the refusal or the broken rule (of `argument`,
        where the library's message cannot name it: a store's rule for ids)."""
        try:
            return await call
        except Refused as exc:
            done = "" if "nothing was" in exc.detail else f"; nothing was {what}"
            raise ToolError(f"refused ({exc.status}): {exc.detail}{done}") from None
        except (ValueError, TypeError) as exc:  # a library rule the schema cannot express
            raise ToolError(f"invalid argument{f' {argument}' if argument else ''}: {exc}; nothing was {what}") from None

    def packet_of(problem_description, outcome_type, confidence, delta_summary, domain_tags, ttl,
                  agent_id) -> tuple[OutcomePacket, bool]:
        try:  # the library's own rules, on top of the schema's
            packet = OutcomePacket(problem_description, outcome_type, confidence, delta_summary, tuple(domain_tags),
                                   ttl=ttl, **({"agent_id": agent_id} if agent_id is not None else {}))
        except (ValueError, TypeError) as exc:
            raise ToolError(f"invalid argument: {exc}; nothing was stored") from None
        return packet, agent_id is not None

    async def deposit_outcome(ctx: Context, problem_description: s.Problem, outcome_type: s.OutcomeType,
                              confidence: s.Confidence, delta_summary: s.DeltaSummary = "", domain_tags: s.Tags = [],
                              ttl: s.Ttl = DEFAULT_TTL, agent_id: s.AgentId = None
                              ) -> Annotated[CallToolResult, s.Deposited]:
        """Store what you learned about a problem as an outcome packet that other agents' queries will find.

        Call it once you have an outcome worth sharing: the problem solved ('resolved'), improved ('partial'),
        an approach or advice that turned out wrong ('contradicted'), or a problem still unsolved ('open').
        The packet is yours (this connection's agent id) and stays live for `ttl` seconds. Returns the
        packet's id and the packet as stored. A reader's connection may not deposit."""
        sent = packet_of(problem_description, outcome_type, confidence, delta_summary, domain_tags, ttl, agent_id)
        me = who(ctx)
        (pid,) = await checked("stored", gate.deposit(me, [sent]))
        stored = gate.own(me, *sent)  # the packet as the gate stored it (allowed, so no second audit line)
        return result(s.Deposited(id=pid, packet=m.PacketOut.of(stored)),
                      f"Stored packet {pid}: {s.packet_text(stored)}")

    async def query_outcomes(ctx: Context, problem: s.Problem, top_k: s.TopK = 5, domain: s.Domain = None,
                             min_confidence: s.MinConfidence = 0.0, exclude_agent: s.ExcludeAgent = None
                             ) -> Annotated[CallToolResult, m.HitsOut]:
        """Find what agents learned about problems like yours: the live packets most similar to `problem`.

        Call it before working on a problem, to reuse what worked (and avoid what was contradicted). Filters
        (domain tag, minimum confidence, an agent to leave out) apply inside the store, before the top k.
        Returns the packets, most similar first, each with its similarity score (cosine, -1 to 1; above about
        0.5 is usually the same kind of problem). Changes nothing."""
        hits = await checked("changed", gate.query(who(ctx), problem, top_k=top_k, domain=domain,
                                                    min_confidence=min_confidence, exclude_agent=exclude_agent))
        return result(m.HitsOut(hits=s.hits_out(hits)), s.hits_text(hits))

    async def synthesize(ctx: Context, problem_description: s.Problem, outcome_type: s.OutcomeType,
                         confidence: s.Confidence, delta_summary: s.DeltaSummary = "", domain_tags: s.Tags = [],
                         ttl: s.Ttl = DEFAULT_TTL, top_k: s.TopK = 5, domain: s.Domain = None,
                         min_confidence: s.MinConfidence = 0.0) -> Annotated[CallToolResult, s.Synthesized]:
        """Deposit your outcome for a problem, then learn what other agents found for problems like it.

        Use it instead of deposit_outcome + query_outcomes when you have an outcome and want the others' view:
        your packet is stored first (as deposit_outcome does), then the most similar live packets of other
        agents are returned (yours left out), with a consensus: the outcome type with the most weight
        (similarity x confidence), its share of the weight (`support`, 0 to 1) and the count of each
        outcome type. A reader's connection may not call it."""
        sent = packet_of(problem_description, outcome_type, confidence, delta_summary, domain_tags, ttl, None)
        me = who(ctx)
        found = await checked("stored", gate.synthesize(me, problem_description, sent, top_k=top_k, domain=domain,
                                                         min_confidence=min_confidence))
        mine = gate.own(me, *sent)
        out = s.Synthesized(matches=s.hits_out(found.matches), outcome_counts=found.outcome_counts,
                            consensus=found.consensus, support=found.support, deposited=m.PacketOut.of(mine))
        return result(out, s.synthesis_text(mine, found))

    async def get_packet(ctx: Context, packet_id: s.PacketId) -> Annotated[CallToolResult, m.PacketOut]:
        """Read one stored packet by its id (from deposit_outcome, query_outcomes or another agent).

        Returns the packet (problem, outcome, confidence, summary, tags, agent, times). An id the store does
        not hold (never stored, deleted, or purged after it expired) is an error. Changes nothing."""
        found = await checked("changed", gate.get(who(ctx), [packet_id]), "packet_id")
        if packet_id not in found:
            raise ToolError(f"no packet {packet_id!r} in the store (never stored, deleted, or purged after it "
                            "expired)")
        return result(m.PacketOut.of(found[packet_id]), s.packet_text(found[packet_id]))

    async def delete_my_packets(ctx: Context, packet_ids: s.PacketIds) -> Annotated[CallToolResult, s.Deleted]:
        """Delete packets of yours by id, e.g. an outcome you deposited that turned out wrong.

        Only your own packets: if one of the ids is another agent's packet, the whole call is refused and
        nothing is deleted. Ids the store does not hold are reported as not stored. Returns the ids deleted.
        A reader's connection may not delete."""
        deleted = await checked("deleted", gate.delete(who(ctx), packet_ids), "packet_ids")
        rest = [pid for pid in dict.fromkeys(packet_ids) if pid not in set(deleted)]
        text = f"Deleted {len(deleted)} packet(s)" + (f": {', '.join(deleted)}" if deleted else "")
        if rest:
            text += f"; not stored (nothing to delete): {', '.join(rest)}"
        return result(s.Deleted(deleted=deleted, not_stored=rest), text + ".")

    reads = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                             open_world_hint=False)
    tools = [StrictTool.of(deposit_outcome, writes.model_copy(update={"title": "Deposit an outcome"})),
             StrictTool.of(query_outcomes, reads.model_copy(update={"title": "Query other agents' outcomes"})),
             StrictTool.of(synthesize, writes.model_copy(update={"title": "Deposit and synthesize"})),
             StrictTool.of(get_packet, reads.model_copy(update={"title": "Read a packet"})),
             StrictTool.of(delete_my_packets, ToolAnnotations(title="Delete my packets", read_only_hint=False,
                                                            destructive_hint=True, idempotent_hint=True,
                                                            open_world_hint=False))]
    return MCPServer(NAME, instructions=INSTRUCTIONS, tools=tools)
