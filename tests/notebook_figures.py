"""The figures check: a notebook's prose states no measured figure that its own run did not produce.

A learner reads a notebook top to bottom and takes its prose at its word. So a measured figure
(see `figure_text`) in a markdown cell must be one of these:

- produced by the run: the same figure is in one of the notebook's outputs (stream, execute_result
  or display_data, text/plain or text/markdown; a Markdown output rendered by code, such as
  `display(Markdown(f"..."))`, is an output, so its figures pass by construction);
- checked by the run: the figure is a number (or in a string) of an `assert` statement in the code
  cell just before or just after the markdown cell;
- allowed, and said so: the cell's metadata lists it with its reason, as a claim quoted from
  outside the run or as a parameter of the run typed in the prose,
  `"figures": {"quoted": {"10 ms": "the article series' latency claim"},
               "parameters": {"6 s": "the first kill, OUTAGES in the next cell"}}`.
  An allowed figure that the cell no longer states, or one without a reason, is a finding too,
  and `allowed_figures()` lists every allowed figure with its reason (the tests print them all).

One more rule covers figures code prints: a range of times printed as "A-B unit" right after a
table with columns in that unit (`router_added_us`, `p50_ms`, `build_s`: the cell's other
outputs and those of the two code cells before it) summarises that table, so both ends must be
among its values. This catches a summary computed over other rows than the ones it names.

`check_notebook(path)` returns the findings of one notebook. Run this file to print every
finding of notebooks/, README.md and docs/*.md (`readme_figures`), grouped by file, and every allowed figure.
"""
from __future__ import annotations

import ast
import json
import math
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat

from figure_text import FIGURE, Figure, column_unit, figures_of, find_figures, holds, numbers_in, prose_blocks

OUTPUT_TYPES = ("text/plain", "text/markdown")
KINDS = {"quoted": "quoted from outside the run", "parameters": "a parameter of the run"}


@dataclass(frozen=True)
class Finding:
    """A figure the check rejects: where (notebook and cell index, 0-based as nbformat reads them;
    for a markdown file, its line, 1-based), the figure as written, and why."""

    notebook: str
    cell: int | None
    figure: str
    why: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else f"line {self.line}"
        return f"{self.notebook} {where}: {self.figure!r}: {self.why}"


@dataclass(frozen=True)
class Allowed:
    """A figure a cell allows (quoted from outside the run, or a parameter of it), and why."""

    notebook: str
    cell: int | None
    figure: str
    why: str

    def __str__(self) -> str:
        where = f" cell {self.cell}" if self.cell is not None else ""
        return f"{self.notebook}{where}: {self.figure!r} {self.why}"


def notebook_name(path: Path) -> str:
    """The notebook's file name (a frozen copy stored as NAME.ipynb.json reads as NAME.ipynb)."""
    return path.name.removesuffix(".json")


def output_texts(cell) -> list[str]:
    """The text of every output of a code cell that a reader sees as text."""
    texts = []
    for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
        if output.output_type == "stream":
            texts.append(output.get("text", ""))
        elif output.output_type in ("execute_result", "display_data"):
            texts += [output.data[kind] for kind in OUTPUT_TYPES if kind in output.get("data", {})]
    return texts


def assert_numbers(cell) -> list[Figure]:
    """The numbers of the `assert` statements of a code cell (constants, and numbers inside strings)."""
    if cell is None or cell.cell_type != "code" or "assert" not in cell.source:
        return []
    code = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            for const in ast.walk(node):
                if isinstance(const, ast.Constant) and isinstance(const.value, str):
                    found += numbers_in(const.value)
                elif isinstance(const, ast.Constant) and isinstance(const.value, (int, float)) \
                        and not isinstance(const.value, bool):
                    found += numbers_in(repr(const.value))
    return found


def quoted_figures(meta, where: tuple[str, int | None]) -> tuple[dict[str, str], list[Finding]]:
    """The figures a cell's metadata (or a markdown comment) allows, {figure: "kind: reason"}, and
    the findings its malformed entries make. Two kinds: `quoted`, a claim from outside the run
    (the article's target), and `parameters`, a setting of the run typed in the prose (an outage's
    kill time, a cell timeout)."""
    if meta is None:
        return {}, []
    if not isinstance(meta, dict) or not meta or set(meta) - set(KINDS) or \
            not all(isinstance(meta[kind], dict) for kind in meta):
        why = meta.get("error") if isinstance(meta, dict) and "error" in meta else \
            'the figures metadata must be {"quoted": {"FIGURE": "why", ...}, "parameters": {"FIGURE": "why", ...}}'
        return {}, [Finding(*where, json.dumps(meta)[:120], why)]
    good, bad = {}, []
    for kind, entries in meta.items():
        for figure, why in entries.items():
            if not isinstance(why, str) or not why.strip():
                bad.append(Finding(*where, figure, f"in {kind} without a reason"))
            elif not find_figures(figure):
                bad.append(Finding(*where, figure, f"in {kind}, but it is not a figure this check reads"))
            else:
                good[figure] = f"{KINDS[kind]}: {why.strip()}"
    return good, bad


def same_figure(a: Figure, b: Figure) -> bool:
    return a.family == b.family and a.decimals == b.decimals and math.isclose(a.base, b.base, rel_tol=1e-9)


