"""Real bug reports as outcome packets: the GitBugs data set.

GitBugs (CC BY 4.0) holds bug reports from public trackers and the links between
reports that the trackers marked as duplicates. Credit it wherever it is used:

    Patil, A. "GitBugs: Bug Reports for Duplicate Detection, Retrieval Augmented
    Generation, Triage, and More." arXiv:2504.09651 (2025).
    https://github.com/av9ash/gitbugs

One project's directory holds `<project>_bugs.csv` (one row per report: Summary,
Issue id, Status, Priority, Resolution, Created, Resolved, [Affects Version/s],
Description) and `<project>_bugs-combined.csv` (Issue id, Duplicate id; the second
column may hold several ids separated by commas), plain or gzipped (`.csv.gz`). Files are found by those suffixes,
so any project works: Jira projects (hadoop, spark, ...) write dates as
"30/Sep/21 17:20" and resolutions as "Won't Fix"; Bugzilla projects (seamonkey,
firefox, ...) write "2020-01-02 17:14:21+00:00" and "WONTFIX", and have no
"Affects Version/s".

    ds = load_gitbugs()          # path, else $QIS_GITBUGS_DIR, else the Hadoop copy in data/gitbugs/
    ds.reports                   # DataFrame, one row per report, oldest first
    ds.packets                   # OutcomePacket per report, agent_id = the report's id
    ds.duplicate_pairs           # (earlier id, later id), both present in ds.reports

How a report becomes a packet:

- problem_description: the summary followed by as much of the description's start
  (Jira markup removed, cut at a word) as keeps the serialized packet within 512 bytes
  (the default: text="summary+description", description_chars=None); or a fixed
  `description_chars` characters of it; or the summary alone (text="summary").
- outcome_type and confidence from the resolution (spellings are compared in lower
  case with everything but letters and digits removed, so "Won't Fix" = "WONTFIX"):

  | resolution | outcome_type | confidence | why |
  |---|---|---|---|
  | Fixed, Done, Implemented, Resolved | resolved | 0.9 | the problem was solved |
  | Pending Closed | resolved | 0.7 | fixed, awaiting release |
  | Workaround, Information Provided | partial | 0.6 | the reporter got a way around it |
  | Duplicate | partial | 0.6 | the outcome lives in the linked report (named in delta_summary) |
  | Won't Fix, Won't Do, Invalid, Not A Problem, Not A Bug, Cannot Reproduce, Works for Me | contradicted | 0.8 | the report's premise was rejected |
  | Incomplete, Abandoned, Later, Expired, Inactive, Moved | open | 0.3 | closed without an answer |
  | none ("", "---", Unresolved) | open | 0.2 | still open |
  | anything else | open | 0.2 | counted in `GitBugs.unknown_resolutions` |

- domain_tags: "version:<v>" for each affected version, "priority:<p>" (lower case),
  "project:<name>".
- delta_summary: the resolution and status, "same problem as <ids>" for reports linked as duplicates,
  and the resolution date; cut to 200 characters.
Where the data comes from, in order: `path=`; else $QIS_GITBUGS_DIR; else, for the
Hadoop project (the default), the gzipped copy this repository ships in
data/gitbugs/hadoop/, checked against the SHA-256 sums in `SHIPPED` (never the
network); else, only for another project asked for by name (`project="spark"`), a
download of the public files into the cache folder.

- timestamp: Created (UTC); agent_id: the report's id; ttl: `ttl` seconds (default
  30 years, so that reports from 2020 are still live when queried today; replays pass
  `now=` the report's time instead).
"""
from __future__ import annotations

import os
import re
import tempfile
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..paths import cache_dir
from .report_text import TEXT_CHOICES, clean_text, cut_at_word, problem_text  # noqa: F401 (re-exported)
from .shipped_data import ENV_DIR, GZ, SHIPPED, SHIPPED_DIR, SHIPPED_PROJECT, sha256, shipped_dir  # noqa: F401
from ..core.packet import MAX_DELTA_CHARS, MAX_PACKET_BYTES, OutcomePacket

CREDIT = ('Patil, A. "GitBugs: Bug Reports for Duplicate Detection, Retrieval Augmented Generation, '
          'Triage, and More." arXiv:2504.09651 (2025). Data: https://github.com/av9ash/gitbugs, CC BY 4.0.')
DOWNLOAD_BASE = "https://raw.githubusercontent.com/av9ash/gitbugs/main"
REPORTS_SUFFIX = "_bugs.csv"
LINKS_SUFFIX = "_bugs-combined.csv"
DEFAULT_TTL = 30 * 365 * 24 * 3600.0
REQUIRED_COLUMNS = ("Summary", "Issue id", "Status", "Priority", "Resolution", "Created", "Description")
VERSIONS_COLUMN = "Affects Version/s"

