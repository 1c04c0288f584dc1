"""Budgets a width-search candidate must meet: MACs from the one cost walker, latency from a device's tables.

A :class:`Budget` names a MACs budget, a latency budget on a device, or both; a :class:`CostModel` checks
architectures of one space against it. MACs are :func:`zoo.count` of the arch's spec (the one walker);
latency is :class:`latency_tables.predict.Predictor`'s prediction from the device's tables (any device with
a table for the space: a measured one under ``latency_tables/<device>/<space>.json``, or the imported
Note10 one from ``mzoo lut import-ofa``), with the overhead of the space's table. A candidate is
feasible when it meets every budget given; the initial population of BCNet's search also needs it above
``lower × budget`` (papers.md §3.5: (0.9·budget, budget]). A device without a table for the space, or a
table without the space's op keys at its input size, is refused when the cost model is built, with the
device, the space and the tables it has named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import zoo
from latency_tables.choose import choose_device
from latency_tables.predict import MissingKeysError, Predictor
from search.spaces import Arch, SearchSpace


@dataclass(frozen=True)
class Budget:
    """What a searched network may cost.

    Attributes:
        max_macs: MACs budget (multiply-accumulates, the papers' "FLOPs"); ``None`` for none.
        max_latency_ms: latency budget on ``device`` (predicted, ms); ``None`` for none.
        device: a device with latency tables; with no latency budget its latency is only reported.
        interpolate: let the predictor estimate op keys the tables lack from same-signature entries.
        tables_root: where the device's tables live (default: the shipped ``latency_tables/``).
    """

    max_macs: int | None = None
    max_latency_ms: float | None = None
    device: str | None = None
    interpolate: bool = False
    tables_root: str | None = None

    def __post_init__(self) -> None:
        if self.max_macs is None and self.max_latency_ms is None:
            raise ValueError("Budget: give max_macs, max_latency_ms or both")
        if self.max_macs is not None and (isinstance(self.max_macs, bool) or self.max_macs <= 0):
            raise ValueError(f"Budget.max_macs must be a positive number, got {self.max_macs!r}")
        if self.max_latency_ms is not None and not (math.isfinite(self.max_latency_ms) and self.max_latency_ms > 0):
            raise ValueError(f"Budget.max_latency_ms must be a positive number, got {self.max_latency_ms!r}")
        if self.max_latency_ms is not None and self.device is None:
            raise ValueError(f"Budget: a latency budget ({self.max_latency_ms} ms) needs a device")

    def to_dict(self) -> dict[str, object]:
        return {"max_macs": self.max_macs, "max_latency_ms": self.max_latency_ms, "device": self.device,
                "interpolate": self.interpolate}


@dataclass(frozen=True)
class Costs:
    """What one architecture costs: MACs and params from the walker, latency when a device was given."""

    macs: int
    params: int
    latency_ms: float | None = None


class CostModel:
    """Costs of ``space``'s architectures and whether they meet ``budget`` (costs cached per arch)."""

    def __init__(self, space: SearchSpace, budget: Budget) -> None:
        self.space = space
        self.budget = budget
        self.predictor: Predictor | None = None
        self._cache: dict[Arch, Costs] = {}
        if budget.device is not None:
            root = Path(budget.tables_root) if budget.tables_root is not None else None
            choose_device(budget.device, space.name, root)  # warns when the table is another machine's
            self.predictor = Predictor.for_device(budget.device, root)  # NoTablesError names the device
            spaces = [t.space for t in self.predictor.tables]
            if space.name not in spaces:
                raise ValueError(f"device {budget.device!r} has no latency table for space {space.name!r} "
                                 f"(its tables: {', '.join(spaces)}); measure one with "
                                 f"`mzoo lut build --space {space.name}`")
            full = tuple(max(c) for c in space.choices())  # type: ignore[attr-defined]
            try:
                self.costs(full)
            except MissingKeysError as err:
                raise ValueError(f"device {budget.device!r}'s table for space {space.name!r} lacks op keys of "
                                 f"this space's networks (e.g. another input size or layout): {err}") from None

    def costs(self, arch: Arch) -> Costs:
        arch = tuple(arch)
        if arch not in self._cache:
            spec, size = self.space.to_spec(arch)
            count = zoo.count(spec, size)
            latency = None
            if self.predictor is not None:
                latency = self.predictor.predict(spec, size, interpolate=self.budget.interpolate,
                                                 space=self.space.name).total_ms
            self._cache[arch] = Costs(count.macs, count.params, latency)
        return self._cache[arch]

    def violations(self, arch: Arch, lower: float = 0.0) -> list[str]:
        """Why ``arch`` is infeasible (empty when it meets every budget, above ``lower ×`` each budget)."""
        c = self.costs(arch)
        out = []
        for name, value, limit in (("MACs", c.macs, self.budget.max_macs),
                                   ("latency_ms", c.latency_ms, self.budget.max_latency_ms)):
            if limit is None:
                continue
            assert value is not None
            if value > limit:
                out.append(f"{name} {value:.6g} > budget {limit:.6g}")
            elif value <= lower * limit:
                out.append(f"{name} {value:.6g} <= {lower:g} × budget {limit:.6g}")
        return out

    def feasible(self, arch: Arch, lower: float = 0.0) -> bool:
        """Whether ``arch`` meets every budget and is above ``lower ×`` each of them."""
        return not self.violations(arch, lower)


__all__ = ["Budget", "CostModel", "Costs"]
