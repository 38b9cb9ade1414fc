"""The package's shape: small modules, no import circle, imports pointing one way, and
paths that never lead into the source tree or the installed package."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from qis_lib import paths

PACKAGE = Path(__file__).parents[1] / "qis_lib"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return out


def imports_of(name: str, file: Path, known: set[str]) -> set[str]:
    """qis_lib modules `file` imports, at the top or inside functions."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[:len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def test_no_module_over_the_limit():
    long = {name: n for name, file in modules().items() if (n := len(file.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_circle():
    mods = modules()
    graph = {name: imports_of(name, file, set(mods)) for name, file in mods.items()}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_imports_point_one_way():
    """The core, the stores, the embedders and the infrastructure never import an experiment or the benchmark."""
    mods = modules()
    upper = ("qis_lib.experiments", "qis_lib.bench")
    wrong = {name: sorted(m for m in imports_of(name, file, set(mods)) if m.startswith(upper))
             for name, file in mods.items() if not name.startswith(upper) and name != "qis_lib"}
    assert not {k: v for k, v in wrong.items() if v}


def test_import_qis_lib_loads_no_store_client_or_model():
    code = ("import sys, qis_lib; heavy = {'pandas', 'torch', 'chromadb', 'qdrant_client', 'qdrant_edge', "
            "'onnxruntime', 'sentence_transformers', 'platformdirs'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_paths_follow_the_environment_and_stay_out_of_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("QIS_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("QIS_DATA_DIR", str(tmp_path / "d"))
    assert (paths.cache_dir(), paths.data_dir()) == (tmp_path / "c", tmp_path / "d")
    monkeypatch.delenv("QIS_CACHE_DIR")
    monkeypatch.delenv("QIS_DATA_DIR")
    for folder in (paths.cache_dir(), paths.data_dir()):
        assert PACKAGE not in folder.parents and PACKAGE.parent not in folder.parents
    assert paths.resource("seed_packets.jsonl").is_file()
    with pytest.raises(FileNotFoundError, match="no-such-file"):
        paths.resource("no-such-file.jsonl")
