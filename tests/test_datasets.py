"""The GitBugs loader: hand-made Jira and Bugzilla layouts, the download cache, the
Hadoop copy shipped in data/gitbugs/hadoop/ (checksums, missing files, the override).

If a fixture test fails, compare tests/fixtures/gitbugs_mini/ with the mapping table
in qis_lib/infra/datasets.py's docstring; if only the real-data tests fail, the data's
layout may have changed (see its README)."""
import gzip
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qis_lib import OutcomePacket
from qis_lib.infra import datasets
from qis_lib.infra.datasets import (load_gitbugs, map_resolution, normalise_resolution, parse_dates, problem_text,
                              size_table)

MINI = Path(__file__).parent / "fixtures" / "gitbugs_mini"
JIRA, BUGZILLA = MINI / "jira", MINI / "bugzilla"


def real_dir():
    """$QIS_GITBUGS_DIR if set, else the shipped copy (checked)."""
    return os.environ.get(datasets.ENV_DIR) or datasets.shipped_dir()


def test_jira_layout_loads_with_mapped_fields():
    ds = load_gitbugs(JIRA)
    assert ds.project == "minijira"
    assert len(ds.reports) == len(ds.packets) == 9
    assert list(ds.reports["created"]) == sorted(ds.reports["created"])
    by_id = {p.agent_id: p for p in ds.packets}
    first = by_id["1001"]
    # the default text: the summary, then the description's start up to the 512-byte packet target
    assert first.problem_description.startswith("NameNode fails to start after upgrade with edit log error. After")
    assert first.outcome_type == "resolved"
    assert set(first.domain_tags) == {"version:3.3.1", "version:3.4.0", "priority:blocker", "project:minijira"}
    assert first.timestamp == pd.Timestamp("2021-01-02 10:00", tz="UTC").timestamp()
    assert "same problem as 1003" in first.delta_summary and "resolved 2021-01-05" in first.delta_summary
    assert by_id["1002"].outcome_type == "contradicted"  # Won't Fix
    assert by_id["1003"].outcome_type == "partial"  # Duplicate
    assert by_id["1004"].outcome_type == "open" and by_id["1004"].delta_summary == "Unresolved (Open)"
    assert by_id["1005"].outcome_type == "contradicted"  # Cannot Reproduce
    assert "version:3.3.0" not in by_id["1007"].domain_tags  # no affected version given


def test_jira_duplicate_links_become_ordered_unique_pairs():
    ds = load_gitbugs(JIRA)
    # 1006 lists two ids in one cell; each pair is listed in both directions; 999999 is not a report
    assert ds.duplicate_pairs == [("1001", "1003"), ("1005", "1006"), ("1006", "1007")]
    assert ds.skipped_links == 1
    ids = set(ds.reports["id"])
    assert all(a in ids and b in ids for a, b in ds.duplicate_pairs)


def test_unknown_resolution_is_open_and_counted():
    ds = load_gitbugs(JIRA)
    assert ds.unknown_resolutions == {"Frobnicated": 1}
    assert next(p for p in ds.packets if p.agent_id == "1008").outcome_type == "open"


def test_bugzilla_layout_dates_and_spellings():
    ds = load_gitbugs(BUGZILLA)
    assert ds.project == "minizilla"
    by_id = {p.agent_id: p for p in ds.packets}
    assert by_id["2001"].timestamp == pd.Timestamp("2020-01-02 17:14:21", tz="UTC").timestamp()
    assert [by_id[i].outcome_type for i in ("2001", "2002", "2003", "2004", "2005", "2006")] == \
        ["resolved", "contradicted", "partial", "open", "contradicted", "open"]
    assert by_id["2002"].domain_tags == ("project:minizilla",)  # priority "--" is no tag
    assert by_id["2001"].domain_tags == ("priority:p2", "project:minizilla")
    # Bugzilla fills Resolved for open bugs too; an open bug's delta shows no resolution date
    assert by_id["2004"].delta_summary == "Unresolved (UNCONFIRMED)"
    assert ds.duplicate_pairs == [("2001", "2003")] and ds.skipped_links == 1
    assert not ds.unknown_resolutions


