"""The failover harness: summaries on synthetic records, the loss check, and one real run
against a `chroma run` server killed with SIGKILL under load.

If the live test reports lost deposits: result.loss["lost_ids"] names them; look them up
in the ledger and in result.ops (when they were acknowledged, relative to the kill).
"""
import json
import math

import httpx
import numpy as np
import pandas as pd
import pytest

from qis_lib.embedders import CachedEmbedder, get_embedder
from qis_lib.experiments.failover import (OP_COLUMNS, ChromaTarget, LoadSpec, StopTime, classify, make_packet,
                                          recovery_times, run_failover, seed_texts, summarise, timeline_plot,
                                          with_phases)
from qis_lib.experiments.ledger import Ledger, check_loss
from qis_lib.infra.servers import ChromaServer

# ------------------------------------------------------------------ synthetic records

EVENTS = pd.DataFrame([{"t": 10.0, "event": "kill", "outage": 1}, {"t": 10.01, "event": "killed", "outage": 1},
                       {"t": 12.0, "event": "restart", "outage": 1}, {"t": 14.0, "event": "ready", "outage": 1}])


def synthetic_ops(seed=1):
    """20 s at 10 ops/s; everything started in [10, 14) fails, and so does the op started at
    9.9 that was still running at the kill."""
    rng = np.random.default_rng(seed)
    start = np.arange(0, 20, 0.1)
    latency = rng.lognormal(-4, 0.5, len(start)).clip(max=0.05)
    kind = np.where(np.arange(len(start)) % 2 == 0, "deposit", "query")
    outcome = np.where((start >= 10) & (start < 14), "error", "ok").astype(object)
    in_flight = np.isclose(start, 9.9)
    outcome[in_flight], latency[in_flight] = "error", 0.15
    outcome[np.isclose(start, 12.5)] = "timeout"
    return pd.DataFrame({
        "op": np.arange(len(start)), "thread": 0, "kind": kind, "due": start, "start": start, "latency": latency,
        "outcome": outcome, "error": "", "node": "n1", "packet_id": "", "hits": 5}, columns=OP_COLUMNS)


def test_phases_follow_kill_and_ready():
    ops = with_phases(synthetic_ops(), EVENTS)
    end = ops["start"] + ops["latency"]
    assert (ops.loc[end < 10, "phase"] == "before").all()
    assert (ops.loc[(end >= 10) & (ops["start"] < 14), "phase"] == "during").all()
    assert (ops.loc[ops["start"] >= 14, "phase"] == "after").all()
    assert ops.loc[np.isclose(ops["start"], 9.9), "phase"].item() == "during"  # in flight at the kill
    assert set(ops.loc[ops["outcome"] != "ok", "phase"]) == {"during"}


def test_summary_counts_and_percentiles():
    ops = synthetic_ops()
    summary = summarise(ops, EVENTS)
    phased = with_phases(ops, EVENTS)
    for phase in ("before", "during", "after"):
        part = phased[phased["phase"] == phase]
        row = summary.loc[(phase, "all")]
        assert row["ops"] == len(part)
        assert row["errors"] == (part["outcome"] == "error").sum()
        assert row["timeouts"] == (part["outcome"] == "timeout").sum()
        assert row["error_rate"] == pytest.approx((part["outcome"] != "ok").mean())
        ok = part.loc[part["outcome"] == "ok", "latency"] * 1000
        if len(ok):
            assert row["p99_ms"] == pytest.approx(np.percentile(ok, 99))
        else:
            assert math.isnan(row["p99_ms"])
    assert summary.loc[("during", "all"), "error_rate"] == 1.0
    assert summary.loc[("after", "all"), "error_rate"] == 0.0
    assert set(summary.index.get_level_values("kind")) == {"all", "deposit", "query"}


def test_recovery_times():
    ops = synthetic_ops()
    ops.loc[ops["start"].between(15.95, 16.05), "outcome"] = "error"  # a straggler after ready
    rec = recovery_times(ops, EVENTS).iloc[0]
    failed = ops[ops["outcome"] != "ok"]
    assert rec["down_s"] == pytest.approx(4.0)
    assert rec["failed_ops"] == len(failed)
    failed_end = failed["start"] + failed["latency"]
    assert rec["first_error_after_kill_s"] == pytest.approx(failed_end.min() - 10.0)
    assert rec["errors_stop_after_kill_s"] == pytest.approx(failed_end.max() - 10.0)
    assert failed_end.max() > 16.0  # the straggler
    assert rec["errors_after_ready"] == 1


