"""BCNet's training step: bilateral loss, the complementary cycle, loss records, checkpointable state."""

from __future__ import annotations

import io
import random

import pytest
import torch

from zoo.spaces import MobileNetV2WidthSpace
from zoo.spaces.widths import BCNET_FRACTIONS
from search.width import LEFT, RIGHT, BCNetConfig, BCNetTrainer, LossRecords, complement

from .conftest import Ctx, batch, fresh


def test_records_keep_the_k_smallest_losses_per_width() -> None:
    records = LossRecords(((1, 2), (3, 4, 5)), k=3)
    for loss, arch in [(5.0, (1, 3)), (1.0, (1, 4)), (4.0, (1, 3)), (2.0, (2, 3)), (3.0, (1, 5)), (0.5, (1, 3))]:
        records.add(arch, loss)
    # Position 0, width 1 saw 5, 1, 4, 3, 0.5: the three smallest are 0.5, 1, 3.
    # Position 1, width 3 saw 5, 4, 2, 0.5: the three smallest are 0.5, 2, 4.
    assert records.means() == [[pytest.approx((0.5 + 1 + 3) / 3), 2.0],
                               [pytest.approx((0.5 + 2 + 4) / 3), 1.0, 3.0]]
    assert records.counts() == [[3, 1], [3, 1, 1]]
    with pytest.raises(ValueError, match="width 9"):
        records.add((1, 9), 1.0)
    restored = LossRecords(((1, 2), (3, 4, 5)), k=3)
    restored.load_state_dict(records.state_dict())
    assert restored.means() == records.means()
    with pytest.raises(ValueError, match="k=3"):
        LossRecords(((1, 2), (3, 4, 5)), k=4).load_state_dict(records.state_dict())


def test_complement_covers_the_channels_left_out() -> None:
    choices = MobileNetV2WidthSpace(layout="cifar").choices()  # quarters of each full width
    arch = tuple(c[0] for c in choices)  # a quarter everywhere: the complement is three quarters
    assert complement(arch, choices) == tuple(c[2] for c in choices)
    assert complement(tuple(c[-1] for c in choices), choices) == tuple(c[0] for c in choices)  # full -> smallest
    fine = MobileNetV2WidthSpace(fractions=BCNET_FRACTIONS, layout="cifar").choices()
    # 30 of 32 leaves 2 out; 5 % of 32 is 1 channel, so the complement is the next choice up, 3 (10 %).
    assert complement((30,) + tuple(c[-1] for c in fine[1:]), fine)[0] == 3


def test_the_cycle_is_random_complement_full(supernet_of) -> None:
    sup = supernet_of("mobilenetv2")
    assert [BCNetTrainer(sup).phase(s) for s in range(6)] == ["random", "complement", "full"] * 2
    assert [BCNetTrainer(sup, BCNetConfig(schedule="alternate")).phase(s) for s in range(4)] == ["random", "full"] * 2
    with pytest.raises(ValueError, match="schedule"):
        BCNetConfig(schedule="sandwich")


def _grads(sup) -> dict[str, torch.Tensor]:
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in sup.named_parameters()}


def test_the_step_averages_left_and_right_and_cycles(supernet_of) -> None:
    sup = fresh(supernet_of("mobilenetv2")).train()
    trainer = BCNetTrainer(sup)
    x, y = batch(sup, 2)
    ce = torch.nn.CrossEntropyLoss()
    archs = []
    for step in range(3):
        ctx = Ctx(step, random.Random(100 + step))
        expected_arch = (sup.space.sample(random.Random(100)) if step == 0
                         else complement(archs[0], sup.space.choices()) if step == 1 else None)
        state = {k: v.clone() for k, v in sup.state_dict().items()}
        # The reference gradient: each side's loss alone, averaged (run first, on the same weights and stats).
        if expected_arch is not None:
            ref = {}
            for p in (LEFT, RIGHT):
                sup.zero_grad()
                ce(sup.forward_subnet(x, expected_arch, p), y).backward()
                ref[p.side] = _grads(sup)
            reference = {k: 0.5 * (ref["left"][k] + ref["right"][k]) for k in ref["left"]}
        else:
            sup.zero_grad()
            ce(sup(x), y).backward()
            reference = _grads(sup)
        sup.load_state_dict(state)  # undo the reference passes' BN statistics
        sup.zero_grad()
        metrics = trainer.step_fn(sup, x, y, ctx)
        got = _grads(sup)
        assert all(torch.allclose(got[k], reference[k], rtol=1e-4, atol=1e-6) for k in got), step
        assert metrics["phase"] == float(step)
        if expected_arch is not None:
            archs.append(expected_arch)
            assert metrics["loss"] == pytest.approx(0.5 * (metrics["loss_left"] + metrics["loss_right"]))
        with torch.no_grad():
            for p in sup.parameters():
                p -= 0.1 * p.grad
    # Records hold the two sampled steps (mean of L and R), never the full-network step.
    counts = trainer.records.counts()
    assert all(sum(row) == 2 for row in counts)
    assert all(counts[g][sup.space.choices()[g].index(archs[0][g])] >= 1 for g in range(len(archs[0])))


