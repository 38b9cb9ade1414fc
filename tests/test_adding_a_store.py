"""Adding a store is its module plus its registry entry: proved with a throwaway store.

`ListStore` below is the whole store: a Python list searched by brute force, with no
validation code of its own (the `Store` base checks every argument). Registering it is
all it takes for make_router, store urls, the conformance suite and the benchmark's
target list to see it; nothing else in the repository is edited.
"""
import numpy as np
import pytest

from qis_lib import OutcomePacket, make_router
from qis_lib.bench.latency import targets
from qis_lib.embedders import HashEmbedder
from qis_lib.stores import Mode, QueryFilter, Store, StoreSpec, all_modes, register_store, unregister_store
from store_suite import StoreSuite, store_factory


class ListStore(Store):
    """Rows in a dict, exact cosine by a loop over them: slow, simple, correct."""

    name = "throwaway"

    def __init__(self, dim: int = 384):
        self.dim = dim
        self.rows: dict[str, tuple[np.ndarray, dict]] = {}

    def _upsert(self, ids, vectors, payloads):
        for pid, vector, payload in zip(ids, vectors, payloads):
            self.rows[pid] = (vector / max(float(np.linalg.norm(vector)), 1e-12), payload)

    def _query(self, vector, top_k, flt: QueryFilter):
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        scored = [(float(v @ vector), pid) for pid, (v, p) in self.rows.items() if flt.matches(p)]
        scored.sort(key=lambda item: -item[0])
        return [(dict(self.rows[pid][1]), score) for score, pid in scored[:top_k]]

    def _get(self, ids):
        return {pid: dict(self.rows[pid][1]) for pid in ids if pid in self.rows}

    def _delete(self, ids):
        for pid in ids:
            self.rows.pop(pid, None)

    def count(self):
        return len(self.rows)

    def close(self):
        pass


SPEC = StoreSpec("throwaway", __name__, "ListStore", extra=None, locations=(),
                 modes=(Mode("throwaway", lambda ctx: {}, bench="throwaway"),))


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_store(SPEC)
    yield
    unregister_store("throwaway")


class TestThrowawayStore(StoreSuite):
    """The whole conformance suite, on the throwaway store: one fixture."""

    @pytest.fixture
    def open_store(self):
        factory = store_factory("throwaway", {})
        yield factory
        factory.close()


def test_the_registry_entry_is_all_the_suite_needs():
    assert "throwaway" in all_modes()
    assert "throwaway" in targets()
    router = make_router("throwaway://", embedder=HashEmbedder())
    packet = OutcomePacket("disk full on the datanode", "resolved", 0.8, agent_id="a")
    router.deposit(packet)
    assert router.query("disk full on the datanode") == [(packet, pytest.approx(1.0))]
    assert router.stats()["store"] == "throwaway"


def test_register_store_refuses_clashes():
    with pytest.raises(ValueError, match="registered already"):
        register_store(SPEC)
    with pytest.raises(ValueError, match="used by another store"):
        register_store(StoreSpec("other", __name__, "ListStore", None, (), modes=(Mode("memory", lambda c: {}),)))
    with pytest.raises(ValueError, match="built in"):
        unregister_store("memory")
    with pytest.raises(ValueError, match="location"):
        StoreSpec("bad", __name__, "ListStore", None, ("socket",), modes=())


def test_a_missing_client_names_the_extra():
    spec = StoreSpec("missing", "qis_lib_no_such_module", "X", extra="missing-extra", locations=(), modes=())
    with pytest.raises(ImportError, match=r'pip install "qis-routing\[missing-extra\]"'):
        spec.load()
    # the usual case: the store's module is there, its client (imported when the store opens) is not
    lazy = StoreSpec("lazy", __name__, "ListStore", extra="lazy-extra", locations=(), modes=(),
                     requires=("qis_no_such_client",))
    with pytest.raises(ImportError, match=r'qis_no_such_client.*pip install "qis-routing\[lazy-extra\]"'):
        lazy.load()



def test_a_builtin_store_without_its_client_names_its_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "chromadb" else real(name, *a))
    with pytest.raises(ImportError, match=r'chromadb.*pip install "qis-routing\[chroma\]"'):
        make_router("chroma", embedder=HashEmbedder())


def test_payloads_given_as_a_generator_are_written():
    """The base class reads the batch once: a one-pass iterable of payloads is validated and written."""
    store = ListStore(dim=4)
    payloads = [OutcomePacket(f"p{i}", "open", 0.5, agent_id="a").to_payload() for i in range(3)]
    store.upsert(["a", "b", "c"], np.eye(3, 4), (p for p in payloads))
    assert store.get(["a", "b", "c"]) == dict(zip("abc", payloads))
