"""EfficientNet-B0 with per-layer widths: the width-search target of BCNet and CafeNet.

Papers: Tan & Le, "EfficientNet", arXiv:1905.11946; Su et al., "BCNet", CVPR 2021 (arXiv:2105.10533),
whose headline result re-searches EfficientNet-B0's widths at the same FLOPs (77.36 % top-1).

The width list uses BCNet's MobileNet format (see :mod:`zoo.widths`): stem, block-0 depthwise,
block-0 output, then (expand, depthwise, output) for each of the 15 inverted residuals, then the head:
49 entries. BCNet's EfficientNet list granularity and its searched widths are not retrievable
(papers.md §3.6, [?]), so only the full width is registered here; search results register through
the same spec function. Blocks: SE with reduced width int(0.25 × block input) (timm's rule), SiLU,
sigmoid gate; stages and names as timm's ``efficientnet_b0``, so the full width is timm's model key for key.
"""

from __future__ import annotations

from collections.abc import Sequence

from .pretrained import PretrainedCfg
from .registry import register_model
from .spec import ArchSpec, SESpec
from .widths import StageRow, width_list_spec

B0_ROWS = (StageRow(1, 3, 1), StageRow(2, 3, 2), StageRow(2, 5, 2), StageRow(3, 3, 2), StageRow(3, 5, 1),
           StageRow(4, 5, 2), StageRow(1, 3, 1))
B0_SE = SESpec(ratio=0.25, base="in", divisor=1, act=None, gate="sigmoid")


def _b0_full_width() -> tuple[int, ...]:
    outs = (16, 24, 40, 80, 112, 192, 320)
    widths, prev = [32, 32, 16], 16
    for row, out in zip(B0_ROWS[1:], outs[1:]):
        for _ in range(row.n):
            widths += [prev * 6, prev * 6, out]
            prev = out
    return tuple(widths + [1280])


B0_FULL_WIDTH = _b0_full_width()


def efficientnet_b0_width_spec(channels: Sequence[int] = B0_FULL_WIDTH, num_classes: int = 1000) -> ArchSpec:
    """An EfficientNet-B0 spec from a 49-entry width list (224×224 ImageNet layout)."""
    return width_list_spec("efficientnet", channels, B0_ROWS, full=B0_FULL_WIDTH, stem_stride=2, act="swish", se=B0_SE,
                           num_classes=num_classes, drop_rate=0.2, feature_stages=(0, 1, 2, 4, 6))


@register_model(PretrainedCfg(input_size=(3, 224, 224), pool_size=(7, 7), paper_ids="arXiv:2105.10533",
                              paper_name="BCNet: Searching for Network Width with Bilaterally Coupled Network",
                              notes="full width: timm efficientnet_b0 key for key"))
def bcnet_efficientnet_b0() -> ArchSpec:
    """EfficientNet-B0 as a width list (the BCNet supernet's full width)."""
    return efficientnet_b0_width_spec()
