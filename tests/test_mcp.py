"""The MCP server (python -m qis_lib.mcp) through the SDK's own client (`ClientSession`).

Over stdio: the server as a child process, started the way an MCP host starts it (hash embedder),
on a qdrant-edge folder that holds another agent's packet beforehand and is read again after the
session, so every check of "nothing changed" compares the store itself. Over HTTP: the routing service with its
MCP endpoint on a free loopback port, keys from `write_keys_file`, the store compared through
the admin's vector API."""
from __future__ import annotations

import json
from contextlib import asynccontextmanager

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from qis_lib import OutcomePacket, make_router
from qis_lib.core.packet import MAX_DELTA_CHARS, OUTCOME_TYPES
from qis_lib.mcp.__main__ import parse_args
from qis_lib.mcp.process import McpService, stdio_parameters
from qis_lib.mcp.schema import MAX_TOOL_TOP_K
from qis_lib.serve.auth import write_keys_file
from qis_lib.stores.registry import open_store

TOOLS = {"deposit_outcome", "query_outcomes", "synthesize", "get_packet", "delete_my_packets"}
BOBS = OutcomePacket("namenode heap exhausted after a restart", "resolved", 0.8, "raised the namenode heap",
                     ["hdfs"], agent_id="bob")
MINE = {"problem_description": "namenode heap exhausted during a block report", "outcome_type": "partial",
        "confidence": 0.6, "delta_summary": "raised the heap, still slow", "domain_tags": ["hdfs"]}
MISSING = "00000000-0000-5000-8000-000000000000"  # a packet id nobody stored


def ok(result) -> dict:
    """The structured answer of a call that must succeed."""
    assert not result.is_error, result.content[0].text
    return result.structured_content


def refused(result, *words: str) -> str:
    """The text of a call that must be a tool error naming `words`."""
    assert result.is_error, result.structured_content
    text = result.content[0].text
    for word in words:
        assert word in text, text
    return text


# --- stdio ------------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    """A qdrant-edge folder holding bob's packet."""
    path = tmp_path / "store"
    router = make_router("qdrant-edge", embedder="hash", path=str(path))
    router.deposit(BOBS)
    router.close()
    return path


def stored(path) -> dict[str, OutcomePacket]:
    """Every packet in the folder, by id (opened after the server closed it)."""
    router = make_router("qdrant-edge", embedder="hash", path=str(path))
    try:
        return router.get(router.store.scroll_ids())
    finally:
        router.close()


@asynccontextmanager
async def stdio_session(store: str, log, **who):
    async with stdio_client(stdio_parameters(store, embedder="hash", **who), errlog=log) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def in_stdio(folder, tmp_path, scenario, **who):
    async def main():
        with open(tmp_path / "server.log", "w") as log:
            async with stdio_session(f"qdrant-edge://{folder}", log, **who) as session:
                return await scenario(session)
    return anyio.run(main)


def test_stdio_tools_carry_the_packet_rules(folder, tmp_path):
    async def scenario(session):
        return (await session.list_tools()).tools

    tools = {tool.name: tool for tool in in_stdio(folder, tmp_path, scenario, agent="alice")}
    assert set(tools) == TOOLS
    deposit = tools["deposit_outcome"].input_schema
    fields = deposit["properties"]
    assert fields["outcome_type"]["enum"] == list(OUTCOME_TYPES)
    assert (fields["confidence"]["minimum"], fields["confidence"]["maximum"]) == (0.0, 1.0)
    assert fields["delta_summary"]["maxLength"] == MAX_DELTA_CHARS
    assert fields["ttl"]["minimum"] == 0.001
    assert fields["problem_description"]["pattern"] == r"\S"
    assert set(deposit["required"]) == {"problem_description", "outcome_type", "confidence"}
    assert deposit["additionalProperties"] is False
    assert tools["query_outcomes"].input_schema["properties"]["top_k"]["maximum"] == MAX_TOOL_TOP_K
    assert tools["delete_my_packets"].input_schema["properties"]["packet_ids"]["minItems"] == 1
    for tool in tools.values():
        assert tool.output_schema["type"] == "object", tool.name
        assert len(tool.description) > 150, tool.name  # what it does, when to call it, what comes back
        assert all(f["description"] for f in tool.input_schema["properties"].values()), tool.name
    assert tools["query_outcomes"].annotations.read_only_hint and tools["get_packet"].annotations.read_only_hint
    assert tools["delete_my_packets"].annotations.destructive_hint
    assert "hits" in tools["query_outcomes"].output_schema["properties"]


