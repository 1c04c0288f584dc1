"""The ``auto`` deploy plan: for each HGC block, the form (HGC or fused dense) a device's latency tables say is faster.

:mod:`zoo.deploy` rewrites a network exactly by a plan; which form wins depends on the device and the layer's
shape, which is what latency tables measure. Both forms are ops of the one cost walker (a fused HGC block is
MobileNetV2's ``ir`` block with the same shape), so the predictor prices the network once with every block in
HGC form and once with every block fused, and each block takes the form whose op is faster. The network's
per-call overhead does not depend on the choice (the walker yields one op per block either way). Keys a table
lacks are refused naming them (or interpolated with ``interpolate=True``), as for any prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import zoo
from common.errors import InputError
from zoo.deploy import FUSED, UNFUSED, Plan, deploy_spec, fusable_blocks, resolve_plan
from zoo.spec import AnySpec

from .predict import Predictor


def auto_plan(spec: AnySpec, input_size: int | Sequence[int], predictor: Predictor, *,
              interpolate: bool = False) -> dict[str, str]:
    """``{block: "fused" | "hgc"}``: per fusable block, the form with the lower predicted latency on the device."""
    blocks = fusable_blocks(spec)
    if not blocks:
        return {}
    unfused = {op.name: op.ms for op in predictor.predict(spec, input_size, interpolate=interpolate).ops}
    fused = {op.name: op.ms for op in predictor.predict(deploy_spec(spec, "all"), input_size,
                                                        interpolate=interpolate).ops}
    return {name: FUSED if fused[name] < unfused[name] else UNFUSED for name in blocks}


def resolve(spec: AnySpec, input_size: int | Sequence[int], plan: Plan, device: str | None = None,
            root: Path | None = None, *, interpolate: bool = False) -> dict[str, str]:
    """``plan`` per block, with ``"auto"`` chosen from ``device``'s tables (under ``root``, default the shipped)."""
    if plan != "auto":
        return resolve_plan(spec, plan)
    if device is None:
        raise InputError("deploy plan 'auto' chooses each layer's form from a device's latency tables: give "
                         "--device (or a plan of none or all)")
    return auto_plan(spec, input_size, Predictor.for_device(device, root), interpolate=interpolate)


@dataclass(frozen=True)
class PlanCost:
    """What one plan deploys: its per-block choice, the walker's MACs and params, and predicted latency."""

    plan: str
    choice: Mapping[str, str]
    macs: int
    params: int
    predicted_ms: float | None


def plan_costs(spec: AnySpec, input_size: int | Sequence[int], predictor: Predictor | None = None, *,
               interpolate: bool = False) -> list[PlanCost]:
    """``none``, ``all`` and (with a predictor) ``auto`` side by side: MACs, params and predicted latency."""
    plans: list[tuple[str, Mapping[str, str]]] = [("none", resolve_plan(spec, "none")),
                                                  ("all", resolve_plan(spec, "all"))]
    if predictor is not None:
        plans.append(("auto", auto_plan(spec, input_size, predictor, interpolate=interpolate)))
    out = []
    for name, choice in plans:
        target = deploy_spec(spec, choice)
        cost = zoo.count(target, input_size)
        ms = predictor.predict(target, input_size, interpolate=interpolate).total_ms if predictor else None
        out.append(PlanCost(name, dict(choice), cost.macs, cost.params, ms))
    return out


__all__ = ["PlanCost", "auto_plan", "plan_costs", "resolve"]
