"""Figures in text: which numbers are measured figures, and whether one text holds another's.

A *measured figure* is a number with a unit of time, rate, size or ratio ("2,778 µs",
"about 40 minutes", "13.5 texts/s", "1.99x", "45%"), or a bare decimal such as a recall or an
MRR ("0.409"). Counts and parameters ("top 5", "1,000 agents", "100k", "384-d", "hnsw_ef 128"),
hyphenated sizes ("a 10-minute TTL", "the 512-byte target"), versions ("qdrant-client 1.20"),
years and dates carry no such unit and are not figures. Markdown is read with markdown-it-py,
so numbers in `code spans`, fenced or indented code, link targets and HTML are never read.

`find_figures(text)` lists the figures of a prose text; `numbers_in(text)` every number of a
text a run printed, with its unit where one follows it (a table's bare numbers have none);
`holds(pool, figure)` says whether such numbers hold the figure: the same value at the precision
written, after thousands separators are dropped and units converted (16.0 min is 962 s, 45% is
0.45), with at least the figure's precision.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from markdown_it import MarkdownIt

# unit spelling -> (family, factor to the family's base unit)
UNITS = {
    **dict.fromkeys(("ns",), ("time", 1e-9)), **dict.fromkeys(("µs", "μs", "us"), ("time", 1e-6)),
    **dict.fromkeys(("ms",), ("time", 1e-3)), **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), ("time", 1.0)),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), ("time", 60.0)),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), ("time", 3600.0)),
    **dict.fromkeys(("day", "days"), ("time", 86400.0)),
    **dict.fromkeys(("B", "byte", "bytes"), ("size", 1.0)), "kB": ("size", 1e3), "KB": ("size", 1e3),
    "KiB": ("size", 1024.0), "MB": ("size", 1e6), "MiB": ("size", 2.0 ** 20), "GB": ("size", 1e9),
    "GiB": ("size", 2.0 ** 30), "/s": ("rate", 1.0), "x": ("ratio", 1.0), "×": ("ratio", 1.0), "%": ("share", 0.01),
}
WORD_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
                "fifty": 50, "sixty": 60, "ninety": 90}
NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
# not inside a word, a name (p99, recall@10, log10, HADOOP-17796), a version or a path; "sub-10 ms" is a figure
START = r"(?<![\w@:.,/#^])(?:(?<=sub-)|(?<!\w-))"
END = r"(?![\d]|\.\d|,\d{3})"
NAMED = sorted((re.escape(u) for u in UNITS if u not in ("/s", "x", "×", "%")), key=len, reverse=True)
UNIT = (r"(?:(?P<attached>[x×])(?![\w])|\s?(?P<pct>%)|[\s\u00a0\u202f]?(?P<rate>(?:[A-Za-z]+ ?)?/ ?s)(?![A-Za-z])"
        r"|[\s\u00a0\u202f]?(?P<unit>" + "|".join(NAMED) + r")(?![\w]))")
APPROX = r"(?P<approx>(?:about|around|roughly|nearly|almost|over|under|up to|at least|at most)\s+|~\s?|≈\s?|sub-)?"
FIGURE = re.compile(APPROX + START + r"(?P<sign>[+−-])?(?P<a>" + NUM + r")" + END
                    + r"(?:\s?(?:-|–|to)\s?(?P<b>" + NUM + r")" + END + r")?" + r"(?:" + UNIT + r")?")
WORDS = re.compile(APPROX + r"\b(?:(?P<word>" + "|".join(WORD_NUMBERS) + r")\s+"
                   r"(?P<wunit>seconds?|minutes?|hours?|days?)|(?P<half>half an? (?:second|minute|hour))"
                   r"|(?P<andhalf>an? (?:minute|hour) and a half))\b", re.IGNORECASE)
NUMBER = re.compile(r"(?<![\w.])(?P<sign>[+−-])?(?P<a>" + NUM + r")(?![\d]|\.\d)"
                    + r"(?:\s?(?:-|–|to)\s?(?P<b>" + NUM + r")(?![\d]|\.\d))?(?:" + UNIT + r")?")
COLUMN_UNITS = {"ns": "ns", "us": "us", "µs": "µs", "ms": "ms", "s": "s", "seconds": "s", "mb": "MB", "mib": "MiB",
                "bytes": "bytes"}
LABEL_UNIT = re.compile(r"(?<![\w])(ns|µs|μs|us|ms|seconds|minutes|min|hours|bytes|MB|MiB|KiB|kB|GB)(?![\w])")
SHARED = re.compile(r"\s*(?:against|/|vs\.?|versus)\s*")
LICENCE = re.compile(r"\b(?:CC[- ]BY(?:[- ]SA)?|Apache|(?:L|A)?GPL(?:v\d)?|MPL)[- ]?$", re.IGNORECASE)
VERSIONED = {"python", "version", "versions", "release", "v", "chroma", "chromadb", "qdrant", "qdrant-edge",
             "pip", "nbformat", "sqlite"}


@cache
def versioned_names() -> frozenset[str]:
    """Words after which a decimal is a version: the pinned packages of requirements.txt and a few more."""
    pins = Path(__file__).parents[1] / "requirements.txt"
    names = {line.split("==")[0].strip().lower() for line in pins.read_text().splitlines() if "==" in line}
    return frozenset(names | VERSIONED)


@dataclass(frozen=True)
class Figure:
    """One number of a text: the number and its unit as written, its value, unit family ("time",
    "size", "rate", "ratio" for 1.99x, "share" for 45%; "number" when no unit follows it), the
    factor of its unit to the family's base unit, and the decimals written. `start` is its offset
    in the text it came from, `written` the whole phrase it was read in (both ends of a range,
    "about" and all), `in_range` whether it is an end of a range; `hints`, for a bare number a run
    printed in a table or after a label, the (family, factor) of the unit its column's name or its
    label gives (`p50_ms`, "bytes spent: 93"), in which it may be read."""

    text: str
    value: float
    family: str
    factor: float
    decimals: int
    start: int = 0
    written: str = ""
    in_range: bool = False
    hints: tuple = ()

    @property
    def base(self) -> float:
        return self.value * self.factor

    @property
    def resolution(self) -> float:
        """The step of the last digit written, in the family's base unit."""
        return 10.0 ** -self.decimals * self.factor


