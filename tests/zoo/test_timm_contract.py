"""What timm's own model tests (``tests/test_models.py``) and timm's tooling assume of a model, for every zoo model.

These mirror what timm checks, in our own words, so this suite fails wherever timm's would: the cfg a model
carries is a plain dict with timm's keys; ``features_only`` models carry a :class:`timm.models.FeatureInfo`;
torchvision's FX feature extraction (with timm's no-trace leaves) reproduces the model exactly, in eval and in
training; the FX graph scripts with TorchScript; ``forward_intermediates`` agrees with ``feature_info`` and
``forward_features``; timm's data helpers read the model's own preprocessing; timm's weight loaders read our
files. Sizes are capped as timm caps them (forward 384, features 96, FX and TorchScript 128).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import timm
import timm.data
import timm.models
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import zoo
from tests.conftest import input_for

MODELS = zoo.list_models()
TIMM_CFG_FIELDS = {f.name for f in dataclasses.fields(timm.models.PretrainedCfg)}
# The keys timm's tests, data helpers and hub code read from ``model.pretrained_cfg`` without a default.
REQUIRED_KEYS = ("input_size", "fixed_input_size", "pool_size", "first_conv", "classifier", "mean", "std",
                 "crop_pct", "crop_mode", "interpolation", "num_classes", "license", "architecture")


def _fx_model(model: torch.nn.Module, train: bool = False) -> torch.nn.Module:
    """torchvision's feature extractor returning the graph's last node, traced with timm's no-trace leaves."""
    tracer_kwargs = dict(leaf_modules=timm.models.get_notrace_modules(),
                         autowrap_functions=timm.models.get_notrace_functions(), param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]],
                                    eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_cfg_is_a_plain_dict_with_timms_keys(name: str) -> None:
    model = zoo.create_model(name)
    cfg = model.pretrained_cfg
    assert type(cfg) is dict and model.default_cfg is cfg
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    assert not missing, f"{name}: pretrained_cfg lacks {missing}"
    assert all(v is not None for v in cfg.values()), "timm drops unset fields rather than storing None"
    record = zoo.get_pretrained_cfg(name)
    assert cfg["input_size"] == record.input_size and cfg["num_classes"] == record.num_classes == model.num_classes
    assert cfg["architecture"] == name and isinstance(cfg["license"], str) and cfg["license"]
    # timm can rebuild its own record from the dict (what its hub and builder code do).
    timm.models.PretrainedCfg(**{k: v for k, v in cfg.items() if k in TIMM_CFG_FIELDS})
    with torch.inference_mode():
        feats = model.eval().forward_features(input_for(name, batch=1, max_size=448))
    assert tuple(feats.shape[2:]) == tuple(cfg["pool_size"])
    assert type(zoo.create_model(name, features_only=True).pretrained_cfg) is dict
    assert type(timm.create_model(name).default_cfg) is dict


