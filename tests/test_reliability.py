"""Many agents at once, writers killed mid-stream, stores that allow one opener.

Every test checks the same rule: every acknowledged deposit is there afterwards,
exactly once and intact, and no query returned a malformed or expired packet.
The figures for the README come from `python -m qis_lib.experiments.reliability --out results/reliability/`.
"""
import contextlib
import json
import multiprocessing

import numpy as np
import pytest

from qis_lib import make_router
from qis_lib.experiments.ledger import Ledger, check_loss, check_store
from qis_lib.experiments.reliability import (VolatileStoreError, concurrent_load, crash_runs, make_packet, mode_router,
                                             runnable_modes)
from qis_lib.bench.modes import ModeContext
from qis_lib.stores import StoreBusyError, open_store

MODES = list(runnable_modes())


def assert_nothing_lost(report):
    assert report["errors"] == 0, report["error_samples"]
    assert report["acknowledged"] > 0 and report["retries"] > 0 and report["queries"] > 0
    assert report["lost"] == 0
    assert report["changed"] == 0
    assert report["extra"] == 0, "a retried deposit was stored twice"
    assert report["bad_hits"] == 0, "a query returned an expired or malformed packet"


def test_every_embedded_mode_is_loaded():
    assert {"memory", "chroma-ephemeral", "chroma-path", "qdrant-memory", "qdrant-path", "qdrant-edge"} <= set(MODES)


@pytest.mark.parametrize("kind", MODES)
def test_eight_threads_lose_nothing(kind, tmp_path, server_pool):
    with contextlib.ExitStack() as stack, mode_router(kind, ModeContext(tmp_path, stack, pool=server_pool)) as router:
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


@pytest.mark.parametrize("kind", MODES)
def test_writer_killed_mid_stream_loses_nothing(kind):
    """SIGKILL a freshly started writing process at two random moments; each reopen, from a
    new process, finds every ack. (Hundreds of kills on one folder: test_faults.py's kill
    cycles, CI-sized; the Chroma server process itself killed under load: test_failover.py.)"""
    try:
        runs = crash_runs(kinds=[kind], kills=2, seed=len(kind), max_acks=60)
    except VolatileStoreError as exc:
        pytest.skip(str(exc))
    assert len(runs) == 2
    assert (runs["killed_after_acks"] >= 20).all()
    assert (runs["lost"] == 0).all(), runs.to_string()
    assert (runs["changed"] == 0).all(), runs.to_string()
    # The store holds the acked packets and at most the one in flight per kill.
    assert (runs["stored"] >= runs["acknowledged"].cumsum()).all()
    assert (runs["stored"] <= runs["acknowledged"].cumsum() + runs["run"] + 1).all()


def test_crash_runs_cover_the_persistent_modes_and_refuse_a_volatile_one():
    with pytest.raises(VolatileStoreError, match="not persistent"):
        crash_runs(kinds=["memory"], kills=1)
    with pytest.raises(ValueError, match="unknown store mode"):
        crash_runs(kinds=["no-such-mode"], kills=1)


# ------------------------------------------------------------------ the one loss check


def test_loss_check_counts_lost_corrupted_duplicated_and_indeterminate():
    ps = [make_packet("w", i) for i in range(8)]
    sent = {p.packet_id: p for p in ps}
    ids = list(sent)
    rows = {pid: sent[pid].to_payload() for pid in ids}
    del rows[ids[0]]  # acknowledged, gone: lost
    rows[ids[1]] = {**rows[ids[1]], "delta_summary": "rewritten"}  # acknowledged, changed: corrupted
    del rows[ids[5]]  # a timeout that was not applied
    # ids[4] failed but was stored anyway; ids[6] timed out and was applied; ids[7] was never written
    del rows[ids[7]]
    rows["stray"] = {"x": 1}  # a row nobody sent: a phantom
    store_rows = len(rows) + 1  # the store counts one row twice (a retry stored twice)
    report = check_loss("hand", acked_ids=ids[:4] + ids[:1], sent=sent, failed_ids=ids[4:5],
                        timeout_ids=ids[5:7], get=lambda batch: {p: rows[p] for p in batch if p in rows},
                        count=lambda: store_rows, batch=2, stored_ids=lambda: list(rows))
    assert (report.acknowledged, report.found, report.lost, report.lost_ids) == (4, 3, 1, [ids[0]])
    assert report.corrupted == report.changed == 1
    assert (report.failed, report.failed_but_stored) == (1, 1)
    assert (report.indeterminate, report.indeterminate_stored) == (2, 1)
    # 6 rows counted, 5 returned for ids we wrote (3 acknowledged + 1 failed + 1 timed out): 2 beyond
    assert report.duplicated == report.extra == 2
    assert report.phantoms == 1  # "stray"
    assert report.store_count == store_rows
    assert not report.ok
    assert "phantoms" in report.row() and "phantoms" not in check_loss(
        "n", [], {}, (), (), lambda b: {}, lambda: 0).row()


def test_loss_check_through_a_store_and_a_ledger_file(tmp_path):
    ps = [make_packet("w", i) for i in range(5)]
    with Ledger(tmp_path / "ledger.jsonl") as ledger:
        for p in ps[:4]:
            ledger.append(p.packet_id, 0.0)
    with open_store("memory", dim=3) as store:
        store.upsert([p.packet_id for p in ps[:3]], np.eye(3, dtype=np.float32), [p.to_payload() for p in ps[:3]])
        report = check_store("memory", store, Ledger.read(tmp_path / "ledger.jsonl"), {p.packet_id: p for p in ps},
                             timeout_ids=[ps[4].packet_id])
    assert (report.acknowledged, report.found, report.lost, report.corrupted, report.duplicated) == (4, 3, 1, 0, 0)
    assert (report.indeterminate, report.indeterminate_stored) == (1, 0)
    assert ledger.ids == [p.packet_id for p in ps[:4]]
    assert [json.loads(line)["id"] for line in (tmp_path / "ledger.jsonl").read_text().splitlines()] == ledger.ids
