"""How a failed operation is recorded: a timeout (the request may have been applied) or an error.

REST and gRPC alike: an httpx timeout, a TimeoutError, a gRPC DEADLINE_EXCEEDED, or a
`NoNodeAnswered` in which some node timed out is a "timeout" (the write may be stored
although it was never acknowledged: the loss check counts it as indeterminate). Anything
else is an "error". Which node failures move a client on to the next node is decided in
`qis_lib.stores.qdrant_nodes.no_answer`; this module only labels the outcome.
"""
from __future__ import annotations

import re

from ...stores.qdrant_nodes import _causes, _grpc_code

_TIMEOUT_TEXT = re.compile(r"timed? ?out|timeout|deadline exceeded", re.IGNORECASE)


def is_timeout(exc: BaseException) -> bool:
    """True if the failure was a timeout (the request may or may not have been applied).

    Follows the chain of causes and qdrant-client's wrapped `source` exceptions.
    """
    import httpx

    for link in _causes(exc):
        if isinstance(link, (TimeoutError, httpx.TimeoutException)) or getattr(link, "timed_out", False) is True:
            return True
        if _grpc_code(link) == "DEADLINE_EXCEEDED":
            return True
    return False


def describe_error(exc: BaseException) -> str:
    """The exception's type and its message on one line, at most 160 characters of it."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


def classify(exc: BaseException) -> str:
    """'timeout' or 'error'. A ConnectionError whose text says it timed out counts as a
    timeout too (a store that folds node errors into one message)."""
    folded = isinstance(exc, ConnectionError) and _TIMEOUT_TEXT.search(str(exc))
    return "timeout" if is_timeout(exc) or folded else "error"
