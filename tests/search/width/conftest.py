"""Shared pieces of the width-search tests: the four spaces at small inputs, cached supernets, a step context."""

from __future__ import annotations

import copy
import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

from latency_tables.table import Entry, LatencyTable, Overhead
from zoo.spaces import (EfficientNetB0WidthSpace, HGCNetWidthSpace, MobileNetV2WidthSpace, ResNet50WidthSpace,
                           SearchSpace, op_keys)
from search.width import WidthSupernet

# Every width space at 32×32 (BCNet's CIFAR layout where the zoo has one), 10 classes.
SPACES = {
    "mobilenetv2": MobileNetV2WidthSpace(layout="cifar"),
    "efficientnet_b0": EfficientNetB0WidthSpace(resolution=32, num_classes=10),
    "resnet50": ResNet50WidthSpace(resolution=32, num_classes=10),
    "hgcnet": HGCNetWidthSpace(multipliers=(0.5, 1.0), layout="cifar"),  # full width 1×: keeps the tests light
}


@pytest.fixture(scope="session")
def supernet_of() -> Callable[[str], WidthSupernet]:
    """Supernets built once per session (seeded); callers that train one take ``copy.deepcopy``."""
    cache: dict[str, WidthSupernet] = {}

    def get(name: str) -> WidthSupernet:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = WidthSupernet(SPACES[name])
        return cache[name]

    return get


def fresh(supernet: WidthSupernet) -> WidthSupernet:
    """A deep copy to train without disturbing the shared one."""
    return copy.deepcopy(supernet)


@dataclass
class Ctx:
    """The engine's StepContext as far as the width steps read it."""

    step: int
    rng: random.Random
    criterion: nn.Module = field(default_factory=nn.CrossEntropyLoss)


def batch(supernet: WidthSupernet, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *supernet.input_size, generator=gen)
    return x, torch.randint(0, 10, (n,), generator=gen)


SHIPPED_TABLE = Path(__file__).resolve().parents[3] / "latency_tables" / "amd-epyc-f23m1-ort-t1" / "mobilenetv2_width.json"
MS_PER_MAC = 1e-7


def toy_table(root: Path, device: str, space: SearchSpace, size: int = 32) -> Path:
    """A latency table for ``device`` holding every op key of ``space`` at ms = MACs × 1e-7, overhead 1 ms.

    Made from the shipped table's metadata (so it follows the current table schema).
    """
    template = LatencyTable.load(SHIPPED_TABLE)
    entries = {key: Entry(median_ms=op.macs * MS_PER_MAC, n=1, min_ms=op.macs * MS_PER_MAC, macs=op.macs)
               for key, op in op_keys(space).items()}
    table = dataclasses.replace(template, device=device, space=space.name, input_sizes=((3, size, size),),
                                entries=entries, overhead=Overhead(intercept_ms=1.0, per_op_ms=0.0, n_networks=1))
    return table.save(root / device / f"{space.name}.json")