def test_timeline_plot_shades_the_outage():
    import matplotlib

    matplotlib.use("Agg")
    fig = timeline_plot(synthetic_ops(), EVENTS, title="t")
    ax = fig.axes[0]
    assert len(ax.patches) == 1
    span = ax.patches[0].get_bbox()  # data coordinates in x
    assert span.x0 == pytest.approx(10.0) and span.x1 == pytest.approx(14.0)
    labels = ax.get_legend_handles_labels()[1]
    assert any(label.startswith("error") for label in labels)


@pytest.mark.parametrize("outages", [((5, 3),), ((1, 2), (1.5, 3)), ((1, 20),), ((1,),)])
def test_load_spec_rejects_bad_outages(outages):
    with pytest.raises(ValueError, match="outage"):
        LoadSpec(duration=10, outages=outages)


@pytest.mark.parametrize("kwargs", [{"rate": 0}, {"threads": 0}, {"deposit_share": 1.5}, {"duration": -1}])
def test_load_spec_rejects_bad_numbers(kwargs):
    with pytest.raises(ValueError):
        LoadSpec(**{"outages": (), **kwargs})


# ------------------------------------------------------------------ errors, ledger, loss check


def test_classify_timeouts_apart_from_errors():
    from qdrant_client.http.exceptions import ResponseHandlingException

    assert classify(httpx.ReadTimeout("read timed out")) == "timeout"
    assert classify(ResponseHandlingException(httpx.ReadTimeout("x"))) == "timeout"
    assert classify(ConnectionError("no Qdrant node answered: http://a: ResponseHandlingException: timed out")) \
        == "timeout"
    assert classify(httpx.ConnectError("[Errno 111] Connection refused")) == "error"
    try:
        try:
            raise TimeoutError("slow")
        except TimeoutError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert classify(outer) == "timeout"


def test_ledger_appends_and_reads_back(tmp_path):
    ledger = Ledger(tmp_path / "l.jsonl")
    for pid in ("a", "b", "a"):
        ledger.append(pid, 1.0)
    ledger.close()
    assert Ledger.read(tmp_path / "l.jsonl") == ["a", "b", "a"]
    assert all(json.loads(line)["t"] == 1.0 for line in (tmp_path / "l.jsonl").read_text().splitlines())


def packets(n, now=1.7e9):
    seeds = seed_texts()
    return [make_packet(i, now, seeds) for i in range(n)]


def test_check_loss_counts_lost_failed_indeterminate_and_corrupt():
    ps = packets(10)
    sent = {p.packet_id: p for p in ps}
    ids = list(sent)
    store = {pid: sent[pid].to_payload() for pid in ids}
    del store[ids[0]]  # an acknowledged id went missing
    store[ids[1]] = {**store[ids[1]], "outcome_type": "contradicted" if ps[1].outcome_type != "contradicted"
                     else "open"}  # changed
    store[ids[2]] = {**store[ids[2]], "confidence": "high"}  # not a valid packet any more
    del store[ids[8]]  # a timed-out deposit that did not happen
    store["phantom"] = {}  # a row we never wrote
    report = check_loss("n1", acked_ids=ids[:6] + ids[:2], sent=sent, failed_ids=ids[6:8], timeout_ids=ids[8:],
                        get=lambda batch: {pid: store[pid] for pid in batch if pid in store}, count=lambda: len(store),
                        batch=3)
    assert (report.acknowledged, report.found, report.lost) == (6, 5, 1)
    assert report.lost_ids == [ids[0]]
    assert report.corrupted == 2
    assert (report.failed, report.failed_but_stored) == (2, 2)
    assert (report.indeterminate, report.indeterminate_stored) == (2, 1)
    assert report.duplicated == 1  # the phantom


def test_cached_embedder_returns_the_model_vectors():
    base = get_embedder("hash")
    texts = ["alpha beta", "gamma delta"]
    cached = CachedEmbedder(base, texts)
    assert np.allclose(cached.encode(texts[::-1]), base.encode(texts[::-1]))
    assert cached.misses == 0
    assert np.allclose(cached.encode(["new text"]), base.encode(["new text"]))
    assert cached.misses == 1


def test_stop_time_only_moves_earlier():
    stop = StopTime()
    assert not stop.reached(1e9)
    stop.stop_at(30.0)
    assert stop.reached(30.0) and not stop.reached(29.9)
    stop.stop_now()
    stop.stop_at(30.0)  # a later end does not undo a stop
    assert stop.at == 0.0 and stop.reached(0.0)


def test_make_packet_gives_every_deposit_its_own_id():
    ps = packets(200)
    assert len({p.packet_id for p in ps}) == 200
    assert all(p.size_bytes <= 512 for p in ps)


