"""The model contract, checked for every registered model (a new model is covered with no new test)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.fx

import zoo
from tests.conftest import input_for

MODELS = zoo.list_models()


@pytest.mark.parametrize("name", MODELS)
def test_forward(name: str) -> None:
    model = zoo.create_model(name).eval()
    x = input_for(name)
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, zoo.get_pretrained_cfg(name).num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_backward_all_params_get_grads(name: str) -> None:
    model = zoo.create_model(name, num_classes=42).train()
    out = model(input_for(name, max_size=96))
    assert out.shape == (2, 42)
    out.mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert p.grad.shape == p.shape


@pytest.mark.parametrize("name", MODELS)
def test_cfg_consistency(name: str) -> None:
    cfg = zoo.get_pretrained_cfg(name)
    model = zoo.create_model(name).eval()
    spec = model.arch_spec
    assert cfg.num_classes == spec.num_classes == model.num_classes
    assert cfg.input_size[0] == spec.in_chans
    x = input_for(name)
    with torch.inference_mode():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features
        assert tuple(feats.shape[2:]) == cfg.pool_size == model.output_hw(cfg.input_size[1:])
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        model.reset_classifier(0)
        assert model(x).shape == pre.shape
        model.reset_classifier(0, "")
        assert model(x).shape == feats.shape
    headless = zoo.create_model(name, num_classes=0, global_pool="")
    assert headless(x).shape == feats.shape
    state = zoo.create_model(name).state_dict()
    assert f"{cfg.first_conv}.weight" in state
    assert f"{cfg.classifier}.weight" in state


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier_changes_outputs(name: str) -> None:
    model = zoo.create_model(name).eval()
    model.reset_classifier(7)
    assert model.get_classifier().out_features == 7
    assert model(input_for(name, max_size=64)).shape == (2, 7)
    assert model.arch_spec.num_classes == 7


@pytest.mark.parametrize("name", MODELS)
def test_features_only(name: str) -> None:
    model = zoo.create_model(name, features_only=True).eval()
    x = input_for(name, max_size=96)
    feats = model(x)
    assert len(feats) >= 3 and len(feats) == len(model.feature_info.get_dicts())
    for f, info in zip(feats, model.feature_info.get_dicts()):
        assert f.shape[1] == info["num_chs"]
        assert f.shape[2] <= math.ceil(x.shape[2] / info["reduction"]) + 1
    last = zoo.create_model(name, features_only=True, out_indices=(-1,))
    last.load_state_dict(model.state_dict(), strict=False)
    assert torch.equal(last.eval()(x)[0], feats[-1])


@pytest.mark.parametrize("name", MODELS)
def test_torchscript_matches_eager(name: str) -> None:
    model = zoo.create_model(name).eval()
    scripted = torch.jit.script(model)
    x = input_for(name, max_size=128)
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_fx_trace_is_exact(name: str) -> None:
    model = zoo.create_model(name).eval()
    traced = torch.fx.symbolic_trace(model)
    x = input_for(name, max_size=128)
    with torch.inference_mode():
        assert torch.equal(traced(x), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_spec_round_trip_rebuilds_exactly(name: str) -> None:
    model = zoo.create_model(name).eval()
    spec = zoo.spec_from_json(model.arch_spec.to_json())
    assert spec == model.arch_spec
    rebuilt = zoo.build_model(spec).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = input_for(name, max_size=64)
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), model(x))
