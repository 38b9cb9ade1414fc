"""The GitBugs Hadoop copy this repository ships in data/gitbugs/hadoop/, and its checks.

The files are the data set's CSVs compressed with `gzip -n -9` (the same input always
gives the same bytes); `SHIPPED` holds the SHA-256 of each, as data/gitbugs/hadoop/SHA256SUMS
does. Credit and license (CC BY 4.0): data/gitbugs/README.md and `datasets.CREDIT`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENV_DIR = "QIS_GITBUGS_DIR"
GZ = ".gz"
SHIPPED_PROJECT = "hadoop"
# data/gitbugs/hadoop/ in a clone of this repository; an installed copy of the package does not carry it
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "gitbugs" / SHIPPED_PROJECT
# SHA-256 of each shipped file (gzip -n -9 of the data set's CSVs); data/gitbugs/hadoop/SHA256SUMS says the same
SHIPPED = {
    "hadoop_bugs.csv.gz": "c98fab7efeaf0c005eb3869f6d21ff93b8e6d9a151dda665d7c053684e234f44",
    "hadoop_bugs-combined.csv.gz": "ed025df8b816e40aa3b3d320742e8bec2d51f3a48d28f1723ff3cff0f7839010",
    "hadoop_bugs-train.csv.gz": "426a7d7ed090b01fc25f5eb12d35201fa81d2000c75f7bd5ef79a7b948527c6d",
    "hadoop_bugs-test.csv.gz": "d2e8d47bb4b9fee4204090b5887942907eb5d5705dd926d1320d01347c4f9785",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_dir(folder: str | os.PathLike | None = None) -> Path:
    """The Hadoop copy this repository ships (data/gitbugs/hadoop/), each file checked
    against its SHA-256 in `SHIPPED`. Missing or changed: FileNotFoundError or ValueError
    naming the file and what to do."""
    folder = Path(folder) if folder is not None else SHIPPED_DIR
    if not folder.is_dir():
        raise FileNotFoundError(
            f"the GitBugs Hadoop data is not at {folder}: it ships in data/gitbugs/hadoop/ of a clone of the "
            f"qis-routing repository, not in an installed copy of the package. Run from a clone, set {ENV_DIR} "
            f"to a folder holding hadoop_bugs.csv and hadoop_bugs-combined.csv (plain or .gz), or pass path=")
    for name, expected in SHIPPED.items():
        file = folder / name
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing: restore it with `git checkout -- {name}` in {folder}, "
                                    f"or set {ENV_DIR} to another copy of the GitBugs Hadoop files")
        got = sha256(file)
        if got != expected:
            raise ValueError(f"{file} is corrupt or changed: its SHA-256 is {got}, expected {expected}. Restore it "
                             f"with `git checkout -- {name}` in {folder} (check with `sha256sum -c SHA256SUMS`), "
                             f"or set {ENV_DIR} to another copy of the GitBugs Hadoop files")
    return folder
