"""The (assumed) Meta-Kernel space: its extremes bracket the published 357M, and tokens are checked."""

from __future__ import annotations

import pytest
import timm
import torch

import zoo
from zoo.metakernel import NUM_LAYERS, metakernel_spec


def test_space_brackets_the_published_budget() -> None:
    smallest = zoo.count(metakernel_spec(" ".join(["e3k3"] * NUM_LAYERS)), 224).macs
    largest = zoo.count(metakernel_spec(" ".join(["e6k7"] * NUM_LAYERS)), 224).macs
    assert smallest < 357e6 < largest  # the paper's model (357M FLOPs) must be expressible


def test_all_e6_with_b0_kernels_is_efficientnet_b0() -> None:
    # The assumed skeleton is EfficientNet-B0's: B0's own choices give B0's counts exactly.
    b0 = "e6k3 e6k3  e6k5 e6k5  e6k3 e6k3 e6k3  e6k5 e6k5 e6k5  e6k5 e6k5 e6k5 e6k5  e6k3"
    assert zoo.count(metakernel_spec(b0), 224) == zoo.count_module(timm.create_model("efficientnet_b0"), (3, 224, 224))


def test_a_sampled_architecture_builds_and_counts() -> None:
    spec = metakernel_spec("e3k5 id  e6k7 e3k3  e3k3 id e6k5  e6k3 e3k7 id  e6k5 e3k3 e3k5 id  e6k7")
    model = zoo.build_model(spec).eval()
    assert zoo.count(spec, 224) == zoo.count_module(model, (3, 224, 224))
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 128, 128)).shape == (1, 1000)


@pytest.mark.parametrize("tokens, message", [
    ("e3k3 " * (NUM_LAYERS - 1), "15 layer tokens"),
    ("e4k3 " + "e3k3 " * (NUM_LAYERS - 1), "'e4k3'"),
    ("e3k9 " + "e3k3 " * (NUM_LAYERS - 1), "'e3k9'"),
])
def test_bad_tokens_are_named(tokens: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metakernel_spec(tokens)
