"""Embedding speed: sentence-transformers vs ONNX Runtime fp32 and int8, in one run.

    python -m qis_lib.bench.embedding --out results/embedding/

All backends embed the same real texts (the seed packets: the problem descriptions
and outcome summaries) after a warm-up, with their text caches off. Single-text
latency: each text alone, each backend a block of all texts, the backends taking turns
over --rounds (order rotated), so a burst of load from elsewhere is spread over them.
Batched throughput: all texts in batches of --batch-size, turns again. Agreement: cosine to the sentence-transformers
vector of each text, and whether routing over the seed packets returns the same top-k
ids. Speed is relative to sentence-transformers in the same run; absolute times move
with the load on the machine, which is recorded with each row.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..embedders import Embedder
from ..embedders.minilm_torch import SentenceTransformerEmbedder
from ..core.packet import OutcomePacket
from ..core.router import make_router
from ..infra.seeds import load_seed_packets, seed_texts

REFERENCE = "sentence-transformers"
BACKENDS = (REFERENCE, "onnx", "onnx-int8")
PACKAGES = ("numpy", "torch", "sentence-transformers", "transformers", "tokenizers", "onnxruntime", "onnx")
NOW = 1_700_000_000.0  # a fixed clock for the packets, so routing compares like with like


def make_embedder(backend: str, batch_size: int = 32, cache_size: int = 0) -> Embedder:
    """A fresh embedder (not the shared one), by default with its text cache off."""
    if backend == REFERENCE:
        return SentenceTransformerEmbedder(batch_size=batch_size, cache_size=cache_size)
    if backend in ("onnx", "onnx-int8"):
        from ..embedders.onnx import OnnxEmbedder

        return OnnxEmbedder(quantize=backend == "onnx-int8", batch_size=batch_size, cache_size=cache_size)
    raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")


def routing_ids(embedder: Embedder, packets: Sequence[OutcomePacket], top_k: int = 5) -> list[list[str]]:
    """For each packet, the ids its own problem routes to among the other agents' packets."""
    with make_router("memory", embedder=embedder) as router:
        router.deposit_many(packets)
        return [[p.packet_id for p, _ in router.query(packet.problem_description, top_k=top_k,
                                                       exclude_agent=packet.agent_id, now=NOW)]
                for packet in packets]


def machine_info(packages: Sequence[str] = PACKAGES) -> dict:
    """Cores, CPU, Python, and the installed version of each of `packages`."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    if "torch" in sys.modules:  # threads each backend ran with (ONNX Runtime: one per core by default)
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    for package in packages:
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "none"
    return info


def _turns(names: list[str], i: int) -> list[str]:
    shift = i % len(names)
    return names[shift:] + names[:shift]


def measure(embedders: dict[str, Embedder], texts: Sequence[str], rounds: int = 3, warmup: int = 5,
            top_k: int = 5) -> pd.DataFrame:
    """One row per backend: single-text p50/p95, batched texts/s, agreement with the reference.

    `embedders` must include REFERENCE; ratios and agreement are against it.
    """
    if REFERENCE not in embedders:
        raise ValueError(f"embedders must include the reference {REFERENCE!r}")
    texts = list(texts)
    if not texts or rounds < 1:
        raise ValueError("need at least one text and one round")
    names = list(embedders)
    for name in names:  # warm-up: first calls allocate buffers and pick kernels
        for text in texts[:warmup]:
            embedders[name].encode([text])
        embedders[name].encode(texts)

    single = {name: [] for name in names}
    batched = {name: [] for name in names}
    for r in range(rounds):
        # Each backend takes all texts in a block, blocks in turns rotated per round. Not
        # text by text: ONNX Runtime's threads spin for a while after each call, and so
        # would slow a torch call right after it, which no real agent process does.
        for name in _turns(names, r):
            for text in texts:
                start = time.perf_counter()
                embedders[name].encode([text])
                single[name].append(time.perf_counter() - start)
        for name in _turns(names, r):
            start = time.perf_counter()
            embedders[name].encode(texts)
            batched[name].append(len(texts) / (time.perf_counter() - start))

    vectors = {name: embedders[name].encode(texts) for name in names}
    packets = load_seed_packets(now=NOW)
    routes = {name: routing_ids(embedders[name], packets, top_k) for name in names}
    rows = []
    for name in names:
        cosine = np.sum(vectors[name] * vectors[REFERENCE], axis=1)
        rows.append({
            "backend": name,
            "embedder": embedders[name].name,
            "single_p50_ms": 1000 * float(np.percentile(single[name], 50)),
            "single_p95_ms": 1000 * float(np.percentile(single[name], 95)),
            "batch_texts_per_s": float(np.median(batched[name])),
            "cosine_min": float(cosine.min()),
            "cosine_mean": float(cosine.mean()),
            # routing: the same ids in the same order, the same best id, and the share of ids in common
            f"same_top{top_k}": float(np.mean([a == b for a, b in zip(routes[name], routes[REFERENCE])])),
            "same_top1": float(np.mean([a[:1] == b[:1] for a, b in zip(routes[name], routes[REFERENCE])])),
            f"top{top_k}_overlap": float(np.mean([len(set(a) & set(b)) / max(len(b), 1)
                                                  for a, b in zip(routes[name], routes[REFERENCE])])),
        })
    table = pd.DataFrame(rows)
    reference = table.set_index("backend").loc[REFERENCE]
    table.insert(4, "single_speedup", reference["single_p50_ms"] / table["single_p50_ms"])
    table.insert(6, "batch_speedup", table["batch_texts_per_s"] / reference["batch_texts_per_s"])
    table["texts"] = len(texts)
    table["rounds"] = rounds
    table["batch_size"] = getattr(embedders[REFERENCE], "batch_size", None)
    return table


def run(backends: Sequence[str] = BACKENDS, rounds: int = 3, batch_size: int = 32,
        texts: Sequence[str] | None = None) -> pd.DataFrame:
    """Load the backends and measure them on the real texts; load average recorded around the run."""
    texts = seed_texts() if texts is None else list(texts)
    load_before = os.getloadavg()[0]
    embedders = {name: make_embedder(name, batch_size=batch_size) for name in backends}
    table = measure(embedders, texts, rounds=rounds)
    table["load_1min_before"] = round(load_before, 2)
    table["load_1min_after"] = round(os.getloadavg()[0], 2)
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """The command line: measure the backends, print the table, write it with the command to --out."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="folder for embedding.csv (default: print only)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the texts (default 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated (default {','.join(BACKENDS)})")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if REFERENCE not in backends:
        parser.error(f"--backends must include {REFERENCE} (the reference)")
    table = run(backends, rounds=args.rounds, batch_size=args.batch_size)
    for key, value in machine_info().items():
        table[key] = value
    table["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    table["command"] = shlex.join(["python", "-m", "qis_lib.bench.embedding", *argv])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.iloc[:, [0, *range(2, 12)]].round(4).to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "embedding.csv", index=False)
        print(f"wrote {out / 'embedding.csv'}")
    return table


if __name__ == "__main__":
    main()
