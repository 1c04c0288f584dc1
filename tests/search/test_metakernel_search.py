"""search.metakernel: meta kernels are additive, one-hot supernets are their zoo models, expected costs are exact."""

from __future__ import annotations

import copy
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from latency_tables.predict import Predictor
from search.differentiable import cost_penalty
from search.metakernel import (GUMBEL_DECAY, GUMBEL_T0, MetaKernelCostModel, MetaDepthwise, MetaKernelLayer, MetaKernelSupernet,
                               MixedLayer, centre_pad, meta_kernel)
from search.oneshot import batch_statistics
from zoo.spaces import MetaKernelSpace, NBMacroSpace

DEVICE = "amd-epyc-f23m1-ort-t1"
SPACE = MetaKernelSpace()
SPACE_ID = MetaKernelSpace(identity=True)
# Identity at stage starts (1x1 conv + BN) and inside stages (true identity), every kernel and expansion.
ARCH_ID = ("id", "e3k5", "id", "e6k7", "e3k3", "id", "e6k3", "id", "e3k7", "e6k5", "id", "e3k5", "e6k7", "id", "e6k3")


def _x(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN affine parameters and running statistics, so a channel left unmasked shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _supernet(space: MetaKernelSpace, mode: str, **kwargs: object) -> MetaKernelSupernet:
    torch.manual_seed(0)
    net = MetaKernelSupernet(space, num_classes=10, mode=mode, **kwargs)  # type: ignore[arg-type]
    _randomise_bn(net)
    return net.eval()


@pytest.fixture(scope="module")
def supernets() -> dict[tuple[str, bool], MetaKernelSupernet]:
    return {(mode, space.identity): _supernet(space, mode) for mode in ("meta", "sum") for space in (SPACE, SPACE_ID)}


def _sum_from_meta(meta: MetaKernelSupernet) -> MetaKernelSupernet:
    """A ``sum`` supernet whose every candidate holds the weights the ``meta`` supernet shares with it."""
    out = MetaKernelSupernet(meta.space, num_classes=meta.num_classes, mode="sum", temperature=meta.temperature)
    shared = {k: v for k, v in meta.state_dict().items() if not k.startswith(tuple(f"net.{p.name}." for p in meta.plans))}
    out.load_state_dict(shared, strict=False)
    for plan in meta.plans:
        source, target = meta.net.blocks[plan.stage][plan.index], out.net.blocks[plan.stage][plan.index]
        for token, candidate in zip(target.tokens, target.candidates):
            candidate.load_state_dict(source.extract(token), strict=True)
        if meta.space.identity:
            target.skip.load_state_dict(source.extract("id"), strict=True)
    return out.eval()


def _soft_logits(net: MetaKernelSupernet, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(3.0 * torch.randn(p.shape, generator=g))


# --- meta kernels ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [15, 16])
def test_meta_kernel_conv_is_the_weighted_sum_of_the_candidate_convs(stride: int, size: int) -> None:
    torch.manual_seed(stride * 100 + size)
    layer = MetaDepthwise(8, (3, 5, 7), stride)
    x = torch.randn(2, 8, size, size)
    probs = torch.softmax(torch.randn(3), 0)
    expected = sum(p * conv(x) for p, conv in zip(probs, layer.candidates))
    torch.testing.assert_close(layer(x, probs), expected, rtol=1e-5, atol=1e-5)
    # One-hot probabilities give each candidate's own convolution.
    for i, conv in enumerate(layer.candidates):
        torch.testing.assert_close(layer(x, F.one_hot(torch.tensor(i), 3).float()), conv(x), rtol=1e-5, atol=1e-6)


def test_meta_kernel_is_centred_and_checks_its_inputs() -> None:
    w = torch.arange(9.0).reshape(1, 1, 3, 3)
    padded = centre_pad(w, 7)
    assert padded.shape == (1, 1, 7, 7) and torch.equal(padded[..., 2:5, 2:5], w) and padded.sum() == w.sum()
    merged = meta_kernel([w, torch.ones(1, 1, 5, 5)], torch.tensor([0.25, 0.75]))
    assert merged.shape == (1, 1, 5, 5) and merged[0, 0, 0, 0] == 0.75 and merged[0, 0, 2, 2] == 0.25 * 4 + 0.75
    with pytest.raises(ValueError, match="square odd kernel"):
        centre_pad(torch.ones(1, 1, 4, 4), 7)
    with pytest.raises(ValueError, match="2 kernels need 2 probabilities"):
        meta_kernel([w, w], torch.ones(3))


# --- one-hot supernets are their zoo models -------------------------------------------------------------------------


@pytest.mark.parametrize("identity", [False, True])
@pytest.mark.parametrize("mode", ["meta", "sum"])
def test_one_hot_supernet_is_the_extracted_zoo_model(supernets: dict, mode: str, identity: bool) -> None:
    net: MetaKernelSupernet = supernets[(mode, identity)]
    space = net.space
    archs = [space.sample(random.Random(seed)) for seed in range(2)]
    archs += [ARCH_ID] if identity else [("e3k3",) * 15]
    x = _x(size=48)
    for arch in archs:
        state = net.extract(arch)
        model = zoo.build_model(net.spec_of(arch))
        assert list(state) == list(model.state_dict())
        model.load_state_dict(state, strict=True)
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(net(x, arch), model(x), rtol=1e-4, atol=1e-5)
        # Batch statistics too (training-mode BN is per channel, so masked channels do not leak); the seed
        # gives both the same dropout mask.
        with torch.no_grad(), batch_statistics(net), batch_statistics(model):
            torch.manual_seed(0)
            out = net(x, arch)
            torch.manual_seed(0)
            torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)
    # The comparison can fail: another architecture's zoo model computes something else.
    other = net.subnet(archs[0]).eval()
    with torch.no_grad():
        assert (net(x, archs[1]) - other(x)).abs().max() > 1e-3


def test_sum_and_meta_agree_on_one_hot_probabilities_and_differ_on_soft_ones(supernets: dict) -> None:
    meta = copy.deepcopy(supernets[("meta", True)])
    summed = _sum_from_meta(meta)
    x = _x(size=32)
    with torch.no_grad():
        for arch in (ARCH_ID, SPACE_ID.sample(random.Random(3))):
            torch.testing.assert_close(meta(x, arch), summed(x, arch), rtol=1e-4, atol=1e-5)
        # Soft: the meta layer mixes kernels and widths *before* BN, the activations and SE, the sum after them;
        # convolution is additive, the rest is not, so the two supernets are different functions of α.
        for net in (meta, summed):
            _soft_logits(net, seed=1)
        assert (meta(x) - summed(x)).abs().max() > 1e-3


def test_extract_takes_the_chosen_kernel_and_the_first_hidden_channels(supernets: dict) -> None:
    net: MetaKernelSupernet = supernets[("meta", False)]
    layer: MetaKernelLayer = net.net.blocks[1][0]
    state = layer.extract("e3k5")
    mid = 3 * layer.plan.in_chs
    assert torch.equal(state["conv_dw.weight"], layer.conv_dw.candidates[1].weight[:mid])
    assert torch.equal(state["conv_pw.weight"], layer.conv_pw.weight[:mid])
    assert torch.equal(state["se.conv_reduce.weight"], layer.se.conv_reduce.weight[:, :mid])
    assert torch.equal(state["conv_pwl.weight"], layer.conv_pwl.weight[:, :mid])
    assert torch.equal(state["bn3.running_var"], layer.bn3.running_var)
    sub = net.subnet(("e3k5",) * 15)
    sub.blocks[1][0].conv_pw.weight.data.zero_()  # a copy: the supernet keeps its weights
    assert layer.conv_pw.weight.abs().sum() > 0


def test_layers_and_parameters() -> None:
    meta, summed = _supernet(SPACE, "meta"), _supernet(SPACE, "sum")
    assert sum(isinstance(m, MetaKernelLayer) for m in meta.modules()) == 15
    assert sum(isinstance(m, MixedLayer) for m in summed.modules()) == 15
    for net in (meta, summed):
        arch_ids = {id(p) for p in net.arch_parameters()}
        weights = net.weight_parameters()
        assert len(arch_ids) == 2 and not arch_ids & {id(p) for p in weights}
        assert len(weights) + 2 == len(list(net.parameters()))
    # Same candidates, one widest block per layer instead of six blocks.
    assert 2 * sum(p.numel() for p in meta.weight_parameters()) < sum(p.numel() for p in summed.weight_parameters())


# --- architecture parameters ------------------------------------------------------------------------------------------


def test_probabilities_start_uniform_over_tokens_and_derive_follows_the_logits() -> None:
    net = _supernet(SPACE_ID, "meta")
    kernel, expansion = net.arch_probs()[0]
    torch.testing.assert_close(kernel, torch.full((3,), 1 / 3))
    torch.testing.assert_close(expansion[0], torch.tensor(1 / 7))  # p(id) = p(e, k) = 1/7
    torch.testing.assert_close(expansion[1] * kernel[0], torch.tensor(1 / 7))
    with torch.no_grad():
        net.kernel_logits.zero_()
        net.expansion_logits.zero_()
        for i, token in enumerate(ARCH_ID):
            if token == "id":
                net.expansion_logits[i, 0] = 10.0
            else:
                net.expansion_logits[i, net.expansion_options.index(token[1])] = 10.0
                net.kernel_logits[i, (3, 5, 7).index(int(token[3]))] = 10.0
    assert net.derive() == ARCH_ID
    summary = json.loads(json.dumps(net.arch_summary()))
    assert summary["derived"] == list(ARCH_ID) and len(summary["layers"]) == 15
    assert set(summary["layers"][0]["expansion"]) == {"id", "3", "6"}
    assert math.isclose(sum(summary["layers"][1]["kernel"].values()), 1.0, rel_tol=1e-6)


def test_temperature_schedule() -> None:
    net = _supernet(SPACE, "meta")
    assert (net.t0, net.temperature_decay, net.temperature) == (GUMBEL_T0, GUMBEL_DECAY, 5.0)
    net.on_epoch(4)
    assert math.isclose(net.temperature, 5.0 * 0.965 ** 4)
    with torch.no_grad():
        net.kernel_logits.normal_()
    torch.testing.assert_close(net.arch_probs()[2][0], torch.softmax(net.kernel_logits[2] / net.temperature, 0))
    net.set_temperature(0.5)
    torch.testing.assert_close(net.arch_probs()[2][0], torch.softmax(net.kernel_logits[2] / 0.5, 0))
    custom = MetaKernelSupernet(SPACE, 10, temperature=2.0, temperature_decay=0.5)
    custom.on_epoch(2)
    assert custom.temperature == 0.5
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            net.set_temperature(bad)
    with pytest.raises(ValueError, match="epoch"):
        net.on_epoch(-1)


def test_gumbel_noise_is_seeded_by_torch_and_only_in_training() -> None:
    net = _supernet(SPACE, "meta", gumbel=True)
    x = _x(size=32)

    def run(seed: int, train: bool) -> torch.Tensor:
        torch.manual_seed(seed)
        with torch.no_grad():
            return copy.deepcopy(net).train(train)(x)

    torch.testing.assert_close(run(1, True), run(1, True), rtol=0, atol=0)
    assert not torch.equal(run(1, True), run(2, True))
    plain = copy.deepcopy(net)
    plain.gumbel = False
    with torch.no_grad():
        torch.testing.assert_close(run(1, False), plain.eval()(x), rtol=0, atol=0)  # eval: no noise


# --- expected cost ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.for_device(DEVICE)


@pytest.mark.parametrize("metric", ["macs", "latency"])
def test_expected_cost_is_exact_on_one_hot_and_linear_on_soft_probabilities(metric: str, predictor: Predictor) -> None:
    model = MetaKernelCostModel.macs(SPACE) if metric == "macs" else MetaKernelCostModel.latency(SPACE, DEVICE)

    def truth(arch: tuple[str, ...]) -> float:
        if metric == "macs":
            return float(zoo.count(*SPACE.to_spec(arch)).macs)
        return predictor.predict_arch(SPACE, arch).total_ms

    net = MetaKernelSupernet(SPACE, 10)
    for seed in range(3):
        arch = SPACE.sample(random.Random(seed))
        assert math.isclose(model.exact(arch), truth(arch), rel_tol=1e-6 if metric == "latency" else 0.0)
        assert math.isclose(float(model.expected(*net.one_hot(arch))), truth(arch),
                            rel_tol=1e-6 if metric == "latency" else 0.0)
    # Soft: the costs are additive over layers (and the overhead affine), so the expectation is the base arch
    # plus each layer's probability-weighted change, all from the walker / predictor.
    _soft_logits(net, seed=0)
    base = ("e3k3",) * 15
    expected = truth(base)
    with torch.no_grad():
        probs = net.arch_probs()
    for i, (kernel, expansion) in enumerate(probs):
        for e, pe in zip((3, 6), expansion):
            for k, pk in zip((3, 5, 7), kernel):
                arch = base[:i] + (f"e{e}k{k}",) + base[i + 1:]
                expected += float(pe * pk) * (truth(arch) - truth(base))
    kernel, expansion = (torch.stack(t) for t in zip(*probs))
    assert math.isclose(float(model.expected(kernel, expansion)), expected, rel_tol=1e-6)


def test_identity_space_costs_and_missing_latency_keys() -> None:
    model = MetaKernelCostModel.macs(SPACE_ID)
    net = MetaKernelSupernet(SPACE_ID, 10)
    for arch in (ARCH_ID, ("id",) * 15):
        assert model.exact(arch) == zoo.count(*SPACE_ID.to_spec(arch)).macs
        assert float(model.expected(*net.one_hot(arch))) == zoo.count(*SPACE_ID.to_spec(arch)).macs
    # The shipped metakernel table was built without the id candidate.
    with pytest.raises(ValueError, match=rf"space 'metakernel' on device '{DEVICE}'.*skip-in16x112x112"):
        MetaKernelCostModel.latency(SPACE_ID, DEVICE)
    with pytest.raises(ValueError, match="space 'metakernel' on device 'no-such-device'"):
        MetaKernelCostModel.latency(SPACE, "no-such-device")


def test_missing_space_table_names_device_and_space(tmp_path, predictor: Predictor) -> None:  # noqa: ANN001
    other = next(t for t in predictor.tables if t.space != "metakernel")
    (tmp_path / DEVICE).mkdir()
    other.save(tmp_path / DEVICE / f"{other.space}.json")
    with pytest.raises(ValueError, match=rf"device '{DEVICE}' has no latency table for space 'metakernel'"):
        MetaKernelCostModel.latency(SPACE, DEVICE, root=tmp_path)


def test_cost_penalty_is_differentiable_and_drives_the_expectation_to_the_target() -> None:
    model = MetaKernelCostModel.macs(SPACE)
    cheapest, dearest = model.exact(("e3k3",) * 15), model.exact(("e6k7",) * 15)
    assert float(cost_penalty(torch.tensor(150.0), 100.0, 2.0)) == 1.0
    assert float(cost_penalty(torch.tensor(50.0), 100.0, 2.0)) == 1.0
    for target in (cheapest + 0.1 * (dearest - cheapest), cheapest + 0.9 * (dearest - cheapest)):
        net = MetaKernelSupernet(SPACE, 10, temperature=1.0)
        assert net.arch_loss_terms() == {}
        net.set_cost_objective(model, target, weight=1.0)
        with torch.no_grad():
            start = abs(float(model.expected(*net._probs(False))) - target)
        terms = net.arch_loss_terms()
        assert set(terms) == {"cost"} and terms["cost"].dtype == torch.float32
        terms["cost"].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())
        optimizer = torch.optim.Adam(net.arch_parameters(), lr=0.1)
        for _ in range(30):
            optimizer.zero_grad()
            net.arch_loss_terms()["cost"].backward()
            optimizer.step()
        with torch.no_grad():
            assert abs(float(model.expected(*net._probs(False))) - target) < 0.2 * start
        assert "expected_cost" in net.arch_summary()