def _value(digits: str, sign: str | None) -> tuple[float, int]:
    plain = digits.replace(",", "")
    return (-1 if sign in ("-", "−") else 1) * float(plain), len(plain.partition(".")[2])


def _unit(match: re.Match) -> tuple[str, float] | None:
    if match["attached"]:
        return UNITS["x"]
    if match["pct"]:
        return UNITS["%"]
    if match["rate"]:
        return UNITS["/s"]
    return UNITS[match["unit"]] if match["unit"] else None


def figures_of(match: re.Match, measured_only: bool, hints: tuple = ()) -> list[Figure]:
    """The figures of one match of FIGURE or NUMBER (two for a range); `measured_only` leaves out
    bare numbers without decimals and those followed by a letter (counts: 100k, 6.7k)."""
    unit = _unit(match)
    if unit is None and measured_only and match.string[match.end():match.end() + 1].isalpha():
        return []
    last = "b" if match["b"] is not None else "a"
    suffix = match.string[match.end(last):match.end()]
    out = []
    for group, sign in (("a", match["sign"]), ("b", None)):
        if match[group] is None:
            continue
        value, decimals = _value(match[group], sign)
        if unit is None and measured_only and not decimals:
            continue  # a count or a parameter: no unit, no decimals
        family, factor = unit or ("number", 1.0)
        text = (sign or "") + match[group] + suffix
        out.append(Figure(text.strip(), value, family, factor, decimals, match.start(group), match.group(0).strip(),
                          match["b"] is not None, () if unit else hints))
    return out


def find_figures(text: str) -> list[Figure]:
    """The measured figures of a prose text (plain text: markdown is split by `prose_blocks`)."""
    found = []
    for match in FIGURE.finditer(text):
        head = text[:match.start("a")]
        before = head.rstrip(" (").rsplit(None, 1)
        if match["b"] is None and match["a"].count(".") and before and \
                (before[-1].lower() in versioned_names() or LICENCE.search(head)):
            continue  # "qdrant-client 1.20", "CC BY 4.0", "Apache 2.0"
        found += figures_of(match, measured_only=True)
    for match in WORDS.finditer(text):
        words = match.group(0).lower()
        if match["word"]:
            value, unit = WORD_NUMBERS[match["word"].lower()], match["wunit"].lower()
        else:
            value, unit = (0.5 if match["half"] else 1.5), ("minute" if "minute" in words else
                                                           "hour" if "hour" in words else "second")
        written = match.group(0).strip()
        phrase = match.group(0)[len(match["approx"] or ""):].strip()
        decimals = 0 if float(value).is_integer() else 1
        found.append(Figure(phrase, float(value), "time", UNITS[unit][1], decimals, match.start(), written))
    return shared_units(text, sorted(found, key=lambda f: f.start))


