"""CafeNet: FLOPs-sensitive bins, base + locally free placements, and the min-min training step."""

from __future__ import annotations

import random
import statistics

import pytest
import torch

import zoo
from search.width import BinLayout, CafeNetConfig, CafeNetTrainer, WidthSupernet, flops_sensitive_bins

from .conftest import SPACES, Ctx, batch


@pytest.fixture(scope="module")
def cafe() -> tuple[BinLayout, WidthSupernet]:
    torch.manual_seed(0)
    layout = flops_sensitive_bins(SPACES["mobilenetv2"])
    return layout, WidthSupernet(layout.space)


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet50", "efficientnet_b0"])
def test_bins_cost_about_the_same_everywhere(name: str) -> None:
    space = SPACES[name]
    layout = flops_sensitive_bins(space, CafeNetConfig(target_bins=20, min_bins=2, max_bins=64))
    sizes = [e[1] - e[0] for e in layout.edges]
    bins = [len(e) - 1 for e in layout.edges]
    # Where no clamp (min/max bins) decided and rounding to whole channels is small (bins of >= 8
    # channels), a bin costs the same MACs within 15 %.
    free = [g for g, (n, s) in enumerate(zip(bins, sizes)) if 2 < n < 64 and s >= 8]
    costs = [sizes[g] * layout.per_channel_macs[g] for g in free]
    assert len(free) >= len(bins) // 2 and max(costs) / min(costs) < 1.15
    # Costlier channels get smaller bins.
    order = sorted(free, key=lambda g: layout.per_channel_macs[g])
    assert sizes[order[0]] > sizes[order[-1]]
    assert 10 < statistics.mean(bins) < 40
    # The derived space: widths are the bin edges, the full network is unchanged.
    assert layout.space.choices() == tuple(e[1:] for e in layout.edges)
    full = tuple(c[-1] for c in space.choices())
    assert layout.space.to_spec(full) == space.to_spec(full)


def test_hgcnet_bins_keep_whole_groups() -> None:
    space = SPACES["hgcnet"]
    layout = flops_sensitive_bins(space)
    assert all(e % space.groups == 0 for edges in layout.edges for e in edges)
    zoo.build_model(layout.space.to_spec(layout.space.sample(random.Random(0)))[0])


def test_placements_are_base_plus_free_bins_in_the_local_zone() -> None:
    layout = BinLayout(((0, 4, 8, 12, 16, 20, 26),), space=None)  # 6 bins, the last holds a remainder
    assert layout.options((12,), 1) == [[(0, 1, 2), (0, 1, 3)]]  # 3 bins: base 2, free bin 2 or 3
    assert layout.options((4,), 1) == [[(0,), (1,)]]
    assert layout.options((26,), 1) == [[(0, 1, 2, 3, 4, 5)]]  # the full width has one placement
    assert layout.options((20,), 1) == [[(0, 1, 2, 3, 4)]]  # bin 5 is wider: swapping it in breaks the width
    assert len(layout.options((12,), 2)[0]) == 6  # r = 2: base 1 bin, 2 of the 4 zone bins 1..4
    assert all(sel[0] == 0 for sel in layout.options((12,), 2)[0])


def test_free_placements_run_the_weights_they_name(cafe) -> None:
    layout, sup = cafe
    sup.eval()
    rng = random.Random(4)
    arch = layout.space.sample(rng)
    x, _ = batch(sup)
    placements = layout.placements(arch, 1, 3, rng)
    assert len({p.bins for p in placements}) == len(placements) > 1
    outs = []
    for p in placements:
        local = sup.local_indices(arch, p)
        for g, sel in enumerate(p.bins):  # a position keeps exactly the channels of its selected bins
            edges = layout.edges[g]
            assert local[g].tolist() == [c for b in sel for c in range(edges[b], edges[b + 1])]
        with torch.no_grad():
            ours = sup.forward_subnet(x, arch, p)
            torch.testing.assert_close(ours, sup.subnet(arch, p).eval()(x), rtol=1e-5, atol=1e-5)
        outs.append(ours)
    assert not torch.allclose(outs[0], outs[1])


def test_hgcnet_free_placements_match_standalone() -> None:
    layout = flops_sensitive_bins(SPACES["hgcnet"])
    sup = WidthSupernet(layout.space).eval()
    rng = random.Random(1)
    arch = layout.space.sample(rng)
    x, _ = batch(sup)
    for p in layout.placements(arch, 1, 2, rng):
        with torch.no_grad():
            torch.testing.assert_close(sup.forward_subnet(x, arch, p), sup.subnet(arch, p).eval()(x),
                                       rtol=1e-5, atol=1e-5)


def test_min_min_trains_the_placement_with_the_smallest_loss(cafe) -> None:
    layout, shared = cafe
    import copy

    sup = copy.deepcopy(shared).train()
    trainer = CafeNetTrainer(sup, layout, CafeNetConfig(train_candidates=3))
    x, y = batch(sup, 2)
    ce = torch.nn.CrossEntropyLoss()
    # Replay the step's draws: the arch, then the candidates, from the same seeded rng.
    rng = random.Random(9)
    arch = sup.space.sample(rng)
    candidates = layout.placements(arch, 1, 3, rng)
    state = {k: v.clone() for k, v in sup.state_dict().items()}
    with torch.no_grad():
        losses = [float(ce(sup.forward_subnet(x, arch, p, update_stats=False), y)) for p in candidates]
    best = candidates[losses.index(min(losses))]
    sup.zero_grad()
    ce(sup.forward_subnet(x, arch, best), y).backward()
    reference = {k: p.grad.clone() for k, p in sup.named_parameters() if p.grad is not None}
    sup.load_state_dict(state)
    sup.zero_grad()
    metrics = trainer.step_fn(sup, x, y, Ctx(0, random.Random(9)))
    got = {k: p.grad for k, p in sup.named_parameters() if p.grad is not None}
    assert set(got) == set(reference) and all(torch.allclose(got[k], reference[k]) for k in got)
    assert metrics["candidates"] == 3.0 and metrics["loss"] == pytest.approx(min(losses), rel=1e-5)
    # Only the trained placement's BN statistics moved (the candidates' were discarded).
    after = sup.net.bn1.running_mean
    kept = sup.index_plan(arch, best)["bn1.running_mean"][0][1]
    untouched = torch.ones_like(after, dtype=torch.bool)
    untouched[kept] = False
    assert torch.equal(after[untouched], state["net.bn1.running_mean"][untouched])
    with pytest.raises(ValueError, match="layout.space"):
        CafeNetTrainer(WidthSupernet(SPACES["mobilenetv2"]), layout)
