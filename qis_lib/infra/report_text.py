"""The words an agent routes on, made from a bug report: Jira markup out, the summary, and as
much of the description as a budget allows (cut at a word)."""
from __future__ import annotations

import re
from typing import Callable

TEXT_CHOICES = ("summary", "summary+description")

_MARKUP = re.compile(r"\{(code|noformat|quote|panel|color)[^}]*\}|\[~[^\]]*\]|https?://\S+|[*_]{2,}")


def clean_text(text: str) -> str:
    """Jira markup, links and runs of whitespace out: they carry no meaning for the model."""
    return re.sub(r"\s+", " ", _MARKUP.sub(" ", str(text))).strip()


def cut_at_word(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,.;:")


def problem_text(summary: str, description: str, text: str = "summary", description_chars: int | None = 200,
                 fits: Callable[[str], bool] | None = None) -> str:
    """The words an agent would route on: the summary, or the summary and the description's start
    (`description_chars` characters, cut at a word; None: as many words as `fits(text)` allows)."""
    if text not in TEXT_CHOICES:
        raise ValueError(f"text must be one of {TEXT_CHOICES}, got {text!r}")
    summary = clean_text(summary)
    if text == "summary":
        return summary
    if description_chars is None:
        if fits is None:
            raise ValueError("description_chars=None (fill the byte budget) needs fits=")
        words = clean_text(description).split(" ")
        def joined(n: int) -> str:
            start = " ".join(words[:n]).rstrip(" ,.;:")
            return f"{summary}. {start}" if start else summary
        low, high = 0, len(words)  # the longest start that fits, by bisection (size grows with n)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(joined(mid)) else (low, mid - 1)
        return joined(low)
    if not isinstance(description_chars, int) or description_chars < 0:
        raise ValueError(f"description_chars must be an int >= 0 or None, got {description_chars!r}")
    start = cut_at_word(clean_text(description), description_chars)
    return f"{summary}. {start}" if start else summary
