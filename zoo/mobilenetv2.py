"""MobileNetV2 with per-layer widths: the full network (timm's, key for key) and BCNet's searched widths.

Papers: Sandler et al., "MobileNetV2", arXiv:1801.04381; Su et al., "BCNet: Searching for Network Width
with Bilaterally Coupled Network", CVPR 2021 (arXiv:2105.10533).

A width spec is BCNet's 52-entry channel list (papers.md §3.7): stem, block-0 depthwise, block-0 output,
then (expand, depthwise, output) for each of the 16 inverted residuals, then the final 1x1 conv.
Expand and depthwise widths of a block must be equal, and so must the block-0 depthwise width and the
stem (depthwise convs keep their width). Stages follow timm's ``mobilenetv2_100`` (``blocks.0`` … ``blocks.6``,
block 0 a depthwise-separable conv) so the full-width model has exactly timm's state-dict keys, params
and MACs; feature levels are timm's (stages 0, 1, 2, 4, 6). Two layouts: ImageNet (224², stem stride 2)
and BCNet's CIFAR layout (32², stem stride 1, strides (1,1,1,2,1,2,1), papers.md §3.6).
The BCNet lists are the official search results (BCNet/temp/search_results.xlsx); their published
MACs/params are reproduced in ``tests/zoo/test_mobilenetv2.py``. No weights are published.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import InputError
from .pretrained import CIFAR10_MEAN, CIFAR10_STD, PretrainedCfg
from .registry import register_model
from .spec import ArchSpec
from .widths import StageRow, width_list_spec

# MobileNetV2's inverted-residual table: expansion t, channels c, repeats n, first stride s.
MBV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
CIFAR_STRIDES = (1, 1, 1, 2, 1, 2, 1)

FULL_WIDTH = (32, 32, 16, 96, 96, 24, 144, 144, 24, 144, 144, 32, 192, 192, 32, 192, 192, 32, 192, 192, 64,
              384, 384, 64, 384, 384, 64, 384, 384, 64, 384, 384, 96, 576, 576, 96, 576, 576, 96,
              576, 576, 160, 960, 960, 160, 960, 960, 160, 960, 960, 320, 1280)

# BCNet's searched widths (papers.md §3.7), keyed by their MACs budget label.
BCNET_IMAGENET = {
    "217m": (30, 30, 14, 72, 72, 22, 100, 100, 22, 129, 129, 32, 105, 105, 32, 86, 86, 32, 182, 182, 54, 384, 384, 54,
             153, 153, 54, 384, 384, 54, 384, 384, 72, 374, 374, 72, 518, 518, 72, 518, 518, 152, 960, 960, 152,
             816, 816, 152, 960, 960, 256, 1216),
    "150m": (17, 17, 9, 62, 62, 12, 57, 57, 12, 86, 86, 24, 115, 115, 24, 96, 96, 24, 172, 172, 44, 288, 288, 44,
             192, 192, 44, 268, 268, 44, 307, 307, 57, 316, 316, 57, 374, 374, 57, 489, 489, 136, 864, 864, 136,
             720, 720, 136, 912, 912, 272, 1152),
    "105m": (9, 9, 6, 48, 48, 12, 28, 28, 12, 86, 86, 16, 134, 134, 16, 57, 57, 16, 115, 115, 44, 230, 230, 44,
             230, 230, 44, 268, 268, 44, 268, 268, 48, 230, 230, 48, 230, 230, 48, 518, 518, 112, 768, 768, 112,
             864, 864, 112, 864, 864, 160, 1280),
    "50m": (9, 9, 4, 28, 28, 9, 28, 28, 9, 57, 57, 16, 38, 38, 16, 38, 38, 16, 57, 57, 25, 153, 153, 25,
            115, 115, 25, 115, 115, 25, 115, 115, 38, 115, 115, 38, 115, 115, 38, 288, 288, 64, 480, 480, 64,
            384, 384, 64, 768, 768, 128, 1152),
}
BCNET_CIFAR = {
    "200m": (6, 6, 14, 57, 57, 24, 28, 28, 24, 129, 129, 32, 153, 153, 32, 115, 115, 32, 76, 76, 64, 307, 307, 64,
             345, 345, 64, 384, 384, 64, 384, 384, 96, 57, 57, 96, 576, 576, 96, 518, 518, 160, 960, 960, 160,
             480, 480, 160, 960, 960, 128, 1280),
    "144m": (22, 22, 11, 67, 67, 8, 93, 93, 8, 136, 136, 12, 105, 105, 12, 38, 38, 12, 172, 172, 54, 364, 364, 54,
             153, 153, 54, 384, 384, 54, 364, 364, 48, 518, 518, 48, 374, 374, 48, 547, 547, 104, 960, 960, 104,
             912, 912, 104, 624, 624, 208, 1088),
    "44m": (12, 12, 9, 43, 43, 6, 7, 7, 6, 43, 43, 12, 86, 86, 12, 28, 28, 12, 124, 124, 16, 192, 192, 16,
            172, 172, 16, 76, 76, 16, 211, 211, 38, 201, 201, 38, 201, 201, 38, 230, 230, 72, 432, 432, 72,
            672, 672, 72, 528, 528, 16, 896),
    "28m": (14, 14, 7, 33, 33, 10, 14, 14, 10, 64, 64, 9, 57, 57, 9, 28, 28, 9, 67, 67, 22, 76, 76, 22,
            96, 96, 22, 57, 57, 22, 192, 192, 38, 115, 115, 38, 57, 57, 38, 230, 230, 48, 432, 432, 48,
            384, 384, 48, 480, 480, 16, 384),
}


IMAGENET_ROWS = tuple(StageRow(n, 3, s) for _, _, n, s in MBV2_SETTINGS)
CIFAR_ROWS = tuple(StageRow(n, 3, stride) for (_, _, n, _), stride in zip(MBV2_SETTINGS, CIFAR_STRIDES))


def mobilenetv2_width_spec(channels: Sequence[int] = FULL_WIDTH, layout: str = "imagenet",
                           num_classes: int | None = None) -> ArchSpec:
    """A MobileNetV2 spec from a 52-entry BCNet channel list.

    Raises:
        ValueError: wrong list length, non-positive widths, or tied widths that differ (the entry is named).
    """
    if layout not in ("imagenet", "cifar"):
        raise InputError(f"layout must be 'imagenet' or 'cifar', got {layout!r}")
    cifar = layout == "cifar"
    return width_list_spec("mobilenetv2", channels, CIFAR_ROWS if cifar else IMAGENET_ROWS, full=FULL_WIDTH,
                           stem_stride=1 if cifar else 2, act="relu6", se=None,
                           num_classes=num_classes if num_classes is not None else (10 if cifar else 1000),
                           drop_rate=0.0 if cifar else 0.2, feature_stages=(2, 4, 6) if cifar else (0, 1, 2, 4, 6))


def _cfg(layout: str, note: str) -> PretrainedCfg:
    common = dict(paper_name="BCNet: Searching for Network Width with Bilaterally Coupled Network",
                  paper_ids="arXiv:2105.10533", notes=note)
    if layout == "cifar":
        return PretrainedCfg(input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0, interpolation="bilinear",
                             mean=CIFAR10_MEAN, std=CIFAR10_STD, num_classes=10, **common)
    return PretrainedCfg(input_size=(3, 224, 224), pool_size=(7, 7), **common)


@register_model(_cfg("imagenet", "full width: timm mobilenetv2_100 key for key"))
def bcnet_mobilenetv2_100() -> ArchSpec:
    """MobileNetV2 1.0 as a width list (the BCNet supernet's full width)."""
    return mobilenetv2_width_spec(FULL_WIDTH)


@register_model(_cfg("imagenet", "BCNet search result at the 217M budget"))
def bcnet_mobilenetv2_217m() -> ArchSpec:
    """BCNet MobileNetV2, 217M MACs budget."""
    return mobilenetv2_width_spec(BCNET_IMAGENET["217m"])


@register_model(_cfg("imagenet", "BCNet search result at the 150M budget"))
def bcnet_mobilenetv2_150m() -> ArchSpec:
    """BCNet MobileNetV2, 150M MACs budget."""
    return mobilenetv2_width_spec(BCNET_IMAGENET["150m"])


@register_model(_cfg("imagenet", "BCNet search result at the 105M budget"))
def bcnet_mobilenetv2_105m() -> ArchSpec:
    """BCNet MobileNetV2, 105M MACs budget."""
    return mobilenetv2_width_spec(BCNET_IMAGENET["105m"])


@register_model(_cfg("imagenet", "BCNet search result at the 50M budget"))
def bcnet_mobilenetv2_50m() -> ArchSpec:
    """BCNet MobileNetV2, 50M MACs budget."""
    return mobilenetv2_width_spec(BCNET_IMAGENET["50m"])


@register_model(_cfg("cifar", "full width, BCNet's CIFAR layout"))
def bcnet_mobilenetv2_cifar_100() -> ArchSpec:
    """MobileNetV2 1.0 in BCNet's CIFAR layout."""
    return mobilenetv2_width_spec(FULL_WIDTH, "cifar")


@register_model(_cfg("cifar", "BCNet search result at the 200M budget"))
def bcnet_mobilenetv2_cifar_200m() -> ArchSpec:
    """BCNet MobileNetV2 (CIFAR-10), 200M MACs budget."""
    return mobilenetv2_width_spec(BCNET_CIFAR["200m"], "cifar")


@register_model(_cfg("cifar", "BCNet search result at the 144M budget"))
def bcnet_mobilenetv2_cifar_144m() -> ArchSpec:
    """BCNet MobileNetV2 (CIFAR-10), 144M MACs budget."""
    return mobilenetv2_width_spec(BCNET_CIFAR["144m"], "cifar")


@register_model(_cfg("cifar", "BCNet search result at the 44M budget"))
def bcnet_mobilenetv2_cifar_44m() -> ArchSpec:
    """BCNet MobileNetV2 (CIFAR-10), 44M MACs budget."""
    return mobilenetv2_width_spec(BCNET_CIFAR["44m"], "cifar")


@register_model(_cfg("cifar", "BCNet search result at the 28M budget"))
def bcnet_mobilenetv2_cifar_28m() -> ArchSpec:
    """BCNet MobileNetV2 (CIFAR-10), 28M MACs budget."""
    return mobilenetv2_width_spec(BCNET_CIFAR["28m"], "cifar")
