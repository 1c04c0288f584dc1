"""Budgets, for every search and pruning method: what a user types, what a network may cost, how costs are known.

* The one parser of typed budgets: MACs counts (``300M``, ``1.2G``, ``4e8``), MACs shares (``50%`` of the full
  network) and latencies (``5ms``, ``0.005s``); errors name the flag, before any work starts.
* The one budget type, :class:`Budget`: MACs and/or latency bounds (a maximum, and for windows a minimum) on a
  device's latency tables. :class:`CostWindow` is one bound of a budget as the oracle traces record it.
* The one cost model, :class:`CostModel`: a space's architectures' MACs and params from the one cost walker
  (:func:`zoo.count`) and latency from :class:`latency_tables.predict.Predictor` (the space's table, its overhead),
  cached per architecture, and whether they meet a budget. Width search (BCNet, CafeNet), MCT-NAS (one-shot and
  oracle mode) and the oracle's searchers all ask it; the differentiable searches' *expected* costs
  (:class:`search.eoinas.CellCostModel`, :class:`search.metakernel.CostModel`) are built from the same walker and
  tables. A device without a table for the space, or a table without the space's op keys, is refused when the
  cost model is built, naming the device, the space and the tables it has.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import zoo
from common.errors import InputError
from latency_tables.choose import choose_device
from latency_tables.predict import MissingKeysError, Predictor
from zoo.spaces import Arch, SearchSpace

METRICS = ("macs", "latency")

_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}
_COUNT = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([KkMmGg%]?)\s*")


def parse_count(text: object, flag: str) -> float:
    """``"300M"``, ``"1.2G"``, ``"800K"`` or a plain number such as ``"4e8"``, as a float; ``InputError`` names
    ``flag``."""
    match = _COUNT.fullmatch(str(text))
    if not match or match.group(2) == "%":
        raise InputError(f"{flag} must be a count such as 300M, 1.2G or 4e8, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2).upper()]


def parse_macs(text: object, full_macs: int | None = None, *, flag: str = "--macs", below_full: bool = False) -> int:
    """A MACs budget: a count (:func:`parse_count`) or ``"50%"`` of ``full_macs``; positive, and with
    ``below_full`` (a pruning target) less than ``full_macs``. ``InputError`` names ``flag`` and the text."""
    match = _COUNT.fullmatch(str(text))
    if not match:
        raise InputError(f"{flag} {text!r} is not a MACs budget: {flag} must be a percentage such as 50% or a "
                         f"count such as 200M, 1.5G or 4e7")
    number, unit = float(match.group(1)), match.group(2).upper()
    if unit == "%" and full_macs is None:
        raise InputError(f"{flag} {text!r}: a share such as 50% needs the full network's MACs; give a count "
                         f"such as 200M instead")
    macs = number / 100 * full_macs if unit == "%" else number * _UNITS[unit]  # type: ignore[operator]
    if not math.isfinite(macs) or macs <= 0:
        raise InputError(f"{flag} {text!r} must be positive")
    if below_full and full_macs is not None and not macs < full_macs:
        raise InputError(f"the MACs target {text!r} ({macs / 1e6:.1f}M, {flag}) must be between 0 and the full "
                         f"network's {full_macs / 1e6:.1f}M")
    return int(round(macs))


def parse_latency(text: object, flag: str = "--latency") -> float:
    """``"5ms"``, ``"5"`` (ms) or ``"0.005s"`` as milliseconds, positive; ``InputError`` names ``flag``."""
    value = str(text).strip().lower()
    try:
        ms = float(value[:-2]) if value.endswith("ms") else float(value[:-1]) * 1e3 if value.endswith("s") \
            else float(value)
    except ValueError:
        raise InputError(f"{flag} {text!r}: give a latency like 5ms, 5 or 0.005s") from None
    if not math.isfinite(ms) or ms <= 0:
        raise InputError(f"{flag} {text!r} must be positive")
    return ms




# --- the budget ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostWindow:
    """Architectures whose ``metric`` lies in [low, high] (either bound may be None).

    ``metric`` "macs" counts with the walker (:func:`zoo.count`); "latency" predicts milliseconds from the
    tables of ``device`` (under ``tables``, default the shipped ones), which must hold the space's table.
    """

    metric: str
    low: float | None = None
    high: float | None = None
    device: str | None = None
    tables: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InputError(f"unknown constraint metric {self.metric!r}; known: {', '.join(METRICS)}")
        if self.low is None and self.high is None:
            raise InputError(f"a {self.metric} window needs a low or a high bound, got neither")
        for name in ("low", "high"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise InputError(f"{self.metric} window {name} must be a finite number or None, got {value!r}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise InputError(f"{self.metric} window is empty: low {self.low!r} > high {self.high!r}")
        if self.metric == "latency" and not self.device:
            raise InputError("a latency window needs the device whose latency table predicts it")
        if self.metric == "macs" and (self.device or self.tables):
            raise InputError(f"a MACs window takes no device or tables, got device={self.device!r}")

    def contains(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        what = "MACs" if self.metric == "macs" else f"latency on {self.device} (ms)"
        if self.low is not None and self.high is not None:
            return f"{what} in [{self.low:g}, {self.high:g}]"
        return f"{what} ≥ {self.low:g}" if self.high is None else f"{what} ≤ {self.high:g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostWindow:
        return cls(**dict(data))


@dataclass(frozen=True)
class Budget:
    """What a searched network may cost: the one budget type of every search method.

    Attributes:
        max_macs: MACs budget (multiply-accumulates, the papers' "FLOPs"); ``None`` for none.
        max_latency_ms: latency budget on ``device`` (predicted, ms); ``None`` for none.
        device: a device with latency tables; with no latency bound its latency is only reported.
        interpolate: let the predictor estimate op keys the tables lack from same-signature entries.
        tables_root: where the device's tables live (default: the shipped ``latency_tables/``).
        min_macs, min_latency_ms: lower bounds, for windows such as MCT-NAS' (``None`` for none).
    """

    max_macs: float | None = None
    max_latency_ms: float | None = None
    device: str | None = None
    interpolate: bool = False
    tables_root: str | None = None
    min_macs: float | None = None
    min_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if all(v is None for v in (self.max_macs, self.max_latency_ms, self.min_macs, self.min_latency_ms)):
            raise InputError("Budget: give max_macs, max_latency_ms or both")
        for name in ("max_macs", "max_latency_ms", "min_macs", "min_latency_ms"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0 or (name.startswith("max") and value == 0)):
                raise InputError(f"Budget.{name} must be a positive number, got {value!r}")
        for low, high in (("min_macs", "max_macs"), ("min_latency_ms", "max_latency_ms")):
            if None not in (getattr(self, low), getattr(self, high)) and getattr(self, low) > getattr(self, high):
                raise InputError(f"Budget: {low} {getattr(self, low)!r} > {high} {getattr(self, high)!r}")
        if (self.max_latency_ms is not None or self.min_latency_ms is not None) and self.device is None:
            raise InputError(f"Budget: a latency budget ({self.max_latency_ms} ms) needs a device")

    @classmethod
    def of_windows(cls, windows: Sequence[CostWindow], interpolate: bool = False) -> Budget | None:
        """The budget of ``windows`` (at most one per metric); ``None`` for no window (unconstrained)."""
        by_metric: dict[str, CostWindow] = {}
        for window in windows:
            if window.metric in by_metric:
                raise InputError(f"two {window.metric} windows; give one window per metric")
            by_metric[window.metric] = window
        if not by_metric:
            return None
        macs, latency = by_metric.get("macs"), by_metric.get("latency")
        return cls(max_macs=macs and macs.high, min_macs=macs and macs.low,
                   max_latency_ms=latency and latency.high, min_latency_ms=latency and latency.low,
                   device=latency and latency.device, tables_root=latency and latency.tables, interpolate=interpolate)

    def windows(self) -> tuple[CostWindow, ...]:
        """The budget's bounds as windows, MACs first (the oracle traces record these)."""
        out = []
        if self.min_macs is not None or self.max_macs is not None:
            out.append(CostWindow("macs", self.min_macs, self.max_macs))
        if self.min_latency_ms is not None or self.max_latency_ms is not None:
            out.append(CostWindow("latency", self.min_latency_ms, self.max_latency_ms, self.device, self.tables_root))
        return tuple(out)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"max_macs": self.max_macs, "max_latency_ms": self.max_latency_ms,
                                   "device": self.device, "interpolate": self.interpolate}
        return data | {k: getattr(self, k) for k in ("min_macs", "min_latency_ms") if getattr(self, k) is not None}


