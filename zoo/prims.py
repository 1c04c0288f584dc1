"""Primitive cost records: the units every block reports its params and MACs in.

Counting conventions (the papers' and NAS-Bench-Macro's; see ../shared/reference/papers.md §9):
MACs are multiply-accumulates of conv and linear layers only; ``Conv = (C_in/groups)·C_out·k·k·H_out·W_out``,
``Linear = in·out``; BN, activations, pooling and residual adds cost nothing. Params count conv/linear
weights and biases and BN affine (γ, β), never BN running statistics, so they equal
``sum(p.numel() for p in model.parameters())``. FLOPs, where asked for, are ``2 × MACs``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prim:
    """One primitive layer: ``kind`` is ``"conv"``, ``"linear"`` or ``"bn"``."""

    kind: str
    in_chs: int
    out_chs: int
    kernel: int = 1
    groups: int = 1
    out_hw: tuple[int, int] = (1, 1)
    bias: bool = False

    @property
    def params(self) -> int:
        if self.kind == "bn":
            return 2 * self.out_chs
        weights = (self.in_chs // self.groups) * self.out_chs * self.kernel * self.kernel
        return weights + (self.out_chs if self.bias else 0)

    @property
    def macs(self) -> int:
        if self.kind == "bn":
            return 0
        per_pixel = (self.in_chs // self.groups) * self.out_chs * self.kernel * self.kernel
        return per_pixel * self.out_hw[0] * self.out_hw[1]


def conv_out_hw(hw: tuple[int, int], kernel: int, stride: int) -> tuple[int, int]:
    """Output size of a conv with 'same' padding ``kernel // 2``."""
    pad = kernel // 2
    return tuple((d + 2 * pad - kernel) // stride + 1 for d in hw)  # type: ignore[return-value]


def conv_bn(in_chs: int, out_chs: int, kernel: int, out_hw: tuple[int, int], groups: int = 1) -> list[Prim]:
    """A bias-free conv followed by BatchNorm."""
    return [Prim("conv", in_chs, out_chs, kernel, groups, out_hw), Prim("bn", out_chs, out_chs)]


def linear(in_features: int, out_features: int, bias: bool = True) -> Prim:
    return Prim("linear", in_features, out_features, bias=bias)
