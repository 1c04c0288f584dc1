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

from common.errors import InputError

# No ``from __future__ import annotations`` here: FX copies ``forward``'s annotation into the code of the graphs
# it traces, and a string annotation there ('Tensor') is a type name TorchScript cannot resolve.

import copy
from collections.abc import Sequence
from typing import Any

import torch
from timm.models import FeatureInfo
from torch import Tensor, nn

from .costs import features_hw
from .torch_fixes import keep_jit_builtins_alive

keep_jit_builtins_alive()  # every zoo model is a ZooModel: scripting and tracing them needs the fix

GLOBAL_POOLS = ("avg", "")


def check_global_pool(global_pool: str) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise InputError(f"global_pool must be 'avg' or '', got {global_pool!r}")


def _levels(n: int, indices: Sequence[int], what: str) -> list[int]:
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise InputError(f"{what} {tuple(indices)} out of range for {n} feature levels")
    return [i % n for i in indices]


def select_feature_info(feature_info: list[dict[str, Any]], out_indices: Sequence[int] | None) -> FeatureInfo:
    """The ``feature_info`` of a ``features_only`` model: timm's :class:`~timm.models.FeatureInfo` over all levels,
    with ``out_indices`` (negative ones count from the end) the levels it returns."""
    n = len(feature_info)
    indices = list(range(n)) if out_indices is None else list(out_indices)
    # Levels come out in the network's order whatever the order asked, so the indices are sorted to match.
    return FeatureInfo(copy.deepcopy(feature_info), tuple(sorted(set(_levels(n, indices, "out_indices")))))


def take_indices(n: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's ``forward_intermediates`` convention: ``None`` all ``n`` levels, an int the last that many, a
    sequence those levels (negative ones from the end); ``ValueError`` for any level out of range."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= n:
            raise InputError(f"indices={indices}: take between 1 and {n} feature levels")
        return list(range(n - indices, n))
    return _levels(n, list(indices), "indices")


def check_output_fmt(output_fmt: str) -> None:
    if output_fmt != "NCHW":
        raise InputError(f"output_fmt must be 'NCHW' (the zoo's CNNs have no other layout), got {output_fmt!r}")


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
            raise InputError("a classifier needs pooling: use global_pool='avg' or num_classes=0")
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
    def forward_intermediates(self, x: Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's ``forward_intermediates``: the outputs of the ``feature_info`` levels ``indices`` (see
        :func:`take_indices`) and the output of ``forward_features``.

        Returns ``(features, intermediates)``, or only the intermediates with ``intermediates_only``. The zoo's
        CNNs have no final norm, so ``norm`` changes nothing. ``stop_early`` stops after the last level taken, and
        only with ``intermediates_only`` (the final features need the whole body; timm would return a partial one).
        """
        check_output_fmt(output_fmt)
        take = take_indices(len(self.feature_info), indices)
        final, levels = self.forward_levels(x, take, stop=stop_early and intermediates_only)
        return levels if intermediates_only else (final, levels)

    def forward_levels(self, x: Tensor, take: list[int], stop: bool) -> tuple[Tensor, list[Tensor]]:
        """(``forward_features`` output, outputs of the ``feature_info`` levels in ``take``); with ``stop`` the
        body stops after the last level taken and the first item is not the features. Subclasses define it."""
        raise NotImplementedError

    @torch.jit.ignore
    def output_hw(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of ``forward_features`` for an input of ``input_hw``, from the cost walker."""
        return features_hw(self.arch_spec, input_hw)

    def pre_logits(self, x: Tensor) -> Tensor:
        """Global average pool (unless ``global_pool=''``) and dropout: what the classifier sees."""
        if self.global_pool == "avg":
            x = torch.flatten(x.mean((2, 3), keepdim=True), 1)
        return self.drop(x)
