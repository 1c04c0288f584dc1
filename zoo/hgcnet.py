"""HGCNets: MobileNetV2-layout networks built from hierarchical group convolutions.

Paper: Xie, Zhou, Kung, "HGC: Hierarchical Group Convolution for Highly Efficient Neural Network",
arXiv 1906.03657. The operator and block are in :mod:`zoo.hgc` (with the assumptions made there).

The paper's stage widths, depths, group counts and multipliers could not be read (papers.md §2.3,
[?]), so the family follows papers.md's advice: MobileNetV2's (t, c, n, s) table with every
inverted residual's pointwise convs replaced by HGC with ``groups=4`` (the middle of the suggested
{2, 4, 8} sweep), ReLU6, a dense 3x3 stem and a dense 1x1 head conv to 1280 (MobileNetV2 keeps stem
and head dense too), width multipliers 0.5/1/1.5/2 (channels rounded to multiples of 8, head never
narrower than 1280). Two layouts:

* ``hgcnet_<w>x``: ImageNet, 224×224, stem stride 2, five feature stages (reductions 2…32);
* ``hgcnet_<w>x_cifar``: CIFAR (the paper's setting), 32×32, stem stride 1 and strides
  (1, 1, 1, 2, 1, 2, 1) as BCNet's CIFAR MobileNetV2 (papers.md §3.6), three feature stages
  (8×8 final map), 10 classes (pass ``num_classes=100`` for CIFAR-100).

These are **not** the paper's published configurations; their counts are ours, locked by
``tests/golden/complexity.json``. No trained weights are published.
"""

from __future__ import annotations

from common.errors import InputError

from .pretrained import CIFAR10_MEAN, CIFAR10_STD, PretrainedCfg
from .registry import register_model
from .mobilenetv2 import CIFAR_STRIDES as _CIFAR_STRIDES
from .mobilenetv2 import MBV2_SETTINGS
from .spec import ArchSpec, BlockSpec, make_divisible

# Which rows of MBV2_SETTINGS form each feature stage.
_IMAGENET_STAGES = ((0,), (1,), (2,), (3, 4), (5, 6))
_CIFAR_STAGES = ((0, 1, 2), (3, 4), (5, 6))


def hgcnet_spec(width: float = 1.0, layout: str = "imagenet", groups: int = 4, block: str = "hgc_ir",
                num_classes: int | None = None) -> ArchSpec:
    """The HGCNet spec at a width multiplier.

    Args:
        width: channel multiplier of every layer (the head stays at least 1280 wide).
        layout: ``"imagenet"`` (224², stem stride 2) or ``"cifar"`` (32², stem stride 1).
        groups: groups of every pointwise HGC.
        block: ``"hgc_ir"`` (HGC) or ``"gc_ir"`` (plain group conv, the paper's baseline).
        num_classes: default 1000 (imagenet) or 10 (cifar).
    """
    if layout not in ("imagenet", "cifar"):
        raise InputError(f"layout must be 'imagenet' or 'cifar', got {layout!r}")
    cifar = layout == "cifar"
    stages = []
    for rows in _CIFAR_STAGES if cifar else _IMAGENET_STAGES:
        blocks = []
        for row in rows:
            t, c, n, s = MBV2_SETTINGS[row]
            stride = _CIFAR_STRIDES[row] if cifar else s
            out = make_divisible(c * width, 8)
            # As MobileNetV2: the first block of a row changes width or stride and has no identity shortcut; saying so
            # keeps width-searched HGCNets (zoo.spaces.HGCNetWidthSpace) from gaining one where widths coincide.
            blocks += [BlockSpec(block, out, stride if i == 0 else 1, 3, float(t), groups, "relu6", residual=i > 0)
                       for i in range(n)]
        stages.append(tuple(blocks))
    return ArchSpec(
        family="hgcnet",
        stem=BlockSpec("conv", make_divisible(32 * width, 8), 1 if cifar else 2, 3, act="relu6"),
        stages=tuple(stages),
        head_chs=make_divisible(1280 * max(1.0, width), 8),
        head_act="relu6",
        num_classes=num_classes if num_classes is not None else (10 if cifar else 1000),
        drop_rate=0.0 if cifar else 0.2,
    )


def _cfg(layout: str) -> PretrainedCfg:
    common = dict(paper_name="HGC: Hierarchical Group Convolution for Highly Efficient Neural Network",
                  paper_ids="arXiv:1906.03657",
                  notes="operator and layout assumed (paper text unavailable), see zoo/hgc.py")
    if layout == "cifar":
        return PretrainedCfg(input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0, interpolation="bilinear",
                             mean=CIFAR10_MEAN, std=CIFAR10_STD, num_classes=10, **common)
    return PretrainedCfg(input_size=(3, 224, 224), pool_size=(7, 7), num_classes=1000, **common)


@register_model(_cfg("imagenet"))
def hgcnet_0_5x() -> ArchSpec:
    """HGCNet 0.5× (ImageNet layout)."""
    return hgcnet_spec(0.5)


@register_model(_cfg("imagenet"))
def hgcnet_1x() -> ArchSpec:
    """HGCNet 1.0× (ImageNet layout)."""
    return hgcnet_spec(1.0)


@register_model(_cfg("imagenet"))
def hgcnet_1_5x() -> ArchSpec:
    """HGCNet 1.5× (ImageNet layout)."""
    return hgcnet_spec(1.5)


@register_model(_cfg("imagenet"))
def hgcnet_2x() -> ArchSpec:
    """HGCNet 2.0× (ImageNet layout)."""
    return hgcnet_spec(2.0)


@register_model(_cfg("cifar"))
def hgcnet_0_5x_cifar() -> ArchSpec:
    """HGCNet 0.5× (CIFAR layout, the paper's setting)."""
    return hgcnet_spec(0.5, "cifar")


@register_model(_cfg("cifar"))
def hgcnet_1x_cifar() -> ArchSpec:
    """HGCNet 1.0× (CIFAR layout, the paper's setting)."""
    return hgcnet_spec(1.0, "cifar")


@register_model(_cfg("cifar"))
def hgcnet_1_5x_cifar() -> ArchSpec:
    """HGCNet 1.5× (CIFAR layout, the paper's setting)."""
    return hgcnet_spec(1.5, "cifar")


@register_model(_cfg("cifar"))
def hgcnet_2x_cifar() -> ArchSpec:
    """HGCNet 2.0× (CIFAR layout, the paper's setting)."""
    return hgcnet_spec(2.0, "cifar")