def test_folder_of_projects_needs_a_choice():
    with pytest.raises(ValueError, match="several projects"):
        load_gitbugs(MINI)
    assert load_gitbugs(MINI, project="MiniZilla").project == "minizilla"


def test_resolution_spellings_agree():
    assert normalise_resolution("Won't Fix") == normalise_resolution("WONTFIX") == "wontfix"
    assert map_resolution("Works for Me")[:2] == map_resolution("WORKSFORME")[:2] == ("contradicted", 0.8)
    assert map_resolution("---") == map_resolution("") == ("open", 0.2, True)
    assert map_resolution("Fixed")[0] == "resolved"
    assert map_resolution("Something New")[2] is False


def test_text_choices():
    summary, desc = "Disk full", "When the {code}disk{code} is full see https://x.org/a the node stops " * 5
    assert problem_text(summary, desc, "summary") == "Disk full"
    long = problem_text(summary, desc, "summary+description", description_chars=40)
    assert long.startswith("Disk full. When the disk is full see the node")
    assert len(long) <= len("Disk full. ") + 40 and "{code}" not in long and "https" not in long
    assert problem_text(summary, "", "summary+description") == "Disk full"
    with pytest.raises(ValueError, match="text must be one of"):
        problem_text(summary, desc, "title")


def test_delta_summary_is_cut_to_200_chars(tmp_path):
    many = ", ".join(str(3000 + i) for i in range(60))
    (tmp_path / "x_bugs.csv").write_text(
        "Summary,Issue id,Status,Priority,Resolution,Created,Resolved,Description\n"
        "A problem,1,Resolved,Major,Duplicate,01/Jan/21 00:00,02/Jan/21 00:00,text\n"
        + "".join(f"Other {3000 + i},{3000 + i},Open,Major,,01/Jan/21 0{i % 10}:00,,\n" for i in range(60)))
    (tmp_path / "x_bugs-combined.csv").write_text(f'Issue id,Duplicate id\n1,"{many}"\n')
    ds = load_gitbugs(tmp_path)
    delta = next(p for p in ds.packets if p.agent_id == "1").delta_summary
    assert len(delta) == 200 and delta.endswith("...")
    assert len(ds.duplicate_pairs) == 60


def test_make_packets_other_text_keeps_order_and_ids():
    ds = load_gitbugs(JIRA, text="summary")
    longer = ds.make_packets("summary+description", description_chars=60)
    assert [p.agent_id for p in longer] == [p.agent_id for p in ds.packets]
    assert all(b.problem_description.startswith(a.problem_description) for a, b in zip(ds.packets, longer))
    assert any(len(b.problem_description) > len(a.problem_description) for a, b in zip(ds.packets, longer))
    sizes = size_table({"summary": ds.packets, "long": longer})
    assert list(sizes["packets"]) == [9, 9]
    assert (sizes["median_bytes"].iloc[1] > sizes["median_bytes"].iloc[0])


def test_packets_round_trip():
    for packet in load_gitbugs(BUGZILLA).packets:
        assert OutcomePacket.from_bytes(packet.to_bytes()) == packet


@pytest.mark.parametrize("header,match", [
    ("Summary,Issue id,Status,Priority,Created,Description", "lacks column"),
])
def test_bad_reports_file(tmp_path, header, match):
    (tmp_path / "x_bugs.csv").write_text(header + "\n")
    (tmp_path / "x_bugs-combined.csv").write_text("Issue id,Duplicate id\n")
    with pytest.raises(ValueError, match=match):
        load_gitbugs(tmp_path)


