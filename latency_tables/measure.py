"""Latency of a model on this machine: ONNX Runtime (CPU) on an exported file, or eager PyTorch on a module.

Owns the measurement protocol (fixed thread counts and optional CPU pinning, a cool-down before each model,
warm-up until both a run count and a time are reached, timed runs until both a run count and a time are reached
and the median has stopped moving, capped by a time limit and a run limit), the summary statistics, and the
JSON-serialisable ``LatencyResult`` that records them together with the ``Environment`` they came from.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from common.errors import InputError
from common.environment import Environment, current_environment

if TYPE_CHECKING:  # ONNX Runtime and onnx load when an ONNX file is timed, not in an ExecuTorch measuring process
    import onnxruntime as ort

ONNX_RUNTIME = "onnxruntime-cpu"
TORCH_RUNTIME = "torch-eager"
_NS_PER_MS = 1e6
# The stability rule compares the median of all samples with the median without the newest STABLE_TAIL share.
STABLE_TAIL = 0.2
# Fewer samples than this cannot show whether a median has settled.
STABLE_MIN_SAMPLES = 5
# The rule is re-evaluated once the sample count has grown by this share (sorting every run would cost O(n^2)).
_STABLE_CHECK_GROWTH = 0.05
_ORT_DTYPES: Mapping[str, type[np.generic]] = types.MappingProxyType(
    {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
)


# A process that times an ExecuTorch program (measure_pte's child, the agent's) runs torch's OpenMP pool with one
# thread: with more, pinned to one CPU (BenchConfig.cpus), the other OpenMP thread shared that CPU with the timed
# program and each run waited out 4 ms scheduler slices (a 0.19 ms conv measured 4-12 ms; half the entries of an
# XNNPACK table built so were such multiples of 4 ms). XNNPACK's own pool is sized from BenchConfig.threads.
CHILD_THREAD_ENV = {"OMP_NUM_THREADS": "1"}


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a measuring subprocess: this one's, with the project's root first on ``PYTHONPATH`` (so
    the child imports this checkout, installed or not) and ``extra`` on top."""
    package_root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
            **(extra or {})}


