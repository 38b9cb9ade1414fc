"""Bad days, CI-sized: kill cycles on every persistent store, damaged folders, a full disk,
hung servers, and the history check. The full runs (hundreds of kills, every file of every
store) are CLIs whose results are committed under results/reliability/.
"""
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qis_lib.experiments.damage import OK_VERDICTS, damage_runs
from qis_lib.experiments.fulldisk import full_disk_case
from qis_lib.experiments.hung import chroma_cases, http_cases, qdrant_cases
from qis_lib.experiments.ledger import History, check_history
from qis_lib.experiments.reliability import (KILL_PLANS, VolatileStoreError, kill_cycles, make_packet, persistent_modes,
                                             runnable_modes)
from qis_lib.stores import StoreDamagedError, open_store
from qis_lib.stores.folders import MANIFEST, FolderManifest

# The persistent modes here (test_the_persistent_modes_... checks the list against the stores).
PERSISTENT = [m for m in ("chroma-path", "chroma-server", "qdrant-path", "qdrant-edge", "http-edge")
              if m in runnable_modes()]
# A service's own crash is the point of its cycles: here every one of them kills the service.
SERVER_SHARE = {"http-edge": 1.0}


def test_the_persistent_modes_are_the_stores_that_keep_data():
    assert set(persistent_modes()) == set(PERSISTENT)


@pytest.mark.parametrize("kind", PERSISTENT)
def test_kill_cycles_lose_nothing_and_invent_nothing(kind):
    """A few cycles of the full campaign: each reopen finds every ack once, unchanged, no phantom."""
    frame = kill_cycles(kind, cycles=3, seed=7, max_acks=15, server_share=SERVER_SHARE.get(kind))
    assert list(frame["cycle"]) == [0, 1, 2, 3] and frame["plan"].iloc[-1] == "final"
    assert set(frame["plan"].iloc[:-1]) <= set(KILL_PLANS)
    if kind in SERVER_SHARE:
        assert list(frame["killed"].iloc[:-1]) == ["server"] * 3, frame.to_string()
    checked = frame.dropna(subset=["check_lost"])
    assert len(checked) >= 2  # the final check always; a child killed while opening checks nothing
    assert (checked["check_acknowledged"].iloc[-1] == frame["acknowledged_total"].iloc[-1])
    for column in ("check_lost", "check_corrupted", "check_duplicated", "check_phantoms"):
        assert (checked[column] == 0).all(), frame.to_string()
    assert (checked["check_scrolled"] == checked["check_store_count"]).all()


def test_kill_cycles_refuse_a_volatile_store():
    with pytest.raises(VolatileStoreError, match="not persistent"):
        kill_cycles("memory", cycles=1)


@pytest.mark.parametrize("share, error", [(0.5, "has no server the cycles can kill"),
                                          (1.5, "between 0 and 1")])
def test_server_share_needs_a_server_and_a_fraction(share, error):
    with pytest.raises(ValueError, match=error):
        kill_cycles("qdrant-edge", cycles=1, server_share=share)


# ------------------------------------------------------------------ damaged folders


@pytest.mark.parametrize("kind, files, damages", [
    ("qdrant-edge", ["wal segment", "segment version"], ("delete", "garble")),
    ("chroma-path", ["sqlite database"], ("truncate", "delete")),
    ("qdrant-path", ["sqlite database", "meta.json"], ("garble",)),
])
def test_a_damaged_folder_is_a_clear_error_naming_it(kind, files, damages):
    """Before our checks, the first two qdrant-edge cases were a silent empty store and an error
    that named no folder, and the chroma ones errors that named no folder."""
    frame = damage_runs([kind], damages=damages, files=files, timeout=120)
    assert len(frame) == len(files) * len(damages)
    assert frame["verdict"].isin(OK_VERDICTS).all(), frame.to_string()
    assert (frame["verdict"] == "error").sum() >= len(damages)
    assert frame.loc[frame["verdict"] == "error", "detail"].str.contains("FOLDER").all()


def test_a_folder_that_lost_its_segments_is_refused(tmp_path):
    path = tmp_path / "edge"
    store = open_store("qdrant-edge", path=str(path), dim=4)
    packets = [make_packet("m", i) for i in range(5)]
    store.upsert([p.packet_id for p in packets], np.eye(5, 4, dtype=np.float32) + 0.1,
                 [p.to_payload() for p in packets])
    store.close()
    assert json.loads((path / MANIFEST).read_text())["packets"] == 5
    # the segments and the write-ahead log segments gone, the folder structure left: opens empty
    shutil.rmtree(path / "segments")
    (path / "segments").mkdir()
    for segment in (path / "wal").glob("open-*"):
        segment.unlink()
    with pytest.raises(StoreDamagedError, match=f"{path}.*held at least 5"):
        open_store("qdrant-edge", path=str(path), dim=4)
    os.remove(path / MANIFEST)  # the way out the message names: accept the folder as it is
    assert open_store("qdrant-edge", path=str(path), dim=4).count() == 0


