"""Cost counting: the spec walker, the module counter, thop, and published reference counts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import thop
import timm
import timm.layers
from thop.vision.basic_hooks import count_linear
import torch
from torch import nn

import zoo
from zoo.block_prims import hgc_prims
from zoo.hgc import HierarchicalGroupConv
from zoo.hgcnet import hgcnet_spec

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "complexity.json"


def _thop_macs(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int]:
    """thop's count with non-MAC layers (BN, activations, pools, dropout) zeroed, i.e. our convention."""
    def zero(m: nn.Module, x: object, y: object) -> None:
        m.total_ops += torch.zeros(1, dtype=torch.float64)
    skip = {t: zero for t in (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.Dropout,
                              nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.Identity, nn.Hardsigmoid, nn.Sigmoid)}
    # thop matches layer types exactly, so timm's nn.Linear subclass would silently count 0.
    skip[timm.layers.Linear] = count_linear
    macs, params = thop.profile(model.eval(), inputs=(torch.zeros(1, *input_size),), custom_ops=skip, verbose=False)
    return int(macs), int(params)


@pytest.mark.parametrize("name", zoo.list_models())
def test_walker_equals_module_counter_and_thop(name: str) -> None:
    info = zoo.model_info(name)
    model = zoo.create_model(name)
    module_cost = zoo.count_module(model, info["input_size"])
    assert (module_cost.params, module_cost.macs) == (info["params"], info["macs"])
    assert _thop_macs(model, info["input_size"]) == (info["macs"], info["params"])


@pytest.mark.parametrize("name", ["hgcnet_1x", "hgcnet_0_5x_cifar"])
@pytest.mark.parametrize("size", [40, 97, 160])
def test_walker_follows_the_input_size(name: str, size: int) -> None:
    model = zoo.create_model(name)
    assert zoo.count(model.arch_spec, size) == zoo.count_module(model, (3, size, size))


def test_golden_params_and_macs() -> None:
    """Locks every model's counts; regenerate on purpose with MZOO_UPDATE_GOLDEN=1."""
    # Built-in models only: a test may have registered a search result in this process.
    current = {n: {"params": i["params"], "macs": i["macs"], "input_size": list(i["input_size"])}
               for n in zoo.list_models() for i in [zoo.model_info(n)] if i["module"] != "zoo.searched"}
    if os.environ.get("MZOO_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(golden) == sorted(current), "models added or removed: regenerate the golden file"
    for name, numbers in current.items():
        assert numbers == golden[name], name


# Published counts (MACs at 224², params); papers.md §8/§9 and anchors.md §6.
REFERENCE = {
    "mobilenetv2_100": (300e6, 3_504_872, 0.01),
    "mobilenetv3_large_100": (219e6, 5_483_032, 0.02),
    "efficientnet_b0": (390e6, 5_288_548, 0.02),
    "resnet50": (4.1e9, 25_557_032, 0.01),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_timm_reference_counts(name: str) -> None:
    macs_ref, params_ref, tol = REFERENCE[name]
    model = timm.create_model(name)
    cost = zoo.count_module(model, (3, 224, 224))
    assert cost.params == params_ref
    assert abs(cost.macs - macs_ref) / macs_ref <= tol, zoo.format_count(cost.macs)
    assert _thop_macs(model, (3, 224, 224))[0] == cost.macs


def test_hgc_with_one_group_is_exactly_mobilenetv2() -> None:
    """groups=1 turns every HGC into a plain pointwise conv: timm's mobilenetv2_100, count for count."""
    ours = zoo.count(hgcnet_spec(1.0, groups=1), 224)
    theirs = zoo.count_module(timm.create_model("mobilenetv2_100"), (3, 224, 224))
    assert ours == theirs
    assert ours.params == 3_504_872


def test_hgc_cost_is_group_conv_plus_fused_inputs() -> None:
    # 32 -> 64 channels, g = 4: group conv 32*64/4 = 512 MACs per pixel, fusion adds 3 * 16 * 16 = 768.
    assert sum(p.macs for p in hgc_prims(32, 64, 4, (1, 1))) == 512 + 768
    assert sum(p.macs for p in hgc_prims(32, 64, 4, (1, 1), hierarchical=False)) == 512
    op = HierarchicalGroupConv(32, 64, 4)
    assert sum(p.numel() for p in op.parameters()) == 512 + 768


def test_hgc_group_i_sees_input_groups_up_to_i() -> None:
    """The defining property: output group i depends on input groups 1..i, and only on those."""
    torch.manual_seed(0)
    x = torch.randn(1, 16, 5, 5)
    for hierarchical, changed in ((True, [False, False, True, True]), (False, [False, False, True, False])):
        op = HierarchicalGroupConv(16, 8, 4, hierarchical).eval()
        x2 = x.clone()
        x2[:, 8:12] += 1.0  # perturb input group 3
        diff = (op(x2) - op(x)).abs().reshape(1, 4, 2, 5, 5).amax(dim=(0, 2, 3, 4))
        assert [bool(d > 0) for d in diff] == changed


def test_hgc_rejects_indivisible_channels() -> None:
    with pytest.raises(ValueError, match="divisible by groups=4"):
        HierarchicalGroupConv(30, 64, 4)


def test_ops_have_names_keys_and_sum_to_the_total() -> None:
    spec = zoo.get_arch_spec("hgcnet_1x_cifar")
    ops = list(zoo.iter_ops(spec, (3, 32, 32)))
    assert ops[0].name == "stem" and ops[-2].name == "head" and ops[-1].name == "classifier"
    assert len({op.name for op in ops}) == len(ops) == len(spec.blocks) + 3
    assert sum(op.macs for op in ops) == zoo.count(spec, 32).macs
    first = ops[1]
    assert first.key == "hgc_ir-in32x32x32-out16x32x32-k3-s1-e1-g4-relu6"
    assert ops[-1].out_hw == (1, 1)


def test_too_small_input_is_named() -> None:
    with pytest.raises(ValueError, match="input_size"):
        zoo.count(zoo.get_arch_spec("hgcnet_1x"), (3, 0, 0))


def test_format_count() -> None:
    assert zoo.format_count(3_504_872) == "3.505M"
    assert zoo.format_count(300_774_272) == "300.8M"
    assert zoo.format_count(4_089_184_256) == "4.089G"
    assert zoo.Cost(1, 5).flops == 10
