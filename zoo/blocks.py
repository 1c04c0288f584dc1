"""The table of block kinds an :class:`~zoo.spec.ArchSpec` may use.

Each kind pairs a module constructor with the cost function that mirrors it, so the model built
from a spec and the cost walker (:mod:`zoo.costs`) read the same definition. A test checks, for
every registered model, that hook-counted costs of the built module equal the walker's.
New families add their block kinds here. A kind that does not implement a block's TensorFlow numerics
(``padding="same"``, a non-default ``bn_eps``) refuses such a block rather than building PyTorch's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from common.errors import InputError
from .bottleneck import Bottleneck, bottleneck_prims
from .hgc import HierarchicalGroupConv, hgc_prims
from .layers import ConvBnAct
from .mbconv import (DepthwiseSeparable, InvertedResidual, PaddedConvBnAct, SkipOp, depthwise_separable_prims,
                     inverted_residual_prims, skip_prims)
from .prims import Prim, conv_bn
from .spec import DEFAULT_BN_EPS, BlockSpec

BuildFn = Callable[[int, BlockSpec], nn.Module]
PrimsFn = Callable[[int, BlockSpec, tuple[int, int], tuple[int, int]], list[Prim]]


@dataclass(frozen=True)
class BlockKind:
    """How to build a block and what it costs.

    ``build(in_chs, block)`` returns the module; ``prims(in_chs, block, in_hw, out_hw)`` its cost records.
    """

    build: BuildFn
    prims: PrimsFn


def _pytorch_numerics(block: BlockSpec) -> bool:
    return block.padding == "symmetric" and block.bn_eps == DEFAULT_BN_EPS


def _conv_build(in_chs: int, block: BlockSpec) -> nn.Module:
    if not _pytorch_numerics(block):
        return PaddedConvBnAct(in_chs, block)
    return ConvBnAct(in_chs, block.out_chs, block.kernel, block.stride, block.groups, block.act)


def _pytorch_numerics_only(kind: str, build: BuildFn) -> BuildFn:
    """``build`` for a kind whose module knows no TensorFlow numerics: refuses blocks that ask for them."""

    def checked(in_chs: int, block: BlockSpec) -> nn.Module:
        if not _pytorch_numerics(block):
            raise InputError(f"block kind {kind!r} implements only PyTorch's padding and BatchNorm eps, got "
                             f"padding={block.padding!r}, bn_eps={block.bn_eps!r}")
        return build(in_chs, block)

    return checked


def _conv_prims(in_chs: int, block: BlockSpec, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> list[Prim]:
    return conv_bn(in_chs, block.out_chs, block.kernel, out_hw, block.groups)


def _group_ir(hierarchical: bool) -> BlockKind:
    """Inverted residual whose pointwise convs are (hierarchical) group convs with ``block.groups`` groups."""

    def build(in_chs: int, block: BlockSpec) -> nn.Module:
        return InvertedResidual(in_chs, block, lambda i, o: HierarchicalGroupConv(i, o, block.groups, hierarchical))

    def prims(in_chs: int, block: BlockSpec, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> list[Prim]:
        return inverted_residual_prims(in_chs, block, in_hw, out_hw,
                                       lambda i, o, hw: hgc_prims(i, o, block.groups, hw, hierarchical))

    return BlockKind(build, prims)


BLOCK_KINDS: dict[str, BlockKind] = {
    "conv": BlockKind(_conv_build, _conv_prims),
    "ir": BlockKind(InvertedResidual, inverted_residual_prims),
    "ds": BlockKind(DepthwiseSeparable, depthwise_separable_prims),
    "skip": BlockKind(SkipOp, skip_prims),
    "hgc_ir": _group_ir(hierarchical=True),
    "gc_ir": _group_ir(hierarchical=False),
    "bottleneck": BlockKind(_pytorch_numerics_only("bottleneck", Bottleneck), bottleneck_prims),
}


def block_kind(kind: str) -> BlockKind:
    """Look up a block kind, with an error that lists the known ones."""
    try:
        return BLOCK_KINDS[kind]
    except KeyError:
        raise InputError(f"unknown block kind {kind!r}; known: {', '.join(sorted(BLOCK_KINDS))}") from None
