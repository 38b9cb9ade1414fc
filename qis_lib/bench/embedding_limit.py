"""The ONNX embedder's configurations, each measured against what the machine can multiply.

    python -m qis_lib.bench.embedding_limit --out results/embedding/

Every configuration (the product of the option lists given: precision, intra-op threads,
execution mode, batch size, length sorting, IO binding, graph optimization level; see
`OnnxConfig`) embeds the same GitBugs problem texts (`load_gitbugs()` packets' problem
descriptions, the text the router embeds: summary and description up to 512 bytes), a
seeded sample of --texts of them, text cache off, after a warm-up. All texts go to the
embedder in one call, or in calls of --call-size texts (what a service that gathers that
many requests at once hands it: sorting then sees only one call's texts). Configurations
take turns, in a new shuffled order each of --rounds rounds; a row's time is its best
round (the one least disturbed by anything else on the machine).

FLOPs per text (a multiply-add is 2), for a text of n word pieces ([CLS] and [SEP]
counted) through L layers of hidden size d and feed-forward size f (all-MiniLM-L6-v2:
L=6, d=384, f=1536, read from the model's config.json):

    FLOPs(n) = L * (8 n d^2 + 4 n d f + 4 n^2 d)

8 n d^2: the query, key, value and output projections (d x d each); 4 n d f: the two
feed-forward matmuls; 4 n^2 d: attention's scores (Q K^T) and weighted sum (softmax x V)
over all heads. Embedding lookup, layer norms, GELU, softmax and pooling are O(n d) and
left out (under 1%). For MiniLM that is 21.2 MFLOP per token plus 9,216 n^2. It is
counted on each text's own n, so the work spent on padding is not counted: `padding` is
the share of extra tokens the configuration's batches computed.

The machine's limit: a MatMul of the model's feed-forward shapes, (rows, 384) x (384, 1536)
and (rows, 1536) x (1536, 384), run by ONNX Runtime with the same intra-op threads (and,
for int8 rows, quantized by the embedder's own int8 recipe, so int8 operations are
counted), best over --peak-rows, measured before and after the configurations; a row's
`share_of_peak` is its achieved GFLOP/s over the better of the two.

Agreement: cosine of each configuration's vectors to sentence-transformers' on the same
texts (min, mean); `qualifies` is cosine_min >= 0.999. The fastest qualifying
configuration is printed, checked again on every GitBugs text (--full-check), and written
with the rest: limit.csv (one row per configuration) and limit.json (command, machine,
package versions, load averages at start and end, the peaks, the choice).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..embedders.base import model_path
from ..embedders.minilm_torch import SentenceTransformerEmbedder
from ..embedders.onnx import OnnxEmbedder
from ..embedders.onnx_config import DEFAULT_CONFIG, EXECUTION_MODES, OPTIMIZATION_LEVELS, OnnxConfig
from ..infra.datasets import load_gitbugs
from .embedding import machine_info

THRESHOLD = 0.999  # cosine_min a configuration needs to be the default
BATCH_SIZES = (1, 8, 16, 32, 64, 128, 256)
PEAK_ROWS = (512, 2048, 8192)
SESSION_OPTIONS = ("quantize", "threads", "optimization", "execution_mode", "inter_op_threads")
COLUMNS = ("label", "precision", *(f.name for f in dataclasses.fields(OnnxConfig)), "texts", "tokens_mean",
           "padding", "seconds", "texts_per_s", "tokens_per_s", "gflop_per_text", "gflops", "peak_gflops",
           "share_of_peak", "cosine_min", "cosine_mean", "qualifies", "rounds", "call_size")


@dataclasses.dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    ffn: int


def model_shape() -> ModelShape:
    """The transformer's shape, from the bundled weights' config.json."""
    with open(Path(model_path()) / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    return ModelShape(config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"])


def flops_per_text(tokens, shape: ModelShape) -> np.ndarray:
    """FLOPs(n) = L * (8 n d^2 + 4 n d f + 4 n^2 d) for each token count n (see the module doc)."""
    n = np.asarray(tokens, dtype=np.float64)
    d, f = shape.hidden, shape.ffn
    return shape.layers * (8 * n * d * d + 4 * n * d * f + 4 * n * n * d)


def gitbugs_texts(n: int | None = None, seed: int = 0) -> list[str]:
    """The router's texts for the shipped GitBugs reports; a seeded sample of n (None: all)."""
    texts = [p.problem_description for p in load_gitbugs().packets]
    if n is None or n >= len(texts):
        return texts
    return [texts[i] for i in sorted(np.random.default_rng(seed).choice(len(texts), n, replace=False))]


