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


def assert_loads_timm_weights(ours: torch.nn.Module, timm_name: str, size: int = 224) -> torch.nn.Module:
    """``ours`` has timm's state-dict keys and shapes, loads timm's weights strictly and then matches its outputs."""
    import timm

    theirs = timm.create_model(timm_name).eval()
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert all(ours_sd[k].shape == theirs_sd[k].shape for k in ours_sd)
    ours.load_state_dict(theirs_sd, strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        torch.testing.assert_close(ours.eval()(x), theirs(x), rtol=1e-5, atol=1e-5)
    return theirs