def test_trainer_state_round_trips_through_a_checkpoint(supernet_of) -> None:
    sup = fresh(supernet_of("mobilenetv2")).train()
    trainer = BCNetTrainer(sup)
    x, y = batch(sup, 2)
    trainer.step_fn(sup, x, y, Ctx(0, random.Random(5)))
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)  # the engine loads checkpoints with weights_only=True
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = BCNetTrainer(sup)
    resumed.load_state_dict(state)
    assert resumed.records.means() == trainer.records.means()
    assert resumed._previous == trainer._previous
    with pytest.raises(ValueError, match="config"):
        BCNetTrainer(sup, BCNetConfig(schedule="alternate")).load_state_dict(state)
    with pytest.raises(ValueError, match="BCNetTrainer was built|supernet"):
        BCNetTrainer(sup).step_fn(torch.nn.Linear(2, 2), x, y, Ctx(0, random.Random(0)))


def test_the_engine_trains_and_resumes_the_bcnet_step(tmp_path, supernet_of) -> None:
    engine = pytest.importorskip("search.engine")

    class Noise(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, key):
            index = key[0] if isinstance(key, tuple) else key
            gen = torch.Generator().manual_seed(index)
            return torch.randn(3, 32, 32, generator=gen), index % 10

    def trainer(bcnet: BCNetTrainer, path: str) -> engine.Trainer:
        config = engine.TrainConfig(steps=3, batch_size=2, progress=False, checkpoint_every=1)
        return engine.Trainer(bcnet.supernet, config, Noise(), step_fn=bcnet.step_fn, extras={"bcnet": bcnet},
                              checkpoint_path=tmp_path / path, device="cpu")

    torch.manual_seed(0)
    straight = BCNetTrainer(fresh(supernet_of("mobilenetv2")))
    trainer(straight, "a.pt").fit()  # random, complement, full
    torch.manual_seed(0)
    first = trainer(BCNetTrainer(fresh(supernet_of("mobilenetv2"))), "b.pt")
    first.total_steps = 1  # stops after the random step: the resumed complement needs the saved sample
    first.fit()
    resumed = BCNetTrainer(fresh(supernet_of("mobilenetv2")))
    run = trainer(resumed, "b.pt")
    run.load_checkpoint(tmp_path / "b.pt")
    run.fit()
    assert resumed.records.means() == straight.records.means() and resumed.records.counts()[0] != [0] * 4
    weights = straight.supernet.state_dict()
    assert all(torch.equal(resumed.supernet.state_dict()[k], weights[k]) for k in weights)


def test_the_unilateral_baseline_trains_and_records_the_left_channels_only(supernet_of) -> None:
    sup = fresh(supernet_of("mobilenetv2")).train()
    trainer = BCNetTrainer(sup, BCNetConfig(sides=("left",)))
    x, y = batch(sup, 2)
    arch = sup.space.sample(random.Random(7))
    state = {k: v.clone() for k, v in sup.state_dict().items()}
    sup.zero_grad()
    torch.nn.CrossEntropyLoss()(sup.forward_subnet(x, arch, LEFT), y).backward()
    reference = _grads(sup)
    sup.load_state_dict(state)
    sup.zero_grad()
    metrics = trainer.step_fn(sup, x, y, Ctx(0, random.Random(7)))
    for name, grad in _grads(sup).items():
        torch.testing.assert_close(grad, reference[name], msg=name)
    assert metrics["loss_left"] == metrics["loss_right"] == metrics["loss"]
    assert sum(map(sum, trainer.records.counts())) == len(arch)  # one record per position
    with pytest.raises(ValueError, match="sides"):
        BCNetConfig(sides=("right",))
    with pytest.raises(ValueError, match="config"):  # a bilateral run cannot resume a unilateral one's state
        BCNetTrainer(sup).load_state_dict(trainer.state_dict())
