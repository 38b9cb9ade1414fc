"""How the ONNX embedder runs: its options (`OnnxConfig`) and the default (`DEFAULT_CONFIG`).

Plain data, no ONNX Runtime import: qis_lib/embedders/onnx.py applies a configuration,
python -m qis_lib.bench.embedding_limit measures configurations against each other.
"""
from __future__ import annotations

from dataclasses import dataclass

# What ONNX Runtime calls each graph optimization level and execution mode.
OPTIMIZATION_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "layout": "ORT_ENABLE_LAYOUT", "all": "ORT_ENABLE_ALL"}
EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}


def _check_int(option: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{option} must be {'None or ' if allow_none else ''}an int >= 1, got {value!r}")


def _check_choice(option: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(map(repr, choices))}, got {value!r}")


@dataclass(frozen=True)
class OnnxConfig:
    """One way to run the model: the knobs of `OnnxEmbedder`, validated on creation.

    quantize: int8 weights (dynamic quantization) instead of fp32.
    threads: ONNX Runtime's intra-op threads (None: its default, one per core).
    batch_size: texts per session run.
    sort_by_length: order the texts of a call by token count before cutting batches, so
        each batch is padded only to its own longest text; False pads each batch, cut in
        the caller's order, to its longest.
    io_binding: feed the inputs and take the output through `session.io_binding()`, the
        output written straight into an array allocated here, instead of `session.run`.
    optimization: ONNX Runtime's graph optimization level at load time, one of
        OPTIMIZATION_LEVELS (the file is already fused by the BERT optimizer at export).
    execution_mode, inter_op_threads: "parallel" runs independent graph nodes at once on
        inter_op_threads threads; "sequential" (ONNX Runtime's default) one node at a time.
    spinning: ONNX Runtime's intra-op threads spin (busy-wait) for the next piece of work
        instead of sleeping (its default). Spinning saves a wake-up between runs but burns
        the cores meanwhile, which a process doing other work too (a service) pays for.
    """

    quantize: bool
    threads: int | None
    batch_size: int
    sort_by_length: bool
    io_binding: bool
    optimization: str
    execution_mode: str
    inter_op_threads: int | None = None
    spinning: bool = True

    def __post_init__(self):
        for option in ("quantize", "sort_by_length", "io_binding", "spinning"):
            if not isinstance(getattr(self, option), bool):
                raise ValueError(f"{option} must be True or False, got {getattr(self, option)!r}")
        _check_int("threads", self.threads, allow_none=True)
        _check_int("batch_size", self.batch_size)
        _check_int("inter_op_threads", self.inter_op_threads, allow_none=True)
        _check_choice("optimization", self.optimization, tuple(OPTIMIZATION_LEVELS))
        _check_choice("execution_mode", self.execution_mode, tuple(EXECUTION_MODES))
        if self.inter_op_threads is not None and self.execution_mode != "parallel":
            raise ValueError(f"inter_op_threads={self.inter_op_threads!r} needs execution_mode='parallel' "
                             f"(ONNX Runtime uses inter-op threads only then), got {self.execution_mode!r}")

    @property
    def label(self) -> str:
        """A short readable name, e.g. "fp32 threads=2 batch=32 sorted opt=all sequential"."""
        parts = ["int8" if self.quantize else "fp32", f"threads={self.threads or 'auto'}", f"batch={self.batch_size}",
                 "sorted" if self.sort_by_length else "unsorted", *(["io-binding"] if self.io_binding else []),
                 f"opt={self.optimization}", self.execution_mode]
        if self.inter_op_threads is not None:
            parts.append(f"inter-op={self.inter_op_threads}")
        if not self.spinning:
            parts.append("no-spin")
        return " ".join(parts)


# The default: the fastest configuration whose vectors keep cosine >= 0.999 to
# sentence-transformers on every GitBugs text, as python -m qis_lib.bench.embedding_limit
# prints it and records it in results/embedding/limit.json. Until that file holds a run
# alone on the machine, these come from rough probes on the shared 2-core machine, ratios
# measured back to back on GitBugs problem texts (about 65 word pieces each): batches of 8
# beat 16 a little and 32 or more clearly (less padding, smaller activations; on summaries
# alone, about 17 word pieces, too), sorting by length beats cutting batches in the
# caller's order, two threads about double one, IO binding and the optimization level
# (the file is fused at export) stayed within 3% of each other, and int8 falls below
# 0.999. threads=None is ONNX Runtime's one per core: 2 here.
DEFAULT_CONFIG = OnnxConfig(quantize=False, threads=None, batch_size=8, sort_by_length=True, io_binding=False,
                            optimization="all", execution_mode="sequential")
# Options that change per call only, so with_options() can share one session.
RUN_OPTIONS = ("batch_size", "sort_by_length", "io_binding")
