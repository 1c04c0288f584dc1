"""Once-for-All's MobileNetV3 space and the MobileNetV3-style (post-pool) head it needs in ArchSpec."""

from __future__ import annotations

import random

import pytest
import timm
import torch
import torch.fx

import zoo
from zoo.costs import features_hw
from zoo.hgcnet import hgcnet_spec
from zoo.ofa import DEPTHS, EXPANDS, KERNELS, NUM_SLOTS, OFA_SE, ofa_mbv3_spec, ofa_mbv3_uniform_spec
from zoo.ops import op_module
from zoo.registry import features_model
from zoo.spec import ArchSpec, BlockSpec


def _random_spec(seed: int) -> ArchSpec:
    rng = random.Random(seed)
    return ofa_mbv3_spec([rng.choice(KERNELS) for _ in range(NUM_SLOTS)], [rng.choice(EXPANDS) for _ in range(NUM_SLOTS)],
                         [rng.choice(DEPTHS) for _ in range(5)])


def _timm_mobilenetv3_large_spec() -> ArchSpec:
    """timm's ``mobilenetv3_large_100`` written as an ArchSpec (its arch_def, in our fields)."""
    def ir(out: int, stride: int, kernel: int, expand: float, act: str, se: bool) -> BlockSpec:
        return BlockSpec("ir", out, stride, kernel, expand, act=act, se=OFA_SE if se else None)

    stages = (
        (BlockSpec("ds", 16, 1, 3, act="relu"),),
        (ir(24, 2, 3, 4, "relu", False), ir(24, 1, 3, 3, "relu", False)),
        tuple(ir(40, 2 if i == 0 else 1, 5, 3, "relu", True) for i in range(3)),
        (ir(80, 2, 3, 6, "hswish", False), ir(80, 1, 3, 2.5, "hswish", False), ir(80, 1, 3, 2.3, "hswish", False),
         ir(80, 1, 3, 2.3, "hswish", False)),
        (ir(112, 1, 3, 6, "hswish", True), ir(112, 1, 3, 6, "hswish", True)),
        tuple(ir(160, 2 if i == 0 else 1, 5, 6, "hswish", True) for i in range(3)),
        (BlockSpec("conv", 960, 1, 1, act="hswish"),),
    )
    return ArchSpec("mobilenetv3", BlockSpec("conv", 16, 2, 3, act="hswish"), stages, pre_logits_chs=1280,
                    pre_logits_act="hswish", pre_logits_bias=True, feature_stages=(0, 1, 2, 4, 6))


@pytest.mark.parametrize("spec", [ofa_mbv3_uniform_spec(7, 6), _random_spec(1), _random_spec(2)],
                         ids=["max", "rand1", "rand2"])
@pytest.mark.parametrize("size", [224, 160])
def test_walker_equals_module_counter(spec: ArchSpec, size: int) -> None:
    model = zoo.build_model(spec)
    assert zoo.count(spec, size) == zoo.count_module(model, (3, size, size))


