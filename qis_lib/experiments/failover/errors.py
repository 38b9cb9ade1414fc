"""How a failed operation is recorded: a timeout (the request may have been applied) or an error."""
from __future__ import annotations

import re

_TIMEOUT_TEXT = re.compile(r"timed? ?out|timeout", re.IGNORECASE)


def is_timeout(exc: BaseException) -> bool:
    """True if the failure was a timeout (the request may or may not have been applied).

    Follows the chain of causes and qdrant-client's wrapped `source` exceptions.
    """
    import httpx

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
            return True
        source = getattr(exc, "source", None)  # qdrant-client's ResponseHandlingException
        if isinstance(source, BaseException) and is_timeout(source):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def describe_error(exc: BaseException) -> str:
    """The exception's type and its message on one line, at most 160 characters of it."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


def classify(exc: BaseException) -> str:
    """'timeout' or 'error'. QdrantStore folds node errors into one ConnectionError message,
    so its text is read too."""
    return "timeout" if is_timeout(exc) or _TIMEOUT_TEXT.search(str(exc)) else "error"
