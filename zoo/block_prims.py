"""Cost records of every block kind, each mirroring its module's ``__init__`` layer by layer; no torch here.

The modules live beside their layers (:mod:`zoo.mbconv`, :mod:`zoo.hgc`, :mod:`zoo.bottleneck`); their cost twins
live here so the cost walker (:mod:`zoo.costs`), and with it ``mzoo info`` and every budget check, runs without
importing torch. The shape helpers both sides need (hidden widths, the bottleneck's inner widths, when a shortcut
projects) are defined here once and imported by the modules. A test checks, for every registered model, that
hook-counted costs of the built module equal the walker's, so a twin cannot drift from its module.
"""

from __future__ import annotations

from collections.abc import Callable

from common.errors import InputError
from .prims import Prim, conv_bn
from .spec import BlockSpec, SESpec

# (in_chs, out_chs, out_hw) -> cost records of a pointwise layer (the twin of zoo.mbconv.PointwiseFactory).
PointwisePrims = Callable[[int, int, tuple[int, int]], list[Prim]]


def hidden_chs(in_chs: int, block: BlockSpec) -> int:
    """Hidden (expanded) width of an inverted-residual block: ``mid_chs`` if given, else ``in_chs × expand``."""
    return block.mid_chs if block.mid_chs is not None else int(round(in_chs * block.expand))


def has_expansion(in_chs: int, block: BlockSpec) -> bool:
    """Whether an inverted residual has its 1x1 expansion conv (see :class:`zoo.mbconv.InvertedResidual`)."""
    return block.mid_chs is not None or hidden_chs(in_chs, block) != in_chs


def conv1x1_prims(in_chs: int, out_chs: int, out_hw: tuple[int, int]) -> list[Prim]:
    return [Prim("conv", in_chs, out_chs, 1, 1, out_hw)]


def se_prims(in_chs: int, mid_chs: int, se: SESpec) -> list[Prim]:
    """The two 1x1 convs of :class:`zoo.mbconv.SqueezeExcite`, applied to the pooled 1×1 map."""
    reduced = se.reduced_chs(in_chs, mid_chs)
    return [Prim("conv", mid_chs, reduced, bias=True), Prim("conv", reduced, mid_chs, bias=True)]


def inverted_residual_prims(in_chs: int, block: BlockSpec, in_hw: tuple[int, int], out_hw: tuple[int, int],
                            pointwise: PointwisePrims = conv1x1_prims) -> list[Prim]:
    """Cost records of one :class:`zoo.mbconv.InvertedResidual`, mirroring its ``__init__``."""
    mid = hidden_chs(in_chs, block)
    prims: list[Prim] = []
    if has_expansion(in_chs, block):
        prims += pointwise(in_chs, mid, in_hw) + [Prim("bn", mid, mid)]
    prims += conv_bn(mid, mid, block.kernel, out_hw, groups=mid)
    if block.se:
        prims += se_prims(in_chs, mid, block.se)
    prims += pointwise(mid, block.out_chs, out_hw) + [Prim("bn", block.out_chs, block.out_chs)]
    return prims


def depthwise_separable_prims(in_chs: int, block: BlockSpec, in_hw: tuple[int, int],
                              out_hw: tuple[int, int]) -> list[Prim]:
    """Cost records of one :class:`zoo.mbconv.DepthwiseSeparable`, mirroring its ``__init__``."""
    prims = conv_bn(in_chs, in_chs, block.kernel, out_hw, groups=in_chs)
    if block.se:
        prims += se_prims(in_chs, in_chs, block.se)
    return prims + conv_bn(in_chs, block.out_chs, 1, out_hw)


def skip_prims(in_chs: int, block: BlockSpec, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> list[Prim]:
    if block.stride == 1 and in_chs == block.out_chs:
        return []
    return conv_bn(in_chs, block.out_chs, 1, out_hw)


def check_divisible(in_chs: int, out_chs: int, groups: int) -> None:
    if in_chs % groups or out_chs % groups:
        raise InputError(f"hierarchical group conv: in_chs={in_chs} and out_chs={out_chs} "
                         f"must both be divisible by groups={groups}")


def hgc_prims(in_chs: int, out_chs: int, groups: int, out_hw: tuple[int, int],
              hierarchical: bool = True) -> list[Prim]:
    """Cost records of one :class:`zoo.hgc.HierarchicalGroupConv` (without its BN)."""
    check_divisible(in_chs, out_chs, groups)
    gin, gout = in_chs // groups, out_chs // groups
    return [Prim("conv", gin + (gout if hierarchical and i else 0), gout, 1, 1, out_hw) for i in range(groups)]


def bottleneck_widths(block: BlockSpec) -> tuple[int, int]:
    """(conv1 out, conv2 out) of a bottleneck block."""
    if block.inner_chs is None:
        return (max(1, block.out_chs // 4),) * 2
    if len(block.inner_chs) != 2:
        raise InputError(f"BlockSpec(bottleneck): inner_chs needs 2 widths (conv1, conv2), got {block.inner_chs}")
    return block.inner_chs[0], block.inner_chs[1]


def needs_downsample(in_chs: int, block: BlockSpec) -> bool:
    """A 1x1-conv shortcut where shapes change, and where the spec turns the identity off (``residual=False``: a
    width-searched block whose full-width network has a projection shortcut keeps it when its widths happen to match)."""
    return block.stride != 1 or in_chs != block.out_chs or not block.residual


def bottleneck_prims(in_chs: int, block: BlockSpec, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> list[Prim]:
    """Cost records of one :class:`zoo.bottleneck.Bottleneck`, mirroring its ``__init__``."""
    w1, w2 = bottleneck_widths(block)
    prims = conv_bn(in_chs, w1, 1, in_hw) + conv_bn(w1, w2, block.kernel, out_hw, block.groups)
    prims += conv_bn(w2, block.out_chs, 1, out_hw)
    if needs_downsample(in_chs, block):
        prims += conv_bn(in_chs, block.out_chs, 1, out_hw)
    return prims


def conv_prims(in_chs: int, block: BlockSpec, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> list[Prim]:
    """A ``conv`` block: conv + BN (+ activation, which costs nothing here)."""
    return conv_bn(in_chs, block.out_chs, block.kernel, out_hw, block.groups)


def group_ir_prims(hierarchical: bool) -> Callable[[int, BlockSpec, tuple[int, int], tuple[int, int]], list[Prim]]:
    """Cost twin of an inverted residual whose pointwise convs are (hierarchical) group convs (``hgc_ir``/``gc_ir``)."""

    def prims(in_chs: int, block: BlockSpec, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> list[Prim]:
        return inverted_residual_prims(in_chs, block, in_hw, out_hw,
                                       lambda i, o, hw: hgc_prims(i, o, block.groups, hw, hierarchical))

    return prims
