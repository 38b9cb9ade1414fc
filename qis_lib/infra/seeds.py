"""The project's 40 hand-written seed packets (qis_lib/resources/seed_packets.jsonl).

Each row is a packet plus `problem`, a label shared by the paraphrases of one problem,
so the demo and the cold-start experiment can tell a right match from a wrong one.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..core.packet import OutcomePacket
from ..paths import resource

SEED_FILE = "seed_packets.jsonl"


def seed_rows(path: str | os.PathLike | None = None) -> list[tuple[str, int, dict]]:
    """(file, line number, row) for every row of the seed file (or of `path`)."""
    path = Path(path) if path is not None else resource(SEED_FILE)
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                rows.append((str(path), line_no, json.loads(line)))
    return rows


def load_seed_packets(path: str | os.PathLike | None = None, now: float | None = None,
                      ttl: float = 7 * 24 * 3600.0) -> list[OutcomePacket]:
    """The seed packets, stamped at `now`; a bad row is a ValueError naming its file and line."""
    now = time.time() if now is None else now
    packets = []
    for file, line_no, row in seed_rows(path):
        try:
            packets.append(OutcomePacket(
                problem_description=row["problem_description"], outcome_type=row["outcome_type"],
                confidence=row["confidence"], delta_summary=row.get("delta_summary", ""),
                domain_tags=[row["domain"]], timestamp=now, agent_id=row["agent_id"], ttl=ttl))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{file}:{line_no}: {exc}") from None
    return packets


def load_problem_labels(path: str | os.PathLike | None = None) -> dict[str, str]:
    """agent_id -> `problem` label (the seed packets' paraphrase groups)."""
    labels = {}
    for file, line_no, row in seed_rows(path):
        if not isinstance(row.get("problem"), str) or not row["problem"].strip():
            raise ValueError(f"{file}:{line_no}: no `problem` label for agent {row.get('agent_id')!r}")
        labels[row["agent_id"]] = row["problem"]
    return labels


def seed_texts(path: str | os.PathLike | None = None) -> list[str]:
    """The seed packets' problem descriptions and outcome summaries (80 short texts)."""
    rows = [row for _, _, row in seed_rows(path)]
    return [r["problem_description"] for r in rows] + [r["delta_summary"] for r in rows if r.get("delta_summary")]