@dataclass(frozen=True)
class BenchConfig:
    """The measurement protocol.

    Warm-up and timed phases each run until both their count and time are met, or until ``max_seconds`` has
    passed in that phase. The timed phase then goes on until the median is stable: the median of all samples
    and the median without the newest 20 % differ by at most ``stable_rel_tol`` (relative; 0 or None switches
    the rule off), again capped by ``max_seconds`` and, when set, ``max_runs`` timed samples. ``cpus`` pins the
    measuring process to those CPUs for the measurement (restored afterwards); ``cooldown_seconds`` is slept
    before each model is measured, so that one model's heat does not slow down the next. ``sessions`` (ONNX
    Runtime) repeats the whole protocol in that many fresh sessions and summarises all their samples: on a
    shared machine the fastest a model runs differs by up to 20-30 % from one fresh session to the next
    (measured here: bench/lut_statistic.py), and the minimum over a few sessions is stable.
    """

    threads: int = 1
    warmup_runs: int = 10
    warmup_min_seconds: float = 0.5
    runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    batch_size: int = 1
    seed: int = 0
    stable_rel_tol: float | None = 0.01
    max_runs: int | None = None
    cpus: tuple[int, ...] | None = None
    cooldown_seconds: float = 0.0
    sessions: int = 1

    def __post_init__(self) -> None:
        for name in ("threads", "runs", "batch_size", "sessions"):
            _require(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        _require(_is_int(self.warmup_runs) and self.warmup_runs >= 0, "warmup_runs", self.warmup_runs, ">= 0")
        for name in ("warmup_min_seconds", "min_seconds", "cooldown_seconds"):
            value = getattr(self, name)
            _require(_is_real(value) and math.isfinite(value) and value >= 0, name, value, "finite and >= 0")
        _require(_is_real(self.max_seconds) and self.max_seconds > 0, "max_seconds", self.max_seconds, "> 0")
        _require(
            self.max_seconds >= max(self.min_seconds, self.warmup_min_seconds),
            "max_seconds",
            self.max_seconds,
            f">= min_seconds ({self.min_seconds}) and warmup_min_seconds ({self.warmup_min_seconds})",
        )
        tol = self.stable_rel_tol
        _require(tol is None or (_is_real(tol) and math.isfinite(tol) and 0 <= tol < 1), "stable_rel_tol", tol,
                 "None or in [0, 1)")
        _require(self.max_runs is None or (_is_int(self.max_runs) and self.max_runs >= self.runs), "max_runs",
                 self.max_runs, f"None or an int >= runs ({self.runs})")
        if self.cpus is not None:
            # JSON round trips turn the tuple into a list; normalise so that configs compare and hash equal.
            cpus = self.cpus
            ok = isinstance(cpus, (tuple, list)) and len(cpus) > 0 and all(_is_int(c) and c >= 0 for c in cpus)
            _require(ok and len(set(cpus)) == len(cpus), "cpus", cpus, "None or a non-empty tuple of distinct CPU ids >= 0")
            object.__setattr__(self, "cpus", tuple(int(c) for c in cpus))

    @property
    def checks_stability(self) -> bool:
        """Whether the timed phase waits for a stable median."""
        return bool(self.stable_rel_tol)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchConfig:
        """Read a config written by ``asdict`` (any version: absent fields take their defaults); unknown keys are
        an error naming them."""
        if not isinstance(data, Mapping):
            raise InputError(f"BenchConfig must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InputError(f"BenchConfig has no fields {sorted(unknown)}")
        return cls(**dict(data))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise InputError(f"BenchConfig.{name} must be {rule}, got {value!r}")


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
    # Whether the timed samples met the stability rule of ``config`` (always True when the rule is off).
    # Records written before the rule existed lack the field and read as True.
    stable: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyResult:
        names = {f.name for f in fields(cls)}
        optional = {f.name for f in fields(cls) if f.default is not MISSING}
        missing = names - set(data) - optional
        if missing:
            raise InputError(f"latency result is missing fields {sorted(missing)}")
        values = {name: data[name] for name in names if name in data}
        values["input_shape"] = tuple(int(d) for d in data["input_shape"])
        values["environment"] = Environment.from_dict(data["environment"])
        values["config"] = BenchConfig.from_dict(data["config"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> LatencyResult:
        return cls.from_dict(json.loads(text))


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, mean, population std, min, p10 and p90 (linear interpolation) of latency samples in ms."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.ndim != 1 or samples.size == 0:
        raise InputError(f"samples_ms must be a non-empty 1-D sequence, got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise InputError("samples_ms contains non-finite values")
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
    """Time an ONNX file in ONNX Runtime on CPU, in ``cfg.sessions`` fresh sessions one after another.

    First-run and session-creation times are the first session's; the statistics cover every session's timed
    samples. Raises ``OnnxLoadError`` for missing or corrupt files.
    """
    from export.onnx import load_onnx

    load_onnx(path)  # clear one-line errors before ORT's own, much less readable ones
    samples: list[float] = []
    first_run_ms = session_create_ms = 0.0
    for i in range(cfg.sessions):
        created_ms, first_ms, shape, timed = _measure_onnx_session(path, cfg)
        if i == 0:
            first_run_ms, session_create_ms = first_ms, created_ms
        samples += timed
    return make_result(ONNX_RUNTIME, str(path), shape, samples, first_run_ms, session_create_ms, cfg)


def _measure_onnx_session(path: str | os.PathLike[str],
                          cfg: BenchConfig) -> tuple[float, float, tuple[int, ...], list[float]]:
    """(session create ms, first run ms, input shape, timed samples) of one fresh session."""
    import onnxruntime as ort

    # Pinned already while the session is created: ORT's pool threads start then and inherit the affinity.
    with pinned_cpus(cfg.cpus):
        start = time.perf_counter_ns()
        session = ort.InferenceSession(str(path), _session_options(cfg.threads), providers=["CPUExecutionProvider"])
        session_create_ms = (time.perf_counter_ns() - start) / _NS_PER_MS
        feed = _random_feed(session, cfg, str(path))
        outputs = [o.name for o in session.get_outputs()]
        first_run_ms, samples = time_runs(lambda: session.run(outputs, feed), cfg)
    return session_create_ms, first_run_ms, next(iter(feed.values())).shape, samples


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
        raise InputError(f"input_size must be (channels, height, width) of positive ints, got {input_size!r}")
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
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _random_feed(session: ort.InferenceSession, cfg: BenchConfig, label: str) -> dict[str, np.ndarray]:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise InputError(f"{label}: expected one model input, found {[i.name for i in inputs]}")
    (spec,) = inputs
    dtype = _ORT_DTYPES.get(spec.type)
    if dtype is None:
        raise InputError(f"{label}: input {spec.name!r} has unsupported type {spec.type}")
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
            raise InputError(f"{label} has dynamic dim {dim!r} at axis {axis}; only the batch axis may be dynamic")
    return tuple(concrete)


def time_runs(
    run: Callable[[], object],
    cfg: BenchConfig,
    *,
    clock: Callable[[], int] = time.perf_counter_ns,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[float, list[float]]:
    """Cool down, warm up, then time individual runs; returns (first run ms, timed samples ms).

    The one measurement protocol: every runtime's ``measure_*`` (here and in other export modules) calls it.
    The process is pinned to ``cfg.cpus`` (when set) from the warm-up to the last timed run. ``clock`` (ns) and
    ``sleep`` (s) are the time sources; tests replace them to drive the stop rules exactly.
    """
    if cfg.cooldown_seconds > 0:
        sleep(cfg.cooldown_seconds)
    with pinned_cpus(cfg.cpus):
        first_run_ms = _time_once(run, clock)  # the first run is part of the warm-up
        _repeat(run, cfg.warmup_runs - 1, cfg.warmup_min_seconds, cfg.max_seconds, clock)
        samples = _repeat(run, cfg.runs, cfg.min_seconds, cfg.max_seconds, clock, cfg)
    return first_run_ms, samples


def _repeat(
    run: Callable[[], object],
    min_runs: int,
    min_seconds: float,
    max_seconds: float,
    clock: Callable[[], int],
    stability: BenchConfig | None = None,
) -> list[float]:
    """Time runs until both ``min_runs`` and ``min_seconds`` are reached (and, with ``stability``, its median is
    stable), or ``max_seconds`` has passed, or ``stability.max_runs`` samples were taken."""
    samples: list[float] = []
    start = clock()
    min_ns, max_ns = int(min_seconds * 1e9), int(max_seconds * 1e9)
    max_runs = stability.max_runs if stability is not None and stability.max_runs is not None else math.inf
    next_check = 0
    while len(samples) < max_runs:
        # Checked after the first run so that a model slower than max_seconds still yields one sample.
        elapsed = clock() - start
        if samples and elapsed >= max_ns:
            break
        if len(samples) >= min_runs and elapsed >= min_ns:
            if stability is None or not stability.checks_stability:
                break
            if len(samples) >= next_check:
                if is_stable(samples, stability.stable_rel_tol):
                    break
                next_check = len(samples) + max(1, int(len(samples) * _STABLE_CHECK_GROWTH))
        samples.append(_time_once(run, clock))
    return samples


def is_stable(samples_ms: Sequence[float], rel_tol: float | None) -> bool:
    """The stop rule: the median of all samples and the median without the newest 20 % differ by at most
    ``rel_tol`` of the former. Always True when ``rel_tol`` is 0 or None; False for fewer than
    ``STABLE_MIN_SAMPLES`` samples."""
    if not rel_tol:
        return True
    n = len(samples_ms)
    if n < STABLE_MIN_SAMPLES:
        return False
    kept = n - max(1, round(STABLE_TAIL * n))
    full = float(np.median(samples_ms))
    head = float(np.median(samples_ms[:kept]))
    return abs(full - head) <= rel_tol * abs(full)


@contextlib.contextmanager
def pinned_cpus(cpus: Sequence[int] | None) -> Iterator[None]:
    """Pin every thread of this process to ``cpus`` inside the block, then restore each thread's own affinity.

    All existing threads are pinned (a runtime's pool threads already exist when timing starts); threads started
    inside the block inherit the affinity of the thread that starts them. ``None`` leaves affinity alone.
    Raises ``ValueError`` naming the CPUs this process cannot use, and on platforms without affinity control.
    """
    if cpus is None:
        yield
        return
    if not hasattr(os, "sched_setaffinity"):
        raise InputError(f"BenchConfig.cpus {tuple(cpus)} cannot be applied: this platform has no CPU affinity control")
    wanted = set(cpus)
    allowed = os.sched_getaffinity(0)
    absent = sorted(wanted - allowed)
    if absent:
        raise InputError(f"BenchConfig.cpus {tuple(cpus)}: CPUs {absent} do not exist on this machine or are not "
                         f"available to this process (available: {sorted(allowed)})")
    previous = {tid: _get_affinity(tid) for tid in _thread_ids()}
    for tid in previous:
        _set_affinity(tid, wanted)
    try:
        yield
    finally:
        for tid, mask in previous.items():
            if mask is not None:
                _set_affinity(tid, mask)


def _thread_ids() -> list[int]:
    # On Linux every thread has its own mask; /proc lists them. Elsewhere pid 0 (this thread) is all we can reach.
    try:
        return sorted(int(name) for name in os.listdir("/proc/self/task"))
    except OSError:
        return [0]


def _get_affinity(tid: int) -> set[int] | None:
    try:
        return os.sched_getaffinity(tid)
    except (ProcessLookupError, PermissionError):  # the thread ended meanwhile
        return None


def _set_affinity(tid: int, mask: set[int]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.sched_setaffinity(tid, mask)


def _time_once(run: Callable[[], object], clock: Callable[[], int] = time.perf_counter_ns) -> float:
    start = clock()
    run()
    return (clock() - start) / _NS_PER_MS


def make_result(
    runtime: str,
    model: str,
    input_shape: tuple[int, ...],
    samples: Sequence[float],
    first_run_ms: float,
    session_create_ms: float,
    cfg: BenchConfig,
) -> LatencyResult:
    """Summarise ``samples`` into a ``LatencyResult`` stamped with this machine's environment and the time.

    ``stable`` is recomputed from the samples with ``cfg``'s rule, so runtimes that time in another process
    need not pass it along.
    """
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
        stable=is_stable(list(samples), cfg.stable_rel_tol),
    )
