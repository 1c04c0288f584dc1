"""search.mctnas: the scaled official schedule, the training step on the engine, exact resume, windows, the search
stage, and the rank correlations of the one-shot study."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import zoo
from search.engine import TrainConfig, Trainer, read_checkpoint
from search.mcts import Draw, MCTSConfig
from search.mctnas import (MCTNASConfig, MCTNASTrainer, SearchConfig, SubnetScorer, engine_steps, kendall_tau,
                           search_result, search_stage, spearman_rho, train_supernet)
from search.oneshot import OneShotSupernet
from search.budget import CostModel, CostWindow
from zoo.spaces import NBMacroSpace

QUIET = dict(progress=False)


@pytest.fixture(scope="module")
def base() -> OneShotSupernet:
    torch.manual_seed(0)
    return OneShotSupernet(NBMacroSpace())


@pytest.fixture(scope="module")
def data() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    targets = torch.arange(24) % 3
    images = torch.randn(24, 3, 16, 16, generator=gen) * 0.5 + targets.view(-1, 1, 1, 1).float()
    return TensorDataset(images, targets)


def test_schedule_scales_the_official_phases() -> None:
    nb = MCTNASConfig().schedule("nbmacro", 9800)  # the official 50 epochs of 196 iterations
    assert (nb.warmup_iters, nb.mct_start_iter) == (4900, 5880)
    imagenet = MCTNASConfig().schedule("mctnas", 144360)  # 120 epochs of 1203
    assert (imagenet.warmup_iters, imagenet.mct_start_iter) == (72180, 102255)
    short = MCTNASConfig().schedule("nbmacro", 100)
    assert (short.warmup_iters, short.mct_start_iter) == (50, 60)
    assert (short.c1, short.c2, short.tau, short.beta) == (0.1, 0.2, 0.0025, 0.96)  # constants untouched
    uniform = MCTNASConfig(sampling="uniform").schedule("nbmacro", 100)
    assert uniform.warmup_iters == uniform.mct_start_iter == 101  # never reached
    own = MCTNASConfig(warmup_fraction=0.2, mct_start_fraction=0.3).schedule("mctnas", 10)
    assert (own.warmup_iters, own.mct_start_iter) == (2, 3)
    with pytest.raises(ValueError, match="sampling"):
        MCTNASConfig(sampling="greedy")
    with pytest.raises(ValueError, match="before the tree updates"):
        MCTNASConfig(warmup_fraction=0.7, mct_start_fraction=0.5).schedule("nbmacro", 10)
    with pytest.raises(ValueError, match="mct_start_fraction"):
        MCTNASConfig(mct_start_fraction=1.5)


def test_engine_steps_matches_the_engine(base: OneShotSupernet, data: TensorDataset) -> None:
    config = TrainConfig(epochs=2, batch_size=5, **QUIET)
    trainer = Trainer(copy.deepcopy(base), config, data, step_fn=lambda *a: {"loss": 1.0})
    assert engine_steps(config, len(data)) == trainer.total_steps == 8
    assert engine_steps(TrainConfig(steps=3), 1) == 3


def _record(mct: MCTNASTrainer) -> list[Draw]:
    draws: list[Draw] = []
    sample = mct.sampler.sample

    def recording(*args: object, **kwargs: object) -> Draw:
        draw = sample(*args, **kwargs)
        draws.append(draw)
        return draw

    mct.sampler.sample = recording  # type: ignore[method-assign]
    return draws


def _run(base: OneShotSupernet, data: TensorDataset, sampling: str, steps: int = 10,
         feasibility: CostModel | None = None, **kwargs: object) -> tuple[MCTNASTrainer, Trainer, list[Draw]]:
    sup = copy.deepcopy(base)
    config = TrainConfig(steps=steps, batch_size=4, lr=0.05, **QUIET)
    mct = MCTNASTrainer(sup, steps, MCTNASConfig(sampling=sampling), feasibility)
    draws = _record(mct)
    trainer = Trainer(sup, config, data, step_fn=mct.step_fn, extras={"mcts": mct}, **kwargs)
    trainer.fit()
    return mct, trainer, draws


def test_mcts_run_follows_the_phases_and_matches_uniform_until_mcts(base: OneShotSupernet, data: TensorDataset) -> None:
    mct, trainer, draws = _run(base, data, "mcts")
    warm, start = mct.schedule.warmup_iters, mct.schedule.mct_start_iter
    assert (warm, start) == (5, 6)
    assert mct.sampler.iteration == 10
    assert [d.uniform for d in draws] == [True] * start + [False] * (10 - start)
    # The official counter is incremented before the warm-up check: steps warm-1 .. 9 back up a reward.
    assert mct.sampler.tree.root.visits == 10 - warm + 1
    # History rows at the epoch end (step 6) and the end: steps 0-5 uniform, 6-9 MCTS.
    assert [row["train_mcts"] for row in trainer.history] == [0.0, 1.0]
    uniform, _, uniform_draws = _run(base, data, "uniform")
    assert uniform.sampler.tree.root.visits == 0 and all(d.uniform for d in uniform_draws)
    # Same seed: identical draws until MCTS sampling starts.
    assert [d.path for d in uniform_draws[:start]] == [d.path for d in draws[:start]]


class _Crash(Exception):
    pass


def test_resume_continues_exactly(base: OneShotSupernet, data: TensorDataset, tmp_path: Path) -> None:
    steps = 8
    full_mct, full, _ = _run(base, data, "mcts", steps=steps)
    ckpt = tmp_path / "supernet.pth"
    config = TrainConfig(steps=steps, batch_size=4, lr=0.05, checkpoint_every=3, **QUIET)
    mct = MCTNASTrainer(copy.deepcopy(base), steps, MCTNASConfig())

    def crashing(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, ctx: object) -> dict:
        if ctx.step == 4:  # type: ignore[attr-defined]
            raise _Crash
        return mct.step_fn(model, images, targets, ctx)

    with pytest.raises(_Crash):
        Trainer(mct.supernet, config, data, step_fn=crashing, extras={"mcts": mct}, checkpoint_path=ckpt).fit()
    assert read_checkpoint(ckpt)["step"] == 3
    resumed_mct = MCTNASTrainer(copy.deepcopy(base), steps, MCTNASConfig())
    resumed = Trainer(resumed_mct.supernet, config, data, step_fn=resumed_mct.step_fn, extras={"mcts": resumed_mct})
    resumed.load_checkpoint(ckpt)
    resumed.fit()
    assert resumed_mct.sampler.state_dict() == full_mct.sampler.state_dict()
    for (k, a), b in zip(resumed_mct.supernet.state_dict().items(), full.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    other = MCTNASTrainer(copy.deepcopy(base), steps + 1, MCTNASConfig())
    with pytest.raises(ValueError, match="run of 8 steps"):
        other.load_state_dict(resumed_mct.state_dict())


def test_mcts_draws_inside_the_macs_window_and_the_search_keeps_to_it(base: OneShotSupernet,
                                                                     data: TensorDataset) -> None:
    space = base.space
    limit = 40e6
    feasibility = CostModel.of_windows(space, [CostWindow("macs", high=limit)])
    mct, _, draws = _run(base, data, "mcts", steps=12, feasibility=feasibility)

    def macs(draw: Draw) -> int:
        return zoo.count(*space.to_spec(base.arch_of(draw.path))).macs

    # MCTS draws retry until inside the window (or train the last of max_tries draws); uniform ones ignore it.
    assert all((macs(d) <= limit) == d.accepted for d in draws)
    assert all(d.accepted or d.tries == mct.schedule.max_tries for d in draws if not d.uniform)
    assert any(d.accepted and not d.uniform for d in draws)
    assert any(not d.accepted for d in draws if d.uniform)
    found = search_stage(mct.supernet, mct.sampler, data, data, SearchConfig(count=2, batch_size=4, bn_batches=2,
                                                                             eval_batch_size=12, progress=False),
                         feasibility=feasibility)
    assert 1 <= len(found) <= 2 and len({c.arch for c in found}) == len(found)
    assert [c.top1 for c in found] == sorted((c.top1 for c in found), reverse=True)
    assert all(c.macs <= limit and c.costs["macs"] == c.macs for c in found)
    scorer = SubnetScorer(mct.supernet, data, data, bn_batches=2, batch_size=12)
    assert scorer(found[0].arch) == pytest.approx((found[0].top1, found[0].loss))  # same batches, same score
    result = search_result(mct.supernet, found, windows=feasibility.windows)
    assert result.arch == found[0].arch and result.score == found[0].top1
    assert result.spec == mct.supernet.spec_of(found[0].arch)
    assert result.report()["placement"] == {"kind": "path", "ops": list(mct.supernet.path_of(found[0].arch))}


def test_search_needs_a_tree(base: OneShotSupernet, data: TensorDataset) -> None:
    mct, _, _ = _run(base, data, "uniform", steps=2)
    with pytest.raises(ValueError, match="tree built during training"):
        search_stage(mct.supernet, mct.sampler, data, data, SearchConfig(count=1, progress=False))


def test_train_supernet_end_to_end(base: OneShotSupernet, data: TensorDataset, tmp_path: Path) -> None:
    torch.manual_seed(0)
    sup = copy.deepcopy(base)
    config = TrainConfig(epochs=1, batch_size=6, **QUIET)
    mct, trainer = train_supernet(sup, data, config, eval_data=data, checkpoint_path=tmp_path / "s.pth")
    assert mct.total_steps == trainer.step == 4
    assert "eval_top1_middle_path" in trainer.history[-1]
    assert read_checkpoint(tmp_path / "s.pth")["extras"]["mcts"]["total_steps"] == 4


def test_rank_correlations() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # τ-b with ties: x = (1, 2, 2, 3), y = (1, 3, 2, 4): 4 concordant, 1 discordant... computed by hand:
    # pairs (i<j): (1,2) c, (1,3) c, (1,4) c, (2,3) tie in x, (2,4) c, (3,4) c -> C = 5, D = 0, tx = 1, ty = 0.
    assert kendall_tau([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / math.sqrt(6 * 5))
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert spearman_rho([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    assert spearman_rho([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2], [1])


def test_trainer_refuses_a_foreign_model(base: OneShotSupernet) -> None:
    mct = MCTNASTrainer(base, 4, MCTNASConfig(mcts=MCTSConfig()))
    with pytest.raises(ValueError, match="same OneShotSupernet"):
        mct.step_fn(copy.deepcopy(base), torch.zeros(1, 3, 16, 16), torch.zeros(1, dtype=torch.long), object())
