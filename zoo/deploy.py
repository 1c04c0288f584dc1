"""Deploy-time structural re-parameterisation: exact rewrites of a trained network into a faster graph.

A rewrite changes how a network computes, never what: its output equals the original's up to fp32 rounding
(tests hold it to 1e-5 max abs diff), and the training-time model is left untouched (the deployed one is a new
module). Two rewrites live here:

* **HGC fusion** (:func:`reparameterize`). A hierarchical group convolution (:mod:`zoo.hgc`) is linear:
  ``y_1 = K_1 x_1``, ``y_i = K_i [x_i; y_{i-1}]``. Writing ``K_i = [A_i | B_i]`` (``A_i`` reads the group's input,
  ``B_i`` the previous group's output), row block ``i`` of the equivalent dense 1×1 weight is
  ``R_i = place_i(A_i) + B_i R_{i-1}`` (block-lower-triangular), so each HGC inverted residual equals
  MobileNetV2's inverted residual (kind ``ir``) with that dense weight: one GEMM instead of ``g`` convs, slices
  and concatenations, at more MACs on paper. Which form is faster depends on the device and the layer's shape,
  so a **plan** says, per HGC block, which form to deploy: ``"none"``, ``"all"``, or a mapping
  ``{block name: "fused" | "hgc"}``; ``latency_tables.deploy.auto_plan`` builds the mapping from a device's
  latency tables (``"auto"``). The deployed network is itself a spec (:func:`deploy_spec`): the one cost walker
  prices it and its op keys are the fused form's, so latency tables can hold both forms.
* **BatchNorm folding** (:func:`fold_batchnorm`), for runtimes that do not fold it themselves: each eval-mode
  BatchNorm that directly follows a convolution is folded into that convolution's weight and a bias.

Plain group convs (kind ``gc_ir``, the paper's baseline) are left alone: a grouped pointwise conv is already
one op in every runtime.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor, nn

from common.errors import InputError

from .contract import ZooModel
from .hgc import HierarchicalGroupConv
from .registry import build_model
from .spec import AnySpec, ArchSpec

PLANS = ("none", "all", "auto")
FUSED, UNFUSED = "fused", "hgc"
FUSABLE_KIND, FUSED_KIND = "hgc_ir", "ir"
Plan = str | Mapping[str, str]


def fusable_blocks(spec: AnySpec) -> list[str]:
    """Names (``blocks.<stage>.<index>``, as the walker names them) of the blocks HGC fusion can rewrite."""
    if not isinstance(spec, ArchSpec):
        return []
    return [f"blocks.{i}.{j}" for i, stage in enumerate(spec.stages) for j, block in enumerate(stage)
            if block.kind == FUSABLE_KIND and block.groups > 1]


def resolve_plan(spec: AnySpec, plan: Plan) -> dict[str, str]:
    """``plan`` as ``{block name: "fused" | "hgc"}`` for every fusable block of ``spec``.

    ``"none"`` and ``"all"`` are the same for every block; a mapping must name only fusable blocks (the others
    keep their HGC form). ``"auto"`` needs a device's tables: resolve it with ``latency_tables.deploy.auto_plan``.
    """
    blocks = fusable_blocks(spec)
    if isinstance(plan, str):
        if plan == "auto":
            raise InputError("deploy plan 'auto' is chosen per layer from a device's latency tables: resolve it "
                             "with latency_tables.deploy.auto_plan (the CLI's --deploy auto --device D does)")
        if plan not in ("none", "all"):
            raise InputError(f"deploy plan must be one of {', '.join(PLANS)} or a per-block mapping, got {plan!r}")
        return {name: FUSED if plan == "all" else UNFUSED for name in blocks}
    unknown = sorted(set(plan) - set(blocks))
    if unknown:
        raise InputError(f"deploy plan names blocks that are not HGC blocks of {spec.family}: {', '.join(unknown)} "
                         f"(fusable: {', '.join(blocks) or 'none'})")
    bad = {k: v for k, v in plan.items() if v not in (FUSED, UNFUSED)}
    if bad:
        raise InputError(f"deploy plan entries must be {FUSED!r} or {UNFUSED!r}, got {bad}")
    return {name: plan.get(name, UNFUSED) for name in blocks}


def deploy_spec(spec: AnySpec, plan: Plan) -> AnySpec:
    """The spec of the deployed network: each fused HGC block becomes MobileNetV2's ``ir`` block (one group)."""
    fused = {name for name, form in resolve_plan(spec, plan).items() if form == FUSED}
    if not fused:
        return spec
    assert isinstance(spec, ArchSpec)
    stages = tuple(tuple(replace(block, kind=FUSED_KIND, groups=1) if f"blocks.{i}.{j}" in fused else block
                         for j, block in enumerate(stage)) for i, stage in enumerate(spec.stages))
    return replace(spec, stages=stages)


def fused_hgc_weight(conv: HierarchicalGroupConv) -> Tensor:
    """The dense ``[out, in, 1, 1]`` weight that equals ``conv`` (a hierarchical or plain group conv)."""
    convs = list(conv.convs)
    gin, gout, groups = conv.in_split, conv.out_split, len(convs)
    weights = [c.weight.detach().to(torch.float64)[:, :, 0, 0] for c in convs]
    dense = torch.zeros(gout * groups, gin * groups, dtype=torch.float64, device=weights[0].device)
    previous: Tensor | None = None
    for i, w in enumerate(weights):
        row = torch.zeros(gout, gin * groups, dtype=torch.float64, device=w.device)
        row[:, i * gin:(i + 1) * gin] = w[:, :gin]
        if conv.hierarchical and i > 0:
            assert previous is not None
            row += w[:, gin:] @ previous
        dense[i * gout:(i + 1) * gout] = row
        previous = row
    return dense.to(convs[0].weight.dtype)[:, :, None, None]