# --- the central claim, in miniature ------------------------------------------------------------------------------


def _saved_bytes(net: MetaKernelSupernet, x: torch.Tensor) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x).sum().backward()
    return sum(storages.values())


def test_meta_mode_saves_less_for_backward_than_the_sum_over_candidates() -> None:
    x = _x(size=32)
    meta, summed = _supernet(SPACE, "meta").train(), _supernet(SPACE, "sum").train()
    assert 2 * _saved_bytes(meta, x) < _saved_bytes(summed, x)


# --- errors -------------------------------------------------------------------------------------------------------


def test_errors_name_the_input(supernets: dict) -> None:
    net: MetaKernelSupernet = supernets[("meta", False)]
    with pytest.raises(ValueError, match="mode must be one of meta, sum, got 'dense'"):
        MetaKernelSupernet(SPACE, 10, mode="dense")
    with pytest.raises(ValueError, match="needs a MetaKernelSpace, got NBMacroSpace"):
        MetaKernelSupernet(NBMacroSpace(), 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes"):
        MetaKernelSupernet(SPACE, 0)
    with pytest.raises(ValueError, match="position 1 is 'e4k3'"):
        net.extract(("e3k3", "e4k3") + ("e3k3",) * 13)
    with pytest.raises(ValueError, match="'id'"):
        net(_x(size=32), ("id",) * 15)  # no identity candidate in this space
    with pytest.raises(ValueError, match=r"expects input \(N, 3, H, W\), got \(2, 1, 32, 32\)"):
        net(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="prices space"):
        net.set_cost_objective(MetaKernelCostModel.macs(SPACE_ID), 3e8)
    with pytest.raises(ValueError, match="target"):
        net.set_cost_objective(MetaKernelCostModel.macs(SPACE), -1.0)
    with pytest.raises(ValueError, match=r"shape \(15, 3\).*\(15, 2\)"):
        MetaKernelCostModel.macs(SPACE).expected(torch.ones(15, 3), torch.ones(15, 3))
