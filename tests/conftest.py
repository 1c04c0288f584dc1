"""Shared test helpers: seeded inputs at a model's configured size, capped to keep CI fast."""

from __future__ import annotations

import os

import pytest
import torch

import zoo


def input_for(name: str, batch: int = 2, max_size: int | None = None, seed: int = 0) -> torch.Tensor:
    """A seeded input of the model's cfg size, optionally capped (like timm's test size caps)."""
    c, h, w = zoo.get_pretrained_cfg(name).input_size
    if max_size is not None:
        h, w = min(h, max_size), min(w, max_size)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, c, h, w, generator=gen)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: more OpenMP threads than cores spin and slow tests ~100x.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
