"""One walker op as a standalone module: what a latency table measures for each key.

:func:`op_module` turns an :class:`~zoo.costs.OpCost` from :func:`zoo.iter_ops` back into the module the
network runs for it, with the input shape it sees there, so that measuring the op alone and running it
inside the network execute the same layers. Blocks of an :class:`~zoo.spec.ArchSpec` are rebuilt from
their :class:`~zoo.spec.BlockSpec` through the block-kind table the networks use; DARTS cell ops and
preprocessing ops from their kind, channels and stride. The classifier is measured on a pooled
``(1, C)`` vector: global pooling and flattening are not walker ops and land in the per-network overhead
that a latency predictor calibrates, except in MobileNetV3-style specs, whose ``global_pool`` op (an
average pool to 1×1) and post-pool ``pre_logits`` conv (1×1 conv + activation, no BN) are walker ops
and are built here like any other.
"""

from __future__ import annotations

from torch import nn

from common.errors import InputError
from .blocks import BLOCK_KINDS, block_kind
from .cells import FactorizedReduce, ReLUConvBN, create_cell_op
from .costs import GLOBAL_POOL_KIND, PRE_LOGITS_KINDS, OpCost
from .layers import ConvBnAct, create_act


def op_module(op: OpCost, batch_size: int = 1) -> tuple[nn.Module, tuple[int, ...]]:
    """``(module in eval mode, input shape)`` of ``op``; raises ``ValueError`` for a kind it cannot build."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    image = (batch_size, op.in_chs, *op.in_hw)
    if op.kind == "linear":
        return nn.Linear(op.in_chs, op.out_chs).eval(), (batch_size, op.in_chs)
    if op.block is not None and op.kind in BLOCK_KINDS:
        return block_kind(op.kind).build(op.in_chs, op.block).eval(), image
    if op.kind == GLOBAL_POOL_KIND:
        return nn.AdaptiveAvgPool2d(1).eval(), image
    if op.kind in PRE_LOGITS_KINDS.values():
        bias = op.kind == PRE_LOGITS_KINDS[True]
        return nn.Sequential(nn.Conv2d(op.in_chs, op.out_chs, 1, bias=bias), create_act(op.act)).eval(), image
    if op.kind == "maxpool":
        return nn.MaxPool2d(op.kernel, op.stride, op.kernel // 2).eval(), image
    if op.kind == "conv":  # DARTS stems: conv + BN (+ act)
        return ConvBnAct(op.in_chs, op.out_chs, op.kernel, op.stride, op.groups, op.act).eval(), image
    if op.kind == "relu_conv_bn":
        return ReLUConvBN(op.in_chs, op.out_chs, op.kernel, op.stride, op.kernel // 2).eval(), image
    if op.kind == "factorized_reduce":
        return FactorizedReduce(op.in_chs, op.out_chs).eval(), image
    try:
        return create_cell_op(op.kind, op.in_chs, op.stride).eval(), image
    except ValueError:
        raise InputError(f"op {op.name!r} has kind {op.kind!r}, which op_module cannot build "
                         f"(key {op.key})") from None
