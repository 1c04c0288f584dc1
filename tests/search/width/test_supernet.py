"""The width supernet: sub-networks compute what standalone models of their specs compute, with shared weights."""

from __future__ import annotations

import random

import pytest
import torch

import zoo
from zoo.spaces import MobileNetV2WidthSpace, NBMacroSpace, ResNet50WidthSpace
from zoo.spaces.widths import BCNET_FRACTIONS
from search.width import LEFT, RIGHT, SidePlacement, WidthSupernet
from search.width.cafenet import BinPlacement

from .conftest import SPACES, batch, fresh

NAMES = list(SPACES)


def _indices(space, arch) -> list[int]:
    return [c.index(w) for c, w in zip(space.choices(), arch)]


@pytest.mark.parametrize("name", NAMES)
def test_subnet_forward_equals_the_extracted_standalone_model(name: str, supernet_of) -> None:
    sup = supernet_of(name).eval()
    x, _ = batch(sup)
    for arch in (sup.space.sample(random.Random(1)),):
        outs = {}
        for placement in (LEFT, RIGHT):
            with torch.no_grad():
                ours = sup.forward_subnet(x, arch, placement)
                model = sup.subnet(arch, placement).eval()
                ref = model(x)
            assert model.arch_spec == sup.space.to_spec(arch)[0]
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
            outs[placement.side] = ours
        # The two sides really hold different weights (random-init logits can be tiny: compare relatively).
        assert (outs["left"] - outs["right"]).abs().max() > 1e-3 * outs["left"].abs().max()


def _edge_sliced(full: dict[str, torch.Tensor], model: torch.nn.Module, side: str) -> dict[str, torch.Tensor]:
    """An independent reference for ungrouped nets: every tensor cut to the sub-model's shape at one edge."""
    out = {}
    for name, ref in model.state_dict().items():
        t = full[name]
        for d, n in enumerate(ref.shape):
            if t.shape[d] != n:
                t = t.narrow(d, 0 if side == "left" else t.shape[d] - n, n)
        out[name] = t.clone()
    return out


@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnet_b0", "resnet50"])
def test_left_and_right_are_the_first_and_last_channels_of_every_layer(name: str, supernet_of) -> None:
    sup = supernet_of(name).eval()
    arch = sup.space.sample(random.Random(7))
    full = sup.net.state_dict()
    for placement in (LEFT, RIGHT):
        model = sup.subnet(arch, placement)
        expected = _edge_sliced(full, model, placement.side)
        got = model.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected), placement.side


