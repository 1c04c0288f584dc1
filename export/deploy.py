"""Exporting the deployed network: the re-parameterised model (:mod:`zoo.deploy`) with its plan in every artefact.

``mzoo export NAME --deploy none|all|auto [--device D]`` exports the network :func:`zoo.deploy.reparameterize`
rewrites by a plan, and each artefact's report and metadata say which plan was asked for, which was applied per HGC
block, and what it costs before and after (walker MACs and params, file size, and with a device the predicted
latency). The ``auto`` plan and predicted latencies come from a device's latency tables, a layer above this one, so
this module only *receives* a :class:`DeployChoice`: the export verb asks the planner its parser carries
(``latency_tables.cli`` installs one that reads the tables) and falls back to :func:`plain_choice`, which knows
``none`` and ``all`` only. The choice is made before any model is built, so a bad flag costs nothing.

Exactness is checked twice against the **training-time** (unfused) network, the reference a user means: the
rewritten eager network before any export work (:func:`deploy`), and each artefact that runs here after its own
exporter verified it against the rewritten network (:func:`check_artefact`); an artefact that fails is removed.
Both use the exporters' rule: ``atol``, or, for a network whose own fp32 forward is not reproducible to it, within
``factor`` × PyTorch fp32's own distance from a float64 run (:mod:`export.parity`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from export.pipeline import ResolvedModel

DEPLOY_MODES = ("none", "all", "auto")
# Eager rewritten vs eager trained: the fused weight is composed in float64, so only fp32 summation order differs.
EAGER_ATOL = 1e-5
NOISE_FLOOR_FACTOR = 2.0
_SEED, _BATCHES = 0, (1, 3)


@dataclass(frozen=True)
class DeployChoice:
    """What to deploy: the ``--deploy`` flag as given, the plan applied per HGC block, and why.

    ``requested`` is None when ``--deploy`` was not given (the default is chosen: ``auto`` when a device with tables
    was named, else ``none``, and ``reason`` says which). ``blocks`` maps each fusable block (``blocks.<i>.<j>``) to
    ``"fused"`` or ``"hgc"``. ``predicted_ms`` is the deployed network's predicted latency on ``device``,
    ``predicted_trained_ms`` the training-time network's (None without a device, or with ``prediction_note`` saying
    why the tables could not price it).
    """

    requested: str | None
    mode: str
    blocks: Mapping[str, str] = field(default_factory=dict)
    device: str | None = None
    reason: str = ""
    predicted_ms: float | None = None
    predicted_trained_ms: float | None = None
    prediction_note: str = ""

    @property
    def fused(self) -> int:
        return sum(form == "fused" for form in self.blocks.values())

    def to_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "mode": self.mode, "device": self.device, "reason": self.reason,
                "plan": dict(self.blocks), "fused_blocks": self.fused, "hgc_blocks": len(self.blocks),
                "predicted_ms": self.predicted_ms, "predicted_trained_ms": self.predicted_trained_ms,
                "prediction_note": self.prediction_note}

    def metadata(self) -> str:
        """The plan as the artefact's ``deploy`` metadata entry (JSON): enough to rebuild the deployed spec."""
        return json.dumps({"requested": self.requested, "mode": self.mode, "device": self.device,
                           "plan": dict(self.blocks)}, sort_keys=True)


# (requested, spec or None, input size, device or None) -> choice. Called once with spec None to validate the flags.
Planner = Callable[[str | None, Any, tuple[int, int, int], str | None], DeployChoice]


def check_mode(requested: str | None) -> None:
    """``InputError`` naming ``--deploy`` unless it is None (the default) or one of :data:`DEPLOY_MODES`."""
    if requested is not None and requested not in DEPLOY_MODES:
        raise InputError(f"--deploy must be one of {', '.join(DEPLOY_MODES)}, got {requested!r}")


def plain_choice(requested: str | None, spec: Any, input_size: tuple[int, int, int],
                 device: str | None) -> DeployChoice:
    """The choice export makes without latency tables: ``none`` (the default) or ``all``; ``auto`` and ``--device``
    need the tables' planner, which ``mzoo`` installs (``latency_tables.cli``)."""
    from zoo.deploy import resolve_plan

    check_mode(requested)
    if requested == "auto" or device is not None:
        flag = "--deploy auto" if requested == "auto" else "--device"
        raise InputError(f"{flag} needs a device's latency tables, which this export command cannot read: run it as "
                         "`mzoo export` (or give --deploy none|all without --device)")
    mode = requested or "none"
    reason = "as asked" if requested else "default without --device: exported as trained"
    return DeployChoice(requested, mode, resolve_plan(spec, mode) if spec is not None else {}, None, reason)


