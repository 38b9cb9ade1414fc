"""The conformance suite (tests/store_suite.py) on every mode of every registered store.

Each mode is one way of opening a store (ephemeral, a folder, a server...), declared in
the store's registry entry, so a new store is tested here as soon as it is registered.
Modes that cannot run here (e.g. no Qdrant server) skip with the reason.
"""
import contextlib

import pytest

from qis_lib.bench.modes import ModeContext
from qis_lib.stores import all_modes, open_store
from store_suite import StoreSuite, store_factory

MODES = all_modes()


class TestEveryStore(StoreSuite):
    @pytest.fixture(params=list(MODES))
    def open_store(self, request, tmp_path, server_pool):
        spec, mode = MODES[request.param]
        why = mode.needs()
        if why:
            pytest.skip(why)
        with contextlib.ExitStack() as stack:
            ctx = ModeContext(tmp_path, stack, pool=server_pool)
            factory = store_factory(spec.name, mode.options(ctx), cleanup=mode.cleanup)
            stack.callback(factory.close)
            yield factory


def test_every_store_has_a_mode_and_its_extra_is_declared():
    """A registered store is tested (it has a mode) and installable (its extra is in pyproject.toml)."""
    import tomllib
    from pathlib import Path

    from qis_lib.stores import STORES

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for spec in STORES.values():
        assert spec.modes, f"store {spec.name} has no mode to test"
        assert spec.extra is None or spec.extra in extras, f"extra {spec.extra!r} of {spec.name} not in pyproject"


def test_unreachable_server_is_a_clear_error(dead_url):
    with pytest.raises(ConnectionError, match="Chroma server"):
        open_store("chroma", url=dead_url)
    with pytest.raises(ConnectionError, match="no Qdrant node answered"):
        open_store("qdrant", urls=[dead_url, dead_url.replace("127.0.0.1", "127.0.0.2")], timeout=1)


def test_hung_server_is_a_clear_error_not_a_hang():
    """A server that accepts connections but never answers: an error after the timeout."""
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        with pytest.raises(ConnectionError, match="timed out"):
            open_store("chroma", url=url, timeout=1.0)
        with pytest.raises(ConnectionError, match="no Qdrant node answered"):
            open_store("qdrant", url=url, timeout=1)