def test_bad_dates_and_ids(tmp_path):
    head = "Summary,Issue id,Status,Priority,Resolution,Created,Description\n"
    (tmp_path / "x_bugs-combined.csv").write_text("Issue id,Duplicate id\n")
    (tmp_path / "x_bugs.csv").write_text(head + "A,1,Open,Major,,yesterday,\n")
    with pytest.raises(ValueError, match="Created: cannot read 1 date"):
        load_gitbugs(tmp_path)
    (tmp_path / "x_bugs.csv").write_text(head + "A,1,Open,Major,,01/Jan/21 00:00,\nB,1,Open,Major,,01/Jan/21 00:00,\n")
    with pytest.raises(ValueError, match="Issue id '1' appears more than once"):
        load_gitbugs(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_gitbugs(tmp_path / "nope")


def test_parse_dates_both_layouts():
    jira = parse_dates(pd.Series(["30/Sep/21 17:20", ""]))
    iso = parse_dates(pd.Series(["2021-09-30 17:20:00+00:00"]))
    assert jira.iloc[0] == iso.iloc[0] and pd.isna(jira.iloc[1])


def test_download_goes_to_cache_once(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.ENV_DIR, raising=False)
    monkeypatch.setenv("QIS_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def fake_fetch(url):
        calls.append(url)
        name = url.rsplit("/", 1)[1].replace("hadoop", "minijira")
        return (JIRA / name).read_bytes()

    def fetch_spark(url):
        calls.append(url)
        name = url.rsplit("/", 1)[1].replace("spark", "minijira")
        return (JIRA / name).read_bytes().replace(b"minijira", b"spark")

    assert load_gitbugs(fetch=fake_fetch).project == "hadoop" and not calls  # the shipped copy: no network
    ds = load_gitbugs(project="spark", fetch=fetch_spark)
    assert calls == [f"{datasets.DOWNLOAD_BASE}/spark/spark_bugs.csv",
                     f"{datasets.DOWNLOAD_BASE}/spark/spark_bugs-combined.csv"]
    assert ds.path == tmp_path / "cache" / "gitbugs" / "spark" and len(ds.reports) == 9
    assert not list(ds.path.glob("*.part"))
    load_gitbugs(project="spark", fetch=fetch_spark)  # cached: no second download
    assert len(calls) == 2


def test_download_refuses_non_csv_and_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="not a GitBugs CSV"):
        datasets.download_gitbugs("hadoop", cache_dir=tmp_path, fetch=lambda url: b"<html>rate limited</html>")
    assert not list((tmp_path / "hadoop").iterdir())
    with pytest.raises(ValueError, match="folder name"):
        datasets.download_gitbugs("../etc", cache_dir=tmp_path, fetch=lambda url: b"")


def test_no_data_and_no_download(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.ENV_DIR, raising=False)
    monkeypatch.setenv("QIS_CACHE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="QIS_GITBUGS_DIR"):
        load_gitbugs(project="spark", download=False)


def test_env_var_is_used(monkeypatch):
    monkeypatch.setenv(datasets.ENV_DIR, str(BUGZILLA))
    assert load_gitbugs(download=False).project == "minizilla"


def test_real_hadoop_data():
    ds = load_gitbugs(real_dir(), download=False)
    assert len(ds.reports) > 1000 and len(ds.packets) == len(ds.reports)
    assert len(ds.duplicate_pairs) > 20
    ids = set(ds.reports["id"])
    assert all(a in ids and b in ids for a, b in ds.duplicate_pairs)
    order = {rid: i for i, rid in enumerate(ds.reports["id"])}
    assert all(order[a] < order[b] for a, b in ds.duplicate_pairs)
    assert {p.outcome_type for p in ds.packets} == {"resolved", "partial", "contradicted", "open"}
    assert not ds.unknown_resolutions, f"resolutions missing from the mapping table: {ds.unknown_resolutions}"


def no_network(url):
    raise AssertionError(f"the shipped data must not touch the network ({url})")


def test_shipped_hadoop_is_the_default_and_needs_no_network(monkeypatch):
    monkeypatch.delenv(datasets.ENV_DIR, raising=False)
    ds = load_gitbugs(fetch=no_network)
    assert ds.project == "hadoop" and ds.path == datasets.SHIPPED_DIR
    assert len(ds.reports) == 2503 and len(ds.duplicate_pairs) == 66


def test_shipped_sums_file_agrees_with_the_code():
    listed = dict(line.split()[::-1] for line in (datasets.SHIPPED_DIR / "SHA256SUMS").read_text().splitlines())
    assert listed == datasets.SHIPPED
    assert all(datasets.sha256(datasets.SHIPPED_DIR / name) == digest for name, digest in listed.items())


def shipped_copy(tmp_path):
    folder = tmp_path / "hadoop"
    shutil.copytree(datasets.SHIPPED_DIR, folder)
    return folder


def test_corrupt_shipped_file_is_one_clear_error(tmp_path, monkeypatch):
    folder = shipped_copy(tmp_path)
    monkeypatch.delenv(datasets.ENV_DIR, raising=False)
    monkeypatch.setattr(datasets, "SHIPPED_DIR", folder)
    data = bytearray((folder / "hadoop_bugs.csv.gz").read_bytes())
    data[1000] ^= 0xFF
    (folder / "hadoop_bugs.csv.gz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"hadoop_bugs\.csv\.gz is corrupt or changed.*git checkout.*QIS_GITBUGS_DIR"):
        load_gitbugs(fetch=no_network)


def test_missing_shipped_file_is_one_clear_error(tmp_path, monkeypatch):
    folder = shipped_copy(tmp_path)
    monkeypatch.delenv(datasets.ENV_DIR, raising=False)
    monkeypatch.setattr(datasets, "SHIPPED_DIR", folder)
    (folder / "hadoop_bugs-combined.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"hadoop_bugs-combined\.csv\.gz is missing"):
        load_gitbugs(fetch=no_network)
    monkeypatch.setattr(datasets, "SHIPPED_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="not in an installed copy.*QIS_GITBUGS_DIR"):
        load_gitbugs(fetch=no_network)


def test_override_wins_over_the_shipped_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "SHIPPED_DIR", tmp_path / "absent")  # never looked at
    monkeypatch.setenv(datasets.ENV_DIR, str(JIRA))
    assert load_gitbugs(fetch=no_network).project == "minijira"
    monkeypatch.delenv(datasets.ENV_DIR)
    assert load_gitbugs(BUGZILLA, fetch=no_network).project == "minizilla"


def test_gzipped_and_plain_files_read_the_same(tmp_path):
    for name in ("minijira_bugs.csv", "minijira_bugs-combined.csv"):
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress((JIRA / name).read_bytes()))
    zipped, plain = load_gitbugs(tmp_path), load_gitbugs(JIRA)
    assert zipped.project == "minijira" and zipped.packets == plain.packets
    assert zipped.duplicate_pairs == plain.duplicate_pairs


WORDS = st.text(alphabet="abcdefghij{}*_ .,:", min_size=0, max_size=12)


@settings(max_examples=60, deadline=None)
@given(summary=st.text(alphabet="abcxyz ", min_size=1, max_size=40).filter(str.strip),
       description=st.lists(WORDS, max_size=200).map(" ".join), budget=st.integers(0, 400))
def test_budget_text_is_the_longest_word_cut_that_fits(summary, description, budget):
    """description_chars=None: the summary plus the longest start of the cleaned description,
    cut at a word, that `fits`; one word more would not fit."""
    fits = lambda t: len(t.encode()) <= budget  # noqa: E731
    text = problem_text(summary, description, "summary+description", description_chars=None, fits=fits)
    head = datasets.clean_text(summary)
    assert text == head or text.startswith(head + ". ")
    words = datasets.clean_text(description).split(" ")
    if text != head:
        assert fits(text)
        start = text[len(head) + 2:]
        assert datasets.clean_text(description).startswith(start)
    # no longer start fits: every longer cut at a word is over the budget (or the same text)
    for n in range(1, len(words) + 1):
        start = " ".join(words[:n]).rstrip(" ,.;:")
        longer = f"{head}. {start}" if start else head
        assert len(longer) <= len(text) or not fits(longer)


def test_default_packets_fill_the_512_byte_target():
    from qis_lib.core.packet import MAX_PACKET_BYTES

    for folder in (JIRA, BUGZILLA):
        ds = load_gitbugs(folder)
        short = {p.agent_id: p for p in ds.make_packets("summary")}
        for packet in ds.packets:
            assert packet.size_bytes <= MAX_PACKET_BYTES
            assert packet.problem_description.startswith(short[packet.agent_id].problem_description)
        assert any(len(p.problem_description) > len(short[p.agent_id].problem_description) for p in ds.packets)
    with pytest.raises(ValueError, match="fits="):
        problem_text("a", "b c", "summary+description", description_chars=None)