def deploy(resolved: ResolvedModel, choice: DeployChoice) -> ResolvedModel:
    """``resolved`` with its network rewritten by ``choice`` and the choice attached, checked against the original.

    The rewritten eager network is compared with the training-time one on seeded random inputs (batches 1 and 3)
    before anything is exported; ``ExportError`` if it differs beyond :data:`EAGER_ATOL` and the float64 rule.
    """
    from zoo.deploy import deploy_spec, reparameterize

    spec = getattr(resolved.model, "arch_spec", None)
    costs = {"before": _cost(spec, resolved)}
    trained = resolved.model
    model, parity = trained, None
    if choice.fused:
        model = reparameterize(trained, choice.blocks).eval()
        parity = eager_parity(trained, model, resolved.input_size)
    target = deploy_spec(spec, choice.blocks) if spec is not None and choice.fused else spec
    costs["after"] = _cost(target, resolved) if target is not spec else dict(costs["before"])
    record = choice.to_dict() | costs | {"eager_max_abs_diff_vs_trained": parity}
    return dataclasses.replace(resolved, model=model, deploy=record, trained_model=trained if choice.fused else None,
                               deploy_metadata=choice.metadata())


def _cost(spec: Any, resolved: ResolvedModel) -> dict[str, int]:
    import zoo

    if spec is None:  # a timm model: counted on the module (never rewritten)
        cost = zoo.count_module(resolved.model, resolved.input_size)
        return {"macs": cost.macs, "params": sum(p.numel() for p in resolved.model.parameters())}
    cost = zoo.count(spec, resolved.input_size)
    return {"macs": cost.macs, "params": cost.params}


def eager_parity(trained: nn.Module, deployed: nn.Module, input_size: tuple[int, int, int],
                 atol: float = EAGER_ATOL) -> float:
    """Max abs diff of ``deployed`` from ``trained`` (eager fp32) on seeded inputs; ``ExportError`` past the rule."""
    import torch

    from export.parity import run_eager

    gen = torch.Generator().manual_seed(_SEED)
    worst = 0.0
    for batch in _BATCHES:
        x = torch.randn(batch, *input_size, generator=gen)
        expected = run_eager(trained, x)
        worst = max(worst, _check(run_eager(deployed, x), expected, trained, x, atol, "the rewritten eager network"))
    return worst


def check_artefact(path: Path, fmt: str, resolved: ResolvedModel, atol: float) -> float | None:
    """Max abs diff of the artefact at ``path`` from the training-time network, for formats that run here (fp32
    ONNX and ``.pte``; None for others, whose own check is against the rewritten network, itself checked above).
    Raises ``ExportError`` naming the artefact when it differs beyond ``atol`` and the float64 rule."""
    import torch

    from export.runners import open_runner
    from export.parity import run_eager

    if resolved.trained_model is None or fmt not in ("onnx", "pte"):
        return None
    runner = open_runner(fmt, path, threads=1)
    x = torch.randn(1, *resolved.input_size, generator=torch.Generator().manual_seed(_SEED))
    got = runner(x.numpy())
    return _check(got, run_eager(resolved.trained_model, x), resolved.trained_model, x, atol, f"{fmt} artefact")


def _check(got: Any, expected: Any, trained: nn.Module, x: Any, atol: float, what: str) -> float:
    import copy

    import numpy as np

    from export.errors import ExportError
    from export.parity import float64_distances, noise_floor_detail, within_noise_floor

    diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
    if diff <= atol:
        return diff
    if np.isfinite(diff):
        model64 = copy.deepcopy(trained).double()
        artefact_err, eager_err = float64_distances(model64, x, got, expected)
        if within_noise_floor(artefact_err, eager_err, atol, NOISE_FLOOR_FACTOR):
            return diff
        detail = noise_floor_detail(diff, artefact_err, eager_err, atol, NOISE_FLOOR_FACTOR)
    else:
        detail = f"max abs diff {diff}"
    raise ExportError(f"deploy: {what} differs from the training-time (unfused) network: {detail}")


__all__ = ["DEPLOY_MODES", "DeployChoice", "Planner", "check_artefact", "check_mode", "deploy", "eager_parity",
           "plain_choice"]