# normalised resolution -> (outcome_type, confidence); see the table in the module docstring
RESOLUTIONS: dict[str, tuple[str, float]] = {
    **dict.fromkeys(["fixed", "done", "implemented", "resolved"], ("resolved", 0.9)),
    "pendingclosed": ("resolved", 0.7),
    **dict.fromkeys(["workaround", "informationprovided", "duplicate"], ("partial", 0.6)),
    **dict.fromkeys(["wontfix", "wontdo", "invalid", "notaproblem", "notabug", "cannotreproduce", "worksforme"],
                    ("contradicted", 0.8)),
    **dict.fromkeys(["incomplete", "abandoned", "later", "expired", "inactive", "moved"], ("open", 0.3)),
    **dict.fromkeys(["", "unresolved", "none"], ("open", 0.2)),
}
UNKNOWN_RESOLUTION = ("open", 0.2)


def normalise_resolution(resolution: str) -> str:
    """"Won't Fix" and "WONTFIX" -> "wontfix"; "---" -> ""."""
    return re.sub(r"[^a-z0-9]", "", str(resolution).lower())


def map_resolution(resolution: str) -> tuple[str, float, bool]:
    """(outcome_type, confidence, known) for a tracker's resolution string."""
    key = normalise_resolution(resolution)
    if key in RESOLUTIONS:
        return (*RESOLUTIONS[key], True)
    return (*UNKNOWN_RESOLUTION, False)


def parse_dates(values: pd.Series, column: str = "Created") -> pd.Series:
    """Jira ("30/Sep/21 17:20", taken as UTC) or ISO ("2020-01-02 17:14:21+00:00") -> UTC timestamps."""
    text = values.fillna("").astype(str).str.strip()
    present = text != ""
    for kwargs in ({"format": "%d/%b/%y %H:%M"}, {"format": "ISO8601"}):
        parsed = pd.to_datetime(text.where(present), errors="coerce", utc=True, **kwargs)
        if parsed[present].notna().all():
            return parsed
    bad = text[present & parsed.isna()]
    raise ValueError(f"{column}: cannot read {len(bad)} date(s) such as {bad.iloc[0]!r} "
                     f"(expected like '30/Sep/21 17:20' or '2020-01-02 17:14:21+00:00')")


def csv_name(path: Path) -> str:
    """The file's name in lower case without a trailing .gz: how the suffixes are matched."""
    name = path.name.lower()
    return name[: -len(GZ)] if name.endswith(GZ) else name


def find_files(directory: str | os.PathLike, project: str | None = None) -> tuple[Path, Path]:
    """The reports and duplicate-link CSVs of one project, found by their suffixes.

    `directory` may be a project's folder or a folder of project folders (then
    `project` picks one, or the only one is taken)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"GitBugs directory {directory} does not exist")

    def pick(folder: Path) -> tuple[Path, Path] | None:
        """The reports and links files in `folder` (for `project`, if given), or None."""
        reports = sorted(p for p in folder.iterdir() if csv_name(p).endswith(REPORTS_SUFFIX))
        links = sorted(p for p in folder.iterdir() if csv_name(p).endswith(LINKS_SUFFIX))
        if project is not None:
            reports = [p for p in reports if csv_name(p) == f"{project.lower()}{REPORTS_SUFFIX}"]
            links = [p for p in links if csv_name(p) == f"{project.lower()}{LINKS_SUFFIX}"]
        if not reports and not links:
            return None
        if len(reports) != 1 or len(links) != 1:
            raise ValueError(f"{folder} must hold one *{REPORTS_SUFFIX} and one *{LINKS_SUFFIX} file, found "
                             f"{[p.name for p in reports]} and {[p.name for p in links]}; pass project=")
        return reports[0], links[0]

    found = pick(directory)
    if found:
        return found
    below = [f for f in (pick(d) for d in sorted(directory.iterdir()) if d.is_dir()) if f]
    if len(below) == 1:
        return below[0]
    names = [r.parent.name for r, _ in below]
    raise ValueError(f"no *{REPORTS_SUFFIX} + *{LINKS_SUFFIX} pair in {directory}"
                     + (f"; it holds several projects {names}: pass project= or the project's folder" if below else ""))


def read_reports(csv_path: str | os.PathLike) -> pd.DataFrame:
    """One row per report with plain column names, oldest first (ties by id)."""
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{csv_path} lacks column(s) {missing}; it has {list(raw.columns)}")
    ids = raw["Issue id"].str.strip()
    if (ids == "").any():
        raise ValueError(f"{csv_path}: {int((ids == '').sum())} report(s) have no Issue id")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ValueError(f"{csv_path}: Issue id {dup.iloc[0]!r} appears more than once")
    versions = raw[VERSIONS_COLUMN] if VERSIONS_COLUMN in raw.columns else pd.Series("", index=raw.index)
    mapped = raw["Resolution"].map(map_resolution)
    reports = pd.DataFrame({
        "id": ids,
        "summary": raw["Summary"].str.strip(),
        "status": raw["Status"].str.strip(),
        "priority": raw["Priority"].str.strip(),
        "resolution": raw["Resolution"].str.strip(),
        "created": parse_dates(raw["Created"], "Created"),
        "resolved": parse_dates(raw["Resolved"], "Resolved") if "Resolved" in raw.columns else pd.NaT,
        "versions": [tuple(v.strip() for v in s.split(",") if v.strip()) for s in versions],
        "description": raw["Description"],
        "outcome_type": [m[0] for m in mapped],
        "confidence": [m[1] for m in mapped],
        "resolution_known": [m[2] for m in mapped],
    })
    if reports["summary"].eq("").any():
        bad = reports.loc[reports["summary"].eq(""), "id"].iloc[0]
        raise ValueError(f"{csv_path}: report {bad} has an empty Summary")
    if reports["created"].isna().any():
        bad = reports.loc[reports["created"].isna(), "id"].iloc[0]
        raise ValueError(f"{csv_path}: report {bad} has no Created date")
    return reports.sort_values(["created", "id"], kind="stable").reset_index(drop=True)


def read_duplicate_pairs(csv_path: str | os.PathLike, reports: pd.DataFrame) -> tuple[list[tuple[str, str]], int]:
    """Unique duplicate pairs (earlier id, later id) with both ids in `reports`, in order
    of the later report's arrival; and how many links named a report not in the file."""
    links = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if links.shape[1] < 2:
        raise ValueError(f"{csv_path} must have two columns (Issue id, Duplicate id), has {list(links.columns)}")
    order = {rid: i for i, rid in enumerate(reports["id"])}
    pairs: set[tuple[str, str]] = set()
    skipped = 0
    for a, many in zip(links.iloc[:, 0], links.iloc[:, 1]):
        a = a.strip()
        for b in (x.strip() for x in many.split(",")):
            if not a or not b or a == b:
                continue
            if a not in order or b not in order:
                skipped += 1
                continue
            pairs.add(tuple(sorted((a, b), key=order.get)))
    return sorted(pairs, key=lambda p: (order[p[1]], order[p[0]])), skipped


