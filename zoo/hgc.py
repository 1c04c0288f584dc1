"""Hierarchical Group Convolution (HGC): the operator and its cost records.

Paper: Xie, Zhou, Kung, "HGC: Hierarchical Group Convolution for Highly Efficient Neural Network",
arXiv 1906.03657 (2019). No official code exists and only the abstract and introduction could be read
(papers.md §2), so the operator below is the most faithful reading we could design; every assumption
is listed here and in ``HierarchicalGroupConv``.

What is known [V]: plain group convolution never lets groups exchange information; HGC
"hierarchically fuses the feature maps from each group" so later groups see earlier ones, at close
to group-convolution cost; HGCNets replace the pointwise group convolutions of mobile blocks
(the paper discusses ShuffleNet's pointwise group conv + depthwise conv) and are evaluated on CIFAR.

Assumed [R, papers.md §2.3]:
  * the input channels are split into ``g`` equal groups ``x_1..x_g``;
  * ``y_1 = K_1(x_1)`` and ``y_i = K_i(concat(x_i, y_{i-1}))`` for ``i >= 2``, where ``K_i`` is a
    1x1 conv producing ``C_out/g`` channels; the output is ``concat(y_1..y_g)``. Group ``i`` thus
    sees groups ``1..i`` of the input (hierarchical fusion), and the extra cost over a group conv is
    the ``(g-1)·(C_out/g)²`` weights of the fused inputs;
  * fusion is by concatenation (not addition), because it works for expanding layers too;
  * the HGCNet block is MobileNetV2's inverted residual (:class:`zoo.mbconv.InvertedResidual`) with
    both pointwise convs replaced by HGC (depthwise conv, BN and ReLU6 unchanged). ``groups=1`` gives
    MobileNetV2's block exactly, and ``hierarchical=False`` gives the plain group-conv block the
    paper compares against.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .block_prims import check_divisible
from .mbconv import InvertedResidual
from .spec import BlockSpec


class HierarchicalGroupConv(nn.Module):
    """1x1 hierarchical group convolution (see the module docstring for the assumed definition).

    Args:
        in_chs: input channels, divisible by ``groups``.
        out_chs: output channels, divisible by ``groups``.
        groups: number of groups ``g``; 1 is a plain pointwise conv.
        hierarchical: fuse the previous group's output into each group's input; ``False`` gives a
            plain group convolution (as ``nn.Conv2d(groups=g)``, one conv per group).
    """

    def __init__(self, in_chs: int, out_chs: int, groups: int, hierarchical: bool = True) -> None:
        super().__init__()
        check_divisible(in_chs, out_chs, groups)
        self.in_split = in_chs // groups
        self.out_split = out_chs // groups
        self.hierarchical = hierarchical
        self.convs = nn.ModuleList(
            nn.Conv2d(self.in_split + (self.out_split if hierarchical and i else 0), self.out_split, 1, bias=False)
            for i in range(groups)
        )

    def forward(self, x: Tensor) -> Tensor:
        # Slices, not torch.split: XNNPACK does not take split_with_sizes, which cut every HGC layer out of
        # the ExecuTorch delegate (82 % delegated in 34 pieces); slices keep the whole network in one.
        outs: list[Tensor] = []
        for i, conv in enumerate(self.convs):
            inp = x[:, i * self.in_split:(i + 1) * self.in_split]
            if self.hierarchical and i > 0:
                inp = torch.cat([inp, outs[i - 1]], dim=1)
            outs.append(conv(inp))
        return torch.cat(outs, dim=1)


def build_hgc_ir(in_chs: int, block: BlockSpec) -> nn.Module:
    """An ``hgc_ir`` block: MobileNetV2's inverted residual with both pointwise convs hierarchical group convs."""
    return InvertedResidual(in_chs, block, lambda i, o: HierarchicalGroupConv(i, o, block.groups, True))


def build_gc_ir(in_chs: int, block: BlockSpec) -> nn.Module:
    """A ``gc_ir`` block: the same with plain group convs (the paper's comparison)."""
    return InvertedResidual(in_chs, block, lambda i, o: HierarchicalGroupConv(i, o, block.groups, False))
