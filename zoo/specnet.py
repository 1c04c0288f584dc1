"""``SpecNet``: the model class every :class:`~zoo.spec.ArchSpec` builds into.

It owns the zoo's model contract (the same as timm's): ``forward_features`` (unpooled features,
head conv included), ``forward_head(x, pre_logits=)``, ``reset_classifier``, ``get_classifier``,
``num_features``, ``head_hidden_size``, ``feature_info`` and ``features_only`` mode, and it is
TorchScript- and FX-traceable. Submodule names are state-dict keys, chosen once to be timm's
EfficientNet/MobileNet names (``conv_stem``, ``bn1``, ``blocks.<stage>.<block>``, ``conv_head``, ``bn2``,
``classifier``) so that specs of timm's MobileNet-style models can load timm checkpoints as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .blocks import block_kind
from .layers import create_act
from .prims import conv_out_hw
from .spec import ArchSpec


def _feature_info(spec: ArchSpec) -> list[dict[str, Any]]:
    """One entry per feature stage: channels, reduction relative to the input, module name."""
    reduction = spec.stem.stride
    info = []
    for i, stage in enumerate(spec.stages):
        for block in stage:
            reduction *= block.stride
        if spec.feature_stages is None or i in spec.feature_stages:
            info.append({"num_chs": stage[-1].out_chs, "reduction": reduction, "module": f"blocks.{i}", "stage": i})
    return info


class SpecNet(nn.Module):
    """A network built exactly from an :class:`ArchSpec`.

    Args:
        spec: the architecture.
        global_pool: ``"avg"`` or ``""`` (no pooling; then ``num_classes`` must be 0).
    """

    def __init__(self, spec: ArchSpec, global_pool: str = "avg") -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.arch_spec = spec
        self.num_classes = spec.num_classes
        self.drop_rate = spec.drop_rate
        self.feature_info = _feature_info(spec)
        stem = spec.stem
        if stem.kind != "conv":
            raise ValueError(f"ArchSpec({spec.family}): the stem must be a 'conv' block, got {stem.kind!r}")
        self.conv_stem = nn.Conv2d(spec.in_chans, stem.out_chs, stem.kernel, stem.stride, stem.kernel // 2,
                                   groups=stem.groups, bias=False)
        self.bn1 = nn.BatchNorm2d(stem.out_chs)
        self.act1 = create_act(stem.act)
        chs = stem.out_chs
        stages = []
        for stage in spec.stages:
            blocks = []
            for block in stage:
                blocks.append(block_kind(block.kind).build(chs, block))
                chs = block.out_chs
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = spec.num_features
        if spec.head_chs is not None:
            self.conv_head = nn.Conv2d(chs, spec.head_chs, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(spec.head_chs)
            self.act2 = create_act(spec.head_act)
        else:
            self.conv_head = nn.Identity()
            self.bn2 = nn.Identity()
            self.act2 = nn.Identity()
        self.global_pool = global_pool
        self.drop = nn.Dropout(spec.drop_rate)
        self.classifier = self._make_classifier(spec.num_classes, global_pool)
        self._init_weights()

    def _make_classifier(self, num_classes: int, global_pool: str) -> nn.Module:
        if num_classes and not global_pool:
            raise ValueError("a classifier needs pooling: use global_pool='avg' or num_classes=0")
        return nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def _init_weights(self) -> None:
        # Fan-out normal init counted per group (as timm's EfficientNet init). torch's kaiming_normal_
        # ignores groups, which shrinks depthwise weights by sqrt(channels): random-init activations
        # then vanish ~10x per stage and export parity checks compare numbers near zero.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.in_features ** 0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        """Replace the classifier (``num_classes=0`` gives an identity head; ``global_pool=''`` no pooling)."""
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.classifier = self._make_classifier(num_classes, global_pool)
        self.arch_spec = self.arch_spec.replace(num_classes=num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Unpooled features after the head conv: (N, num_features, H', W')."""
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return self.act2(self.bn2(self.conv_head(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":
            x = torch.flatten(x.mean((2, 3), keepdim=True), 1)
        x = self.drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def output_hw(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of ``forward_features`` for an input of ``input_hw``."""
        hw = conv_out_hw(input_hw, self.arch_spec.stem.kernel, self.arch_spec.stem.stride)
        for block in self.arch_spec.blocks:
            hw = conv_out_hw(hw, block.kernel, block.stride)
        return hw


class SpecFeatures(nn.Module):
    """``features_only`` form of a :class:`SpecNet`: returns the outputs of selected stages.

    Shares the stem and ``blocks`` (and so their state-dict keys) with the full model; head and
    classifier are dropped. ``feature_info`` lists the returned levels only.
    """

    def __init__(self, net: SpecNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        n = len(net.feature_info)
        indices = list(range(n)) if out_indices is None else list(out_indices)
        for i in indices:
            if not -n <= i < n:
                raise ValueError(f"out_indices {tuple(indices)} out of range for {n} feature stages")
        self.arch_spec = net.arch_spec
        self.feature_info = [net.feature_info[i % n] for i in indices]
        # Stage positions (in self.blocks) whose outputs are returned.
        self.out_indices = [int(f["stage"]) for f in self.feature_info]
        self.conv_stem, self.bn1, self.act1 = net.conv_stem, net.bn1, net.act1
        self.blocks = net.blocks

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        feats: list[Tensor] = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self.out_indices:
                feats.append(x)
        return feats
