"""Mobile inverted-residual blocks shared by every MobileNet-style family, and the NAS skip op.

``InvertedResidual`` is MobileNetV2's block (expand 1x1 → k×k depthwise → project 1x1, residual when
shapes match) with the pointwise conv left as a parameter: a plain conv for MobileNetV2 /
NAS-Bench-Macro / MCT-NAS, a (hierarchical) group conv for HGCNets. Submodule names are timm's
(``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3``), so a plain-conv block has timm's state-dict keys.
Each module has a ``*_prims`` twin in :mod:`zoo.block_prims` that lists its cost records layer by layer. Every block honours its
spec's ``padding`` and ``bn_eps``: TensorFlow's SAME padding runs as a parameter-free :class:`SamePad2d` in
front of a plain ``nn.Conv2d`` (timm puts it inside a ``Conv2d`` subclass instead; a separate module keeps
the conv an exact ``nn.Conv2d`` for counters that match layer types, and adds no state-dict keys, so a
same-padded block still has timm's ``tf_*`` keys).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import InputError
from .layers import ConvBnAct, create_act
from .block_prims import has_expansion, hidden_chs
from .spec import DEFAULT_BN_EPS, BlockSpec, SESpec

# (in_chs, out_chs) -> pointwise module (its cost twin is zoo.block_prims.PointwisePrims).
PointwiseFactory = Callable[[int, int], nn.Module]


class SamePad2d(nn.Module):
    """TensorFlow's SAME padding for a ``kernel``×``kernel`` conv of ``stride``, from the input's size at run time.

    Pads so the conv outputs ``ceil(in / stride)``, the odd pixel at the bottom and right, as TensorFlow
    does. Used only where that differs from PyTorch's symmetric ``kernel // 2`` (strided convs with
    ``kernel > stride``), so the total padding is never negative and needs no clamp (FX traces it).
    """

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        if not kernel > stride > 1:
            raise InputError(f"SamePad2d: needs kernel > stride > 1 (else symmetric padding is the same), "
                             f"got kernel={kernel}, stride={stride}")
        self.kernel = kernel
        self.stride = stride

    def _total(self, size: int) -> int:
        return ((size + self.stride - 1) // self.stride - 1) * self.stride + self.kernel - size

    def forward(self, x: Tensor) -> Tensor:
        pad_h, pad_w = self._total(x.shape[-2]), self._total(x.shape[-1])
        return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


def conv_padding(kernel: int, stride: int, padding: str) -> tuple[int, nn.Module]:
    """``(the conv's own padding, the module run before it)`` for a conv under ``padding`` (``"symmetric"``/``"same"``).

    SAME equals symmetric ``kernel // 2`` padding for odd kernels at stride 1 and for 1x1 convs, so only the
    other convs get a :class:`SamePad2d` (as timm's ``create_conv2d(padding='same')`` decides).
    """
    if padding == "same" and kernel > stride > 1:
        return 0, SamePad2d(kernel, stride)
    if padding not in ("same", "symmetric"):
        raise InputError(f"unknown padding {padding!r}; known: symmetric, same")
    return kernel // 2, nn.Identity()


def padded_conv(in_chs: int, out_chs: int, kernel: int, stride: int, groups: int, padding: str,
                bias: bool = False) -> tuple[nn.Module, nn.Conv2d]:
    """``(pad, conv)``: a k×k conv under ``padding``; run as ``conv(pad(x))``."""
    amount, pad = conv_padding(kernel, stride, padding)
    return pad, nn.Conv2d(in_chs, out_chs, kernel, stride, amount, groups=groups, bias=bias)


def batch_norm(chs: int, block: BlockSpec) -> nn.BatchNorm2d:
    """BatchNorm with the block's eps (momentum stays PyTorch's: it only matters for training)."""
    return nn.BatchNorm2d(chs) if block.bn_eps == DEFAULT_BN_EPS else nn.BatchNorm2d(chs, eps=block.bn_eps)


class PaddedConvBnAct(nn.Module):
    """The ``"conv"`` block kind under TensorFlow numerics: ``pad`` → ``conv`` → ``bn`` (block's eps) → ``act``.

    Same state-dict keys as :class:`zoo.layers.ConvBnAct` (``conv``, ``bn``), which builds the PyTorch-numerics case.
    """

    def __init__(self, in_chs: int, block: BlockSpec) -> None:
        super().__init__()
        self.pad, self.conv = padded_conv(in_chs, block.out_chs, block.kernel, block.stride, block.groups,
                                          block.padding)
        self.bn = batch_norm(block.out_chs, block)
        self.act = create_act(block.act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(self.pad(x))))


def conv1x1(in_chs: int, out_chs: int) -> nn.Module:
    return nn.Conv2d(in_chs, out_chs, 1, bias=False)


class SqueezeExcite(nn.Module):
    """Pool → ``conv_reduce`` (+bias) → ``act1`` → ``conv_expand`` (+bias) → ``gate``, multiplied onto the input."""

    def __init__(self, in_chs: int, mid_chs: int, se: SESpec, block_act: str) -> None:
        super().__init__()
        reduced = se.reduced_chs(in_chs, mid_chs)
        self.conv_reduce = nn.Conv2d(mid_chs, reduced, 1, bias=True)
        self.act1 = create_act(se.act or block_act)
        self.conv_expand = nn.Conv2d(reduced, mid_chs, 1, bias=True)
        self.gate = nn.Hardsigmoid() if se.gate == "hsigmoid" else nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(scale)


class InvertedResidual(nn.Module):
    """``conv_pw`` → ``bn1`` → act → ``conv_dw`` (k×k depthwise, stride) → ``bn2`` → act → ``se`` → ``conv_pwl`` → ``bn3``.

    The expansion layers are identities when the hidden width equals the input width and was not given
    explicitly (``expand == 1``; kept as modules so ``forward`` is one straight line for TorchScript): a block
    with ``mid_chs`` set is a width-searched slice of an expanding block and keeps its expansion conv even when
    the widths happen to match. The residual is added when ``block.residual``, stride is 1 and widths match.
    """

    def __init__(self, in_chs: int, block: BlockSpec, pointwise: PointwiseFactory = conv1x1) -> None:
        super().__init__()
        mid = hidden_chs(in_chs, block)
        self.has_skip = block.residual and block.stride == 1 and in_chs == block.out_chs
        expand = has_expansion(in_chs, block)
        self.conv_pw = pointwise(in_chs, mid) if expand else nn.Identity()
        self.bn1 = batch_norm(mid, block) if expand else nn.Identity()
        self.act1 = create_act(block.act) if expand else nn.Identity()
        self.pad_dw, self.conv_dw = padded_conv(mid, mid, block.kernel, block.stride, mid, block.padding)
        self.bn2 = batch_norm(mid, block)
        self.act2 = create_act(block.act)
        self.se = SqueezeExcite(in_chs, mid, block.se, block.act) if block.se else nn.Identity()
        self.conv_pwl = pointwise(mid, block.out_chs)
        self.bn3 = batch_norm(block.out_chs, block)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(self.pad_dw(x))))
        x = self.bn3(self.conv_pwl(self.se(x)))
        if self.has_skip:
            x = x + shortcut
        return x


class DepthwiseSeparable(nn.Module):
    """``conv_dw`` (k×k, stride) → ``bn1`` → act → ``se`` → ``conv_pw`` → ``bn2`` (+ identity when shapes match).

    MobileNetV2's first block (an inverted residual without expansion) in timm's form and names.
    """

    def __init__(self, in_chs: int, block: BlockSpec) -> None:
        super().__init__()
        self.has_skip = block.residual and block.stride == 1 and in_chs == block.out_chs
        self.pad_dw, self.conv_dw = padded_conv(in_chs, in_chs, block.kernel, block.stride, in_chs, block.padding)
        self.bn1 = batch_norm(in_chs, block)
        self.act1 = create_act(block.act)
        self.se = SqueezeExcite(in_chs, in_chs, block.se, block.act) if block.se else nn.Identity()
        self.conv_pw = nn.Conv2d(in_chs, block.out_chs, 1, bias=False)
        self.bn2 = batch_norm(block.out_chs, block)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.se(self.act1(self.bn1(self.conv_dw(self.pad_dw(x)))))
        x = self.bn2(self.conv_pw(x))
        if self.has_skip:
            x = x + shortcut
        return x


class SkipOp(nn.Module):
    """NAS 'identity' candidate: a true identity, or 1x1 conv (stride) + BN where the shape changes.

    As NAS-Bench-Macro's and MCT-NAS's identity op (papers.md §4.2–4.3): no activation.
    """

    def __init__(self, in_chs: int, block: BlockSpec) -> None:
        super().__init__()
        reshape = block.stride != 1 or in_chs != block.out_chs
        # A 1x1 conv pads nothing under either padding.
        self.conv = nn.Conv2d(in_chs, block.out_chs, 1, block.stride, bias=False) if reshape else nn.Identity()
        self.bn = batch_norm(block.out_chs, block) if reshape else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


def build_conv(in_chs: int, block: BlockSpec) -> nn.Module:
    """A ``conv`` block: conv + BN + activation, with TensorFlow's padding/eps where the block asks for them."""
    from .blocks import pytorch_numerics

    if not pytorch_numerics(block):
        return PaddedConvBnAct(in_chs, block)
    return ConvBnAct(in_chs, block.out_chs, block.kernel, block.stride, block.groups, block.act)