# ------------------------------------------------------------------ a real chroma run server, killed under load


@pytest.fixture(scope="module")
def chroma_run(tmp_path_factory):
    # Preload 1,100 so the store is past the ~1,000 items where a reload of Chroma's HNSW
    # index has been reported to fail.
    spec = LoadSpec(duration=6.0, rate=30.0, threads=3, outages=((2.0, 3.0),), min_after=1.5, preload=1100)
    ledger = tmp_path_factory.mktemp("failover") / "ledger.jsonl"
    with ChromaServer() as server:
        result = run_failover(ChromaTarget(server), get_embedder("hash"), spec, ledger_path=ledger)
    return result, ledger


def test_chroma_no_acknowledged_deposit_is_lost(chroma_run):
    result, ledger = chroma_run
    loss = result.loss.iloc[0]
    assert loss["acknowledged"] > 1100  # the preload and the deposits of the run
    assert loss["lost"] == 0 and loss["corrupted"] == 0 and loss["duplicated"] == 0
    assert loss["store_count"] == loss["found"] + loss["failed_but_stored"] + loss["indeterminate_stored"]


def test_chroma_ledger_holds_exactly_the_acknowledged_deposits(chroma_run):
    result, ledger = chroma_run
    ops = result.ops
    ok_deposits = set(ops.loc[(ops["kind"] == "deposit") & (ops["outcome"] == "ok"), "packet_id"])
    failed_deposits = set(ops.loc[(ops["kind"] == "deposit") & (ops["outcome"] != "ok"), "packet_id"])
    ledgered = set(Ledger.read(ledger))
    assert ok_deposits <= ledgered and not (failed_deposits & ledgered)
    assert len(ledgered - ok_deposits) == 1100  # the preload


def test_chroma_everything_fails_while_the_server_is_down(chroma_run):
    result, _ = chroma_run
    t = dict(zip(result.events["event"], result.events["t"]))
    assert t["kill"] <= t["killed"] < t["restart"] < t["ready"]
    down = result.ops[(result.ops["start"] > t["killed"]) & (result.ops["start"] < t["restart"])]
    assert len(down) > 0 and set(down["kind"]) == {"deposit", "query"}
    assert (down["outcome"] != "ok").all()  # no replication: nothing answers


def test_chroma_serves_again_after_restart(chroma_run):
    result, _ = chroma_run
    after = result.ops[result.ops["phase"] == "after"]
    queries = after[(after["kind"] == "query") & (after["outcome"] == "ok")]
    assert len(queries) > 0 and (queries["hits"] > 0).all()
    assert ((after["kind"] == "deposit") & (after["outcome"] == "ok")).any()
    summary = result.summary()
    assert summary.loc[("during", "all"), "error_rate"] > summary.loc[("before", "all"), "error_rate"]


def test_chroma_result_saves_its_records(chroma_run, tmp_path):
    result, _ = chroma_run
    out = result.save(tmp_path / "run", command="pytest")
    ops = pd.read_csv(out / "ops.csv")
    assert list(ops.columns) == OP_COLUMNS + ["phase"] and len(ops) == len(result.ops)
    assert json.loads((out / "run.json").read_text())["command"] == "pytest"
    for name in ("summary.csv", "recovery.csv", "loss.csv", "events.csv"):
        assert (out / name).stat().st_size > 0


# ------------------------------------------------------------------ the Qdrant cluster target (nothing started)


def test_qdrant_target_picks_its_victim_and_checks_settings(tmp_path):
    from qis_lib.infra.cluster import ProcessCluster
    from qis_lib.experiments.failover import QdrantClusterTarget, run_qdrant_cases
    from qis_lib.infra.servers import free_port

    cluster = ProcessCluster(qdrant_bin="qdrant", base_port=20000 + free_port() % 20000, workdir=tmp_path)
    entry = QdrantClusterTarget(cluster, victim="entry")
    other = QdrantClusterTarget(cluster, victim="other")
    assert entry.victim == cluster.entry and other.victim in cluster.others()
    assert other.describe()["replication_factor"] == 2 and other.describe()["victim"] == other.victim
    with pytest.raises(ValueError, match="write_consistency_factor"):
        QdrantClusterTarget(cluster, replication_factor=1, write_consistency_factor=2)
    with pytest.raises(ValueError, match="victim"):
        QdrantClusterTarget(cluster, victim="node9")
    with pytest.raises(ValueError, match="unknown case"):
        run_qdrant_cases(cluster, get_embedder("hash"), cases=["kill-everything"])
