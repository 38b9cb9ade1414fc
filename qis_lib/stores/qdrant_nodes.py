"""Which failures of a Qdrant node mean "it did not answer" (try the next node) and which
mean "it answered, with an error" (fail at once, naming the node): REST and gRPC alike.

`no_answer(exc)` reads the whole chain of causes (qdrant-client wraps both network errors
and response-validation errors in ResponseHandlingException, so the outer type decides
nothing); `_answer(exc)` says what a node answered; `NoNodeAnswered` and `QdrantNodeError`
are what `QdrantStore` raises.
"""
from __future__ import annotations

import json

class QdrantNodeError(RuntimeError):
    """A Qdrant node answered, and the answer was an error (a 4xx, a 500, a gRPC status other
    than UNAVAILABLE or DEADLINE_EXCEEDED) or could not be read. Another node would most
    likely answer the same, so the store raises this at once instead of moving on."""

    def __init__(self, url: str, answer: str):
        super().__init__(f"Qdrant node {url} answered {answer}")
        self.url = url
        self.answer = answer


class NoNodeAnswered(ConnectionError):
    """No node of the list answered. `failures` holds (url, why, exception) per node tried.

    `may_have_been_applied` is True when a node timed out or dropped the connection after
    the request was sent: a write may then be stored although it was not acknowledged.
    Deposits are upserts by packet id, so sending the same write again is safe."""

    def __init__(self, failures: list[tuple[str, str, BaseException]]):
        super().__init__("no Qdrant node answered: " + "; ".join(
            f"{url}: {why} ({type(exc).__name__})" for url, why, exc in failures))
        self.failures = failures

    @property
    def timed_out(self) -> bool:
        return any(why.startswith("timed out") for _, why, _ in self.failures)

    @property
    def may_have_been_applied(self) -> bool:
        return any(not why.startswith("refused") for _, why, _ in self.failures)


def _causes(exc: BaseException):
    """exc, then qdrant-client's wrapped `source` and the chain of causes, each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        source = getattr(exc, "source", None)  # qdrant-client's ResponseHandlingException
        exc = source if isinstance(source, BaseException) else (exc.__cause__ or exc.__context__)


def _grpc_code(exc: BaseException) -> str | None:
    """The status name of a grpc.RpcError ("UNAVAILABLE", ...), else None."""
    code = getattr(exc, "code", None)
    if not type(exc).__module__.startswith("grpc") or not callable(code):
        return None
    try:
        return code().name
    except Exception:
        return None


def no_answer(exc: BaseException) -> str | None:
    """Why the node did not answer ("refused", "timed out", "connection lost", "HTTP 503",
    "gRPC UNAVAILABLE", ...) when another node may; None when the node answered, even with
    an error or a body the client could not read (or when exc is not a transport error).

    REST and gRPC alike: connection refused or reset, timeouts, 502/503/504 (what a proxy or
    a node without quorum answers), gRPC UNAVAILABLE and DEADLINE_EXCEEDED mean "did not
    answer". qdrant-client wraps both network errors and response-validation errors in
    ResponseHandlingException, so the chain of causes decides, not the outer type.
    """
    import httpx
    from qdrant_client.http.exceptions import UnexpectedResponse

    for link in _causes(exc):
        grpc_code = _grpc_code(link)
        if grpc_code is not None:
            return {"UNAVAILABLE": "gRPC UNAVAILABLE",
                    "DEADLINE_EXCEEDED": "timed out (gRPC DEADLINE_EXCEEDED)"}.get(grpc_code)
        if isinstance(link, UnexpectedResponse):
            return f"HTTP {link.status_code}" if link.status_code in (502, 503, 504) else None
        if isinstance(link, (httpx.TimeoutException, TimeoutError)):
            return "timed out"
        if isinstance(link, (httpx.ConnectError, ConnectionRefusedError)):
            return "refused (could not connect)"
        if isinstance(link, (httpx.NetworkError, httpx.RemoteProtocolError, ConnectionError)):
            return "connection lost"
    return None


def _answer(exc: BaseException) -> str | None:
    """What a node answered, for an error that came from its answer; None for other errors
    (bad input caught by our own code, a bug) which are raised unchanged."""
    import pydantic
    from qdrant_client.common.client_exceptions import QdrantException
    from qdrant_client.http.exceptions import ApiException, UnexpectedResponse

    from_client = (ApiException, QdrantException)

    for link in _causes(exc):
        grpc_code = _grpc_code(link)
        if grpc_code is not None:
            details = getattr(link, "details", lambda: "")() or ""
            return f"gRPC {grpc_code}: {details[:300]}"
        if isinstance(link, UnexpectedResponse):
            body = link.content[:300].decode("utf-8", "replace")
            return f"HTTP {link.status_code} ({link.reason_phrase}): {body}"
        # qdrant-client raises a body that is not JSON as a bare JSONDecodeError, and a JSON body
        # that does not fit its models as a ValidationError wrapped in ResponseHandlingException
        if isinstance(link, json.JSONDecodeError) or isinstance(link, pydantic.ValidationError) and any(
                isinstance(e, from_client) for e in _causes(exc)):
            text = " ".join(str(link).split())
            return f"a body the client could not read ({type(link).__name__}: {text[:300]})"
        if isinstance(link, QdrantException):  # ResourceExhaustedResponse: the node answered 429
            return " ".join(f"HTTP 429 {type(link).__name__}: {link}".split())[:400]
    # anything else wrapped in ResponseHandlingException ("the client has been closed", ...)
    # happened on our side: raised unchanged
    return None


def _is_unreachable(exc: Exception) -> bool:
    """True for errors that mean 'this node did not answer', where another node may."""
    return no_answer(exc) is not None