def test_stdio_agent_deposits_queries_synthesizes_reads_and_deletes_its_own(folder, tmp_path):
    async def scenario(session):
        mine = ok(await session.call_tool("deposit_outcome", MINE))
        hits = ok(await session.call_tool("query_outcomes", {"problem": "namenode heap exhausted", "top_k": 10}))
        synthesis = ok(await session.call_tool("synthesize", {
            **MINE, "problem_description": "namenode heap exhausted again", "outcome_type": "resolved"}))
        got = ok(await session.call_tool("get_packet", {"packet_id": mine["id"]}))
        gone = ok(await session.call_tool("delete_my_packets", {"packet_ids": [mine["id"], MISSING]}))
        text = (await session.call_tool("query_outcomes", {"problem": "namenode heap"})).content[0].text
        return mine, hits, synthesis, got, gone, text

    mine, hits, synthesis, got, gone, text = in_stdio(folder, tmp_path, scenario, agent="alice")
    assert mine["packet"]["agent_id"] == "alice"  # no agent id given: the server's agent
    assert {h["packet"]["packet_id"] for h in hits["hits"]} == {mine["id"], BOBS.packet_id}
    assert all(-1.0 <= h["score"] <= 1.0 for h in hits["hits"])
    assert [h["packet"]["agent_id"] for h in synthesis["matches"]] == ["bob"]  # alice's own left out
    assert synthesis["consensus"] == "resolved" and synthesis["outcome_counts"] == {"resolved": 1}
    assert synthesis["deposited"]["agent_id"] == "alice"
    assert got == mine["packet"]
    assert gone == {"deleted": [mine["id"]], "not_stored": [MISSING]}
    assert BOBS.packet_id in text and mine["id"] not in text  # readable text beside the structure
    after = stored(folder)
    assert set(after) == {BOBS.packet_id, synthesis["deposited"]["packet_id"]}
    assert after[synthesis["deposited"]["packet_id"]].problem_description == "namenode heap exhausted again"


def test_stdio_bad_and_refused_calls_change_nothing(folder, tmp_path):
    before = stored(folder)

    async def scenario(session):
        texts = {
            "confidence": refused(await session.call_tool("deposit_outcome", {**MINE, "confidence": 7.5}),
                                  "confidence", "7.5", "nothing was done"),
            "outcome_type": refused(await session.call_tool("deposit_outcome", {**MINE, "outcome_type": "fixed"}),
                                    "outcome_type", "fixed"),
            "delta_summary": refused(await session.call_tool("deposit_outcome", {
                **MINE, "delta_summary": "x" * (MAX_DELTA_CHARS + 1)}), "delta_summary", str(MAX_DELTA_CHARS)),
            "string number": refused(await session.call_tool("deposit_outcome", {**MINE, "confidence": "0.5"}),
                                     "confidence"),
            "unknown": refused(await session.call_tool("deposit_outcome", {**MINE, "domain_tag": "hdfs"}),
                               "domain_tag"),
            "blank": refused(await session.call_tool("deposit_outcome", {**MINE, "problem_description": "  "}),
                             "problem_description"),
            "missing": refused(await session.call_tool("synthesize", {"problem_description": "x"}), "outcome_type",
                               "confidence"),
            "as bob": refused(await session.call_tool("deposit_outcome", {**MINE, "agent_id": "bob"}),
                              "403", "'alice'", "'bob'", "nothing was stored"),
            "bob's": refused(await session.call_tool("delete_my_packets", {"packet_ids": [BOBS.packet_id]}),
                             "403", BOBS.packet_id, "nothing was deleted"),
            "missing id": refused(await session.call_tool("get_packet", {"packet_id": MISSING}), MISSING),
            "bad id": refused(await session.call_tool("get_packet", {"packet_id": "not-an-id"}), "packet_id",
                              "not-an-id"),
            "top_k": refused(await session.call_tool("query_outcomes", {"problem": "heap", "top_k": 0}), "top_k"),
        }
        still = ok(await session.call_tool("get_packet", {"packet_id": BOBS.packet_id}))  # the server still serves
        return texts, still

    texts, still = in_stdio(folder, tmp_path, scenario, agent="alice")
    assert still["agent_id"] == "bob"
    assert texts["bob's"].count("nothing was") == 1
    assert "For further information" not in texts["confidence"]  # one line per broken rule, no noise
    assert stored(folder) == before