@dataclass(frozen=True)
class Costs:
    """What one architecture costs: MACs and params from the walker, latency when a device was given."""

    macs: int
    params: int
    latency_ms: float | None = None

    def of(self, metric: str) -> float:
        """The cost in ``metric`` ("macs" or "latency")."""
        value = self.macs if metric == "macs" else self.latency_ms
        assert value is not None, f"no {metric} cost (no device)"
        return float(value)


@dataclass(frozen=True)
class CostTarget:
    """A budget used as a soft target: the expected-cost term ``weight·|E[metric]/target − 1|`` of a differentiable
    search's architecture loss (EoiNAS, Meta Kernels; TuNAS' absolute penalty).

    ``metric`` is ``"macs"`` or ``"latency"`` (ms, from ``device``'s table under ``tables`` or the shipped ones);
    the bound itself is validated as the :class:`Budget` it is (:attr:`budget`).
    """

    metric: str
    target: float
    weight: float = 0.5
    device: str | None = None
    tables: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InputError(f"CostTarget.metric must be 'macs' or 'latency', got {self.metric!r}")
        if isinstance(self.target, bool) or not isinstance(self.target, (int, float)) or not self.target > 0 \
                or not self.weight >= 0:
            raise InputError(f"CostTarget needs target > 0 and weight >= 0, got {self.target!r}, {self.weight!r}")
        if self.metric == "latency" and not self.device:
            raise InputError("a latency target needs a device with latency tables (see `mzoo lut list`)")
        self.budget  # noqa: B018 (validates the bound as a Budget)

    @property
    def budget(self) -> Budget:
        """The target as the one budget type: a MACs or latency maximum."""
        if self.metric == "macs":
            return Budget(max_macs=self.target)
        return Budget(max_latency_ms=self.target, device=self.device, tables_root=self.tables)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class ExpectedCost(Protocol):
    """What a differentiable search asks of its cost model (:class:`search.eoinas.CellCostModel`,
    :class:`search.metakernel.MetaKernelCostModel`): the expected cost under architecture weights, differentiable
    in them, and the exact cost of a derived network, which for one-hot weights equals the expectation and the
    walker's (MACs) or the predictor's (latency) figure."""

    metric: str

    def expected(self, *weights: Any) -> Any: ...

    def exact(self, arch: Any) -> float: ...


