"""ResNet-50 width specs: timm's resnet50 key for key, and BCNet's published widths and counts."""

from __future__ import annotations

import pytest
import timm
import torch

import zoo
import zoo.specnet
from tests.conftest import assert_loads_timm_weights
from zoo.resnet import BCNET_RESNET50, FULL_WIDTH, resnet50_width_spec


def test_full_width_is_timm_resnet50_key_for_key() -> None:
    ours = zoo.create_model("bcnet_resnet50_100").eval()
    theirs = assert_loads_timm_weights(ours, "resnet50", 128)
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        torch.testing.assert_close(ours.forward_features(x), theirs.forward_features(x), rtol=1e-5, atol=1e-5)
    assert [f["reduction"] for f in ours.feature_info] == [f["reduction"] for f in theirs.feature_info][1:]
    assert [f["module"] for f in ours.feature_info] == ["layer1", "layer2", "layer3", "layer4"]
    assert zoo.get_pretrained_cfg("bcnet_resnet50_100").first_conv == theirs.pretrained_cfg["first_conv"]
    assert zoo.get_pretrained_cfg("bcnet_resnet50_100").classifier == theirs.pretrained_cfg["classifier"]


@pytest.mark.parametrize("size", [224, 160])
def test_full_width_counts_equal_timm(size: int) -> None:
    cost = zoo.count(resnet50_width_spec(), size)
    assert cost == zoo.count_module(timm.create_model("resnet50"), (3, size, size))
    if size == 224:
        assert (cost.params, round(cost.macs / 1e6)) == (25_557_032, 4089)  # papers.md §8


# papers.md §3.7: (MACs in G to 0.001, params in M to 0.001).
PUBLISHED = {"3g": (3.105, 23.957), "2g": (2.038, 18.415), "1g": (1.063, 12.059), "575m": (0.578, 7.167)}


@pytest.mark.parametrize("label", sorted(PUBLISHED))
def test_bcnet_widths_reproduce_published_counts(label: str) -> None:
    cost = zoo.count(resnet50_width_spec(BCNET_RESNET50[label]), 224)
    macs, params = PUBLISHED[label]
    assert round(cost.macs / 1e6) == round(macs * 1e3)
    assert round(cost.params / 1e3) == round(params * 1e3)
    assert zoo.model_info(f"bcnet_resnet50_{label}")["macs"] == cost.macs


def test_searched_widths_reach_the_layers() -> None:
    model = zoo.create_model("bcnet_resnet50_2g")
    widths = BCNET_RESNET50["2g"]
    assert model.conv1.out_channels == widths[0]
    block = model.layer1[0]
    assert (block.conv1.out_channels, block.conv2.out_channels, block.conv3.out_channels) == widths[1:4]
    assert block.downsample[0].out_channels == widths[4]
    assert model.layer4[2].conv2.out_channels == widths[-2]
    assert model.fc.in_features == widths[-1]


@pytest.mark.parametrize("mutate, message", [
    (lambda ch: ch[:-1], "53 positive ints"),
    (lambda ch: ch[:4] + [ch[4] + 1] + ch[5:], "entry 4 .*downsample"),
    (lambda ch: ch[:7] + [ch[7] - 1] + ch[8:], "entry 7 .*conv3"),
    (lambda ch: ch[:5] + [0] + ch[6:], "positive"),
])
def test_bad_width_lists_are_named(mutate, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resnet50_width_spec(mutate(list(FULL_WIDTH)))


def test_resnet_layout_is_checked() -> None:
    spec = resnet50_width_spec()
    with pytest.raises(ValueError, match="4 stages"):
        spec.replace(stages=spec.stages[:3])
    with pytest.raises(ValueError, match="SpecNet builds the 'mobile' layout"):
        zoo.specnet.SpecNet(spec)
