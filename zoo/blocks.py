"""The table of block kinds an :class:`~zoo.spec.ArchSpec` may use.

Each kind pairs a module constructor with the cost function that mirrors it, so the model built
from a spec and the cost walker (:mod:`zoo.costs`) read the same definition. A test checks, for
every registered model, that hook-counted costs of the built module equal the walker's.
New families add their block kinds here. A kind that does not implement a block's TensorFlow numerics
(``padding="same"``, a non-default ``bn_eps``) refuses such a block rather than building PyTorch's.

This table imports no torch: a kind names its constructor as ``"module:attribute"``, imported the first time a
block of that kind is built, and its cost twin lives in :mod:`zoo.block_prims`. So pricing a spec (``mzoo info``,
budgets, latency prediction) never pays for torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.errors import InputError
from .block_prims import (bottleneck_prims, conv_prims, depthwise_separable_prims, group_ir_prims,
                          inverted_residual_prims, skip_prims)
from .prims import Prim
from .spec import DEFAULT_BN_EPS, BlockSpec

if TYPE_CHECKING:
    from torch import nn

BuildFn = Callable[[int, BlockSpec], "nn.Module"]
PrimsFn = Callable[[int, BlockSpec, tuple[int, int], tuple[int, int]], list[Prim]]


@dataclass(frozen=True)
class BlockKind:
    """How to build a block and what it costs.

    ``build(in_chs, block)`` returns the module (``builder`` names it as ``"module:attribute"``, imported on first
    use); ``prims(in_chs, block, in_hw, out_hw)`` its cost records.
    """

    builder: str
    prims: PrimsFn

    @property
    def build(self) -> BuildFn:
        module, attribute = self.builder.split(":")
        build: BuildFn = getattr(importlib.import_module(module), attribute)
        return build


def pytorch_numerics(block: BlockSpec) -> bool:
    """Whether a block asks for PyTorch's padding and BatchNorm eps (not TensorFlow's)."""
    return block.padding == "symmetric" and block.bn_eps == DEFAULT_BN_EPS


def require_pytorch_numerics(kind: str, block: BlockSpec) -> None:
    """Refuse a block of ``kind`` (whose module knows no TensorFlow numerics) that asks for them."""
    if not pytorch_numerics(block):
        raise InputError(f"block kind {kind!r} implements only PyTorch's padding and BatchNorm eps, got "
                         f"padding={block.padding!r}, bn_eps={block.bn_eps!r}")


BLOCK_KINDS: dict[str, BlockKind] = {
    "conv": BlockKind("zoo.mbconv:build_conv", conv_prims),
    "ir": BlockKind("zoo.mbconv:InvertedResidual", inverted_residual_prims),
    "ds": BlockKind("zoo.mbconv:DepthwiseSeparable", depthwise_separable_prims),
    "skip": BlockKind("zoo.mbconv:SkipOp", skip_prims),
    "hgc_ir": BlockKind("zoo.hgc:build_hgc_ir", group_ir_prims(hierarchical=True)),
    "gc_ir": BlockKind("zoo.hgc:build_gc_ir", group_ir_prims(hierarchical=False)),
    "bottleneck": BlockKind("zoo.bottleneck:build_bottleneck", bottleneck_prims),
}


def block_kind(kind: str) -> BlockKind:
    """Look up a block kind, with an error that lists the known ones."""
    try:
        return BLOCK_KINDS[kind]
    except KeyError:
        raise InputError(f"unknown block kind {kind!r}; known: {', '.join(sorted(BLOCK_KINDS))}") from None
