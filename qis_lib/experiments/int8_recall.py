"""int8 beside fp32: throughput, agreement with sentence-transformers, and duplicate recall.

    python -m qis_lib.experiments.int8_recall --out results/embedding/

Both ONNX embedders run in the default configuration (`DEFAULT_CONFIG`, int8 with
quantize=True), text caches off, on the problem texts of every shipped GitBugs report
(`load_gitbugs()`). Each round embeds all of them with each precision in turn (the order
alternating); texts/s is the best round. Cosine is to the sentence-transformers vector of
each text. Recall is the routing-quality code's own (`exact_ranks`, `recall_summary` in
qis_lib.experiments.quality): each duplicate pair, both ways, looks for its partner among
all other reports by exact cosine, the ceiling any store reaches with these vectors.

int8 "keeps the recall" when its recall@k is at most `tolerance` (0.01) below fp32's.
With the shipped 66 pairs (132 queries) one query is 0.0076, so that allows one query
lost net; `lost` and `gained` count the queries found by one precision and not the other.
Writes int8.csv (one row per precision) and int8.json (command, machine, load averages,
the verdict) to --out.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..bench.embedding import machine_info
from ..core.packet import OutcomePacket
from ..embedders import Embedder
from ..infra.datasets import load_gitbugs
from .quality import exact_ranks, recall_summary

TOLERANCE = 0.01
K = 10


def compare(embedders: dict[str, Embedder], reference: Embedder, packets: Sequence[OutcomePacket],
            pairs: Sequence[tuple[str, str]], rounds: int = 2, k: int = K,
            tolerance: float = TOLERANCE) -> tuple[pd.DataFrame, dict]:
    """One row per embedder (the first is the baseline): texts/s, cosine to `reference`,
    recall@1/5/k and MRR@k on `pairs`, and the change against the baseline; and the verdict
    for the others: {name: True when its recall@k is at most `tolerance` below the baseline's}."""
    if len(embedders) < 2 or rounds < 1:
        raise ValueError(f"need a baseline and at least one other embedder and rounds >= 1, got "
                         f"{list(embedders)} and rounds={rounds!r}")
    texts = [p.problem_description for p in packets]
    names = list(embedders)
    seconds = {name: [] for name in names}
    vectors = {}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            vectors[name] = embedders[name].encode(texts)
            seconds[name].append(time.perf_counter() - start)
    expected = reference.encode(texts)
    ranks = {name: exact_ranks(vectors[name], packets, pairs) for name in names}
    base = names[0]
    found = {name: (ranks[name]["rank"] <= k).to_numpy() for name in names}
    rows = []
    for name in names:
        cosine = np.sum(vectors[name] * expected, axis=1)
        rows.append({"embedder": name, "name": embedders[name].name, "texts": len(texts),
                     "texts_per_s": len(texts) / min(seconds[name]),
                     "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
                     **recall_summary(ranks[name], ks=(1, 5, k), mrr_at=k),
                     "lost": int((found[base] & ~found[name]).sum()), "gained": int((found[name] & ~found[base]).sum()),
                     "rounds": rounds})
    table = pd.DataFrame(rows)
    recall = table.set_index("embedder")[f"recall@{k}"]
    table[f"recall@{k}_change"] = table[f"recall@{k}"] - recall[base]
    table["speedup"] = table["texts_per_s"] / table.loc[0, "texts_per_s"]
    verdict = {name: bool(recall[base] - recall[name] <= tolerance + 1e-12) for name in names[1:]}
    return table, verdict


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """The command line: fp32 and int8 on the shipped GitBugs reports; prints the table and the verdict."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="folder for int8.csv and int8.json (default: print only)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the texts per precision (default 2)")
    parser.add_argument("--gitbugs", default=None, help="a GitBugs project folder (default: the shipped Hadoop)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    from ..embedders.minilm_torch import SentenceTransformerEmbedder
    from ..embedders.onnx import OnnxEmbedder

    load_start = os.getloadavg()
    ds = load_gitbugs(args.gitbugs)
    embedders = {"onnx": OnnxEmbedder(cache_size=0), "onnx-int8": OnnxEmbedder(quantize=True, cache_size=0)}
    table, verdict = compare(embedders, SentenceTransformerEmbedder(cache_size=0), ds.packets, ds.duplicate_pairs,
                             rounds=args.rounds)
    keeps = verdict["onnx-int8"]
    record = {"command": shlex.join(["python", "-m", "qis_lib.experiments.int8_recall", *argv]),
              "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine_info(),
              "config": embedders["onnx"].config.label, "reports": len(ds.packets),
              "pairs": len(ds.duplicate_pairs), "k": K, "tolerance": TOLERANCE, "int8_keeps_recall": keeps,
              "load_average_start": [round(x, 2) for x in load_start],
              "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns=["name"]).round(4).to_string(index=False))
    change = table.loc[1, f"recall@{K}_change"]
    print(f"int8 recall@{K} {'stays' if keeps else 'does not stay'} within {TOLERANCE} of fp32's "
          f"({change:+.4f}); int8 is {table.loc[1, 'speedup']:.2f}x fp32's texts/s")
    print(f"load average {record['load_average_start']} at the start, {record['load_average_end']} at the end")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "int8.csv", index=False)
        (out / "int8.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out / 'int8.csv'} and {out / 'int8.json'}")
    return table, record


if __name__ == "__main__":
    main()
