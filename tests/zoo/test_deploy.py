"""Deploy rewrites are exact: HGC fusion by plan and BatchNorm folding give the training model's outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.deploy import (FUSED, UNFUSED, deploy_spec, fold_batchnorm, fusable_blocks, fused_hgc_weight, reparameterize,
                        resolve_plan)
from zoo.hgc import HierarchicalGroupConv
from zoo.mbconv import DepthwiseSeparable
from zoo.spec import BlockSpec

HGC_MODELS = [n for n in zoo.list_models("hgcnet_*") if fusable_blocks(zoo.get_arch_spec(n))]


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from their defaults, so a wrong fold shows."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model


@pytest.mark.parametrize("hierarchical", [True, False])
@pytest.mark.parametrize("in_chs, out_chs, groups", [(16, 32, 4), (24, 12, 3), (8, 8, 1)])
def test_fused_weight_equals_the_group_conv(in_chs: int, out_chs: int, groups: int, hierarchical: bool) -> None:
    torch.manual_seed(0)
    hgc = HierarchicalGroupConv(in_chs, out_chs, groups, hierarchical)
    x = torch.randn(2, in_chs, 5, 5)
    dense = nn.functional.conv2d(x, fused_hgc_weight(hgc))
    assert (dense - hgc(x)).abs().max().item() <= 1e-5
    if hierarchical and groups > 1:  # later groups see earlier ones: the weight is block-lower-triangular
        weight = fused_hgc_weight(hgc)[:, :, 0, 0]
        gin, gout = in_chs // groups, out_chs // groups
        assert weight[:gout, gin:].abs().max().item() == 0 and weight[-gout:, :gin].abs().max().item() > 0


@pytest.mark.parametrize("name", ["hgcnet_0_5x_cifar", "hgcnet_1x"])
@pytest.mark.parametrize("plan", ["all", "none", "alternate"])
def test_reparameterized_model_matches_and_leaves_the_original(name: str, plan: str) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(zoo.create_model(name)).eval()
    blocks = fusable_blocks(model.arch_spec)
    chosen = {b: FUSED if i % 2 else UNFUSED for i, b in enumerate(blocks)} if plan == "alternate" else plan
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deployed = reparameterize(model, chosen)
    size = model.pretrained_cfg["input_size"]
    x = torch.randn(2, *size[:1], 64, 64) if size[1] > 64 else torch.randn(2, *size)
    with torch.no_grad():
        assert (deployed(x) - model(x)).abs().max().item() <= 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # training model untouched
    fused = [b for b, form in deployed.deploy_plan.items() if form == FUSED]
    assert len(fused) == {"all": len(blocks), "none": 0, "alternate": len(blocks) // 2}[plan]
    def hgc_layers(net: nn.Module) -> set[str]:
        return {n.rsplit(".", 1)[0] for n, m in net.named_modules() if isinstance(m, HierarchicalGroupConv)}

    assert hgc_layers(deployed) == hgc_layers(model) - set(fused)  # fused blocks hold no HGC layer any more
    assert deployed.arch_spec == deploy_spec(model.arch_spec, chosen)


@pytest.mark.parametrize("name", HGC_MODELS)
def test_every_hgcnet_fuses_into_mobilenetv2_blocks_with_more_macs(name: str) -> None:
    spec = zoo.get_arch_spec(name)
    fused = deploy_spec(spec, "all")
    kinds = {b.kind for stage in fused.stages for b in stage}
    assert "hgc_ir" not in kinds and "ir" in kinds
    size = zoo.get_pretrained_cfg(name).input_size
    assert zoo.count(fused, size).macs > zoo.count(spec, size).macs  # dense pointwise: more MACs on paper
    assert zoo.count(fused, size).params > zoo.count(spec, size).params
    assert deploy_spec(spec, "none") == spec


def test_fold_batchnorm_is_exact_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(zoo.create_model("hgcnet_0_5x_cifar")).eval()
    folded = fold_batchnorm(reparameterize(model, "all"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        # fp32 rounding of the rescaled weights: 1e-5 relative to the outputs' scale
        assert (folded(x) - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original keeps its BatchNorms


@pytest.mark.parametrize("build", [
    lambda: zoo.create_model("mz_tf_efficientnet_lite0"),  # depthwise-separable blocks: conv_dw→bn1, conv_pw→bn2
    lambda: zoo.create_model("bcnet_resnet50_575m"),
    # A width-keeping DepthwiseSeparable: pairing conv_pw with bn1 would fit the shapes and fold the wrong BN.
    lambda: nn.Sequential(DepthwiseSeparable(16, BlockSpec("ds", 16, 1, 3, act="relu", residual=False))),
], ids=["lite0", "resnet50", "ds_same_width"])
def test_fold_batchnorm_folds_each_batchnorm_into_the_conv_it_follows(build) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(build()).eval()
    size = 64 if isinstance(model, nn.Sequential) else 96
    x = torch.randn(2, 16 if isinstance(model, nn.Sequential) else 3, size, size)
    folded = fold_batchnorm(model, x[:1])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        expected = model(x)
        assert (folded(x) - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_fold_batchnorm_refuses_a_batchnorm_whose_conv_output_is_used_elsewhere() -> None:
    class PreBnSkip(nn.Module):  # the conv's output feeds the BatchNorm and the sum: folding would change the sum
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    model = randomize_batchnorm(PreBnSkip()).eval()
    with pytest.raises(ValueError, match="fold_batchnorm.*PreBnSkip|differs"):
        fold_batchnorm(model, torch.randn(1, 4, 8, 8))


def test_bad_plans_are_refused_naming_the_problem() -> None:
    spec = zoo.get_arch_spec("hgcnet_0_5x_cifar")
    with pytest.raises(ValueError, match="auto"):
        resolve_plan(spec, "auto")
    with pytest.raises(ValueError, match="deploy plan must be one of"):
        resolve_plan(spec, "most")
    with pytest.raises(ValueError, match="not HGC blocks.*stem"):
        resolve_plan(spec, {"stem": FUSED})
    with pytest.raises(ValueError, match="must be 'fused' or 'hgc'"):
        resolve_plan(spec, {fusable_blocks(spec)[0]: "dense"})
    assert resolve_plan(zoo.get_arch_spec("bcnet_mobilenetv2_100"), "all") == {}  # nothing to fuse: the model as it is
