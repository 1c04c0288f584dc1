"""Registry and factory: names, errors, cfgs without building, timm bridge."""

from __future__ import annotations

import timm
import torch

import pytest
import zoo
import zoo.registry
import zoo.specnet
from zoo.spec import ArchSpec


def test_list_models_filters_and_sorts() -> None:
    names = zoo.list_models()
    assert "hgcnet_1x" in names and "hgcnet_1x_cifar" in names
    assert zoo.list_models("hgcnet_*_cifar") == [n for n in names if n.startswith("hgcnet_") and n.endswith("_cifar")]
    assert "hgcnet_1x_cifar" not in zoo.list_models("hgcnet*", exclude="*cifar")
    assert zoo.list_models(["hgcnet_1x", "hgcnet_2x"]) == ["hgcnet_1x", "hgcnet_2x"]
    assert zoo.list_models("nothing_like_this*") == []
    # natural (digit-aware) order, as timm sorts
    assert zoo.list_models("hgcnet_*", exclude="*cifar") == ["hgcnet_0_5x", "hgcnet_1_5x", "hgcnet_1x", "hgcnet_2x"]
    assert zoo.registry._natural_key("net_10x") > zoo.registry._natural_key("net_9x")


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(zoo.UnknownModelError, match="did you mean.*hgcnet_1x"):
        zoo.create_model("hgcnet_1")
    with pytest.raises(zoo.UnknownModelError, match="list_models"):
        zoo.model_info("qqqqqq")


def test_duplicate_names_are_errors_and_leave_registry_unchanged() -> None:
    before = zoo.list_models()
    with pytest.raises(zoo.DuplicateModelError, match="hgcnet_1x"):
        @zoo.register_model(zoo.PretrainedCfg())
        def hgcnet_1x() -> ArchSpec:  # noqa: F811
            raise AssertionError("never called")
    with pytest.raises(zoo.DuplicateModelError, match="already a timm model"):
        @zoo.register_model(zoo.PretrainedCfg())
        def resnet50() -> ArchSpec:
            raise AssertionError("never called")
    assert zoo.list_models() == before


def test_unexpected_kwargs_are_named() -> None:
    with pytest.raises(TypeError, match="drop_path_rate"):
        zoo.create_model("hgcnet_1x", drop_path_rate=0.1)


def test_cfg_and_info_do_not_build_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise AssertionError("model was built")
    monkeypatch.setattr(zoo.specnet, "SpecNet", explode)
    cfg = zoo.get_pretrained_cfg("hgcnet_1x_cifar")
    assert cfg.input_size == (3, 32, 32) and cfg.num_classes == 10 and cfg.architecture == "hgcnet_1x_cifar"
    info = zoo.model_info("hgcnet_1x")
    assert info["params"] > 0 and info["macs"] > 0 and info["arch_spec"]["family"] == "hgcnet"


def test_model_info_counts_match_the_built_model() -> None:
    info = zoo.model_info("hgcnet_0_5x")
    model = zoo.create_model("hgcnet_0_5x")
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["macs"] == zoo.count_module(model, info["input_size"]).macs


def test_overrides_reach_the_model() -> None:
    model = zoo.create_model("hgcnet_0_5x_cifar", num_classes=100, in_chans=1, drop_rate=0.5)
    assert model.arch_spec.num_classes == 100 and model.drop.p == 0.5
    assert model.conv_stem.in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 100)
    assert model.pretrained_cfg is model.default_cfg


def test_pretrained_cfg_overlay_and_bad_fields() -> None:
    model = zoo.create_model("hgcnet_0_5x", pretrained_cfg_overlay={"crop_pct": 1.0})
    assert model.pretrained_cfg["crop_pct"] == 1.0
    with pytest.raises(ValueError, match="unknown pretrained_cfg fields"):
        zoo.create_model("hgcnet_0_5x", pretrained_cfg_overlay={"crop_pct_typo": 1.0})


def test_reachable_through_timm() -> None:
    model = timm.create_model("hgcnet_1x_cifar", num_classes=5)
    assert isinstance(model, zoo.specnet.SpecNet)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert sorted(timm.list_models(module="mobile_zoo")) == sorted(zoo.list_models())
    cfg = timm.models.get_pretrained_cfg("hgcnet_1x")
    assert cfg.input_size == zoo.get_pretrained_cfg("hgcnet_1x").input_size
    assert cfg.paper_ids == "arXiv:1906.03657"
    feats = timm.create_model("hgcnet_1x", features_only=True, out_indices=(1, 2))
    assert feats.feature_info.reduction() == [4, 8]


def test_bad_out_indices_and_pool() -> None:
    with pytest.raises(ValueError, match="out of range"):
        zoo.create_model("hgcnet_1x", features_only=True, out_indices=(7,))
    with pytest.raises(ValueError, match="global_pool"):
        zoo.create_model("hgcnet_1x", global_pool="max")
    with pytest.raises(ValueError, match="needs pooling"):
        zoo.create_model("hgcnet_1x", global_pool="")
