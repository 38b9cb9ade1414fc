"""The package's shape: small modules, no import circle, imports pointing down the floors
(stores < embedders < core < infra < serve, bench < mcp < experiments), and paths that never lead
into the source tree or the installed package."""
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


# The floors of qis_lib, bottom first: a module imports only its own floor and those below.
# serve and bench share a floor (the benchmark's modes start routing services); mcp (the MCP
# tools) sits on the routing service's gate and models; paths.py, runclock.py and resources/ are below
# everything, the package's __init__ (the public API) above everything.
# A new subpackage gets its floor here.
FLOORS = {"qis_lib.paths": 0, "qis_lib.resources": 0, "qis_lib.runclock": 0, "qis_lib.stores": 1, "qis_lib.embedders": 2, "qis_lib.core": 3,
          "qis_lib.infra": 4, "qis_lib.serve": 5, "qis_lib.bench": 5, "qis_lib.mcp": 6, "qis_lib.experiments": 7}
TOP = 8  # qis_lib/__init__.py
# Imports against the floors that are there today, each with its reason. An entry that no
# longer happens fails the test too, so the list stays true.
KNOWN_UPWARD = {
    ("qis_lib.stores.contract", "qis_lib.core.packet"):
        "Store.purge_expired derives a packet's id from its payload (OutcomePacket.from_payload)",
}
# Modules a store module names as a string for importlib (resolved when called, out of the
# AST's sight): the http store's router, which make_router returns for an http:// url.
KNOWN_NAMED_ABOVE = {("qis_lib.stores.registry", "qis_lib.serve.client")}


def floor_of(name: str) -> int | None:
    if name == "qis_lib":
        return TOP
    return next((rank for floor, rank in FLOORS.items() if name == floor or name.startswith(floor + ".")), None)


def test_every_module_is_on_a_floor():
    lost = sorted(name for name in modules() if floor_of(name) is None)
    assert not lost, f"modules on no floor (give their package one in FLOORS): {lost}"


def test_the_store_layer_imports_no_floor_above_it():
    """Nothing under qis_lib/stores/ imports infra, serve, bench or experiments, at the top or in a
    function (the servers its test modes run against are started by qis_lib.bench.modes), and
    the only module a store names for importlib from a floor above is the http store's router."""
    mods = modules()
    above = ("qis_lib.infra", "qis_lib.serve", "qis_lib.bench", "qis_lib.experiments")
    stores = {name: file for name, file in mods.items() if name.startswith("qis_lib.stores")}
    wrong = {name: sorted(m for m in imports_of(name, file, set(mods)) if m.startswith(above))
             for name, file in stores.items()}
    assert not {k: v for k, v in wrong.items() if v}
    named = {(name, m) for name, file in stores.items() for m in named_modules(file, set(mods))
             if floor_of(m) > floor_of(name)}
    assert named == KNOWN_NAMED_ABOVE


def named_modules(file: Path, known: set[str]) -> set[str]:
    """qis_lib modules a file names in a string ("qis_lib.x.y" or "qis_lib.x.y:Name")."""
    strings = [n.value for n in ast.walk(ast.parse(file.read_text())) if isinstance(n, ast.Constant)
               and isinstance(n.value, str) and n.value.startswith("qis_lib.")]
    return {s.partition(":")[0] for s in strings if s.partition(":")[0] in known}


def test_every_import_keeps_to_the_floors():
    """stores < embedders < core < infra < serve, bench < mcp < experiments: no module imports a floor
    above its own, but for the known exceptions listed above (and each of them still happens)."""
    mods = modules()
    found = {(name, m) for name, file in mods.items() for m in imports_of(name, file, set(mods))
             if floor_of(m) > floor_of(name)}
    assert found - set(KNOWN_UPWARD) == set(), "imports of a floor above"
    assert set(KNOWN_UPWARD) - found == set(), "listed exceptions that no longer happen"


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
