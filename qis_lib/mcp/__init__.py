"""Outcome routing as MCP tools (python -m qis_lib.mcp): see qis_lib.mcp.server."""
