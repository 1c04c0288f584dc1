"""The model classes :class:`~zoo.spec.ArchSpec` specs build into, one per ``layout``.

``SpecNet`` (layout ``"mobile"``) names its modules as timm's EfficientNet/MobileNet (``conv_stem``,
``bn1``, ``blocks.<stage>.<block>``, ``conv_head``, ``bn2``, ``classifier``); ``SpecResNet`` (layout
``"resnet"``) as timm's ResNet (``conv1``, ``bn1``, ``maxpool``, ``layer1``…``layer4``, ``fc``). Submodule
names are state-dict keys, so specs of timm's models load timm checkpoints as they are. Both carry
the zoo's model contract (timm's; shared parts in :class:`~zoo.contract.ZooModel`):
``forward_features`` (unpooled features, head conv included), ``forward_head(x, pre_logits=)``,
(pool, then a spec's post-pool pre-logits conv as timm's MobileNetV3 ``conv_head`` + ``act2``, dropout,
classifier),
``reset_classifier``, ``get_classifier``, ``num_features``, ``head_hidden_size``, ``feature_info`` and a
``features_only`` form; both are TorchScript- and FX-traceable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from common.errors import InputError
from .blocks import block_kind
from .contract import ZooModel, select_feature_info
from .layers import create_act
from .mbconv import batch_norm, padded_conv
from .spec import DEFAULT_BN_EPS, ArchSpec


def _stem_reduction(spec: ArchSpec) -> int:
    return spec.stem.stride * (2 if spec.stem_pool else 1)


def _feature_info(spec: ArchSpec, module: str) -> list[dict[str, Any]]:
    """One entry per feature stage: channels, reduction relative to the input, module name."""
    reduction = _stem_reduction(spec)
    info = []
    for i, stage in enumerate(spec.stages):
        for block in stage:
            reduction *= block.stride
        if spec.feature_stages is None or i in spec.feature_stages:
            name = f"layer{i + 1}" if module == "layer" else f"blocks.{i}"
            info.append({"num_chs": stage[-1].out_chs, "reduction": reduction, "module": name, "stage": i})
    return info


def _stages(spec: ArchSpec) -> list[nn.Sequential]:
    chs = spec.stem.out_chs
    stages = []
    for stage in spec.stages:
        blocks = []
        for block in stage:
            blocks.append(block_kind(block.kind).build(chs, block))
            chs = block.out_chs
        stages.append(nn.Sequential(*blocks))
    return stages


def _stem(spec: ArchSpec, layout: str, cls: str) -> tuple[nn.Module, nn.Conv2d, nn.BatchNorm2d, nn.Module, nn.Module]:
    """(pad, conv, bn, act, pool) of the stem, after checking the spec is of ``layout``; ``pad`` is an identity
    unless the stem asks for TensorFlow's SAME padding where it differs from PyTorch's."""
    if spec.layout != layout:
        raise InputError(f"{cls} builds the {layout!r} layout, got {spec.layout!r}; use zoo.build_model")
    stem = spec.stem
    if stem.kind != "conv":
        raise InputError(f"ArchSpec({spec.family}): the stem must be a 'conv' block, got {stem.kind!r}")
    pad, conv = padded_conv(spec.in_chans, stem.out_chs, stem.kernel, stem.stride, stem.groups, stem.padding)
    pool = nn.MaxPool2d(3, 2, 1) if spec.stem_pool else nn.Identity()
    return pad, conv, batch_norm(stem.out_chs, stem), create_act(stem.act), pool


class SpecNet(ZooModel):
    """A network built exactly from an :class:`ArchSpec`.

    Args:
        spec: the architecture.
        global_pool: ``"avg"`` or ``""`` (no pooling; then ``num_classes`` must be 0).
    """

    def __init__(self, spec: ArchSpec, global_pool: str = "avg") -> None:
        super().__init__()
        self.stem_pad, self.conv_stem, self.bn1, self.act1, self.stem_pool = _stem(spec, "mobile", "SpecNet")
        self.setup_contract(spec, global_pool, _feature_info(spec, "blocks"))
        self.blocks = nn.Sequential(*_stages(spec))
        chs = spec.stages[-1][-1].out_chs
        # MobileNetV3-style heads run conv_head after pooling (timm's names: conv_head, act2; no norm).
        self.head_after_pool = spec.pre_logits_chs is not None
        if spec.head_chs is not None:
            self.conv_head = nn.Conv2d(chs, spec.head_chs, 1, bias=False)
            eps = {} if spec.head_bn_eps == DEFAULT_BN_EPS else {"eps": spec.head_bn_eps}
            self.bn2 = nn.BatchNorm2d(spec.head_chs, **eps)
            self.act2 = create_act(spec.head_act)
        elif spec.pre_logits_chs is not None:
            self.conv_head = nn.Conv2d(chs, spec.pre_logits_chs, 1, bias=spec.pre_logits_bias)
            self.bn2 = nn.Identity()
            self.act2 = create_act(spec.pre_logits_act)
        else:
            self.conv_head = nn.Identity()
            self.bn2 = nn.Identity()
            self.act2 = nn.Identity()
        self.classifier = self.make_classifier(spec.num_classes, global_pool)
        self.init_weights()

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.stem_pool(self.act1(self.bn1(self.conv_stem(self.stem_pad(x)))))

    def forward_features(self, x: Tensor) -> Tensor:
        """Unpooled features after the head conv: (N, num_features, H', W')."""
        x = self.forward_stem(x)
        x = self.blocks(x)
        if not self.head_after_pool:
            x = self.act2(self.bn2(self.conv_head(x)))
        return x

    @torch.jit.ignore
    def forward_levels(self, x: Tensor, take: list[int], stop: bool) -> tuple[Tensor, list[Tensor]]:
        stages = [int(self.feature_info[i]["stage"]) for i in take]
        last = max(stages) if stop else len(self.blocks) - 1
        x = self.forward_stem(x)
        levels = []
        for i, stage in enumerate(self.blocks[:last + 1]):
            x = stage(x)
            if i in stages:
                levels.append(x)
        if not stop and not self.head_after_pool:
            x = self.act2(self.bn2(self.conv_head(x)))
        return x, levels

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.head_after_pool:
            # As timm's MobileNetV3: pool → conv_head → act2 → flatten → dropout; without pooling the
            # 1x1 conv runs on the unpooled map and nothing is flattened.
            if self.global_pool == "avg":
                x = x.mean((2, 3), keepdim=True)
            x = self.act2(self.conv_head(x))
            if self.global_pool == "avg":
                x = torch.flatten(x, 1)
            x = self.drop(x)
        else:
            x = self.pre_logits(x)
        return x if pre_logits else self.classifier(x)


class SpecFeatures(nn.Module):
    """``features_only`` form of a :class:`SpecNet`: returns the outputs of selected stages.

    Shares the stem and ``blocks`` (and so their state-dict keys) with the full model; head and
    classifier are dropped. ``feature_info`` lists the returned levels only.
    """

    def __init__(self, net: SpecNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.arch_spec = net.arch_spec
        self.feature_info = select_feature_info(net.feature_info, out_indices)
        # Stage positions (in self.blocks) whose outputs are returned.
        self.return_stages = [int(f["stage"]) for f in self.feature_info.get_dicts()]
        self.stem_pad, self.conv_stem, self.bn1 = net.stem_pad, net.conv_stem, net.bn1
        self.act1, self.stem_pool = net.act1, net.stem_pool
        self.blocks = net.blocks

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem_pool(self.act1(self.bn1(self.conv_stem(self.stem_pad(x)))))
        feats: list[Tensor] = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self.return_stages:
                feats.append(x)
        return feats


class SpecResNet(ZooModel):
    """A ResNet-layout network built exactly from an :class:`ArchSpec` (timm ``ResNet`` names).

    Args:
        spec: the architecture (``layout="resnet"``: four stages, no head conv).
        global_pool: ``"avg"`` or ``""`` (no pooling; then ``num_classes`` must be 0).
    """

    classifier_name = "fc"

    def __init__(self, spec: ArchSpec, global_pool: str = "avg") -> None:
        super().__init__()
        pad, self.conv1, self.bn1, self.act1, self.maxpool = _stem(spec, "resnet", "SpecResNet")
        if not isinstance(pad, nn.Identity):
            raise InputError(f"ArchSpec({spec.family}): the resnet layout implements only PyTorch's padding, "
                             f"got stem padding={spec.stem.padding!r}")
        self.setup_contract(spec, global_pool, _feature_info(spec, "layer"))
        self.layer1, self.layer2, self.layer3, self.layer4 = _stages(spec)
        self.fc = self.make_classifier(spec.num_classes, global_pool)
        self.init_weights()

    def forward_features(self, x: Tensor) -> Tensor:
        """Unpooled output of ``layer4``: (N, num_features, H', W')."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    @torch.jit.ignore
    def forward_levels(self, x: Tensor, take: list[int], stop: bool) -> tuple[Tensor, list[Tensor]]:
        stages = [int(self.feature_info[i]["stage"]) for i in take]
        layers = (self.layer1, self.layer2, self.layer3, self.layer4)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        levels = []
        for i, layer in enumerate(layers[:max(stages) + 1] if stop else layers):
            x = layer(x)
            if i in stages:
                levels.append(x)
        return x, levels

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pre_logits(x)
        return x if pre_logits else self.fc(x)


class SpecResNetFeatures(nn.Module):
    """``features_only`` form of a :class:`SpecResNet`: the outputs of selected ``layerN`` stages."""

    def __init__(self, net: SpecResNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.arch_spec = net.arch_spec
        self.feature_info = select_feature_info(net.feature_info, out_indices)
        self.return_stages = [int(f["stage"]) for f in self.feature_info.get_dicts()]
        self.conv1, self.bn1, self.act1, self.maxpool = net.conv1, net.bn1, net.act1, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        feats: list[Tensor] = []
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            if i in self.return_stages:
                feats.append(x)
        return feats
