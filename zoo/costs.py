"""The one cost walker: an :class:`~zoo.spec.ArchSpec` at an input size becomes a list of ops.

:func:`iter_ops` is the single walker: it turns a spec into block-level :class:`OpCost` records
(stem, every stage block, head conv, classifier), each with its canonical key, params and MACs.
Params and MACs of a spec are sums over that list; latency lookup tables key on the same records.
:func:`count_module` counts any ``nn.Module`` (e.g. a timm baseline) with forward hooks under the
same conventions (see :mod:`zoo.prims`), and is how the walker is cross-checked against real models.
Units: MACs (multiply-accumulates); FLOPs = 2 × MACs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import block_kind
from .prims import Prim, conv_bn, conv_out_hw, linear
from .spec import ArchSpec, BlockSpec


@dataclass(frozen=True)
class Cost:
    """Params and MACs of a network or op."""

    params: int
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)


@dataclass(frozen=True)
class OpCost:
    """One block-level op of a network at a fixed input size."""

    name: str
    kind: str
    in_chs: int
    out_chs: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    stride: int
    kernel: int
    expand: float
    groups: int
    act: str
    params: int
    macs: int

    @property
    def key(self) -> str:
        """Canonical op signature: what a latency table is keyed on."""
        return (f"{self.kind}-in{self.in_chs}x{self.in_hw[0]}x{self.in_hw[1]}"
                f"-out{self.out_chs}x{self.out_hw[0]}x{self.out_hw[1]}"
                f"-k{self.kernel}-s{self.stride}-e{self.expand:g}-g{self.groups}-{self.act}")


def _op(name: str, kind: str, in_chs: int, block: BlockSpec, in_hw: tuple[int, int],
        out_hw: tuple[int, int], prims: Sequence[Prim]) -> OpCost:
    return OpCost(name, kind, in_chs, block.out_chs, in_hw, out_hw, block.stride, block.kernel,
                  block.expand, block.groups, block.act,
                  params=sum(p.params for p in prims), macs=sum(p.macs for p in prims))


def _as_hw(input_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return (input_size, input_size)
    dims = tuple(input_size)
    if len(dims) == 3:  # (C, H, W)
        dims = dims[1:]
    if len(dims) != 2 or min(dims) < 1:
        raise ValueError(f"input_size must be an int, (H, W) or (C, H, W) with positive sizes, got {input_size!r}")
    return dims  # type: ignore[return-value]


def iter_ops(spec: ArchSpec, input_size: int | Sequence[int]) -> Iterator[OpCost]:
    """Walk ``spec`` at ``input_size`` (int, (H, W) or (C, H, W)) and yield its ops in execution order."""
    hw = _as_hw(input_size)
    chs = spec.in_chans
    named = [("stem", spec.stem)] + [(f"blocks.{i}.{j}", b) for i, st in enumerate(spec.stages) for j, b in enumerate(st)]
    for name, block in named:
        out_hw = conv_out_hw(hw, block.kernel, block.stride)
        if min(out_hw) < 1:
            raise ValueError(f"input_size {input_size!r} is too small: {name} would output {out_hw}")
        prims = block_kind(block.kind).prims(chs, block, hw, out_hw)
        yield _op(name, block.kind, chs, block, hw, out_hw, prims)
        chs, hw = block.out_chs, out_hw
    if spec.head_chs is not None:
        head = BlockSpec("conv", spec.head_chs, kernel=1, act=spec.head_act)
        yield _op("head", "conv", chs, head, hw, hw, conv_bn(chs, spec.head_chs, 1, hw))
        chs = spec.head_chs
    if spec.num_classes:
        fc = BlockSpec("linear", spec.num_classes, kernel=1, act="identity")
        yield _op("classifier", "linear", chs, fc, (1, 1), (1, 1), [linear(chs, spec.num_classes)])


def count(spec: ArchSpec, input_size: int | Sequence[int]) -> Cost:
    """Params and MACs of ``spec`` at ``input_size``: the sum over :func:`iter_ops`."""
    total = Cost(0, 0)
    for op in iter_ops(spec, input_size):
        total = total + Cost(op.params, op.macs)
    return total


def count_module(model: nn.Module, input_size: Sequence[int]) -> Cost:
    """Params and MACs of any module, by running one forward pass with hooks on convs and linears.

    ``input_size`` is (C, H, W). Covers ``nn.Conv2d`` and ``nn.Linear`` (functional matmuls would be
    missed; none of the zoo's or the timm baselines' convolutions are functional).
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {tuple(input_size)!r}")
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1]
        macs += (m.in_channels // m.groups) * m.out_channels * k * out.shape[2] * out.shape[3]

    def linear_hook(m: nn.Linear, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        macs += m.in_features * m.out_features * (out.numel() // out.shape[0] // m.out_features)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return Cost(sum(p.numel() for p in model.parameters()), macs)


def format_count(value: float, unit: str = "") -> str:
    """Human form: 3504872 → '3.505M', 300774272 → '300.8M'."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            digits = 3 if suffix in ("G",) or value / div < 10 else 1
            return f"{value / div:.{digits}f}{suffix}{unit}"
    return f"{value:g}{unit}"