def test_stdio_reader_queries_and_may_not_write(folder, tmp_path):
    before = stored(folder)

    async def scenario(session):
        hits = ok(await session.call_tool("query_outcomes", {"problem": "namenode heap"}))
        texts = [refused(await session.call_tool("deposit_outcome", MINE), "reader", "may not"),
                 refused(await session.call_tool("synthesize", MINE), "reader", "may not"),
                 refused(await session.call_tool("delete_my_packets", {"packet_ids": [BOBS.packet_id]}), "reader")]
        return hits, texts

    hits, _ = in_stdio(folder, tmp_path, scenario, role="reader", audit=tmp_path / "audit.jsonl")
    assert [h["packet"]["packet_id"] for h in hits["hits"]] == [BOBS.packet_id]
    assert stored(folder) == before
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(line["role"], line["action"], line["status"]) for line in lines] == [
        ("reader", "deposit", 403), ("reader", "synthesize", 403), ("reader", "delete", 403)]


# --- streamable HTTP, on the routing service --------------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mcp-http")
    keys = write_keys_file(folder / "keys.json", {"alice": None, "bob": None,
                                                  "limited": {"rate_per_s": 0.01, "burst": 3}})
    entries = json.loads((folder / "keys.json").read_text())
    keys["reader"] = "reader-secret-0123456789"
    entries["keys"].append({"id": "dashboard", "role": "reader", "key": keys["reader"]})
    (folder / "keys.json").write_text(json.dumps(entries))
    with McpService("memory://", embedder="hash", auth=folder / "keys.json", audit=folder / "audit.jsonl",
                    folder=folder, args=("--refusal-delay", "0")) as running:
        running.keys, running.audit_path = keys, folder / "audit.jsonl"
        yield running