def nearest(pool: list[tuple[int, Figure]], figure: Figure) -> str:
    """' (nearest printed: 16.0 min, cell 13)': the printed figure of the same kind closest to it."""
    close = [(abs(math.log(abs(f.base) / abs(figure.base))), cell, f) for cell, f in pool
             if f.family == figure.family != "number" and f.base and figure.base]
    if not close:
        return ""
    _, cell, f = min(close, key=lambda c: c[0])
    return f" (nearest printed: {f.text}, cell {cell})"


def typed_findings(name: str, index: int, blocks, quoted: dict[str, str], pool, beside) -> tuple[list, set]:
    """Findings for the figures of one markdown cell's blocks, and the quoted figures it used."""
    keys = {key: find_figures(key) for key in quoted}
    used, missing = set(), {}
    printed = [f for _, f in pool]
    for block in blocks:
        for figure in find_figures(block.text):
            key = next((k for k, figs in keys.items() if any(same_figure(figure, f) for f in figs)), None)
            if key is not None:
                used.add(key)
            elif holds(printed, figure) is None and holds(beside, figure) is None:
                missing.setdefault(figure.written, []).append(figure)
    findings = []
    for written, figures in missing.items():
        ends = f" (its end {figures[0].text})" if figures[0].in_range and len(figures) == 1 else ""
        findings.append(Finding(name, index, written, "typed, and neither an output of this notebook nor an "
                                f"assert cell beside it holds it{ends}{nearest(pool, figures[0])}"))
    return findings, used


def columns_in(text: str) -> set:
    """The units the column names of a printed table carry (`p50_ms`, `router_added_us`)."""
    return {unit for word in re.findall(r"\S*_\S+", text) if (unit := column_unit(word))}


def range_findings(name: str, cells) -> list[Finding]:
    """Printed ranges "A-B unit" that follow a table in that unit but whose ends it does not hold."""
    code = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    findings = []
    for pos, index in enumerate(code):
        for k, text in enumerate(output_texts(cells[index])):
            for match in FIGURE.finditer(text):
                if match["b"] is None or match["unit"] is None:
                    continue
                ends = [f for f in figures_of(match, measured_only=False) if f.family == "time"]
                unit = ("time", ends[0].factor) if ends else None
                tables = [(i, t) for i in code[max(0, pos - 2):pos + 1] for j, t in enumerate(output_texts(cells[i]))
                          if unit and (i, j) != (index, k) and unit in columns_in(t)]
                if not tables:
                    continue
                values = [replace(f, hints=(unit,)) if f.family == "number" else f  # read in the columns' unit
                          for _, t in tables for f in numbers_in(t)]
                if any(holds(values, end, columns=True) is None for end in ends):
                    shown = ", ".join(f"cell {i}" for i in dict.fromkeys(i for i, _ in tables))
                    findings.append(Finding(name, index, match.group(0).strip(),
                                            f"printed range after a table in {match['unit']} ({shown}) that does "
                                            "not hold its ends: it summarises other rows"))
    return findings


def check_notebook(path) -> list[Finding]:
    """Every finding of one notebook (the rules are in this module's docstring)."""
    path = Path(path)
    name = notebook_name(path)
    cells = nbformat.read(path, as_version=4).cells
    pool = [(i, f) for i, cell in enumerate(cells) for text in output_texts(cell) for f in numbers_in(text)]
    findings = []
    for index, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        quoted, bad = quoted_figures(cell.metadata.get("figures"), (name, index))
        beside = [f for i in (index - 1, index + 1) if 0 <= i < len(cells) for f in assert_numbers(cells[i])]
        typed, used = typed_findings(name, index, prose_blocks(cell.source), quoted, pool, beside)
        stale = [Finding(name, index, key, "allowed in the cell's metadata, but the cell does not state it")
                 for key in quoted if key not in used]
        findings += bad + typed + stale
    return findings + range_findings(name, cells)


def allowed_figures(path) -> list[Allowed]:
    """Every figure the notebook's cells allow (quoted or parameters), with its reason."""
    path = Path(path)
    cells = nbformat.read(path, as_version=4).cells
    return [Allowed(notebook_name(path), i, figure, why) for i, cell in enumerate(cells) if cell.cell_type == "markdown"
            for figure, why in quoted_figures(cell.metadata.get("figures"), (path.name, i))[0].items()]


def grouped(findings: list[Finding]) -> str:
    """The findings as text, one block per notebook (or markdown file), in file order."""
    lines = []
    for name in dict.fromkeys(f.notebook for f in findings):
        mine = [f for f in findings if f.notebook == name]
        lines.append(f"{name} ({len(mine)}):")
        lines += [f"  {str(f).removeprefix(name + ' ')}" for f in mine]
    return "\n".join(lines)


def main(root: Path) -> int:
    from readme_figures import check_readme, readme_allowed

    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    pages = [root / "README.md"] + sorted((root / "docs").glob("*.md"))
    findings = [f for nb in notebooks for f in check_notebook(nb)] + [f for p in pages for f in check_readme(p, root)]
    print(grouped(findings) or "no findings")
    for allowed in [a for nb in notebooks for a in allowed_figures(nb)] + [a for p in pages for a in readme_allowed(p)[0]]:
        print(allowed)
    print(f"{len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(Path(__file__).parents[1]))
