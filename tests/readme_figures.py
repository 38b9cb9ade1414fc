"""The README's figures against the sources it names: a notebook's outputs or a results file.

What it covers. The README is read block by block (paragraphs, list items, table rows) and cut
into topics: a heading or a paragraph that opens with a bold title ("**Routing quality on real
bug reports** ...") starts one. A block's sources are every notebook ("notebook 06",
`notebooks/06_...ipynb`) and results path (`results/hybrid/`, `results/production/frontier.csv`)
it names or a block before it in its topic names; a folder (or the README.md of one) stands
for its .csv, .json and .md files (not the .gz raw data) and the README.md files of the folders
above it under results/. Each measured figure (`figure_text`) of a block with sources must be
held by one of them:

- a notebook: its outputs, as in `notebook_figures`;
- a CSV file: its cells, a bare number read in the unit its column's name ends with (`p50_ms`);
  a JSON file: its values, read in the unit of their key (`duration_s`); a markdown file: its text.

A table row with two or more figures that copies a source's row (one line of an output or one
CSV row holds more than half of its figures) must match that row: a figure that row does not
hold is reported, naming the row, unless another table of the sources holds it on a line that
names the row's label (the first word of its first cell): a README row may join two tables.

What it does not cover: blocks that no source precedes in their topic (counted by
`readme_coverage`), figures typed in the sources themselves, and figures a source holds by
coincidence (a large CSV holds many numbers; a wrong figure that rounds to one of them passes).
Figures quoted from outside are allowed by a comment on the line before their block (or table),
with the keys of a notebook cell's figures metadata (`notebook_figures`):
`<!-- figures {"quoted": {"10 ms": "the article series' latency claim"}} -->`. `readme_allowed`
lists them with their reasons; one the block does not state, or one without a reason, is a finding.
"""
from __future__ import annotations

import bisect
import csv
import json
import math
import re
from collections import defaultdict
from dataclasses import replace
from functools import cache
from pathlib import Path

import nbformat

from figure_text import Figure, column_unit, find_figures, holds, numbers_in, prose_blocks
from notebook_figures import Allowed, Finding, notebook_name, output_texts, quoted_figures, same_figure

NOTEBOOK_REF = re.compile(r"\b[Nn]otebooks?[ /](\d\d)\b")
RESULTS_REF = re.compile(r"\bresults/[\w./-]*[\w/]")
SOURCE_FILES = (".csv", ".json", ".md")
LABEL = re.compile(r"[A-Za-z][\w-]*")  # a table row's label: the first word of its first cell


@cache
def notebook_rows(path: Path) -> tuple:
    """(where, table, line text, figures) for every line of every output of a notebook; `table`
    names the output it is in. A line's bare numbers carry the units of their table's columns."""
    cells = nbformat.read(path, as_version=4).cells
    return tuple((f"{notebook_name(path)} cell {i}", (path, i, k), line, figures)
                 for i, cell in enumerate(cells) for k, text in enumerate(output_texts(cell))
                 for line, figures in _lines(text))


def _lines(text: str) -> list[tuple[str, tuple]]:
    """An output's lines with their numbers; a table pandas wrapped into blocks of columns gets its
    blocks joined back into rows."""
    blocks = [b.split("\n") for b in text.split("\n\n")]
    if len(blocks) > 1 and len({len(b) for b in blocks}) == 1 and text.split("\n")[0].rstrip().endswith("\\"):
        return [(line, tuple(numbers_in(line))) for line in ("  ".join(p).replace("\\", " ") for p in zip(*blocks))]
    starts = [m.start() for m in re.finditer(r"^", text, re.MULTILINE)]
    by_line = defaultdict(list)
    for figure in numbers_in(text):
        by_line[bisect.bisect_right(starts, figure.start) - 1].append(figure)
    return [(line, tuple(by_line[n])) for n, line in enumerate(text.split("\n"))]


def _hinted(value: str, column: str) -> tuple:
    """The numbers of one CSV cell or JSON value, a bare one read in its column's (or key's) unit."""
    unit = column_unit(column)
    hints = (unit,) if unit else ()
    try:
        number = float(value)
    except ValueError:
        return tuple(replace(f, hints=hints) if f.family == "number" else f for f in numbers_in(value))
    if not math.isfinite(number):
        return ()
    mantissa, _, exponent = value.lower().partition("e")
    decimals = len(mantissa.partition(".")[2]) - int(exponent or 0)
    return (Figure(value, number, "number", 1.0, decimals, hints=hints),)


@cache
def file_rows(path: Path) -> tuple:
    """(where, table, line text, figures) for every row of a CSV file, every object of a JSON file
    or every line of a markdown file; `table` is the file."""
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        header = rows[0] if rows else []
        return tuple((path, path, ",".join(row), tuple(x for column, value in zip(header, row)
                                                      for x in _hinted(value, column))) for row in rows[1:])
    if path.suffix == ".json":
        out = []

        def walk(node, key=""):  # one row per object (its plain values), one per plain list item
            if isinstance(node, dict):
                plain = {k: v for k, v in node.items() if not isinstance(v, (dict, list))}
                out.append((path, path, json.dumps(plain)[:200],
                            tuple(x for k, v in plain.items() for x in _hinted(str(v), k))))
                for k, v in node.items():
                    if isinstance(v, (dict, list)):
                        walk(v, k)
            elif isinstance(node, list):
                for item in node:
                    if isinstance(item, (dict, list)):
                        walk(item, key)
                    else:
                        out.append((path, path, str(item), _hinted(str(item), key)))

        walk(json.loads(path.read_text()))
        return tuple(out)
    return tuple((path, path, line, tuple(numbers_in(line))) for line in path.read_text().splitlines())