def shared_units(text: str, figures: list[Figure]) -> list[Figure]:
    """Bare numbers that share the unit of the figure after them ("1.3 against 4.1 ms",
    "12.0 / 13.5 ops/s") take that unit."""
    out = list(figures)
    for i in range(len(out) - 2, -1, -1):
        first, second = out[i], out[i + 1]
        end = first.start + len(first.text)
        if first.family == "number" and second.family != "number" and not first.in_range \
                and SHARED.fullmatch(text[end:second.start]):
            out[i] = dataclasses.replace(first, family=second.family, factor=second.factor)
    return out


def column_unit(name: str) -> tuple | None:
    """The (family, factor) of the unit a column's name carries (`p50_ms`, `build_s_total`,
    `query_p99_ms_auto`, `throughput_per_s`, `latency (ms)`), or None. `min` is no unit there:
    `recall_min` is a minimum."""
    words = [w for w in re.split(r"[_()\s]+", name.lower()) if w]
    if any(a == "per" and b == "s" for a, b in zip(words, words[1:])):
        return UNITS["/s"]
    unit = next((w for w in reversed(words) if w in COLUMN_UNITS), None)
    return UNITS[COLUMN_UNITS[unit]] if unit else None


def header_of(lines: list[str], row: int, end: int) -> str | None:
    """The column name above the right-aligned value that ends at column `end` of line `row`: the
    nearest word above it that ends at the same column and is not a number (pandas and
    DataFrame.to_string align values and headers to the right)."""
    for line in reversed(lines[max(0, row - 80):row]):
        word = next((m.group(0) for m in re.finditer(r"\S+", line) if m.end() == end), None)
        if word is not None and not re.fullmatch(r"[-+\d.,%x:]+|NaN|True|False|None", word):
            return word
    return None


def label_unit(label: str) -> tuple | None:
    """The unit a printed label names before its value ("bytes spent on field names: 93"), or None."""
    if not label.rstrip().endswith((":", "=")):
        return None
    units = LABEL_UNIT.findall(label)
    return UNITS[units[-1]] if units else None


def numbers_in(text: str) -> list[Figure]:
    """Every number of a text a run printed, with the unit written after it, if any; a bare number
    carries as a hint the unit its table column's name ends with (`column_unit`) or the unit its
    label names (`label_unit`)."""
    lines = text.split("\n")
    found = []
    offset = 0
    for row, line in enumerate(lines):
        previous = 0
        for match in NUMBER.finditer(line):
            header = header_of(lines, row, match.end()) if match.end() == len(line.rstrip()) or \
                line[match.end():match.end() + 1] == " " else None
            unit = (column_unit(header) if header else None) or label_unit(line[previous:match.start()])
            previous = match.end()
            for figure in figures_of(match, measured_only=False, hints=(unit,) if unit else ()):
                found.append(dataclasses.replace(figure, start=figure.start + offset))
        offset += len(line) + 1
    return found


def round_figure(figure: Figure) -> bool:
    """One significant digit as written ("10 ms", "0.5", "20%", "300 s", "six hours"): a target, a
    parameter or an approximation, which any busy table holds by chance once rounded. A bare
    decimal written to two places or more ("0.03", "0.002") is a measurement rounded, not round."""
    number = re.search(r"\d[\d,]*(?:\.\d+)?", figure.text)
    whole, _, frac = (number.group(0).replace(",", "") if number else f"{abs(figure.value):g}").partition(".")
    significant = (whole + frac).lstrip("0") if frac else whole.lstrip("0").rstrip("0")
    return len(significant) <= 1 and not (figure.family == "number" and len(frac) >= 2)


