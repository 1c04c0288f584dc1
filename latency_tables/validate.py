"""Is the predictor right? Predicted against measured end-to-end latency of random architectures of a space.

Owns the validation protocol and its metrics. Architectures are drawn from the space with their own seed
(distinct from the builder's calibration seed, so the overhead is never validated on the networks it was
fitted on), each is predicted from the device's tables and measured whole on the device with the same
protocol the table entries were measured with, and the pairs are scored as nn-Meter scores its predictors:
the share within ±10 % and ±5 %, Spearman's ρ (does the predictor rank architectures right, which is what
a search needs) and the mean absolute percentage error. :func:`scatter_plot` draws predicted against
measured for several spaces in one figure.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from common.errors import InputError
from common.files import save_figure
from latency_tables.choose import hardware_differences

VALIDATION_SEED = 1000  # builders calibrate on seed 0.. draws; validation never shares them
# What makes two machines different hardware (a table measured on one says nothing about latency on the other).
# What makes the same machine run different code (the comparison still means something, but say so).
_SOFTWARE_FIELDS = ("os", "onnxruntime", "executorch", "torch", "onnx", "python", "numpy")


class MachineMismatchError(InputError):
    """A table is being validated against measurements on other hardware than it was measured on."""


def check_same_machine(table: Any, info: Any) -> None:
    """Refuse to validate ``table`` with measurements from ``info`` (a ``DeviceInfo``) of other hardware.

    Validation compares a table with fresh measurements, so both must come from the same hardware: the CPU
    (name, and family/model where the OS gives them), core count and architecture. Software differences (OS
    build, runtime versions) only warn. Imported tables (no environment) cannot be validated here at all.
    """
    import warnings

    if table.environment is None:
        raise MachineMismatchError(f"table {table.device}/{table.space} ({table.source}) records no machine, so it "
                                   f"cannot be validated against measurements on {info.name}")
    now = info.environment.to_dict()
    then = dict(table.environment)
    differ = hardware_differences(then, now)
    if differ:
        raise MachineMismatchError(f"table {table.device}/{table.space} was measured on other hardware than "
                                   f"device {info.name} ({'; '.join(differ)}); build this machine's table "
                                   f"with `mzoo lut build --space {table.space}`")
    changed = [f"{k} {then.get(k)!r} -> {now.get(k)!r}" for k in _SOFTWARE_FIELDS if then.get(k) != now.get(k)]
    if changed:
        warnings.warn(f"table {table.device}/{table.space} was measured with other software than now "
                      f"({'; '.join(changed)}); the validation includes that change", stacklevel=2)


@dataclass(frozen=True)
class ValidationPoint:
    """One architecture: its encoding, predicted and measured latency (ms, in the tables' statistic)."""

    arch: Any
    predicted_ms: float
    measured_ms: float
    n_ops: int
    interpolated: int  # how many of its ops were interpolated rather than looked up
    ops_ms: float | None = None  # the sum of its ops' entries, before the overhead (absent in older results)

    @property
    def rel_error(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms


@dataclass(frozen=True)
class ValidationResult:
    """Metrics of one space on one device, with every point kept for plots."""

    space: str
    device: str
    points: tuple[ValidationPoint, ...]
    statistic: str = "min_ms"

    @property
    def n(self) -> int:
        return len(self.points)

    def metrics(self) -> dict[str, float]:
        return prediction_metrics([p.predicted_ms for p in self.points], [p.measured_ms for p in self.points])

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "device": self.device, "statistic": self.statistic, "metrics": self.metrics(),
                "points": [asdict(p) for p in self.points]}


def prediction_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Share within ±10 % / ±5 % of measured, Spearman ρ, mean absolute % error (and the mean signed bias)."""
    pred, meas = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if pred.shape != meas.shape or pred.ndim != 1 or pred.size < 2:
        raise InputError(f"need two equal-length series of >= 2 latencies, got {pred.shape} and {meas.shape}")
    if not (np.all(np.isfinite(pred)) and np.all(meas > 0)):
        raise InputError("latencies must be finite and measured latencies positive")
    rel = (pred - meas) / meas
    return {
        "within_10": float(np.mean(np.abs(rel) <= 0.10)),
        "within_5": float(np.mean(np.abs(rel) <= 0.05)),
        "spearman": spearman(pred, meas),
        "mape": float(np.mean(np.abs(rel))),
        "bias": float(np.mean(rel)),
    }


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either series is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # ties share their average rank
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def sample_archs(space: Any, n: int, seed: int = VALIDATION_SEED) -> list[Any]:
    """``n`` distinct random architectures of ``space`` (fewer only if the space has fewer)."""
    if n < 2:
        raise InputError(f"validation needs at least 2 architectures, got n={n}")
    from zoo.spaces import sample_distinct

    return sample_distinct(space, random.Random(seed), n, tries_per_arch=50)


def validate(space: Any, device: Any, predictor: Any, cfg: Any, *, n_archs: int = 100,
             seed: int = VALIDATION_SEED, interpolate: bool = False, progress: bool = True,
             on_point: Callable[[ValidationPoint], None] | None = None) -> ValidationResult:
    """Predict and measure ``n_archs`` random architectures of ``space`` on ``device``.

    ``predictor`` is a :class:`latency_tables.predict.Predictor` over the device's tables and ``cfg`` the
    :class:`latency_tables.measure.BenchConfig` to measure with (use the tables' own protocol). Each network is
    compared on the statistic the tables sum (``predictor.statistic``, e.g. the minimum over timed runs).
    """
    from zoo import build_model, iter_ops

    points = []
    bar = tqdm(sample_archs(space, n_archs, seed), desc=f"validate {space.name}", unit="arch",
               file=sys.stderr, disable=not progress)
    for arch in bar:
        spec, input_size = space.to_spec(arch)
        prediction = predictor.predict(spec, input_size, interpolate=interpolate, space=space.name)
        model = build_model(spec).eval()
        measured = device.measure(model, (1, *input_size), cfg, label=f"{space.name}:{_arch_label(arch)}")
        point = ValidationPoint(arch=_jsonable(arch), predicted_ms=float(prediction.total_ms),
                                measured_ms=float(getattr(measured, predictor.statistic)),
                                n_ops=sum(1 for _ in iter_ops(spec, input_size)),
                                interpolated=len(prediction.interpolated_keys), ops_ms=float(prediction.ops_ms))
        points.append(point)
        bar.set_postfix_str(f"err {point.rel_error:+.1%}")
        if on_point is not None:
            on_point(point)
    return ValidationResult(space=space.name, device=getattr(device, "name", str(device)), points=tuple(points),
                            statistic=predictor.statistic)


def _jsonable(arch: Any) -> Any:
    return json.loads(json.dumps(arch))


def _arch_label(arch: Any) -> str:
    text = json.dumps(arch, separators=(",", ":"))
    return text if len(text) <= 60 else text[:57] + "..."


def scatter_plot(results: Sequence[ValidationResult], path: str | Path, title: str = "") -> Path:
    """Predicted vs measured (log-log), one colour per space, with the y = x line and the ±10 % band; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise InputError("scatter_plot needs at least one validation result")
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.5, 6), dpi=120)
    lo = min(min(p.measured_ms, p.predicted_ms) for r in results for p in r.points)
    hi = max(max(p.measured_ms, p.predicted_ms) for r in results for p in r.points)
    line = np.geomspace(lo * 0.8, hi * 1.25, 50)
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.9", label="±10 %")
    ax.plot(line, line, color="0.4", lw=1)
    for r in results:
        m = r.metrics()
        ax.scatter([p.measured_ms for p in r.points], [p.predicted_ms for p in r.points], s=10, alpha=0.75,
                   label=f"{r.space} (n={r.n}, {m['within_10']:.0%} in ±10 %, ρ={m['spearman']:.3f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"measured latency (ms, {results[0].statistic.removesuffix('_ms')} over timed runs)")
    ax.set_ylabel("predicted latency (ms, table sum + overhead)")
    ax.set_title(title or f"Latency predictor on {results[0].device}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)
