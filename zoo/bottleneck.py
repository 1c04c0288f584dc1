"""ResNet's bottleneck block (v1.5: stride in the 3x3 conv) with free inner widths, and its cost twin.

Submodule names are timm's ``Bottleneck`` (``conv1, bn1, act1, conv2, bn2, act2, conv3, bn3, act3,
downsample.0/1``) so a full-width ResNet-50 spec has timm's ``resnet50`` state-dict keys. The inner
widths come from ``BlockSpec.inner_chs`` (conv1 out, conv2 out), which is how BCNet's and DAGGER's
per-layer channel lists reach the block; without it both are ``out_chs // 4`` (expansion 4).
"""

from __future__ import annotations

from torch import Tensor, nn

from .block_prims import bottleneck_widths, needs_downsample
from .layers import create_act
from .spec import BlockSpec


class Bottleneck(nn.Module):
    """1x1 → k×k (stride) → 1x1, BN after each, identity or 1x1-conv shortcut, activation after the add."""

    def __init__(self, in_chs: int, block: BlockSpec) -> None:
        super().__init__()
        w1, w2 = bottleneck_widths(block)
        self.conv1 = nn.Conv2d(in_chs, w1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.act1 = create_act(block.act)
        self.conv2 = nn.Conv2d(w1, w2, block.kernel, block.stride, block.kernel // 2, groups=block.groups, bias=False)
        self.bn2 = nn.BatchNorm2d(w2)
        self.act2 = create_act(block.act)
        self.conv3 = nn.Conv2d(w2, block.out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(block.out_chs)
        self.act3 = create_act(block.act)
        self.downsample = nn.Sequential(nn.Conv2d(in_chs, block.out_chs, 1, block.stride, bias=False),
                                        nn.BatchNorm2d(block.out_chs)) if needs_downsample(in_chs, block) \
            else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


def build_bottleneck(in_chs: int, block: BlockSpec) -> nn.Module:
    """A ``bottleneck`` block; it implements only PyTorch's padding and eps and refuses a block asking for TF's."""
    from .blocks import require_pytorch_numerics

    require_pytorch_numerics("bottleneck", block)
    return Bottleneck(in_chs, block)