def reparameterize(model: ZooModel, plan: Plan = "all") -> ZooModel:
    """A new model computing what ``model`` computes, with the HGC blocks ``plan`` fuses as dense convolutions.

    ``model`` is untouched. The result is built from :func:`deploy_spec` (so it has the zoo's model contract, the
    same head and ``pretrained_cfg``), in ``model``'s training mode, with ``deploy_plan`` set to the resolved plan.
    """
    spec = getattr(model, "arch_spec", None)
    if spec is None:
        raise InputError(f"{type(model).__name__} is not a zoo model (no arch_spec): only zoo models are rewritten")
    resolved = resolve_plan(spec, plan)
    target = deploy_spec(spec, resolved)
    deployed = build_model(target, global_pool=model.global_pool)
    state = dict(model.state_dict())
    modules = dict(model.named_modules())
    for name, form in resolved.items():
        if form != FUSED:
            continue
        for part in ("conv_pw", "conv_pwl"):
            hgc = modules.get(f"{name}.{part}")
            if not isinstance(hgc, HierarchicalGroupConv):
                continue
            for key in [k for k in state if k.startswith(f"{name}.{part}.convs.")]:
                del state[key]
            state[f"{name}.{part}.weight"] = fused_hgc_weight(hgc)
    deployed.load_state_dict(state, strict=True)
    cfg = getattr(model, "pretrained_cfg", None)  # a bare build_model(spec) network (export --spec) has none
    if cfg is not None:
        deployed.pretrained_cfg = copy.deepcopy(cfg)
        deployed.default_cfg = deployed.pretrained_cfg
    deployed.deploy_plan = dict(resolved)
    deployed.train(model.training)
    return deployed.to(next(model.parameters()).device)


def _conv_bn_pairs(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """``(conv name, BatchNorm name)`` for each BatchNorm whose input, in a forward pass on ``example``, is the very
    tensor a conv returned, each module run once. Found by running the network, not by attribute names: a block's
    names (``conv_pw`` is followed by ``bn1`` in an inverted residual but by ``bn2`` in a depthwise-separable
    block) say nothing reliable about which conv feeds which BatchNorm."""
    produced: dict[int, str] = {}
    keep: list[Tensor] = []  # holds every conv output alive, so no id is reused during the pass
    calls: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            def after_conv(_m: nn.Module, _inputs: tuple, output: Tensor, name: str = name) -> None:
                calls[name] = calls.get(name, 0) + 1
                produced[id(output)] = name
                keep.append(output)
            handles.append(module.register_forward_hook(after_conv))
        elif isinstance(module, nn.BatchNorm2d):
            def before_bn(_m: nn.Module, inputs: tuple, name: str = name) -> None:
                calls[name] = calls.get(name, 0) + 1
                if inputs and id(inputs[0]) in produced:
                    pairs.append((produced[id(inputs[0])], name))
            handles.append(module.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return [(conv, bn) for conv, bn in pairs if calls[conv] == 1 and calls[bn] == 1]


def fold_batchnorm(model: nn.Module, example: Tensor | None = None) -> nn.Module:
    """A copy of ``model`` (in eval mode) with each BatchNorm that directly follows a conv folded into it.

    ``y = γ (conv(x) − μ) / √(σ² + ε) + β`` becomes one conv with weight ``W·γ/√(σ²+ε)`` and bias
    ``β + (b − μ)·γ/√(σ²+ε)``; the BatchNorm becomes an identity. Only running statistics are used, so the
    result equals the eval-mode model, not the training-mode one.

    Which conv feeds which BatchNorm is read from a forward pass on ``example`` (default: a seeded random batch of
    one at the zoo model's ``pretrained_cfg.input_size``). The folded copy is then checked against the eval-mode
    original on that input; a difference beyond fp32 rounding (a conv output used by more than its BatchNorm,
    say) raises instead of returning a network that computes something else.
    """
    reference = copy.deepcopy(model).eval()
    if example is None:
        cfg = getattr(model, "pretrained_cfg", None)
        size = cfg.get("input_size") if isinstance(cfg, Mapping) else getattr(cfg, "input_size", None)
        if size is None:
            raise InputError(f"fold_batchnorm: pass example= (an input batch) for {type(model).__name__}, which has "
                             f"no pretrained_cfg input_size")
        example = torch.randn((1, *size), generator=torch.Generator().manual_seed(0))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = example.to(device)
    folded = copy.deepcopy(reference)
    modules = dict(folded.named_modules())
    for conv_name, bn_name in _conv_bn_pairs(folded, example):
        conv, bn = modules[conv_name], modules[bn_name]
        if bn.num_features != conv.out_channels or bn.running_var is None:
            continue
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
            1.0 / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
        with torch.no_grad():
            fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
            fused.bias.copy_(shift + (bias - bn.running_mean) * scale)
        _set_module(folded, conv_name, fused.to(conv.weight.device))
        _set_module(folded, bn_name, nn.Identity())
    with torch.no_grad():
        expected, got = reference(example), folded(example)
    diff = (got - expected).abs().max().item()
    if not diff <= 1e-4 * max(1.0, expected.abs().max().item()):
        raise InputError(f"fold_batchnorm: the folded {type(model).__name__} differs from the original by {diff:.3g} "
                         f"(max abs); a conv's output is used by more than the BatchNorm that follows it")
    return folded


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


__all__ = ["FUSED", "PLANS", "UNFUSED", "deploy_spec", "fold_batchnorm", "fusable_blocks", "fused_hgc_weight",
           "reparameterize", "resolve_plan"]
