"""Latency of a model on this machine: ONNX Runtime (CPU) on an exported file, or eager PyTorch on a module.

Owns the measurement protocol (fixed thread counts, warm-up until both a run count and a time are reached,
timed runs until both a run count and a time are reached, capped by a time limit), the summary statistics,
and the JSON-serialisable ``LatencyResult`` that records them together with the ``Environment`` they came from.
"""

from __future__ import annotations

import json
import math
import os
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from export.environment import Environment, current_environment
from export.onnx import load_onnx

ONNX_RUNTIME = "onnxruntime-cpu"
TORCH_RUNTIME = "torch-eager"
_NS_PER_MS = 1e6
_ORT_DTYPES: Mapping[str, type[np.generic]] = types.MappingProxyType(
    {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
)


@dataclass(frozen=True)
class BenchConfig:
    """The measurement protocol. Warm-up and timed phases each run until both their count and time are met,
    or until ``max_seconds`` has passed in that phase."""

    threads: int = 1
    warmup_runs: int = 10
    warmup_min_seconds: float = 0.5
    runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    batch_size: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("threads", "runs", "batch_size"):
            _require(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        _require(self.warmup_runs >= 0, "warmup_runs", self.warmup_runs, ">= 0")
        for name in ("warmup_min_seconds", "min_seconds"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, name, value, "finite and >= 0")
        _require(self.max_seconds > 0, "max_seconds", self.max_seconds, "> 0")
        _require(
            self.max_seconds >= max(self.min_seconds, self.warmup_min_seconds),
            "max_seconds",
            self.max_seconds,
            f">= min_seconds ({self.min_seconds}) and warmup_min_seconds ({self.warmup_min_seconds})",
        )


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise ValueError(f"BenchConfig.{name} must be {rule}, got {value!r}")


@dataclass(frozen=True)
class LatencyResult:
    """One latency measurement, in milliseconds, with the protocol and machine it was taken with."""

    runtime: str
    model: str
    input_shape: tuple[int, ...]
    threads: int
    n: int
    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    p10_ms: float
    p90_ms: float
    first_run_ms: float
    session_create_ms: float
    environment: Environment
    timestamp: str
    config: BenchConfig

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyResult:
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise ValueError(f"latency result is missing fields {sorted(missing)}")
        values = {name: data[name] for name in names}
        values["input_shape"] = tuple(int(d) for d in data["input_shape"])
        values["environment"] = Environment.from_dict(data["environment"])
        values["config"] = BenchConfig(**data["config"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> LatencyResult:
        return cls.from_dict(json.loads(text))


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, mean, population std, min, p10 and p90 (linear interpolation) of latency samples in ms."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"samples_ms must be a non-empty 1-D sequence, got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise ValueError("samples_ms contains non-finite values")
    p10, median, p90 = np.percentile(samples, [10, 50, 90], method="linear")
    return {
        "median_ms": float(median),
        "mean_ms": float(samples.mean()),
        "std_ms": float(samples.std()),
        "min_ms": float(samples.min()),
        "p10_ms": float(p10),
        "p90_ms": float(p90),
    }


def measure_onnx(path: str | os.PathLike[str], cfg: BenchConfig = BenchConfig()) -> LatencyResult:
    """Time an ONNX file in ONNX Runtime on CPU. Raises ``OnnxLoadError`` for missing or corrupt files."""
    load_onnx(path)  # clear one-line errors before ORT's own, much less readable ones
    start = time.perf_counter_ns()
    session = ort.InferenceSession(str(path), _session_options(cfg.threads), providers=["CPUExecutionProvider"])
    session_create_ms = (time.perf_counter_ns() - start) / _NS_PER_MS
    feed = _random_feed(session, cfg, str(path))
    outputs = [o.name for o in session.get_outputs()]
    first_run_ms, samples = time_runs(lambda: session.run(outputs, feed), cfg)
    shape = next(iter(feed.values())).shape
    return make_result(ONNX_RUNTIME, str(path), shape, samples, first_run_ms, session_create_ms, cfg)


def measure_torch(
    model: nn.Module,
    input_size: tuple[int, int, int],
    cfg: BenchConfig = BenchConfig(),
    label: str = "",
) -> LatencyResult:
    """Time eager PyTorch inference; ``session_create_ms`` is 0 as an eager module needs no loading step.

    Inter-op threads are left alone: torch allows setting them only once per process.
    """
    if len(input_size) != 3 or any(d < 1 for d in input_size):
        raise ValueError(f"input_size must be (channels, height, width) of positive ints, got {input_size!r}")
    x = torch.randn(cfg.batch_size, *input_size, generator=torch.Generator().manual_seed(cfg.seed))
    previous_threads, was_training = torch.get_num_threads(), model.training
    torch.set_num_threads(cfg.threads)
    model.eval()
    try:
        with torch.inference_mode():
            first_run_ms, samples = time_runs(lambda: model(x), cfg)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    name = label or type(model).__name__
    return make_result(TORCH_RUNTIME, name, tuple(x.shape), samples, first_run_ms, 0.0, cfg)


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _random_feed(session: ort.InferenceSession, cfg: BenchConfig, label: str) -> dict[str, np.ndarray]:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{label}: expected one model input, found {[i.name for i in inputs]}")
    (spec,) = inputs
    dtype = _ORT_DTYPES.get(spec.type)
    if dtype is None:
        raise ValueError(f"{label}: input {spec.name!r} has unsupported type {spec.type}")
    shape = _concrete_shape(spec.shape, cfg.batch_size, f"{label}: input {spec.name!r}")
    data = np.random.default_rng(cfg.seed).standard_normal(shape).astype(dtype)
    return {spec.name: data}


def _concrete_shape(shape: Sequence[int | str | None], batch_size: int, label: str) -> tuple[int, ...]:
    """Replace a symbolic leading (batch) dim by ``batch_size``; any other symbolic dim is an error."""
    concrete = []
    for axis, dim in enumerate(shape):
        if isinstance(dim, int) and dim > 0:
            concrete.append(dim)
        elif axis == 0:
            concrete.append(batch_size)
        else:
            raise ValueError(f"{label} has dynamic dim {dim!r} at axis {axis}; only the batch axis may be dynamic")
    return tuple(concrete)


def time_runs(run: Callable[[], object], cfg: BenchConfig) -> tuple[float, list[float]]:
    """Warm up, then time individual runs; returns (first run ms, timed samples ms).

    The one measurement protocol: every runtime's ``measure_*`` (here and in other export modules) calls it.
    """
    first_run_ms = _time_once(run)  # the first run is part of the warm-up
    _repeat(run, cfg.warmup_runs - 1, cfg.warmup_min_seconds, cfg.max_seconds)
    samples = _repeat(run, cfg.runs, cfg.min_seconds, cfg.max_seconds)
    return first_run_ms, samples


def _repeat(run: Callable[[], object], min_runs: int, min_seconds: float, max_seconds: float) -> list[float]:
    """Time runs until both ``min_runs`` and ``min_seconds`` are reached, or ``max_seconds`` has passed."""
    samples: list[float] = []
    start = time.perf_counter_ns()
    min_ns, max_ns = int(min_seconds * 1e9), int(max_seconds * 1e9)
    while len(samples) < min_runs or time.perf_counter_ns() - start < min_ns:
        # Checked after the first run so that a model slower than max_seconds still yields one sample.
        if samples and time.perf_counter_ns() - start >= max_ns:
            break
        samples.append(_time_once(run))
    return samples


def _time_once(run: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - start) / _NS_PER_MS


def make_result(
    runtime: str,
    model: str,
    input_shape: tuple[int, ...],
    samples: Sequence[float],
    first_run_ms: float,
    session_create_ms: float,
    cfg: BenchConfig,
) -> LatencyResult:
    """Summarise ``samples`` into a ``LatencyResult`` stamped with this machine's environment and the time."""
    return LatencyResult(
        runtime=runtime,
        model=model,
        input_shape=tuple(int(d) for d in input_shape),
        threads=cfg.threads,
        n=len(samples),
        **summarize(samples),
        first_run_ms=first_run_ms,
        session_create_ms=session_create_ms,
        environment=current_environment(),
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config=cfg,
    )