@asynccontextmanager
async def http_session(service, key: str, header: str = "bearer", initialize: bool = True):
    headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http, \
            streamable_http_client(service.mcp_url, http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        if initialize:
            await session.initialize()
        yield session


def snapshot(service) -> dict:
    """The agents' store as the admin's vector API reads it."""
    store = open_store("http", url=service.url, api_key=service.keys["admin"])
    try:
        return store.get(store.scroll_ids())
    finally:
        store.close()


def audit_lines(service) -> list[dict]:
    return [json.loads(line) for line in service.audit_path.read_text().splitlines()]


def test_http_the_key_decides_the_agent(service):
    async def main():
        async with http_session(service, service.keys["alice"]) as alice, \
                http_session(service, service.keys["bob"], header="x-api-key") as bob:
            mine = ok(await alice.call_tool("deposit_outcome", MINE))
            found = ok(await bob.call_tool("query_outcomes", {"problem": MINE["problem_description"]}))
            synthesis = ok(await bob.call_tool("synthesize", {**MINE, "outcome_type": "resolved"}))
            before = snapshot(service)
            texts = [refused(await bob.call_tool("delete_my_packets", {"packet_ids": [mine["id"]]}), "403", "bob"),
                     refused(await bob.call_tool("deposit_outcome", {**MINE, "agent_id": "alice"}), "403", "'bob'")]
            unchanged = snapshot(service) == before
            gone = ok(await alice.call_tool("delete_my_packets", {"packet_ids": [mine["id"]]}))
            return mine, found, synthesis, unchanged, gone, texts

    mine, found, synthesis, unchanged, gone, _ = anyio.run(main)
    assert mine["packet"]["agent_id"] == "alice"
    assert mine["id"] in [h["packet"]["packet_id"] for h in found["hits"]]
    assert synthesis["deposited"]["agent_id"] == "bob"
    assert mine["id"] in [h["packet"]["packet_id"] for h in synthesis["matches"]]
    assert all(h["packet"]["agent_id"] != "bob" for h in synthesis["matches"])  # bob's own left out
    assert unchanged
    assert gone["deleted"] == [mine["id"]] and mine["id"] not in snapshot(service)
    # the same store behind /v1: the agents' client sees bob's synthesized outcome
    remote = make_router(service.url, api_key=service.keys["bob"])
    try:
        assert list(remote.get([synthesis["deposited"]["packet_id"]])) == [synthesis["deposited"]["packet_id"]]
    finally:
        remote.close()
    lines = [line for line in audit_lines(service) if line["ids"] == [mine["id"]]]
    assert [(line["action"], line["agent"], line["status"]) for line in lines] == [
        ("deposit", "alice", 200), ("delete", "bob", 403), ("delete", "alice", 200)]


def test_http_reader_key_may_not_deposit(service):
    before = snapshot(service)

    async def main():
        async with http_session(service, service.keys["reader"]) as reader:
            text = refused(await reader.call_tool("deposit_outcome", MINE), "403", "dashboard", "reader")
            hits = ok(await reader.call_tool("query_outcomes", {"problem": "namenode", "top_k": MAX_TOOL_TOP_K}))
            return text, hits

    _, hits = anyio.run(main)
    assert {h["packet"]["packet_id"] for h in hits["hits"]} == set(before)
    assert snapshot(service) == before


def test_http_without_a_key_or_with_a_wrong_one_is_refused(service):
    before = snapshot(service)
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    bare = httpx.post(service.mcp_url, json=initialize, headers={"Accept": "application/json, text/event-stream"})
    assert bare.status_code == 401
    assert "no API key" in bare.json()["error"]["message"]  # a JSON-RPC error, which MCP clients show

    async def wrong():
        async with http_session(service, "not-a-key-of-this-service", initialize=False) as session:
            with pytest.raises(MCPError, match="unknown API key"):
                await session.initialize()

    anyio.run(wrong)
    assert snapshot(service) == before
    refusals = [line for line in audit_lines(service) if line["status"] == 401]
    assert {line["action"] for line in refusals} == {"POST /mcp"}


def test_http_the_key_limits_apply_to_mcp_calls(service):
    async def main():
        async with http_session(service, service.keys["limited"]) as session:  # initialize: 2 requests of the 3
            assert len((await session.list_tools()).tools) == len(TOOLS)
            with pytest.raises(MCPError, match="over its limits"):
                await session.call_tool("query_outcomes", {"problem": "namenode"})

    anyio.run(main)
    assert any(line["status"] == 429 and line["key"] == "key-2" for line in audit_lines(service))


# --- in process -------------------------------------------------------------------------

def test_mount_refuses_a_path_the_access_layer_does_not_guard():
    from qis_lib.embedders import HashEmbedder
    from qis_lib.mcp.http import mount
    from qis_lib.serve.app import create_app
    from qis_lib.serve.namespaces import Namespaces

    app = create_app(Namespaces("memory://", HashEmbedder(), limit=1))
    with pytest.raises(ValueError, match="'/tools'"):
        mount(app, path="/tools")
    assert "/tools" not in {getattr(route, "path", None) for route in app.routes}


@pytest.mark.parametrize("argv, message", [
    (["--store", "memory://"], "--agent ID is required"),
    (["--store", "memory://", "--role", "reader", "--agent", "a"], "a reader acts as no agent"),
    (["--store", "memory://", "--agent", "a", "--auth", "k.json"], "unrecognized arguments: --auth k.json"),
    (["--store", "memory://", "--http", "127.0.0.1:80", "--agent", "a"], "each request's key decides"),
    (["--store", "memory://", "--http", "localhost"], "--http must be HOST:PORT"),
])
def test_the_command_line_refuses_what_it_cannot_do(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_the_command_line_passes_service_options_on_with_http():
    args, rest = parse_args(["--store", "memory://", "--http", "[::1]:8090", "--auth", "k.json", "--threads", "4"])
    assert (args.host, args.port, rest) == ("::1", 8090, ["--auth", "k.json", "--threads", "4"])
