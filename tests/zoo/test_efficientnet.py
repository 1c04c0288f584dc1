"""EfficientNet-B0 width spec: timm's efficientnet_b0 key for key, and strict width-list checks."""

from __future__ import annotations

import pytest

import zoo
from tests.conftest import assert_loads_timm_weights
from zoo.efficientnet import B0_FULL_WIDTH, efficientnet_b0_width_spec


def test_full_width_is_timm_efficientnet_b0_key_for_key() -> None:
    ours = zoo.create_model("bcnet_efficientnet_b0").eval()
    theirs = assert_loads_timm_weights(ours, "efficientnet_b0")
    assert [f["module"] for f in ours.feature_info] == [f["module"] for f in theirs.feature_info]
    assert zoo.count(ours.arch_spec, 224) == zoo.count_module(theirs, (3, 224, 224))


def test_narrower_widths_build_and_cost_less() -> None:
    widths = [max(8, c // 2) if i not in (0, 1) else c for i, c in enumerate(B0_FULL_WIDTH)]
    spec = efficientnet_b0_width_spec(widths)
    model = zoo.build_model(spec)
    assert zoo.count_module(model, (3, 224, 224)) == zoo.count(spec, 224)
    assert zoo.count(spec, 224).macs < zoo.count(efficientnet_b0_width_spec(), 224).macs


def test_bad_list_is_named() -> None:
    with pytest.raises(ValueError, match="49 positive ints"):
        efficientnet_b0_width_spec(B0_FULL_WIDTH[:-1])