def test_timm_mobilenetv3_head_is_expressible_and_matches_timm() -> None:
    """The post-pool head reproduces timm's MobileNetV3 exactly: its weights load and every output agrees."""
    ours = zoo.build_model(_timm_mobilenetv3_large_spec()).eval()
    theirs = timm.create_model("mobilenetv3_large_100").eval()
    # Only our ConvBnAct names its norm 'bn' where timm's names it 'bn1' (the final 1x1 conv block).
    state = {k.replace("blocks.6.0.bn1.", "blocks.6.0.bn."): v for k, v in theirs.state_dict().items()}
    assert sorted(state) == sorted(ours.state_dict())
    ours.load_state_dict(state, strict=True)
    assert (ours.num_features, ours.head_hidden_size) == (theirs.num_features, theirs.head_hidden_size) == (960, 1280)
    assert zoo.count(ours.arch_spec, 224) == zoo.count_module(theirs, (3, 224, 224))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        feats = ours.forward_features(x)
        torch.testing.assert_close(feats, theirs.forward_features(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.forward_head(feats, pre_logits=True),
                                   theirs.forward_head(feats, pre_logits=True), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_ofa_structure_and_op_sequence() -> None:
    spec = ofa_mbv3_spec([3] * NUM_SLOTS, [4] * NUM_SLOTS, [2, 3, 4, 2, 3])
    assert [len(s) for s in spec.stages] == [1, 2, 3, 4, 2, 3, 1]
    ops = list(zoo.iter_ops(spec, 224))
    assert [op.name for op in ops[-4:]] == ["blocks.6.0", "global_pool", "pre_logits", "classifier"]
    pool, pre, fc = ops[-3:]
    assert (pool.in_chs, pool.in_hw, pool.out_hw, pool.params, pool.macs) == (1152, (7, 7), (1, 1), 0, 0)
    assert (pre.in_chs, pre.out_chs, pre.act, pre.params, pre.macs) == (1152, 1536, "hswish", 1152 * 1536, 1152 * 1536)
    assert (fc.in_chs, fc.out_chs) == (1536, 1000)
    assert features_hw(spec, 224) == (7, 7) and features_hw(spec, 160) == (5, 5)
    # Hidden widths: make_divisible(round(in × e), 8), e.g. 24 × 4 into stage 1, 136 × 4 inside stage 4.
    assert spec.stages[1][0].expand == 4.0 and spec.stages[1][0].mid_chs is None
    strides = [b.stride for b in spec.blocks]
    assert strides == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert [b.se is not None for s in spec.stages[1:6] for b in s[:1]] == [False, True, False, True, True]


def test_json_round_trip_is_schema_4() -> None:
    spec = _random_spec(3)
    data = spec.to_dict()
    assert data["schema_version"] == zoo.SCHEMA_VERSION == 4
    assert (data["pre_logits_chs"], data["pre_logits_act"], data["pre_logits_bias"]) == (1536, "hswish", False)
    assert zoo.spec_from_json(spec.to_json()) == spec
    assert ArchSpec.from_json(spec.to_json()).to_json() == spec.to_json()


def test_schema_3_file_still_reads() -> None:
    data = hgcnet_spec().to_dict()
    data["schema_version"] = 3
    for field in ("pre_logits_chs", "pre_logits_act", "pre_logits_bias"):
        del data[field]
    assert ArchSpec.from_dict(data) == hgcnet_spec()
    cell = zoo.get_arch_spec("darts_v2_cifar").to_dict() | {"schema_version": 3}
    assert zoo.spec_from_dict(cell) == zoo.get_arch_spec("darts_v2_cifar")


@pytest.mark.parametrize("changes, message", [
    (dict(head_chs=1280), "cannot both be set"),
    (dict(pre_logits_chs=0), "pre_logits_chs"),
    (dict(pre_logits_act="gelu2"), "pre_logits_act"),
])
def test_bad_pre_logits_fields_are_named(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ofa_mbv3_uniform_spec(3, 3).replace(**changes)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernels=[3] * 19), "kernels needs 20"),
    (dict(kernels=[4] * 20), "kernels value 4"),
    (dict(expands=[5] * 20), "expands value 5"),
    (dict(depths=[1, 2, 3, 4, 4]), "depths value 1"),
])
def test_bad_arch_is_named(kwargs: dict, message: str) -> None:
    args = dict(kernels=[3] * 20, expands=[3] * 20, depths=[4] * 5) | kwargs
    with pytest.raises(ValueError, match=message):
        ofa_mbv3_spec(**args)


def test_contract_on_an_ofa_model() -> None:
    spec = _random_spec(4)
    model = zoo.build_model(spec).eval()
    x = torch.randn(2, 3, 192, 192)
    state = model.state_dict()
    assert "conv_head.weight" in state and "conv_head.bias" not in state and not any(k.startswith("bn2.") for k in state)
    assert (model.num_features, model.head_hidden_size) == (1152, 1536)
    with torch.inference_mode():
        feats = model.forward_features(x)
        assert feats.shape == (2, 1152, 6, 6) and model.output_hw((192, 192)) == (6, 6)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, 1536) and bool((pre >= -0.375).all())  # h-swish's minimum
        logits = model(x)
        torch.testing.assert_close(model.get_classifier()(pre), logits)
        scripted = torch.jit.script(model)
        torch.testing.assert_close(scripted(x), logits)
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), logits)
    model.reset_classifier(10)
    assert model.get_classifier().in_features == 1536
    assert zoo.count(model.arch_spec, 192) == zoo.count_module(model, (3, 192, 192))
    model.reset_classifier(0, "")
    with torch.inference_mode():
        assert model(x).shape == (2, 1536, 6, 6)  # the 1x1 conv runs on the unpooled map, as timm's
    feat_model = features_model(zoo.build_model(spec).eval())
    with torch.inference_mode():
        outs = feat_model(x)
    assert feat_model.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert [o.shape[1] for o in outs] == [24, 32, 48, 136, 1152]
    assert [o.shape[2] for o in outs] == [96, 48, 24, 12, 6]


@pytest.mark.parametrize("bias", [False, True])
def test_every_op_is_measurable_standalone(bias: bool) -> None:
    spec = ofa_mbv3_uniform_spec(5, 6, depth=2).replace(pre_logits_bias=bias)
    for op in zoo.iter_ops(spec, 160):
        module, shape = op_module(op)
        assert sum(p.numel() for p in module.parameters()) == op.params, op.name
        with torch.inference_mode():
            out = module(torch.randn(shape))
        expected = (1, op.out_chs) if op.kind == "linear" else (1, op.out_chs, *op.out_hw)
        assert tuple(out.shape) == expected, op.name
    keys = {op.name: op.key for op in zoo.iter_ops(spec, 160)}
    assert keys["pre_logits"].startswith("conv_bias_act-" if bias else "conv_act-")
    assert keys["global_pool"] == "global_pool-in1152x5x5-out1152x1x1-k1-s1-e1-g1-identity"