def grid(precisions: Sequence[str] = ("fp32", "int8"), threads: Sequence[int | None] = (1, 2),
         batch_sizes: Sequence[int] = BATCH_SIZES, sort: Sequence[bool] = (True, False),
         io_binding: Sequence[bool] = (False, True), optimizations: Sequence[str] = ("basic", "extended", "all"),
         execution_modes: Sequence[str] = ("sequential",)) -> list[OnnxConfig]:
    """Every combination of the options, validated; one text a batch is the same sorted or not, so it comes once."""
    for precision in precisions:
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be 'fp32' or 'int8', got {precision!r}")
    configs = []
    for p, t, mode, opt, b, s, iob in itertools.product(precisions, threads, execution_modes, optimizations,
                                                        batch_sizes, sort, io_binding):
        config = OnnxConfig(quantize=p == "int8", threads=t, batch_size=b, sort_by_length=s or b == 1,
                            io_binding=iob, optimization=opt, execution_mode=mode, inter_op_threads=None)
        if config not in configs:
            configs.append(config)
    return configs


def _matmul_model(path: Path, k: int, n: int, quantize: bool) -> Path:
    """An ONNX file computing X (rows, k) @ W (k, n), W a constant like the model's weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ..embedders.onnx import quantize_int8

    weight = (np.random.default_rng(0).standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", n])],
        [numpy_helper.from_array(weight, "w")])
    fp32 = path.with_suffix(".fp32.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    if not quantize:
        return fp32
    quantize_int8(fp32, path)
    return path


def matmul_peak(threads: int | None, quantize: bool = False, rows: Sequence[int] = PEAK_ROWS,
                shape: ModelShape | None = None, min_seconds: float = 0.3) -> dict:
    """The best GFLOP/s ONNX Runtime reaches on the model's feed-forward MatMuls, with
    `threads` intra-op threads pinned as the embedder pins them; over `rows` and both shapes."""
    import onnxruntime as ort

    shape = shape or model_shape()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    best = {"gflops": 0.0}
    with tempfile.TemporaryDirectory(prefix="qis-peak-") as tmp:
        for k, n in ((shape.hidden, shape.ffn), (shape.ffn, shape.hidden)):
            session = ort.InferenceSession(str(_matmul_model(Path(tmp) / f"mm{k}x{n}.onnx", k, n, quantize)),
                                           options, providers=["CPUExecutionProvider"])
            for m in rows:
                x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
                session.run(None, {"x": x})  # warm-up
                times = []
                for _ in range(3):
                    calls, start = 0, time.perf_counter()
                    while (elapsed := time.perf_counter() - start) < min_seconds or calls == 0:
                        session.run(None, {"x": x})
                        calls += 1
                    times.append(elapsed / calls)
                gflops = 2 * m * k * n / min(times) / 1e9
                if gflops > best["gflops"]:
                    best = {"gflops": gflops, "rows": m, "k": k, "n": n}
    return {"threads": threads, "precision": "int8" if quantize else "fp32", **best}


def _embedders(configs: Sequence[OnnxConfig]) -> dict[OnnxConfig, OnnxEmbedder]:
    """One embedder per configuration, one session per distinct set of session options."""
    sessions: dict[tuple, OnnxEmbedder] = {}
    out = {}
    for config in configs:
        key = tuple(getattr(config, o) for o in SESSION_OPTIONS)
        if key not in sessions:
            sessions[key] = OnnxEmbedder(**{o: getattr(config, o) for o in SESSION_OPTIONS}, cache_size=0)
        out[config] = sessions[key].with_options(
            batch_size=config.batch_size, sort_by_length=config.sort_by_length, io_binding=config.io_binding)
    return out


def measure(configs: Sequence[OnnxConfig], texts: Sequence[str], reference: np.ndarray, rounds: int = 2,
            seed: int = 0, call_size: int | None = None) -> pd.DataFrame:
    """One row per configuration (COLUMNS): speed, FLOPs and cosine to `reference` (one
    vector per text); peak_gflops and share_of_peak are left NaN (run() fills them).

    call_size: texts per encode() call, cut in the given order (what a service that
    gathers that many requests hands the embedder); None: all texts in one call, so
    sorting sees all of them."""
    texts = list(texts)
    if not texts or not configs or rounds < 1 or (call_size is not None and call_size < 1):
        raise ValueError(f"need texts, configurations, rounds >= 1 and call_size None or >= 1, got {len(texts)} "
                         f"texts, {len(configs)} configurations, rounds={rounds!r}, call_size={call_size!r}")
    if len(reference) != len(texts):
        raise ValueError(f"reference has {len(reference)} vectors for {len(texts)} texts")
    step = call_size or len(texts)
    calls = [slice(start, start + step) for start in range(0, len(texts), step)]
    embedders = _embedders(configs)
    shape = model_shape()
    tokens = [len(ids) for ids in next(iter(embedders.values())).token_ids(texts)]
    flops = flops_per_text(tokens, shape)
    for embedder in embedders.values():  # warm-up: first runs allocate buffers and pack weights
        embedder.encode(texts[:8])
    seconds = {config: [] for config in configs}
    vectors = {}
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for i in rng.permutation(len(configs)):
            config = configs[i]
            embed = embedders[config].encode
            start = time.perf_counter()
            vectors[config] = np.concatenate([embed(texts[call]) for call in calls])
            seconds[config].append(time.perf_counter() - start)
    rows = []
    for config in configs:
        embedder, best = embedders[config], min(seconds[config])
        computed = sum(len(batch) * max(tokens[call][r] for r in batch)
                       for call in calls for batch in embedder.batches(tokens[call]))
        cosine = np.sum(vectors[config] * reference, axis=1)
        precision = "int8" if config.quantize else "fp32"
        gflops = flops.sum() / best / 1e9
        rows.append({"label": config.label, "precision": precision, **dataclasses.asdict(config),
                     "texts": len(texts), "tokens_mean": float(np.mean(tokens)),
                     "padding": computed / sum(tokens) - 1, "seconds": best, "texts_per_s": len(texts) / best,
                     "tokens_per_s": sum(tokens) / best, "gflop_per_text": float(flops.mean()) / 1e9,
                     "gflops": gflops, "peak_gflops": np.nan, "share_of_peak": np.nan,
                     "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
                     "qualifies": bool(cosine.min() >= THRESHOLD), "rounds": rounds,
                     "call_size": call_size or len(texts)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def same_config(a: OnnxConfig, b: OnnxConfig) -> bool:
    """Equal, taking threads=None as what ONNX Runtime makes of it here (one per core)."""
    def resolved(c: OnnxConfig) -> OnnxConfig:
        return dataclasses.replace(c, threads=c.threads or os.cpu_count())
    return resolved(a) == resolved(b)


def full_check(config: OnnxConfig, texts: Sequence[str], reference: SentenceTransformerEmbedder) -> dict:
    """Cosine of `config`'s vectors to `reference`'s (sentence-transformers) on every one of `texts`."""
    embedder = OnnxEmbedder(**dataclasses.asdict(config), cache_size=0)
    cosine = np.sum(embedder.encode(texts) * reference.encode(texts), axis=1)
    return {"texts": len(texts), "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
            "qualifies": bool(cosine.min() >= THRESHOLD)}


def choose(table: pd.DataFrame, configs: Sequence[OnnxConfig],
           reference: SentenceTransformerEmbedder | None = None) -> dict | None:
    """The fastest configuration that qualifies on the sample and, given `reference`, on
    every GitBugs text too (the next fastest is tried when the full check fails); or None."""
    by_label = {c.label: c for c in configs}
    ok = table[table["qualifies"]].sort_values("texts_per_s", ascending=False)
    everything = gitbugs_texts() if reference is not None else None
    for _, row in ok.iterrows():
        config = by_label[row["label"]]
        check = full_check(config, everything, reference) if reference is not None else None
        if check is None or check["qualifies"]:
            return {"config": dataclasses.asdict(config), "label": config.label,
                    "texts_per_s": float(row["texts_per_s"]), "cosine_min_sample": float(row["cosine_min"]),
                    "all_texts": check, "is_the_default": same_config(config, DEFAULT_CONFIG)}
    return None


def peaks_for(configs: Sequence[OnnxConfig], rows: Sequence[int] = PEAK_ROWS) -> list[dict]:
    """matmul_peak for each (threads, precision) the configurations use."""
    keys = dict.fromkeys((c.threads, c.quantize) for c in configs)
    return [matmul_peak(threads, quantize, rows) for threads, quantize in keys]


def run(configs: Sequence[OnnxConfig], texts: int | None = 512, rounds: int = 2, seed: int = 0,
        peak_rows: Sequence[int] = PEAK_ROWS, check_all: bool = True,
        call_size: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Measure `configs` on a sample of GitBugs texts: (the table, what limit.json records)."""
    load_start = os.getloadavg()
    started = time.perf_counter()
    sample = gitbugs_texts(texts, seed)
    reference = SentenceTransformerEmbedder(cache_size=0)
    before = peaks_for(configs, peak_rows)
    table = measure(configs, sample, reference.encode(sample), rounds=rounds, seed=seed, call_size=call_size)
    after = peaks_for(configs, peak_rows)
    peak = {(b["threads"], b["precision"]): max(b["gflops"], a["gflops"]) for b, a in zip(before, after)}
    table["peak_gflops"] = [peak[(t, p)] for t, p in zip(table["threads"], table["precision"])]
    table["share_of_peak"] = table["gflops"] / table["peak_gflops"]
    choice = choose(table, configs, reference if check_all else None)
    record = {
        "texts": len(sample), "seed": seed, "rounds": rounds, "call_size": call_size, "threshold": THRESHOLD,
        "model_shape": dataclasses.asdict(model_shape()),
        "flops_per_text": "L * (8 n d^2 + 4 n d f + 4 n^2 d), n = the text's word pieces",
        "peaks_before": before, "peaks_after": after, "fastest_qualifying": choice,
        "default_config": dataclasses.asdict(DEFAULT_CONFIG), "configurations": len(configs),
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    return table, record


def _list(kind, choices=None):
    """An argparse type: comma-separated values of `kind`, each checked against `choices`."""
    def parse(text: str) -> list:
        values = [part.strip() for part in text.split(",") if part.strip()]
        try:
            out = [kind(v) for v in values]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
        wrong = [v for v in out if choices is not None and v not in choices]
        if not out or wrong:
            raise argparse.ArgumentTypeError(f"got {text!r}; choose from {', '.join(map(str, choices))}"
                                             if choices else f"expected at least one value, got {text!r}")
        return list(dict.fromkeys(out))
    return parse


def print_choice(table: pd.DataFrame, choice: dict | None) -> None:
    """The fastest qualifying configuration, the five next to it, and the line to set as the default."""
    if choice is None:
        print(f"no configuration reached cosine_min >= {THRESHOLD}")
        return
    print(f"fastest with cosine_min >= {THRESHOLD}: {choice['label']} ({choice['texts_per_s']:.1f} texts/s)")
    if choice["all_texts"] is not None:
        print(f"  on all {choice['all_texts']['texts']} texts: cosine min {choice['all_texts']['cosine_min']:.5f}")
    ok = table[table["qualifies"]].sort_values("texts_per_s", ascending=False)
    for _, row in ok.iloc[1:6].iterrows():
        print(f"  next: {row['label']}, {row['texts_per_s']:.1f} texts/s ({row['texts_per_s'] / choice['texts_per_s']:.0%})")
    same = "the current default" if choice["is_the_default"] else "not the current default"
    print(f"  DEFAULT_CONFIG = {OnnxConfig(**choice['config'])!r}  ({same}; threads=None is one per core)")


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """The command line: measure the grid, print it and the fastest qualifying configuration, write --out."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="folder for limit.csv and limit.json (default: print only)")
    parser.add_argument("--texts", type=int, default=512, help="GitBugs texts sampled (0: all 2,503; default 512)")
    parser.add_argument("--rounds", type=int, default=2, help="turns over the configurations (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--call-size", type=int, default=None,
                        help="texts per encode() call, as a service gathering that many requests would (default: all)")
    parser.add_argument("--precision", type=_list(str, ("fp32", "int8")), default=["fp32", "int8"])
    parser.add_argument("--threads", type=_list(int), default=[1, 2], help="intra-op threads (default 1,2)")
    parser.add_argument("--batch-sizes", type=_list(int), default=list(BATCH_SIZES))
    parser.add_argument("--sort", type=_list(str, ("on", "off")), default=["on", "off"], help="length sorting")
    parser.add_argument("--io-binding", type=_list(str, ("on", "off")), default=["off", "on"])
    parser.add_argument("--optimization", type=_list(str, tuple(OPTIMIZATION_LEVELS)),
                        default=["basic", "extended", "all"])
    parser.add_argument("--execution-mode", type=_list(str, tuple(EXECUTION_MODES)), default=["sequential"])
    parser.add_argument("--peak-rows", type=_list(int), default=list(PEAK_ROWS), help="MatMul rows for the peak")
    parser.add_argument("--no-full-check", action="store_true", help="skip the choice's check on every text")
    args = parser.parse_args(argv)
    for option, least in (("texts", 0), ("rounds", 1), ("call_size", 1)):
        if getattr(args, option) is not None and getattr(args, option) < least:
            parser.error(f"--{option.replace('_', '-')} must be >= {least}, got {getattr(args, option)}")
    try:
        configs = grid(args.precision, args.threads, args.batch_sizes, [v == "on" for v in args.sort],
                       [v == "on" for v in args.io_binding], args.optimization, args.execution_mode)
    except ValueError as exc:
        parser.error(str(exc))
    table, record = run(configs, texts=args.texts or None, rounds=args.rounds, seed=args.seed,
                        peak_rows=args.peak_rows, check_all=not args.no_full_check, call_size=args.call_size)
    record = {"command": shlex.join(["python", "-m", "qis_lib.bench.embedding_limit", *argv]),
              "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": machine_info(), **record}
    shown = ["label", "texts_per_s", "tokens_per_s", "padding", "gflops", "share_of_peak", "cosine_min"]
    with pd.option_context("display.width", 200, "display.max_rows", None):
        print(table.sort_values("texts_per_s", ascending=False)[shown].round(4).to_string(index=False))
    print("peaks (GFLOP/s):", {f"{p['precision']} threads={p['threads']}": round(p["gflops"], 1)
                               for p in record["peaks_before"]})
    print_choice(table, record["fastest_qualifying"])
    print(f"load average {record['load_average_start']} at the start, {record['load_average_end']} at the end")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "limit.csv", index=False)
        (out / "limit.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out / 'limit.csv'} and {out / 'limit.json'}")
    return table, record


if __name__ == "__main__":
    main()