def delta_summary(row, duplicates_of: list[str]) -> str:
    """A report's outcome in words: its resolution and status, and the reports it duplicates."""
    closed = normalise_resolution(row.resolution) not in ("", "unresolved", "none")
    parts = [f"{row.resolution if closed else 'Unresolved'} ({row.status})"]
    if duplicates_of:
        parts.append("same problem as " + ", ".join(duplicates_of))
    # Bugzilla fills Resolved for open bugs too (last change): show it only for closed ones
    if closed and not pd.isna(row.resolved):
        parts.append(f"resolved {row.resolved:%Y-%m-%d}")
    text = "; ".join(parts)
    return text if len(text) <= MAX_DELTA_CHARS else text[:MAX_DELTA_CHARS - 3] + "..."


def tags_of(row, project: str) -> tuple[str, ...]:
    tags = [f"version:{v}" for v in row.versions]
    if row.priority and row.priority not in ("--",):
        tags.append(f"priority:{row.priority.lower()}")
    tags.append(f"project:{project}")
    return tuple(tags)


def make_packets(reports: pd.DataFrame, pairs: list[tuple[str, str]], project: str, text: str = "summary+description",
                 description_chars: int | None = None, ttl: float = DEFAULT_TTL) -> list[OutcomePacket]:
    """One packet per report, in the order of `reports`; description_chars=None fills each packet
    up to MAX_PACKET_BYTES serialized (the summary alone if even that is over)."""
    linked: dict[str, list[str]] = {}
    for a, b in pairs:
        linked.setdefault(a, []).append(b)
        linked.setdefault(b, []).append(a)
    packets = []
    for row in reports.itertuples(index=False):
        build = lambda problem: OutcomePacket(  # noqa: E731 (row is this loop's)
            problem_description=problem or row.id, outcome_type=row.outcome_type, confidence=row.confidence,
            delta_summary=delta_summary(row, linked.get(row.id, [])), domain_tags=tags_of(row, project),
            timestamp=row.created.timestamp(), agent_id=row.id, ttl=ttl)
        packets.append(build(problem_text(row.summary, row.description, text, description_chars,
                                          fits=lambda t: build(t).size_bytes <= MAX_PACKET_BYTES)))
    return packets