def test_hgc_slices_are_per_group(supernet_of) -> None:
    # A hierarchical group conv of the sub-network is a group conv of the supernet's groups: conv i reads
    # input group i (and output group i-1); each group keeps its own leftmost / rightmost channels.
    sup = supernet_of("hgcnet").eval()
    space = sup.space
    arch = tuple(c[0] for c in space.choices())  # the narrowest network: 0.5× everywhere
    g = space.groups
    full = dict(sup.net.named_parameters())
    name = "blocks.0.1.conv_pwl.convs.2.weight"  # row 1's first block (CIFAR stage 0), projection, group 2
    full_w = full[name]
    mid_full, out_full = 6 * sup.full_arch[1], sup.full_arch[2]  # hidden = 6 × row-0 width; out = row-1 width
    mid, out = 6 * arch[1], arch[2]
    for placement in (LEFT, RIGHT):
        w = sup.subnet(arch, placement).state_dict()[name]
        o_sel = (torch.arange(out // g) if placement is LEFT
                 else torch.arange(out_full // g - out // g, out_full // g))
        m_sel = (torch.arange(mid // g) if placement is LEFT
                 else torch.arange(mid_full // g - mid // g, mid_full // g))
        prev = mid_full // g + o_sel  # the fused previous group's outputs come after the group's own inputs
        expected = full_w[o_sel][:, torch.cat([m_sel, prev])]
        assert torch.equal(w, expected), placement.side


@pytest.mark.parametrize("name", ["mobilenetv2", "hgcnet"])
def test_a_step_through_a_subnet_changes_only_its_slices(name: str, supernet_of) -> None:
    sup = fresh(supernet_of(name)).train()
    arch = sup.space.sample(random.Random(3))
    x, y = batch(sup, 2)
    before = {k: v.clone() for k, v in sup.net.state_dict().items()}
    opt = torch.optim.SGD(sup.parameters(), lr=0.5)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(sup.forward_subnet(x, arch, RIGHT), y).backward()
    opt.step()
    after = sup.net.state_dict()
    plan = sup.index_plan(arch, RIGHT)
    changed, sliced = 0, 0
    for name_, old in before.items():
        if name_.endswith("num_batches_tracked"):
            assert int(after[name_]) == int(old) + 1
            continue
        inside = torch.ones_like(old, dtype=torch.bool)
        for d, idx in plan[name_]:  # the outer product of the kept indices of each sliced dim
            keep = torch.zeros(old.shape[d], dtype=torch.bool)
            keep[idx] = True
            inside &= keep.view([-1 if i == d else 1 for i in range(old.dim())])
        assert torch.equal(after[name_][~inside], old[~inside]), f"{name_} changed outside its slice"
        changed += int(not torch.equal(after[name_][inside], old[inside]))
        sliced += 1
    assert changed >= 0.95 * sliced  # weights, BN affine and running statistics of the slices all moved


def test_running_stats_of_gathered_slices_are_written_back(supernet_of) -> None:
    sup = fresh(supernet_of("hgcnet")).train()
    arch = tuple(c[0] for c in sup.space.choices())
    bn = sup.net.blocks[0][0].bn3  # its output slot is split into groups: the slice is gathered, not a view
    idx = sup.index_plan(arch, RIGHT)["blocks.0.0.bn3.running_mean"][0][1]
    assert int(idx[-1]) - int(idx[0]) + 1 != idx.numel()
    before = bn.running_mean.clone()
    sup.forward_subnet(batch(sup, 4)[0], arch, RIGHT)
    assert not torch.equal(bn.running_mean[idx], before[idx])
    kept = torch.ones_like(before, dtype=torch.bool)
    kept[idx] = False
    assert torch.equal(bn.running_mean[kept], before[kept])
    before = bn.running_mean.clone()
    sup.forward_subnet(batch(sup, 4)[0], arch, RIGHT, update_stats=False)
    assert torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("name", NAMES)
def test_pairwise_macs_are_the_walkers(name: str, supernet_of) -> None:
    sup = supernet_of(name)
    cost = sup.macs_model()
    rng = random.Random(11)
    for arch in [sup.full_arch, tuple(c[0] for c in sup.space.choices())] + [sup.space.sample(rng) for _ in range(20)]:
        spec, size = sup.space.to_spec(arch)
        assert cost.value(_indices(sup.space, arch)) == zoo.count(spec, size).macs


def test_pairwise_macs_hold_where_widths_coincide(supernet_of) -> None:
    # With 5 % steps an expansion width can equal its input width, and ResNet's stage-1 width can equal the stem's:
    # the zoo keeps the full network's expansion conv and projection shortcut there (zoo/widths.py), and so
    # must the MACs model.
    fine = WidthSupernet(MobileNetV2WidthSpace(fractions=BCNET_FRACTIONS, layout="cifar"))
    resnet = supernet_of("resnet50")
    rng = random.Random(0)
    seen = {"equal widths": 0}
    for sup in (fine, resnet):
        cost, space = sup.macs_model(), sup.space
        for _ in range(25):
            arch = space.sample(rng)
            spec, size = space.to_spec(arch)
            assert cost.value(_indices(space, arch)) == zoo.count(spec, size).macs
            seen["equal widths"] += any(b.kind == "ir" and b.mid_chs == c for b, c in
                                        zip(spec.blocks[1:], [blk.out_chs for blk in spec.blocks[:-1]]))
    arch = list(resnet.full_arch)
    arch[0], arch[_stage1(resnet.space)] = 64, 64  # stem and stage 1 at 64: the projection shortcut stays
    spec, size = resnet.space.to_spec(tuple(arch))
    assert resnet.macs_model().value(_indices(resnet.space, tuple(arch))) == zoo.count(spec, size).macs
    assert seen["equal widths"] > 0  # the case really occurred
    # BCNet's published CIFAR-10 results are archs of the 20-ratio space: their MACs (papers.md §3.7).
    for label, published in (("200m", 200.1e6), ("144m", 144.4e6), ("44m", 44.3e6), ("28m", 28.7e6)):
        widths = zoo.mobilenetv2.BCNET_CIFAR[label]
        arch = tuple(widths[g[0]] for g in fine.space.tied_entries())
        assert fine.macs_model().value(_indices(fine.space, arch)) == pytest.approx(published, abs=0.05e6)


def _stage1(space: ResNet50WidthSpace) -> int:
    """The arch position of ResNet-50's stage-1 output width (list entry 3 and its ties)."""
    return next(i for i, g in enumerate(space.tied_entries()) if 3 in g)


def test_resnet_keeps_its_first_shortcut_when_widths_match(supernet_of) -> None:
    sup = supernet_of("resnet50").eval()
    arch = list(sup.full_arch)
    arch[0] = 64  # stem
    arch[_stage1(sup.space)] = 64  # stage 1's output: a quarter of 256, equal to the stem, stride 1
    arch = tuple(arch)
    model = sup.subnet(arch, RIGHT).eval()
    # The full network's projection shortcut, sliced (BCNet's masked supernet has it for every width).
    assert model.state_dict()["layer1.0.downsample.0.weight"].shape[:2] == (64, 64)
    x, _ = batch(sup)
    with torch.no_grad():
        torch.testing.assert_close(sup.forward_subnet(x, arch, RIGHT), model(x), rtol=1e-5, atol=1e-5)


def test_expected_macs_is_the_exact_expectation(supernet_of) -> None:
    sup = supernet_of("mobilenetv2")
    space, cost = sup.space, sup.macs_model()
    choices = space.choices()
    # Two adjacent positions vary (a layer's input and output); all others are fixed one-hot.
    base = list(_indices(space, space.sample(random.Random(2))))
    a, b = 5, 6
    pa, pb = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    probs = [torch.nn.functional.one_hot(torch.tensor(j), len(c)).double() for j, c in zip(base, choices)]
    probs[a], probs[b] = pa, pb
    brute = 0.0
    for i in range(4):
        for j in range(4):
            idx = list(base)
            idx[a], idx[b] = i, j
            brute += float(pa[i] * pb[j]) * zoo.count(*space.to_spec(tuple(c[k] for c, k in zip(choices, idx)))).macs
    assert float(cost.expected(probs)) == pytest.approx(brute, rel=1e-12)


def test_bad_inputs_are_refused(supernet_of) -> None:
    with pytest.raises(TypeError, match="nbmacro"):
        WidthSupernet(NBMacroSpace())
    with pytest.raises(ValueError, match="left"):
        SidePlacement("middle")
    sup = supernet_of("mobilenetv2")
    with pytest.raises(ValueError, match="position 0"):
        sup.forward_subnet(batch(sup)[0], (7,) + sup.full_arch[1:], LEFT)
    arch = tuple(c[0] for c in sup.space.choices())
    edges = tuple((0, w) for w in sup.full_arch)
    wrong = BinPlacement(edges, tuple((0,) for _ in arch))  # keeps whole layers: not the arch's widths
    with pytest.raises(ValueError, match="keeps"):
        sup.forward_subnet(batch(sup)[0], arch, wrong)
