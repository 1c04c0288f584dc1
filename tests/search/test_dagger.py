"""search.dagger: the gate layout, the Dagger, the differentiable MACs (exact against the walker), selection at a MACs
target, pruning with inherited weights (exactly the masked gated network), the saved result and the baselines."""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import zoo
from export.pipeline import calibrate_batchnorm
from search.dagger import (DaggerConfig, DaggerNetwork, DaggerStep, KeepPlacement, RunConfig, gate_scores, l1_scores,
                           parse_macs, prunable_space, prune, run_dagger, select_channels, uniform_scores)
from search.engine import TrainConfig
from zoo.mobilenetv2 import mobilenetv2_width_spec
from zoo.resnet import resnet50_width_spec

MODELS = ("mobilenetv2_cifar", "hgcnet_cifar", "resnet50")


@pytest.fixture(scope="module")
def networks() -> dict[str, DaggerNetwork]:
    out = {}
    for name in MODELS:
        torch.manual_seed(0)
        net = DaggerNetwork(prunable_space(name))
        calibrate_batchnorm(net.net, (3, 32, 32), steps=2, batch=4)  # unit-scale activations, as if trained
        out[name] = net
    return out


def _random_widths(net: DaggerNetwork, rng: random.Random, step: int) -> list[int]:
    return [rng.randrange(1, full // step + 1) * step for full in net.layout.full]


@pytest.mark.parametrize("name", MODELS)
def test_macs_polynomial_is_the_walkers_count(networks: dict[str, DaggerNetwork], name: str) -> None:
    net = networks[name]
    space = net.space
    full = tuple(max(c) for c in space.choices())
    assert float(net.macs(torch.tensor(full, dtype=torch.float64))) == pytest.approx(net.full_macs, abs=0.5)
    rng = random.Random(1)
    for _ in range(3):
        widths = _random_widths(net, rng, 8 if name == "hgcnet_cifar" else 1)
        spec, size = dataclasses.replace(space, widths=tuple((w,) for w in widths)).to_spec(tuple(widths))
        assert float(net.macs(torch.tensor(widths, dtype=torch.float64))) == pytest.approx(zoo.count(spec, size).macs,
                                                                                          abs=0.5)


def test_layout_ties_and_gated_norms(networks: dict[str, DaggerNetwork]) -> None:
    mbv2 = networks["mobilenetv2_cifar"].layout
    assert len(mbv2.full) == 25 and mbv2.full[0] == 32 and mbv2.full[-1] == 1280
    stem = {p.module for p in mbv2.producers if p.gene == 0}
    assert stem == {"conv_stem", "blocks.0.0.conv_dw"}  # stem = block-0 depthwise: one gene
    hgc = networks["hgcnet_cifar"].layout
    assert hgc.groups[2] == 4 and {n.repeat for n in hgc.norms} == {1, 6}  # hidden widths follow their row's
    resnet = networks["resnet50"].layout
    stage1 = {p.module for p in resnet.producers if p.gene == 3}
    assert {"layer1.0.conv3", "layer1.0.downsample.0", "layer1.1.conv3", "layer1.2.conv3"} <= stage1


def test_dagger_gates_start_open_and_only_the_dagger_learns_from_the_regulariser(
        networks: dict[str, DaggerNetwork]) -> None:
    net = copy.deepcopy(networks["mobilenetv2_cifar"])
    gates = net.gates()
    assert [g.shape[0] for g in gates] == list(net.layout.full)
    assert torch.allclose(torch.cat(gates), torch.sigmoid(torch.tensor(3.0)), atol=0.02)
    step = DaggerStep(net, net.full_macs // 2)
    reg = step.regulariser(net.soft_macs(gates))
    assert float(reg.detach()) == pytest.approx(float(net.soft_macs(gates).detach()) / (net.full_macs // 2) - 1, rel=1e-6)
    reg.backward()
    assert all(p.grad is None for p in net.net.parameters())  # the gates read the weights detached
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.dagger.heads.parameters())
    assert all(float(b.grad.min()) > 0 for b in net.dagger.bias)  # every gate is pushed down


def test_joint_step_lowers_the_soft_macs(networks: dict[str, DaggerNetwork]) -> None:
    net = copy.deepcopy(networks["mobilenetv2_cifar"])
    step = DaggerStep(net, net.full_macs // 2)  # the Dagger's Adam steps inside the step function
    # A task loss of zero isolates the regulariser: descending it must lower the soft MACs, and the network's
    # weights get no gradient from it (the engine would step them).
    ctx = type("Ctx", (), {"criterion": staticmethod(lambda logits, targets: 0.0 * logits.sum())})()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    ratios = []
    before = {k: v.clone() for k, v in net.dagger.state_dict().items()}
    for _ in range(3):
        ratios.append(step.step_fn(net, x, y, ctx)["macs_ratio"])
    assert ratios[2] < ratios[1] < ratios[0]
    assert all(p.grad is None or not p.grad.any() for p in net.net.parameters())
    assert all(float(b.detach().max()) < float(before[f"bias.{g}"].min()) for g, b in enumerate(net.dagger.bias))
    state = step.state_dict()
    fresh = DaggerStep(copy.deepcopy(net), net.full_macs // 2)
    fresh.load_state_dict(state)
    assert fresh.optimizer.state_dict()["state"][0]["step"] == 3
    with pytest.raises(ValueError, match="aims at"):
        DaggerStep(net, net.full_macs // 3).load_state_dict(state)


@pytest.mark.parametrize("name", MODELS)
def test_selection_reaches_the_target_within_tolerance(networks: dict[str, DaggerNetwork], name: str) -> None:
    net = networks[name]
    target = net.full_macs // 2
    sel = select_channels(net, l1_scores(net), target)
    assert (1 - net.config.tolerance) * target <= sel.macs <= target
    step = 8 if name == "hgcnet_cifar" else 1
    assert all(w % step == 0 and 0 < w <= f for w, f in zip(sel.widths, net.layout.full))
    assert all(len(k) * g == w for k, g, w in zip(sel.kept, net.layout.groups, sel.widths))
    with pytest.raises(ValueError, match="below the narrowest pruning"):
        select_channels(net, l1_scores(net), 1000)


def test_select_keeps_the_highest_scores(networks: dict[str, DaggerNetwork]) -> None:
    net = networks["mobilenetv2_cifar"]
    scores = [torch.rand(f, generator=torch.Generator().manual_seed(g)).double() for g, f in enumerate(net.layout.full)]
    sel = select_channels(net, scores, int(net.full_macs * 0.4))
    for s, kept in zip(scores, sel.kept):
        dropped = sorted(set(range(len(s))) - set(kept))
        if dropped:
            assert float(s[list(kept)].min()) >= float(s[dropped].max())


@pytest.mark.parametrize("name", ["mobilenetv2_cifar", "resnet50"])
def test_pruned_model_is_the_masked_gated_network(networks: dict[str, DaggerNetwork], name: str) -> None:
    net = networks[name].eval()
    with torch.no_grad():
        gates = [torch.rand(f, generator=torch.Generator().manual_seed(g)) * 0.9 + 0.1
                 for g, f in enumerate(net.layout.full)]
    sel = select_channels(net, gate_scores(gates), int(net.full_macs * 0.45))
    pruned = prune(net, sel, gates)
    masked = []
    for gate, kept, groups in zip(gates, sel.kept, net.layout.groups):
        mask = torch.zeros(groups, gate.shape[0] // groups)
        mask[:, list(kept)] = 1
        masked.append(gate * mask.reshape(-1))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = net.forward_gated(x, masked)
        torch.testing.assert_close(pruned.model(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert pruned.macs == sel.macs == zoo.count(pruned.spec, 32).macs
    builder = (mobilenetv2_width_spec(pruned.width_list, "cifar") if name == "mobilenetv2_cifar"
               else resnet50_width_spec(pruned.width_list, 10))
    assert pruned.spec == builder  # the registered list builders rebuild it


def test_hgcnet_pruned_keeps_groups_and_rebuilds(networks: dict[str, DaggerNetwork]) -> None:
    net = networks["hgcnet_cifar"]
    sel = select_channels(net, uniform_scores(net), int(net.full_macs * 0.5))
    pruned = prune(net, sel)
    assert pruned.width_list is None and all(w % 8 == 0 for w in sel.widths)
    rebuilt = zoo.build_model(zoo.spec_from_json(pruned.spec.to_json()))
    rebuilt.load_state_dict(pruned.model.state_dict(), strict=True)
    # Uniform scores keep each group's leftmost positions: the widths are a plain left slice.
    assert all(k == tuple(range(len(k))) for k in sel.kept)


def test_keep_placement_and_parse_macs() -> None:
    assert KeepPlacement(((0, 1, 2, 5, 7, 8),)).intervals(0, 10, 6) == ((0, 3), (5, 6), (7, 9))
    with pytest.raises(ValueError, match="keeps 2 positions"):
        KeepPlacement(((0, 1),)).intervals(0, 10, 3)
    assert parse_macs("50%", 200_000_000) == 100_000_000
    assert parse_macs("40M", 200_000_000) == 40_000_000
    assert parse_macs("1.5e7", 200_000_000) == 15_000_000
    for bad in ("150%", "0M", "abc", "300M"):
        with pytest.raises(ValueError, match="MACs|--macs"):
            parse_macs(bad, 200_000_000)
    with pytest.raises(ValueError, match="unknown prunable model"):
        prunable_space("vgg16")
    with pytest.raises(ValueError, match="penalty"):
        DaggerConfig(penalty="huber")


def test_run_dagger_end_to_end_saves_the_three_files(networks: dict[str, DaggerNetwork], tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    targets = torch.arange(12) % 10
    data = TensorDataset(torch.randn(12, 3, 32, 32, generator=gen), targets)
    quick = TrainConfig(steps=2, batch_size=4, lr=0.01, progress=False)
    config = RunConfig(pretrain=quick, dagger=quick, finetune=quick, method=DaggerConfig(lam=5.0))
    weights = networks["mobilenetv2_cifar"].net.state_dict()
    result = run_dagger("mobilenetv2_cifar", "30%", data, data, config, weights=weights, device="cpu")
    full = networks["mobilenetv2_cifar"].full_macs
    assert 0.3 * full * 0.97 <= result.macs <= 0.3 * full
    report = result.report()
    assert report["scores"] == "dagger" and len(report["gates"]) == 25
    assert [r["phase"] for r in report["history"]] == ["dagger", "finetune"]
    paths = result.save(tmp_path)
    spec = zoo.spec_from_json(paths["spec"].read_text())
    model = zoo.build_model(spec)
    model.load_state_dict(torch.load(paths["weights"], weights_only=True), strict=True)
    assert spec == mobilenetv2_width_spec(report["width_list"], "cifar")
