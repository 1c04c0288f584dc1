"""The half of the model contract every zoo model class shares, whatever its layout.

:class:`ZooModel` owns classifier handling (``get_classifier``, ``reset_classifier``, the pooled
pre-logits path of ``forward_head``) and the weight init, so :class:`~zoo.specnet.SpecNet`,
:class:`~zoo.specnet.SpecResNet` and :class:`~zoo.cells.CellNet` differ only in their bodies and
state-dict names. ``forward`` is ``forward_head(forward_features(x))`` for all. Subclasses set ``arch_spec``,
``num_features``, ``drop`` and ``global_pool`` and name their classifier by the class constant
``classifier_name``. As in timm, ``num_features`` is the width of ``forward_features`` and
``head_hidden_size`` the width the classifier sees; they differ only for specs with a post-pool
pre-logits conv (MobileNetV3-style heads).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

GLOBAL_POOLS = ("avg", "")


def check_global_pool(global_pool: str) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")


def select_feature_info(feature_info: list[dict[str, Any]],
                        out_indices: Sequence[int] | None) -> list[dict[str, Any]]:
    """The ``feature_info`` entries a ``features_only`` model returns (negative indices count from the end)."""
    n = len(feature_info)
    indices = list(range(n)) if out_indices is None else list(out_indices)
    for i in indices:
        if not -n <= i < n:
            raise ValueError(f"out_indices {tuple(indices)} out of range for {n} feature levels")
    return [feature_info[i % n] for i in indices]


class ZooModel(nn.Module):
    """Shared contract methods; see the module docstring."""

    # Subclasses set arch_spec, num_features, num_classes, global_pool and drop in __init__ (no class
    # annotations here: TorchScript would try to type them).
    classifier_name = "classifier"

    def setup_contract(self, spec: Any, global_pool: str, feature_info: list[dict[str, Any]]) -> None:
        """Set the contract attributes every model class shares (call before building the classifier)."""
        check_global_pool(global_pool)
        self.arch_spec = spec
        self.num_classes = spec.num_classes
        self.drop_rate = spec.drop_rate
        self.feature_info = feature_info
        self.num_features = spec.num_features
        self.head_hidden_size = spec.head_hidden_size
        self.global_pool = global_pool
        self.drop = nn.Dropout(spec.drop_rate)

    def make_classifier(self, num_classes: int, global_pool: str) -> nn.Module:
        check_global_pool(global_pool)
        if num_classes and not global_pool:
            raise ValueError("a classifier needs pooling: use global_pool='avg' or num_classes=0")
        return nn.Linear(self.head_hidden_size, num_classes) if num_classes else nn.Identity()

    def init_weights(self) -> None:
        # Fan-out normal init counted per group (as timm's EfficientNet init). torch's kaiming_normal_
        # ignores groups, which shrinks depthwise weights by sqrt(channels): random-init activations
        # then vanish ~10x per stage and export parity checks compare numbers near zero.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features ** 0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        """Replace the classifier (``num_classes=0`` gives an identity head; ``global_pool=''`` no pooling)."""
        classifier = self.make_classifier(num_classes, global_pool)
        self.num_classes = num_classes
        self.global_pool = global_pool
        setattr(self, self.classifier_name, classifier)
        self.arch_spec = self.arch_spec.replace(num_classes=num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def output_hw(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of ``forward_features`` for an input of ``input_hw``, from the cost walker."""
        from .costs import features_hw  # late: the walker imports the cell model module, which imports this one

        return features_hw(self.arch_spec, input_hw)

    def pre_logits(self, x: Tensor) -> Tensor:
        """Global average pool (unless ``global_pool=''``) and dropout: what the classifier sees."""
        if self.global_pool == "avg":
            x = torch.flatten(x.mean((2, 3), keepdim=True), 1)
        return self.drop(x)
