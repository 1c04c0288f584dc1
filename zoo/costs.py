"""The one cost walker: a spec at an input size becomes a list of ops.

:func:`iter_ops` is the single walker: it turns a spec into :class:`OpCost` records, each with its
canonical key, params and MACs: for an :class:`~zoo.spec.ArchSpec` one per block (stem, stem pool,
every stage block, head conv, classifier), and for specs with a post-pool pre-logits conv
(MobileNetV3-style heads) also the ``global_pool`` that feeds it and the conv itself (``pre_logits``),
because there the pooled 1×1 map is where a real layer runs (other specs leave pooling to the
per-network overhead); for a :class:`~zoo.spec.CellNetSpec` one per stem conv,
cell preprocessing op and cell edge, plus the classifier (DARTS' auxiliary head is training-only and
not counted, as DARTS reports params).
Params and MACs of a spec are sums over that list; latency lookup tables key on the same records.
:func:`count_module` counts any ``nn.Module`` (e.g. a timm baseline) with forward hooks under the
same conventions (see :mod:`zoo.prims`), and is how the walker is cross-checked against real models.
Only :func:`count_module` imports torch: the walker prices a spec without it.
Units: MACs (multiply-accumulates); FLOPs = 2 × MACs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.errors import InputError
from .blocks import block_kind
from .prims import Prim, conv_bn, conv_out_hw, linear
from .cell_prims import cell_op_prims, cell_plan, factorized_reduce_prims
from .spec import MAX_PARAMS, AnySpec, ArchSpec, BlockSpec, CellNetSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


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
    block: BlockSpec | None = None

    @property
    def key(self) -> str:
        """Canonical op signature: what a latency table is keyed on.

        Two ops share a key exactly when they compute the same thing on the same shapes, so the base
        signature is extended, only where set, by the block fields that change compute: an explicit
        hidden width (``-m``), inner widths (``-i``), squeeze-and-excitation (``-se``), a disabled
        residual (``-nores``, only where the shapes would otherwise take the identity shortcut) and
        TensorFlow's SAME padding (``-same``, only on strided blocks: at stride 1 it is PyTorch's padding).
        BatchNorm eps changes no cost (BN folds into the conv), so it is not part of the key.
        """
        key = (f"{self.kind}-in{self.in_chs}x{self.in_hw[0]}x{self.in_hw[1]}"
               f"-out{self.out_chs}x{self.out_hw[0]}x{self.out_hw[1]}"
               f"-k{self.kernel}-s{self.stride}-e{self.expand:g}-g{self.groups}-{self.act}")
        block = self.block
        if block is None:
            return key
        if block.mid_chs is not None:
            key += f"-m{block.mid_chs}"
        if block.inner_chs is not None:
            key += "-i" + "x".join(str(c) for c in block.inner_chs)
        if block.se is not None:
            se = block.se
            key += f"-se{se.ratio:g}{se.base}{se.divisor}{se.act or block.act}{se.gate}"
        if not block.residual and self.stride == 1 and self.in_chs == self.out_chs:
            key += "-nores"
        if block.padding == "same" and self.stride > 1 and self.kernel > 1:
            key += "-same"
        return key


# Kinds of the post-pool head of MobileNetV3-style specs: global average pooling to 1x1, and the
# 1x1 conv + activation without BN, with or without bias (the bias is part of the kind so keys differ).
GLOBAL_POOL_KIND = "global_pool"
PRE_LOGITS_KINDS = {False: "conv_act", True: "conv_bias_act"}


def _op(name: str, kind: str, in_chs: int, block: BlockSpec, in_hw: tuple[int, int],
        out_hw: tuple[int, int], prims: Sequence[Prim]) -> OpCost:
    return OpCost(name, kind, in_chs, block.out_chs, in_hw, out_hw, block.stride, block.kernel,
                  block.expand, block.groups, block.act,
                  params=sum(p.params for p in prims), macs=sum(p.macs for p in prims), block=block)


def _as_hw(input_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return (input_size, input_size)
    dims = tuple(input_size)
    if len(dims) == 3:  # (C, H, W)
        dims = dims[1:]
    if len(dims) != 2 or min(dims) < 1:
        raise InputError(f"input_size must be an int, (H, W) or (C, H, W) with positive sizes, got {input_size!r}")
    return dims  # type: ignore[return-value]


def iter_ops(spec: AnySpec, input_size: int | Sequence[int]) -> Iterator[OpCost]:
    """Walk ``spec`` at ``input_size`` (int, (H, W) or (C, H, W)) and yield its ops in execution order."""
    if isinstance(spec, CellNetSpec):
        yield from _cell_ops(spec, _as_hw(input_size))
        return
    hw = _as_hw(input_size)
    chs = spec.in_chans
    named = [("stem", spec.stem)] + [(f"blocks.{i}.{j}", b) for i, st in enumerate(spec.stages) for j, b in enumerate(st)]
    for name, block in named:
        out_hw = conv_out_hw(hw, block.kernel, block.stride)
        if min(out_hw) < 1:
            raise InputError(f"input_size {input_size!r} is too small: {name} would output {out_hw}")
        prims = block_kind(block.kind).prims(chs, block, hw, out_hw)
        yield _op(name, block.kind, chs, block, hw, out_hw, prims)
        chs, hw = block.out_chs, out_hw
        if name == "stem" and spec.stem_pool:
            pool_hw = conv_out_hw(hw, 3, 2)
            yield OpCost("stem_pool", "maxpool", chs, chs, hw, pool_hw, 2, 3, 1.0, 1, "identity", 0, 0)
            hw = pool_hw
    if spec.head_chs is not None:
        head = BlockSpec("conv", spec.head_chs, kernel=1, act=spec.head_act)
        yield _op("head", "conv", chs, head, hw, hw, conv_bn(chs, spec.head_chs, 1, hw))
        chs = spec.head_chs
    if spec.pre_logits_chs is not None:
        yield OpCost("global_pool", GLOBAL_POOL_KIND, chs, chs, hw, (1, 1), 1, 1, 1.0, 1, "identity", 0, 0)
        conv = Prim("conv", chs, spec.pre_logits_chs, bias=spec.pre_logits_bias)
        yield OpCost("pre_logits", PRE_LOGITS_KINDS[spec.pre_logits_bias], chs, spec.pre_logits_chs, (1, 1), (1, 1),
                     1, 1, 1.0, 1, spec.pre_logits_act, conv.params, conv.macs)
        chs = spec.pre_logits_chs
    if spec.num_classes:
        fc = BlockSpec("linear", spec.num_classes, kernel=1, act="identity")
        yield _op("classifier", "linear", chs, fc, (1, 1), (1, 1), [linear(chs, spec.num_classes)])


def _plain_op(name: str, kind: str, in_chs: int, out_chs: int, in_hw: tuple[int, int], stride: int,
              kernel: int, act: str, prims: Sequence[Prim], out_hw: tuple[int, int] | None = None) -> OpCost:
    out_hw = out_hw or conv_out_hw(in_hw, kernel, stride)
    return OpCost(name, kind, in_chs, out_chs, in_hw, out_hw, stride, kernel, 1.0, 1, act,
                  params=sum(p.params for p in prims), macs=sum(p.macs for p in prims))


def _check_even(spec: CellNetSpec, input_hw: tuple[int, int], cell: int, hw: tuple[int, int]) -> None:
    if hw[0] % 2 or hw[1] % 2:
        raise InputError(f"input size {input_hw} does not fit {spec.family}: cell {cell} would reduce an odd "
                         f"{hw[0]}x{hw[1]} map (DARTS' FactorizedReduce needs even sizes)")


def _cell_ops(spec: CellNetSpec, hw: tuple[int, int]) -> Iterator[OpCost]:
    """DARTS networks: stem convs, then per cell its two preprocessing ops and every edge."""
    c = spec.init_chs
    if spec.stem == "cifar":
        width = spec.stem_multiplier * c
        yield _plain_op("stem", "conv", spec.in_chans, width, hw, 1, 3, "identity", conv_bn(spec.in_chans, width, 3, hw))
        hw_pp = hw_p = hw
    else:
        stem = [("stem0.0", spec.in_chans, c // 2, "relu"), ("stem0.3", c // 2, c, "identity"), ("stem1.1", c, c, "relu")]
        hws = [hw]
        for name, c_in, c_out, act in stem:
            out_hw = conv_out_hw(hws[-1], 3, 2)
            yield _plain_op(name, "conv", c_in, c_out, hws[-1], 2, 3, act, conv_bn(c_in, c_out, 3, out_hw))
            hws.append(out_hw)
        hw_pp, hw_p = hws[2], hws[3]
    for i, cell in enumerate(cell_plan(spec)):
        chs, name = cell["chs"], f"cells.{i}"
        if cell["reduction_prev"]:
            _check_even(spec, hw, i, hw_pp)
            yield _plain_op(f"{name}.preprocess0", "factorized_reduce", cell["c_prev_prev"], chs, hw_pp, 2, 1, "relu",
                            factorized_reduce_prims(cell["c_prev_prev"], chs, hw_p), out_hw=hw_p)
        else:
            yield _plain_op(f"{name}.preprocess0", "relu_conv_bn", cell["c_prev_prev"], chs, hw_pp, 1, 1, "relu",
                            conv_bn(cell["c_prev_prev"], chs, 1, hw_pp))
        yield _plain_op(f"{name}.preprocess1", "relu_conv_bn", cell["c_prev"], chs, hw_p, 1, 1, "relu",
                        conv_bn(cell["c_prev"], chs, 1, hw_p))
        out_hw = conv_out_hw(hw_p, 3, 2) if cell["reduction"] else hw_p
        for j, (op, src) in enumerate(cell["edges"]):
            stride = 2 if cell["reduction"] and src < 2 else 1
            if op == "skip_connect" and stride == 2:
                _check_even(spec, hw, i, hw_p)
            kernel = int(op[-1]) if op[-1].isdigit() else 1
            yield _plain_op(f"{name}._ops.{j}", op, chs, chs, hw_p if src < 2 else out_hw, stride,
                            kernel, "relu", cell_op_prims(op, chs, stride, out_hw), out_hw=out_hw)
        hw_pp, hw_p = hw_p, out_hw
    if spec.num_classes:
        yield _plain_op("classifier", "linear", spec.num_features, spec.num_classes, (1, 1), 1, 1, "identity",
                        [linear(spec.num_features, spec.num_classes)], out_hw=(1, 1))


def features_hw(spec: AnySpec, input_size: int | Sequence[int]) -> tuple[int, int]:
    """Spatial size of a ``spec`` model's ``forward_features`` output: where the walk is before pooling."""
    hw = _as_hw(input_size)
    for op in iter_ops(spec, input_size):
        if op.name in ("global_pool", "classifier"):
            break
        hw = op.out_hw
    return hw