@pytest.mark.parametrize("name", MODELS)
def test_timm_data_helpers_use_the_models_preprocessing(name: str) -> None:
    model = zoo.create_model(name)
    record = zoo.get_pretrained_cfg(name)
    data = timm.data.resolve_model_data_config(model)
    assert data["input_size"] == record.input_size
    assert data["mean"] == record.mean and data["std"] == record.std
    assert data["crop_pct"] == record.crop_pct and data["interpolation"] == record.interpolation
    from PIL import Image

    transform = timm.data.create_transform(**data)
    image = Image.new("RGB", (300, 200), (255, 0, 128))
    x = transform(image)
    assert tuple(x.shape) == record.input_size
    expected = [(c / 255 - m) / s for c, m, s in zip((255, 0, 128), record.mean, record.std)]
    torch.testing.assert_close(x[:, x.shape[1] // 2, x.shape[2] // 2], torch.tensor(expected), rtol=0, atol=1e-2)


@pytest.mark.parametrize("name", MODELS)
def test_features_only_carries_timms_feature_info(name: str) -> None:
    model = zoo.create_model(name, features_only=True).eval()
    info = model.feature_info
    assert isinstance(info, timm.models.FeatureInfo)
    channels, reductions = info.channels(), info.reduction()
    assert len(channels) >= 3 and len(info.module_name()) == len(channels) == len(info.get_dicts())
    x = input_for(name, batch=1, max_size=96)
    with torch.inference_mode():
        feats = model(x)
    assert len(feats) == len(channels)
    for f, c, r in zip(feats, channels, reductions):
        assert f.shape[1] == c
        assert f.shape[2] <= math.ceil(x.shape[2] / r) + 1 and f.shape[3] <= math.ceil(x.shape[3] / r) + 1
    full = dict(zoo.create_model(name).named_modules())
    assert all(m in full for m in info.module_name()), info.module_name()
    # out_indices select levels of the full list, as in timm (negative ones from the end).
    last_two = zoo.create_model(name, features_only=True, out_indices=(-2, -1))
    assert last_two.feature_info.channels() == channels[-2:]
    n = len(zoo.create_model(name).feature_info)
    assert last_two.feature_info.out_indices == (n - 2, n - 1)


@pytest.mark.parametrize("name", MODELS)
def test_fx_feature_extraction_reproduces_the_model(name: str) -> None:
    model = zoo.create_model(name).eval()
    x = input_for(name, batch=1, max_size=128)
    with torch.inference_mode():
        expected = model(x)
        got = tuple(_fx_model(model)(x).values())
    assert len(got) == 1 and torch.equal(got[0], expected)


@pytest.mark.parametrize("name", MODELS)
def test_fx_training_graph_backward_reaches_every_parameter(name: str) -> None:
    model = zoo.create_model(name, num_classes=42).train()
    fx = _fx_model(model, train=True)
    out = torch.cat(tuple(fx(input_for(name, batch=2, max_size=128)).values()))
    assert out.shape[-1] == 42
    out.mean().backward()
    missing = [n for n, p in fx.named_parameters() if p.grad is None]
    assert not missing, missing[:5]


@pytest.mark.parametrize("name", MODELS)
def test_fx_graph_scripts_with_torchscript(name: str) -> None:
    with timm.layers.set_layer_config(scriptable=True):
        model = zoo.create_model(name).eval()
    scripted = torch.jit.script(_fx_model(model))
    x = input_for(name, batch=1, max_size=128)
    with torch.inference_mode():
        got = tuple(scripted(x).values())[0]
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates_match_feature_info_and_features(name: str) -> None:
    model = zoo.create_model(name).eval()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    x = input_for(name, batch=1, max_size=96)
    with torch.inference_mode():
        final, inters = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [t.shape[1] for t in inters] == info.channels()
        for t, r in zip(inters, info.reduction()):
            assert t.shape[2] <= math.ceil(x.shape[2] / r) + 1
        # indices: an int takes the last n levels, a sequence those levels; intermediates_only skips the head.
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(only) == 2 and all(torch.equal(a, b) for a, b in zip(only, inters[-2:]))
        first = model.forward_intermediates(x, indices=[0], intermediates_only=True, stop_early=True)
        assert len(first) == 1 and torch.equal(first[0], inters[0])
    with pytest.raises(ValueError, match="indices"):
        model.forward_intermediates(x, indices=[len(inters)])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", MODELS)
def test_headless_construction_gives_timms_shapes(name: str) -> None:
    cfg = zoo.get_pretrained_cfg(name)
    x = input_for(name, batch=1, max_size=128)
    pooled = zoo.create_model(name, num_classes=0).eval()
    unpooled = zoo.create_model(name, num_classes=0, global_pool="").eval()
    with torch.inference_mode():
        assert pooled(x).shape == (1, pooled.head_hidden_size) and pooled.num_classes == 0
        assert unpooled(x).shape[:2] == (1, unpooled.num_features) and unpooled(x).ndim == 4
    assert cfg.num_classes > 0


def _some_models() -> list[str]:
    """One model per family (loading is the same code for all)."""
    seen, names = set(), []
    for name in MODELS:
        family = zoo.get_arch_spec(name).family
        if family not in seen:
            seen.add(family)
            names.append(name)
    return names


@pytest.mark.parametrize("name", _some_models())
def test_timm_loads_our_weight_files(name: str, tmp_path: Path) -> None:
    source = zoo.create_model(name)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    via_overlay = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert via_overlay.pretrained_cfg["file"] == str(path)
    fresh = timm.create_model(name)
    timm.models.load_checkpoint(fresh, str(path))
    for loaded in (via_overlay, fresh):
        sd = loaded.state_dict()
        assert all(torch.equal(sd[k], v) for k, v in source.state_dict().items())


def test_timm_lists_exactly_the_zoo_models_that_have_weights() -> None:
    # Over the models registered at collection: another test may register a search result in this process.
    assert set(timm.list_models(pretrained=True)) & set(MODELS) == set(zoo.list_models(pretrained=True)) & set(MODELS)


@pytest.mark.parametrize("name", zoo.list_models(pretrained=True))
def test_pretrained_weights_load_as_timms_tests_load_them(name: str) -> None:
    # timm's test_model_load_pretrained / test_model_features_pretrained: another input width, other heads.
    one_channel = timm.create_model(name, pretrained=True, in_chans=1, num_classes=5)
    assert one_channel.get_classifier().out_features == 5
    assert timm.create_model(name, pretrained=True, in_chans=1, num_classes=0).num_classes == 0
    features = timm.create_model(name, pretrained=True, features_only=True)
    assert isinstance(features.feature_info, timm.models.FeatureInfo)
