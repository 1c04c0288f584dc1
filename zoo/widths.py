"""Per-layer width lists → specs for MobileNet-style networks (BCNet's list format).

A width list is: stem, block-0 depthwise, block-0 output, then (expand, depthwise, output) for each
further inverted residual, then the head 1x1 conv (papers.md §3.7). Expand and depthwise widths of a
block are one hidden width and must be equal, as must the block-0 depthwise width and the stem
(depthwise convs keep their width). Block 0 is a depthwise-separable conv; the others are inverted
residuals. Stages follow timm's grouping so full-width specs share timm's state-dict keys. A width-searched
network is a slice of the full-width one and keeps its topology: a block has an identity shortcut exactly where the
full network has one (``BlockSpec.residual``), even where the searched widths happen to make the shapes match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import InputError
from .spec import ArchSpec, BlockSpec, SESpec


@dataclass(frozen=True)
class StageRow:
    """One row of a MobileNet-style table: ``n`` blocks of kernel ``kernel``, the first with ``stride``."""

    n: int
    kernel: int
    stride: int


def list_length(rows: Sequence[StageRow]) -> int:
    """Entries a width list needs for ``rows`` (the first row must be the single depthwise-separable block)."""
    return 1 + 2 + 3 * sum(r.n for r in rows[1:]) + 1


def width_list_spec(family: str, channels: Sequence[int], rows: Sequence[StageRow], *, full: Sequence[int],
                    stem_stride: int, act: str, se: SESpec | None, num_classes: int, drop_rate: float,
                    feature_stages: tuple[int, ...] | None) -> ArchSpec:
    """Build the spec of ``channels``, a slice of the full-width list ``full`` (whose shortcuts it keeps); raises
    ``ValueError`` naming the offending entry of ``channels``."""
    ch = list(channels)
    need = list_length(rows)
    if len(ch) != need or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in ch):
        raise InputError(f"{family} width list needs {need} positive ints, got {len(ch)} entries")
    if len(full) != need:
        raise InputError(f"{family} full-width list needs {need} entries, got {len(full)}")
    if ch[1] != ch[0]:
        raise InputError(f"width entry 1 (block-0 depthwise, {ch[1]}) must equal the stem width ({ch[0]})")
    stages = [(BlockSpec("ds", ch[2], rows[0].stride, rows[0].kernel, act=act, se=se,
                         residual=rows[0].stride == 1 and full[0] == full[2]),)]
    pos, prev = 3, 2
    for row in rows[1:]:
        blocks = []
        for i in range(row.n):
            expand, dw, out = ch[pos:pos + 3]
            if expand != dw:
                raise InputError(f"width entries {pos} and {pos + 1} (expand {expand}, depthwise {dw}) must be equal")
            stride = row.stride if i == 0 else 1
            blocks.append(BlockSpec("ir", out, stride, row.kernel, act=act, se=se, mid_chs=expand,
                                    residual=stride == 1 and full[prev] == full[pos + 2]))
            prev, pos = pos + 2, pos + 3
        stages.append(tuple(blocks))
    return ArchSpec(family=family, stem=BlockSpec("conv", ch[0], stem_stride, 3, act=act), stages=tuple(stages),
                    head_chs=ch[-1], head_act=act, num_classes=num_classes, drop_rate=drop_rate,
                    feature_stages=feature_stages)