def count(spec: AnySpec, input_size: int | Sequence[int]) -> Cost:
    """Params and MACs of ``spec`` (either spec type) at ``input_size``: the sum over :func:`iter_ops`."""
    total = Cost(0, 0)
    for op in iter_ops(spec, input_size):
        total = total + Cost(op.params, op.macs)
    return total


_SIZE_CHECK_INPUT = 224  # params do not depend on the input size; the walker needs one


def check_size(spec: AnySpec, max_params: int = MAX_PARAMS) -> AnySpec:
    """``spec`` if the cost walker counts at most ``max_params`` parameters in it (nothing is built), else
    ``InputError`` saying how many; every field is already within its bound, so the walk itself is cheap."""
    params = count(spec, _SIZE_CHECK_INPUT).params
    if params > max_params:
        raise InputError(f"{type(spec).__name__}({spec.family}) has {params:,} parameters, more than "
                         f"{max_params:,} ({params * 4 / 2**30:.1f} GiB of float32 weights)")
    return spec


def count_module(model: nn.Module, input_size: Sequence[int]) -> Cost:
    """Params and MACs of any module, by running one forward pass with hooks on convs and linears.

    ``input_size`` is (C, H, W). Covers ``nn.Conv2d`` and ``nn.Linear`` (functional matmuls would be
    missed; none of the zoo's or the timm baselines' convolutions are functional).
    """
    if len(input_size) != 3:
        raise InputError(f"input_size must be (C, H, W), got {tuple(input_size)!r}")
    import torch  # here: the spec walker above runs without torch
    from torch import nn

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
