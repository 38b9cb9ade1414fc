"""Experiments built on the public API: the demo, cold start, routing quality, reliability, failover."""