# --- the cost model -----------------------------------------------------------------------------------------------


class CostModel:
    """Costs of ``space``'s architectures and whether they meet ``budget`` (``None``: unconstrained), cached.

    ``feasible(arch)`` (or calling the model) is True when the arch meets every bound of the budget; with
    ``lower`` it must also lie above ``lower ×`` each maximum (BCNet's initial population, papers.md §3.5).
    """

    def __init__(self, space: SearchSpace, budget: Budget | None = None) -> None:
        self.space = space
        self.budget = budget
        self.predictor: Predictor | None = None
        self._cache: dict[Arch, Costs] = {}
        self._verdicts: dict[Arch, bool] = {}
        device = budget.device if budget is not None else None
        if device is not None:
            assert budget is not None
            root = Path(budget.tables_root) if budget.tables_root is not None else None
            choose_device(device, space.name, root)  # warns when the table is another machine's
            self.predictor = Predictor.for_device(device, root)  # NoTablesError names the device
            spaces = [t.space for t in self.predictor.tables]
            if space.name not in spaces:
                raise InputError(f"device {device!r} has no latency table for space {space.name!r} "
                                 f"(its tables: {', '.join(spaces)}); measure one with "
                                 f"`mzoo lut build --space {space.name}`")
            full = tuple(max(c) for c in space.choices())  # type: ignore[attr-defined]
            try:
                self.costs(full)
            except MissingKeysError as err:
                raise InputError(f"device {device!r}'s table for space {space.name!r} lacks op keys of "
                                 f"this space's networks (e.g. another input size or layout): {err}") from None

    @classmethod
    def of_windows(cls, space: SearchSpace, windows: Sequence[CostWindow] = (),
                   interpolate: bool = False) -> CostModel:
        """The cost model of ``windows`` on ``space`` (no window: unconstrained)."""
        return cls(space, Budget.of_windows(windows, interpolate))

    @property
    def windows(self) -> tuple[CostWindow, ...]:
        return self.budget.windows() if self.budget is not None else ()

    def costs(self, arch: Arch) -> Costs:
        """MACs and params (the walker) and, with a device, predicted latency (ms) of ``arch``."""
        arch = tuple(arch)
        if arch not in self._cache:
            spec, size = self.space.to_spec(arch)
            count = zoo.count(spec, size)
            latency = None
            if self.predictor is not None:
                assert self.budget is not None
                latency = self.predictor.predict(spec, size, interpolate=self.budget.interpolate,
                                                 space=self.space.name).total_ms
            self._cache[arch] = Costs(count.macs, count.params, latency)
        return self._cache[arch]

    def cost(self, index: int, arch: Arch) -> float:
        """The metric of window ``index`` (of :attr:`windows`) for ``arch``."""
        return self.costs(arch).of(self.windows[index].metric)

    def violations(self, arch: Arch, lower: float = 0.0) -> list[str]:
        """Why ``arch`` is infeasible (empty when it meets every bound, above ``lower ×`` each maximum)."""
        if self.budget is None:
            return []
        c = self.costs(arch)
        b = self.budget
        out = []
        for name, value, low, high in (("MACs", c.macs, b.min_macs, b.max_macs),
                                       ("latency_ms", c.latency_ms, b.min_latency_ms, b.max_latency_ms)):
            if low is None and high is None:
                continue
            assert value is not None
            if high is not None and value > high:
                out.append(f"{name} {value:.6g} > budget {high:.6g}")
            elif high is not None and value <= lower * high:
                out.append(f"{name} {value:.6g} <= {lower:g} × budget {high:.6g}")
            if low is not None and value < low:
                out.append(f"{name} {value:.6g} < lower bound {low:.6g}")
        return out

    def feasible(self, arch: Arch, lower: float = 0.0) -> bool:
        """Whether ``arch`` meets every bound and is above ``lower ×`` each maximum."""
        if lower:
            return not self.violations(arch, lower)
        arch = tuple(arch)
        verdict = self._verdicts.get(arch)
        if verdict is None:
            verdict = self._verdicts[arch] = not self.violations(arch)
        return verdict

    def __call__(self, arch: Arch) -> bool:
        return self.feasible(arch)

    def describe(self) -> str:
        return "; ".join(w.describe() for w in self.windows) or "unconstrained"


__all__ = ["Budget", "CostModel", "CostTarget", "CostWindow", "Costs", "ExpectedCost", "METRICS", "parse_count", "parse_latency", "parse_macs"]