def sources_in(raw: str, root: Path, notebooks: Path) -> list[Path]:
    """The notebooks and results files a block of markdown names."""
    found = []
    for number in NOTEBOOK_REF.findall(raw):
        found += sorted(notebooks.glob(f"{number}_*.ipynb*"))[:1]
    for ref in RESULTS_REF.findall(raw):
        path = root / ref
        if path.name == "README.md" and path.parent != root / "results":
            path = path.parent  # a results folder's README stands for the folder it describes
        if path.is_file():
            found.append(path)
        elif path.is_dir() and path != root / "results":
            found += sorted(p for p in path.rglob("*") if p.suffix in SOURCE_FILES and p.is_file())
            found += [parent / "README.md" for parent in path.parents
                      if parent != root / "results" and (root / "results") in parent.parents and
                      (parent / "README.md").is_file()]
    return list(dict.fromkeys(found))


def rows_of(paths) -> list:
    return [row for p in paths for row in (notebook_rows(p) if ".ipynb" in p.name else file_rows(p))]


def with_sources(blocks, root: Path, notebooks: Path) -> list[tuple]:
    """Each block of the README with the sources it may quote: those it names, and those named by
    the blocks before it in its topic (a topic starts at a heading or at a paragraph that opens with
    a bold title)."""
    out, named = [], []
    for block in blocks:
        if block.kind == "heading" or (block.kind == "text" and block.raw.startswith("**")):
            named = []
        named = named + [p for p in sources_in(block.raw, root, notebooks) if p not in named]
        out.append((block, named))
    return out


def _names(paths: list, root: Path) -> str:
    """Sources by name: a notebook cell as it is, a file by its path from the repository root."""
    return ", ".join(p if isinstance(p, str) else str(p.resolve().relative_to(root.resolve()))
                     if p.resolve().is_relative_to(root.resolve()) else p.name for p in paths)


def check_block(block, rows, name: str, root: Path, paths: list[Path]) -> list[Finding]:
    """Findings for one block's figures against its topic's source rows (a range's two ends make
    one finding)."""
    quoted, _ = quoted_figures(block.quoted, (name, None))  # malformed comments: readme_allowed
    keys = [f for key in quoted for f in find_figures(key)]
    figures = [f for f in find_figures(block.text) if not any(same_figure(f, k) for k in keys)]
    missing = {}
    pool = [f for *_, figs in rows for f in figs]
    names = _names(paths[:3], root) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    why = f"not in the sources this part names ({names})"
    if block.kind == "row" and len(figures) >= 2:
        held = [sum(holds(figs, f) is not None for f in figures) for *_, figs in rows]
        best = max(range(len(rows)), key=held.__getitem__, default=None)
        if best is not None and held[best] > max(1, len(figures) / 2):
            where, table, line, pool = rows[best]
            label = LABEL.search(block.text)
            pool = list(pool) + [f for _, other, text, more in rows if other != table and label and
                                 re.search(rf"\b{re.escape(label.group(0))}\b", text, re.IGNORECASE) for f in more]
            why = f"the row copies a row of {_names([where], root)} that holds other values: {line.strip()[:160]!r}"
    for figure in figures:
        if holds(pool, figure) is None:
            missing.setdefault(figure.written, why)
    return [Finding(name, None, written, reason, block.line + 1) for written, reason in missing.items()]


def readme_allowed(path) -> tuple[list[Allowed], list[Finding]]:
    """Every figure a README's figures comments allow, with its reason, and a finding for each one
    that the block (or table) after its comment does not state."""
    path = Path(path)
    groups: dict[int, tuple[dict, list]] = {}
    for block in prose_blocks(path.read_text()):
        if block.quoted is not None:
            groups.setdefault(id(block.quoted), (block.quoted, []))[1].append(block)
    allowed, stale = [], []
    for meta, blocks in groups.values():
        good, bad = quoted_figures(meta, (path.name, None))
        stale += [Finding(f.notebook, None, f.figure, f.why, blocks[0].line + 1) for f in bad]
        stated = [f for b in blocks for f in find_figures(b.text)]
        for key, why in good.items():
            allowed.append(Allowed(path.name, None, key, why))
            if not any(same_figure(f, k) for k in find_figures(key) for f in stated):
                stale.append(Finding(path.name, None, key, "allowed in the comment before this block, but the block "
                                     "does not state it", blocks[0].line + 1))
    return allowed, stale


def check_readme(path, root, notebooks=None) -> list[Finding]:
    """Every finding of a README against the sources it names (see the module's docstring)."""
    path, root = Path(path), Path(root)
    notebooks = Path(notebooks) if notebooks else root / "notebooks"
    return readme_allowed(path)[1] + [
        finding for block, paths in with_sources(prose_blocks(path.read_text()), root, notebooks) if paths
        for finding in check_block(block, rows_of(paths), path.name, root, paths)]


def readme_coverage(path, root, notebooks=None) -> tuple[int, int]:
    """(figures checked, figures in blocks that quote no source) of a README."""
    path, root = Path(path), Path(root)
    counts = defaultdict(int)
    for block, paths in with_sources(prose_blocks(path.read_text()), root, Path(notebooks or root / "notebooks")):
        counts[bool(paths)] += len(find_figures(block.text))
    return counts[True], counts[False]