def test_manifest_is_a_lower_bound_that_deletes_lower(tmp_path):
    manifest = FolderManifest(str(tmp_path), "test")
    manifest.check(0)
    manifest.record(10)
    manifest.before_delete(4)
    manifest.check(6)  # six left: fine
    with pytest.raises(StoreDamagedError, match="opened with 5 packets, but it held at least 6"):
        FolderManifest(str(tmp_path), "test").check(5)
    (tmp_path / MANIFEST).write_text("{garbled")
    with pytest.warns(UserWarning, match="unreadable"):
        FolderManifest(str(tmp_path), "test").check(0)


# ------------------------------------------------------------------ a full disk


def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path):
    row = full_disk_case("qdrant-path", tmp_path / "store", "rlimit", preload=20)
    assert row["writer"] == "error", row
    assert "FOLDER" in row["error"] and "disk is full" in row["error"], row  # names the folder
    assert row["acked_before_full"] > 0
    assert row["reopened"] and row["lost"] == 0 and row["changed"] == 0 and row["phantoms"] == 0, row
    assert row["found"] == row["acknowledged"]
    assert row["new_deposits_found"] == "20/20"  # with space back the store works


# ------------------------------------------------------------------ hung and slow servers


def test_hung_qdrant_nodes_fail_within_the_timeout_naming_each_address():
    rows = qdrant_cases(timeout=1)
    for row in rows:
        assert row["failed"] and row["within_limit"] and row["names_address"], row
    assert rows[-1]["nodes_tried"] == 2  # the store moved on to the second node


def test_hung_chroma_server_calls_fail_within_the_timeout_naming_it(chroma_server):
    rows = chroma_cases(chroma_server.url, timeout=1.0)
    assert {r["case"].split(",")[0] for r in rows} == {"open", "upsert", "query", "get", "count"}
    for row in rows:
        assert row["failed"] and row["within_limit"] and row["names_address"], row


def test_hung_routing_service_calls_fail_within_the_timeout_naming_it(server_pool):
    service = server_pool.get("http-service")
    rows = http_cases(service.url, timeout=1.0, api_key=service.admin_key)
    assert {r["case"].split(",")[0] for r in rows} == {"open", "upsert", "query", "get", "count",
                                                         "deposit (text)", "query (text)"}
    for row in rows:
        assert row["failed"] and row["within_limit"] and row["names_address"], row


# ------------------------------------------------------------------ the history check

OUTCOME_SETS = st.sampled_from([{"ok"}, {"fail"}, {"info"}, {"fail", "ok"}, {"info", "ok"}, {"fail", "info"}])


@given(st.lists(st.tuples(OUTCOME_SETS, st.booleans()), min_size=1, max_size=30))
def test_history_check_counts_lost_and_indeterminate_as_jepsen_does(cases):
    packets = [make_packet("h", i) for i in range(len(cases))]
    sent = {p.packet_id: p for p in packets}
    ops, stored = [], {}
    for packet, (outcomes, present) in zip(packets, cases):
        ops += [{"process": "p", "id": packet.packet_id, "type": t} for t in sorted(outcomes)]
        if present:
            stored[packet.packet_id] = packet.to_payload()
    report = check_history("h", ops, sent, lambda ids: {i: stored[i] for i in ids if i in stored},
                           lambda: len(stored), stored_ids=lambda: list(stored))
    acked = [o for o, _ in cases if "ok" in o]
    assert report.acknowledged == len(acked)
    assert report.lost == sum("ok" in o and not present for o, present in cases)
    assert report.indeterminate == sum("ok" not in o and "info" in o for o, _ in cases)
    assert report.failed == sum(o == {"fail"} for o, _ in cases)
    assert report.phantoms == 0 and report.corrupted == 0


def test_history_files_outlive_their_writer_and_drop_a_torn_line(tmp_path):
    a, b = make_packet("h", 1), make_packet("h", 2)
    history = History(tmp_path / "h.jsonl", "p0")
    history.record(a.packet_id, "ok", 0.1)
    history.record(b.packet_id, "info", 0.2)
    history.close()
    with open(tmp_path / "h.jsonl", "a") as f:
        f.write('{"process": "p0", "id": "torn')  # a crash in the middle of a line
    ops = History.read([tmp_path / "h.jsonl"])
    assert [(o["id"], o["type"]) for o in ops] == [(a.packet_id, "ok"), (b.packet_id, "info")]
    with pytest.raises(ValueError, match="outcome must be one of"):
        History(tmp_path / "x.jsonl", "p").record(a.packet_id, "maybe", 0.0)
