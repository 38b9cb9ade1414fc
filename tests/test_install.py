"""A non-editable install works from another folder and writes nothing into the package.

The package is built from a copy of the sources (so no build files land in the
checkout) and installed with `pip install --target`, without dependencies: they are
this environment's. Then the demo runs from an empty folder on that copy.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_installed_copy_runs_the_demo_and_writes_nothing_into_itself(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "qis_lib", source / "qis_lib", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    installed = target / "qis_lib"
    assert (installed / "resources" / "seed_packets.jsonl").is_file(), "the seed packets are package data"
    before = files_under(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "QIS_CACHE_DIR": str(tmp_path / "cache"),
           "QIS_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-c", "import qis_lib; print(qis_lib.__file__)"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    assert Path(out.stdout.strip()).parent == installed  # the copy, not the checkout
    demo = subprocess.run([sys.executable, "-m", "qis_lib.experiments.demo", "--embedder", "hash"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "20 agents on the qdrant-edge store" in demo.stdout
    # the GitBugs copy ships with a clone (data/gitbugs/), not with the package: a clear error, no download
    load = subprocess.run([sys.executable, "-c", "from qis_lib.infra.datasets import load_gitbugs; load_gitbugs()"],
                          cwd=elsewhere, env={k: v for k, v in env.items() if k != "QIS_GITBUGS_DIR"},
                          capture_output=True, text=True, timeout=120)
    assert load.returncode != 0
    assert "FileNotFoundError" in load.stderr and "installed copy" in load.stderr and "QIS_GITBUGS_DIR" in load.stderr
    assert files_under(installed) == before
    assert not list(elsewhere.iterdir())
