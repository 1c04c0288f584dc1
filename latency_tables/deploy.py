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
from export.deploy import DeployChoice, check_mode
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


def export_choice(requested: str | None, spec: AnySpec | None, input_size: Sequence[int], device: str | None,
                  root: Path | None = None) -> DeployChoice:
    """The deploy choice of ``mzoo export --deploy REQUESTED --device DEVICE`` (the planner the export verb calls).

    ``requested`` None is the default: ``auto`` when a device is named (its tables must exist), else ``none``, and
    the choice's ``reason`` says so. An explicit ``auto`` without a device uses this machine's tables, as ``mzoo
    predict`` does. With a device, the deployed and the training-time networks are priced; a table that cannot price
    them leaves the prediction None with a note (only ``auto`` itself needs every key, and refuses naming one).
    ``spec`` None only checks the flags (what the export verb does before any work). Raises ``InputError`` naming
    ``--deploy`` or ``--device``.
    """
    from latency_tables.choose import choose_device
    from latency_tables.predict import MissingKeysError
    from latency_tables.table import NoTablesError

    check_mode(requested)
    if device is None and requested != "auto":
        mode = requested or "none"
        reason = "as asked" if requested else ("default without --device: exported as trained (--device D chooses "
                                               "each HGC layer's form from D's latency tables)")
        return DeployChoice(requested, mode, resolve_plan(spec, mode) if spec is not None else {}, None, reason)
    device = choose_device(device, None, root, flag="--device")
    try:
        predictor = Predictor.for_device(device, root)
    except NoTablesError as err:
        raise InputError(f"--device {device!r}: {err}".replace("latency_tables.build.build_table",
                                                                 "`mzoo lut build --space SPACE`")) from None
    mode = requested or "auto"
    reason = "as asked" if requested else f"default with --device: per layer from {device}'s latency tables"
    if spec is None:
        return DeployChoice(requested, mode, {}, device, reason)
    size = tuple(input_size)
    if mode == "auto":
        try:
            blocks = auto_plan(spec, size, predictor)
        except MissingKeysError as err:
            raise InputError(f"--deploy auto: device {device!r}'s latency tables lack {len(err.keys)} op key(s) of "
                             f"this network's HGC or fused form (e.g. {err.keys[0]}): measure them with `mzoo lut "
                             f"build --space SPACE` (the space the network comes from), or give --deploy none|all"
                             ) from None
    else:
        blocks = resolve_plan(spec, mode)
    try:
        chosen = predictor.predict(deploy_spec(spec, blocks), size).total_ms
        trained = predictor.predict(spec, size).total_ms
        note = ""
    except MissingKeysError as err:
        chosen = trained = None
        note = f"latency not predicted: {device}'s tables lack {len(err.keys)} op key(s) of it (e.g. {err.keys[0]})"
    return DeployChoice(requested, mode, blocks, device, reason, chosen, trained, note)


__all__ = ["PlanCost", "auto_plan", "export_choice", "plan_costs", "resolve"]