def readings(number: Figure, figure: Figure, columns: bool = False) -> list[tuple[float, float]]:
    """(value, resolution) pairs, in `figure`'s base unit, that a printed `number` may be read as:
    its own value if it has a unit of the figure's family; a bare number in a table, in its
    column's unit only (so a p50_ms value is no recall); another bare number as a decimal or a ratio
    ("1.99" states "1.99x"), or as a share for a percentage ("0.45" states "45%"). A round figure
    with a unit is held only by a number printed with a unit of its family (with `columns`, also
    by one in a column that names such a unit)."""
    if number.family != "number":
        return [(number.base, number.resolution)] if number.family == figure.family else []
    if round_figure(figure) and figure.family != "number" and not (number.hints and columns):
        return []
    if number.hints:
        return [(number.value * factor, number.resolution * factor) for family, factor in number.hints
                if family == figure.family]
    share = figure.family == "share" and number.decimals and abs(number.value) <= 1
    if figure.family in ("number", "ratio") or share:
        return [(number.value, number.resolution)]
    return []


def holds(pool, figure: Figure, columns: bool = False) -> Figure | None:
    """The first number of `pool` that states `figure`: read as `readings` allows, rounding to the
    figure's value at the decimals written, and printed with at least that precision; an end of a
    printed range states only an end of a range. A round figure (`round_figure`) is held only by a
    number of that very value as printed ("10.0 ms" holds "10 ms", "10.245 ms" does not), and by
    a bare number in a table only with `columns` (`readings`). None if no number of `pool` does."""
    exact = round_figure(figure)
    for number in pool:
        if number.in_range and not figure.in_range:
            continue  # an interval's end is not a figure of its own
        for base, resolution in readings(number, figure, columns):
            if resolution > figure.resolution * 1.0001:
                continue  # printed more coarsely than the figure claims
            tolerance = resolution / 2 if exact else figure.resolution / 2
            if abs(base - figure.base) <= tolerance * 1.0001 + 1e-12:
                return number
    return None


@dataclass(frozen=True)
class Block:
    """A piece of markdown prose: a paragraph, a heading, a list item's text or a table row, with its
    first line (0-based, in the markdown given), its text without code, links' targets or HTML, and
    its markdown as written (`raw`). `quoted` is what a `<!-- figures {...} -->` comment just before
    it (or before its table) allows: {"quoted": {figure: reason}, "parameters": {...}}."""

    line: int
    text: str
    raw: str
    kind: str = "text"  # "text", "heading" or "row"
    quoted: dict | None = None


FIGURES_COMMENT = re.compile(r"^<!--\s*figures\s+(?P<json>\{.*\})\s*-->\s*$", re.DOTALL)


@cache
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


def _comment(content: str):
    match = FIGURES_COMMENT.match(content.strip())
    if not match:
        return None
    try:
        return json.loads(match["json"])
    except json.JSONDecodeError as exc:
        return {"error": f"the figures comment is not JSON: {exc}"}


def prose_blocks(markdown: str) -> list[Block]:
    """The prose of `markdown`, block by block; code spans become a gap, code blocks are dropped. A
    figures comment applies to the next block, or to every row of the table after it."""
    blocks: list[Block] = []
    row: list[tuple[str, str]] | None = None
    line, heading, quoted = 0, False, None
    for token in _markdown().parse(markdown):
        if token.type == "html_block" and (comment := _comment(token.content)) is not None:
            quoted = comment
        elif token.type in ("heading_open", "tr_open"):
            heading = token.type == "heading_open"
            row = [] if token.type == "tr_open" else row
            line = token.map[0] if token.map else line
        elif token.type == "table_close":
            quoted = None
        elif token.type == "tr_close" and row is not None:
            blocks.append(Block(line, " | ".join(t for t, _ in row), " | ".join(r for _, r in row), "row", quoted))
            row = None
        elif token.type == "inline":
            parts = [child.content if child.type == "text" else " " if child.type in ("softbreak", "hardbreak")
                     else " ⟨code⟩ " if child.type == "code_inline" else "" for child in token.children or ()]
            if row is not None:
                row.append(("".join(parts), token.content))
                continue
            blocks.append(Block(token.map[0] if token.map else 0, "".join(parts), token.content,
                                "heading" if heading else "text", quoted))
            heading, quoted = False, None
    return blocks
