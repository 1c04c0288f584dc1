"""MobileNetV2 width specs: timm's mobilenetv2_100 key for key, and BCNet's published widths and counts."""

from __future__ import annotations

import pytest
import timm

import zoo
from tests.conftest import assert_loads_timm_weights
from zoo.mobilenetv2 import BCNET_CIFAR, BCNET_IMAGENET, FULL_WIDTH, mobilenetv2_width_spec


def test_full_width_is_timm_mobilenetv2_100_key_for_key() -> None:
    ours = zoo.create_model("bcnet_mobilenetv2_100").eval()
    theirs = assert_loads_timm_weights(ours, "mobilenetv2_100")
    assert [f["reduction"] for f in ours.feature_info] == [f["reduction"] for f in theirs.feature_info]
    assert [f["module"] for f in ours.feature_info] == [f["module"] for f in theirs.feature_info]


def test_full_width_counts_equal_timm() -> None:
    assert zoo.count(mobilenetv2_width_spec(), 224) == zoo.count_module(timm.create_model("mobilenetv2_100"), (3, 224, 224))


# papers.md §3.6/§3.7: (MACs in M to 0.1, params in M to 0.001).
PUBLISHED = {
    ("imagenet", "217m"): (218.6, 2.980), ("imagenet", "150m"): (149.9, 2.641),
    ("imagenet", "105m"): (106.5, 2.388), ("imagenet", "50m"): (50.9, 1.680),
    ("cifar", "200m"): (200.1, 1.475), ("cifar", "144m"): (144.4, 1.225),
    ("cifar", "44m"): (44.3, 0.363), ("cifar", "28m"): (28.7, 0.212),
}


@pytest.mark.parametrize("layout, label", sorted(PUBLISHED))
def test_bcnet_widths_reproduce_published_counts(layout: str, label: str) -> None:
    widths = (BCNET_IMAGENET if layout == "imagenet" else BCNET_CIFAR)[label]
    cost = zoo.count(mobilenetv2_width_spec(widths, layout), 224 if layout == "imagenet" else 32)
    macs, params = PUBLISHED[(layout, label)]
    assert round(cost.macs / 1e5) == round(macs * 10)
    assert round(cost.params / 1e3) == round(params * 1e3)


def test_cifar_full_width_counts() -> None:
    cost = zoo.count(mobilenetv2_width_spec(FULL_WIDTH, "cifar"), 32)
    assert (round(cost.macs / 1e5), round(cost.params / 1e3)) == (2965, 2237)


@pytest.mark.parametrize("mutate, message", [
    (lambda ch: ch[:-1], "52 positive ints"),
    (lambda ch: [ch[0] + 1] + ch[1:], "stem width"),
    (lambda ch: ch[:3] + [ch[3] + 1] + ch[4:], "must be equal"),
    (lambda ch: ch[:5] + [0] + ch[6:], "positive"),
])
def test_bad_width_lists_are_named(mutate, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mobilenetv2_width_spec(mutate(list(FULL_WIDTH)))