@dataclass
class GitBugs:
    """One GitBugs project: its reports, the duplicate pairs among them, and how packets are built."""

    project: str
    path: Path
    reports: pd.DataFrame
    duplicate_pairs: list[tuple[str, str]]
    packets: list[OutcomePacket]
    text: str
    skipped_links: int = 0  # links naming a report that is not in the reports file
    unknown_resolutions: Counter = field(default_factory=Counter)

    def make_packets(self, text: str = "summary+description", description_chars: int | None = None,
                     ttl: float = DEFAULT_TTL) -> list[OutcomePacket]:
        """The packets again with another text choice (same order as `reports`)."""
        return make_packets(self.reports, self.duplicate_pairs, self.project, text, description_chars, ttl)

    def __repr__(self) -> str:
        return (f"GitBugs({self.project!r}: {len(self.reports)} reports, {len(self.duplicate_pairs)} duplicate "
                f"pairs, text={self.text!r})")


def default_cache_dir() -> Path:
    """Where downloaded GitBugs projects are kept: gitbugs/ in the cache folder."""
    return cache_dir() / "gitbugs"


def fetch_url(url: str, timeout: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a fixed https address)
        return response.read()


def download_gitbugs(project: str = "hadoop", cache_dir: str | os.PathLike | None = None,
                     fetch: Callable[[str], bytes] = fetch_url) -> Path:
    """Fetch one project's two CSVs from the public GitBugs repository into the cache
    (skipped for files already there); returns the project's folder."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", project):
        raise ValueError(f"project must be a GitBugs folder name like 'hadoop', got {project!r}")
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / project
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (REPORTS_SUFFIX, LINKS_SUFFIX):
        target = folder / f"{project}{suffix}"
        if target.exists():
            continue
        data = fetch(f"{DOWNLOAD_BASE}/{project}/{project}{suffix}")
        if not data or b"Issue id" not in data[:4096]:
            raise ValueError(f"the download of {project}{suffix} is not a GitBugs CSV ({len(data)} bytes)")
        # write then rename, so an interrupted download never leaves a half file in the cache
        with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".part") as tmp:
            tmp.write(data)
        os.replace(tmp.name, target)
    return folder


def resolve_dir(path: str | os.PathLike | None = None, project: str = "hadoop", download: bool = True,
                fetch: Callable[[str], bytes] = fetch_url) -> Path:
    """`path`, else $QIS_GITBUGS_DIR, else the shipped Hadoop copy (for project "hadoop"),
    else the download cache (another project, downloading if allowed)."""
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    if project.lower() == SHIPPED_PROJECT:
        return shipped_dir(SHIPPED_DIR)
    cached = default_cache_dir() / project
    if (cached / f"{project}{REPORTS_SUFFIX}").exists() and (cached / f"{project}{LINKS_SUFFIX}").exists():
        return cached
    if not download:
        raise FileNotFoundError(f"no GitBugs data: pass path=, set {ENV_DIR}, or allow the download into {cached}")
    return download_gitbugs(project, fetch=fetch)


def load_gitbugs(path: str | os.PathLike | None = None, *, project: str | None = None,
                 text: str = "summary+description", description_chars: int | None = None, ttl: float = DEFAULT_TTL, download: bool = True,
                 fetch: Callable[[str], bytes] = fetch_url) -> GitBugs:
    """Load one GitBugs project (see the module docstring for the mapping to packets)."""
    directory = resolve_dir(path, project or "hadoop", download, fetch)
    reports_csv, links_csv = find_files(directory, project)
    name = csv_name(reports_csv)[: -len(REPORTS_SUFFIX)]
    reports = read_reports(reports_csv)
    pairs, skipped = read_duplicate_pairs(links_csv, reports)
    unknown = Counter(reports.loc[~reports["resolution_known"], "resolution"])
    packets = make_packets(reports, pairs, name, text, description_chars, ttl)
    return GitBugs(project=name, path=reports_csv.parent, reports=reports, duplicate_pairs=pairs, packets=packets,
                   text=text, skipped_links=skipped, unknown_resolutions=unknown)


def packet_sizes(packets: list[OutcomePacket]) -> np.ndarray:
    """Serialized (msgpack) size of each packet in bytes."""
    return np.array([p.size_bytes for p in packets], dtype=int)


def size_table(packet_sets: dict[str, list[OutcomePacket]], limit: int = MAX_PACKET_BYTES) -> pd.DataFrame:
    """Size distribution per text choice, and how many packets exceed the byte target."""
    rows = []
    for name, packets in packet_sets.items():
        sizes = packet_sizes(packets)
        p50, p90, p99 = np.percentile(sizes, [50, 90, 99])
        rows.append({"text": name, "packets": len(sizes), "median_bytes": int(p50), "p90_bytes": int(p90),
                     "p99_bytes": int(p99), "max_bytes": int(sizes.max()),
                     f"over_{limit}": int((sizes > limit).sum()),
                     f"over_{limit}_pct": round(100.0 * float((sizes > limit).mean()), 1)})
    return pd.DataFrame(rows)
