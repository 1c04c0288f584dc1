"""The width search's choices, apart from its machinery: the command line's parser reads them without torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo.spaces import EfficientNetB0WidthSpace, HGCNetWidthSpace, MobileNetV2WidthSpace, ResNet50WidthSpace

# Model name -> (space class, its keyword arguments). The ImageNet layouts also run on 32×32 CIFAR-10 images.
MODELS: Mapping[str, tuple[type, Mapping[str, Any]]] = {
    "mobilenetv2": (MobileNetV2WidthSpace, {}),
    "mobilenetv2_cifar": (MobileNetV2WidthSpace, {"layout": "cifar"}),
    "efficientnet_b0": (EfficientNetB0WidthSpace, {}),
    "resnet50": (ResNet50WidthSpace, {}),
    "hgcnet": (HGCNetWidthSpace, {}),
    "hgcnet_cifar": (HGCNetWidthSpace, {"layout": "cifar"}),
}
METHODS = ("bcnet", "unilateral", "cafenet")
GRANULARITIES = ("bcnet", "coarse")  # 20 ratios in 5 % steps (BCNet's); quarters (the latency tables' spaces)
