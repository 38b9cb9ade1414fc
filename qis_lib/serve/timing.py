"""The spans of one request's Server-Timing header: `embed` (time in the embedder, its queue
included), `store` (the rest of the router's work: the store call, reading the hits back),
`serialize` (building and encoding the answer) and `app` (the whole request inside the service).

`Envelope` opens a span record per request (a context variable, so it follows the request's
task into the code that serves it); the gate adds the work's spans and marks when it finished;
`Envelope` adds `serialize` when the answer starts.
"""
from __future__ import annotations

import time
from contextvars import ContextVar

_SPANS: ContextVar[dict | None] = ContextVar("qis_server_timing", default=None)


def open_spans() -> dict:
    spans = {"spans": {}, "done": None}
    _SPANS.set(spans)
    return spans


def add(name: str, seconds: float) -> None:
    """Add `seconds` to span `name` of the current request (nothing outside a request)."""
    spans = _SPANS.get()
    if spans is not None:
        spans["spans"][name] = spans["spans"].get(name, 0.0) + seconds * 1000.0
        spans["done"] = time.perf_counter()


def header(spans: dict, started: float) -> bytes:
    """The Server-Timing value: the work's spans, `serialize` since the work ended, and `app`."""
    now = time.perf_counter()
    parts = dict(spans["spans"])
    if spans["done"] is not None:
        parts["serialize"] = (now - spans["done"]) * 1000.0
    parts["app"] = (now - started) * 1000.0
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in parts.items()).encode()
