"""Small layer factories shared by every zoo family: activations and conv + BN + activation.

Submodule names here (``conv``, ``bn``, ``act``) are state-dict keys and must not change.
"""

from __future__ import annotations

from torch import Tensor, nn

from common.errors import InputError
from .spec import ACTIVATIONS


def create_act(name: str) -> nn.Module:
    """Activation module by name; hswish/swish use torch's built-ins so export stays clean."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    if name == "swish":
        return nn.SiLU(inplace=True)
    if name == "identity":
        return nn.Identity()
    raise InputError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")


class ConvBnAct(nn.Module):
    """Conv2d (no bias, 'same' padding for odd kernels) + BatchNorm2d + activation."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, act: str = "relu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = create_act(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))
