"""Many agents at once, writers killed mid-stream, stores that allow one opener.

Every test checks the same rule: every acknowledged deposit is there afterwards,
exactly once and intact, and no query returned a malformed or expired packet.
The figures for the README come from `python -m qis_lib.reliability --out results/reliability/`.
"""
import multiprocessing

import pytest

from qis_lib import make_router
from qis_lib.experiments.reliability import CRASH_STORES, concurrent_load, crash_runs, make_packet
from qis_lib.stores import StoreBusyError, open_store

EMBEDDED = ["memory", "chroma", "chroma-path", "qdrant", "qdrant-path", "qdrant-edge"]


def store_spec(kind, tmp_path):
    return {"chroma-path": f"chroma://{tmp_path}/c", "qdrant-path": f"qdrant://{tmp_path}/q",
            "qdrant-edge": f"qdrant-edge://{tmp_path}/e"}.get(kind, kind)


def assert_nothing_lost(report):
    assert report["errors"] == 0, report["error_samples"]
    assert report["acknowledged"] > 0 and report["retries"] > 0 and report["queries"] > 0
    assert report["lost"] == 0
    assert report["changed"] == 0
    assert report["extra"] == 0, "a retried deposit was stored twice"
    assert report["bad_hits"] == 0, "a query returned an expired or malformed packet"


@pytest.mark.parametrize("kind", EMBEDDED)
def test_eight_threads_lose_nothing(kind, tmp_path):
    with make_router(store_spec(kind, tmp_path), embedder="hash") as router:
        assert_nothing_lost(concurrent_load(router, threads=8, ops_per_thread=60))


def test_eight_threads_on_chroma_server(chroma_server):
    with make_router("chroma", url=chroma_server.url, collection="threads", embedder="hash") as router:
        assert_nothing_lost(concurrent_load(router, threads=8, ops_per_thread=40))


def _process_agent(args):
    url, number = args
    with make_router("chroma", url=url, collection="processes", embedder="hash") as router:
        ids = []
        for i in range(20):
            packet = make_packet(f"proc-{number}", i)
            router.deposit(packet)
            ids.append(packet.packet_id)
            if i % 5 == 0:
                router.deposit(packet)  # a retry
                router.query("namenode heap timeout", top_k=5, now=0.0)
        return ids


def test_several_processes_share_a_chroma_server(chroma_server):
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        acked = [pid for ids in pool.map(_process_agent, [(chroma_server.url, n) for n in range(3)]) for pid in ids]
    with make_router("chroma", url=chroma_server.url, collection="processes", embedder="hash") as router:
        assert len(router.get(acked)) == len(acked) == 60
        assert router.stats()["packets"] == 60


@pytest.mark.parametrize("kind", ["chroma-path", "qdrant-path", "qdrant-edge"])
def test_second_opener_of_an_embedded_store_gets_a_clear_error(kind, tmp_path):
    name, path = {"chroma-path": ("chroma", tmp_path / "c"), "qdrant-path": ("qdrant", tmp_path / "q"),
                  "qdrant-edge": ("qdrant-edge", tmp_path / "e")}[kind]
    first = open_store(name, path=str(path))
    try:
        with pytest.raises(StoreBusyError, match=str(path)):
            open_store(name, path=str(path))
    finally:
        first.close()
    open_store(name, path=str(path)).close()  # free again once the first one closed


@pytest.mark.parametrize("kind", list(CRASH_STORES))
def test_writer_killed_mid_stream_loses_nothing(kind):
    """SIGKILL the writing process at three random moments; each reopen finds every ack.

    (The Chroma server process itself killed under load: tests/test_failover.py.)"""
    runs = crash_runs(kinds=[kind], kills=3, seed=len(kind), max_acks=60)
    assert len(runs) == 3
    assert (runs["killed_after_acks"] >= 20).all()
    assert (runs["lost"] == 0).all(), runs.to_string()
    # The store holds the acked packets and at most the one in flight per kill.
    assert (runs["stored"] >= runs["acknowledged"].cumsum()).all()
    assert (runs["stored"] <= runs["acknowledged"].cumsum() + runs["run"] + 1).all()
