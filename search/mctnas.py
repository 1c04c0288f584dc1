"""MCT-NAS on a one-shot supernet: the training step with uniform → MCTS sampling, the search stage, one-shot scoring.

Owns :class:`MCTNASConfig` (uniform or MCTS sampling, and how the official phase lengths are scaled to a run),
:class:`MCTNASTrainer` (the engine's ``step_fn``: draw a path with :class:`search.mcts.MCTSampler` from the
step's ``ctx.rng``, train it, back up the reward L̃/L of the step's loss; the sampler travels in checkpoints
as an engine extra), :func:`train_supernet` (the engine run, resumable), :func:`search_stage` (the official
search: hierarchical node selection whose node updates score a path's loss on one fixed training batch,
then ``count`` distinct leaves scored by validation top-1 after BN recalibration, best first),
:class:`SubnetScorer` (a path extracted as its zoo model, BN recalibrated, evaluated) and the rank
correlations of the one-shot study (:func:`kendall_tau`, :func:`spearman_rho`).

Schedule (papers.md §4.4): the official runs are (1) uniform sampling without tree updates, (2) uniform
sampling with the tree and G updated, (3) MCTS sampling. NAS-Bench-Macro: 50 epochs of 196 iterations,
phase 2 from iteration 4900 (50 %) and phase 3 from 5880 (60 %); ImageNet: 120 epochs of 1203, phase 2
from 72180 (50 %) and phase 3 from 102255 (70.8 %). A run of any other length keeps these *fractions* of its
own step count (``round(fraction × steps)``), the space's fractions unless given. ``sampling="uniform"``
is the baseline: phase 1 for the whole run (the same draws as the MCTS run until its phase 3 begins).

Assumptions where the official code is not followed to the letter or was not readable: the reward uses
the step's loss averaged over processes (every rank then builds the same tree); the search stage's node
updates score a path on the fixed batch with BatchNorm normalising by that batch's own statistics
(:func:`search.oneshot.batch_statistics`; papers.md says "BN as in the supernet", which in training mode is
exactly this: a recalibration on the batch itself), and the final candidates are scored as standalone zoo
models after recalibrating BN on ``bn_batches`` training batches (official: 20). MACs and latency windows are
:class:`search.oracle.CostWindow` s on the *space's* networks (its input size and classes), which is what the
latency tables key on, whatever data the supernet is trained on.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.errors import InputError
import zoo
from search.data import EpochSampler, SeededDataset
from search.distributed import env_info
from search.engine import TrainConfig, Trainer, evaluate, recalibrate_bn, seed_everything
from search.mcts import MCTSampler, MCTSConfig
from search.oneshot import OneShotSupernet, batch_statistics
from search.budget import CostModel, CostWindow
from zoo.spaces import Arch
from search.steps import global_mean, resolve_supernet
from search.result import SearchResult

SAMPLINGS = ("mcts", "uniform")
# (phase-2 start, phase-3 start) as fractions of the official runs (papers.md §4.4).
OFFICIAL_PHASES: dict[str, tuple[float, float]] = {"nbmacro": (4900 / 9800, 5880 / 9800),
                                                   "mctnas": (72180 / 144360, 102255 / 144360)}

__all__ = ["Candidate", "MCTNASConfig", "MCTNASTrainer", "OFFICIAL_PHASES", "SAMPLINGS", "SearchConfig",
           "SubnetScorer", "engine_steps", "kendall_tau", "search_result", "search_stage", "spearman_rho",
           "train_supernet"]


@dataclass(frozen=True)
class MCTNASConfig:
    """How a supernet run samples paths.

    Attributes:
        sampling: ``"mcts"`` (the three official phases) or ``"uniform"`` (phase 1 throughout: the baseline).
        warmup_fraction: where phase 2 (tree updates) starts, as a fraction of the run's steps (None: the
            space's official fraction, else 0.5).
        mct_start_fraction: where phase 3 (MCTS sampling) starts (None: the space's official fraction, else 0.6).
        mcts: the tree's constants (C1, C2, τ, β, γ, n_thrd, max_tries, ema_start); its phase counters are
            replaced by the scaled schedule.
    """

    sampling: str = "mcts"
    warmup_fraction: float | None = None
    mct_start_fraction: float | None = None
    mcts: MCTSConfig = field(default_factory=MCTSConfig)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise InputError(f"MCTNASConfig.sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        for name in ("warmup_fraction", "mct_start_fraction"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 <= value <= 1.0):
                raise InputError(f"MCTNASConfig.{name} must be None or in [0, 1], got {value!r}")
        if not isinstance(self.mcts, MCTSConfig):
            raise InputError(f"MCTNASConfig.mcts must be an MCTSConfig, got {type(self.mcts).__name__}")

    def fractions(self, space: str) -> tuple[float, float]:
        """(phase-2 start, phase-3 start) as fractions of the run for a space called ``space``."""
        warm, start = OFFICIAL_PHASES.get(space, (0.5, 0.6))
        warm = warm if self.warmup_fraction is None else float(self.warmup_fraction)
        start = start if self.mct_start_fraction is None else float(self.mct_start_fraction)
        if start < warm:
            raise InputError(f"MCTNASConfig: MCTS sampling starts at {start:g} of the run, before the tree updates "
                             f"start ({warm:g})")
        return warm, start

    def schedule(self, space: str, total_steps: int) -> MCTSConfig:
        """The tree's config for a run of ``total_steps`` steps: the phases at their fractions of the run."""
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise InputError(f"total_steps must be an int >= 1, got {total_steps!r}")
        if self.sampling == "uniform":  # past the last step: no draw ever leaves phase 1 (the tree stays empty)
            return dataclasses.replace(self.mcts, warmup_iters=total_steps + 1, mct_start_iter=total_steps + 1)
        warm, start = self.fractions(space)
        return dataclasses.replace(self.mcts, warmup_iters=round(warm * total_steps),
                                   mct_start_iter=round(start * total_steps))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class MCTNASTrainer:
    """MCT-NAS' training step over a :class:`OneShotSupernet` for a run of ``total_steps`` steps.

    Register it as an engine extra (its state is the sampler's: tree, G, L̃ and the iteration count) and pass
    :meth:`step_fn` as the step function. ``feasibility`` (windows on the space's archs) is the MACs/latency
    window the MCTS phase draws inside (up to ``max_tries`` draws, as the official sampler).
    """

    def __init__(self, supernet: OneShotSupernet, total_steps: int, config: MCTNASConfig = MCTNASConfig(),
                 feasibility: CostModel | None = None) -> None:
        if feasibility is not None and feasibility.space != supernet.space:
            raise InputError(f"the windows are bound to space {feasibility.space.name!r}, the supernet's is "
                             f"{supernet.space.name!r}")
        self.supernet = supernet
        self.config = config
        self.total_steps = total_steps
        self.schedule = config.schedule(supernet.space.name, total_steps)
        self.feasibility = feasibility
        self.sampler = MCTSampler([len(c) for c in supernet.choices], self.schedule)

    def accept(self, path: Sequence[int]) -> bool:
        """Whether the path's architecture lies in every window (always, without windows)."""
        return self.feasibility is None or self.feasibility(self.supernet.arch_of(path))

    def step_fn(self, model: nn.Module, images: Tensor, targets: Tensor, ctx: Any) -> dict[str, float]:
        """Draw a path, train it (one forward, one backward), back up L̃ / loss; the engine steps the optimizer."""
        sup = resolve_supernet(model, self.supernet)
        draw = self.sampler.sample(ctx.rng, self.accept if self.feasibility is not None else None)
        assert draw is not None  # nothing is removed during training
        logits = sup.forward_path(images, draw.path)
        loss = ctx.criterion(logits, targets)
        loss.backward()
        value = float(loss.detach())
        reward = self.sampler.observe(draw.path, global_mean(ctx, {"loss": value})["loss"])
        return {"loss": value, "top1": 100.0 * float((logits.argmax(1) == targets).float().mean()),
                "mcts": 0.0 if draw.uniform else 1.0, "accepted": float(draw.accepted),
                "reward": 0.0 if reward is None else reward}

    def last_phase(self) -> str:
        it = self.sampler.iteration
        if it < self.schedule.warmup_iters:
            return "uniform"
        return "uniform+tree" if it < self.schedule.mct_start_iter else "mcts"

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "config": _plain(self.config.to_dict()),
                "total_steps": self.total_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["total_steps"]) != self.total_steps or state["config"] != _plain(self.config.to_dict()):
            raise InputError(f"MCTNASTrainer: the saved state is of a run of {state['total_steps']} steps with "
                             f"config {state['config']}; this run has {self.total_steps} steps and {self.config}")
        self.sampler.load_state_dict(state["sampler"])


def _plain(data: Any) -> Any:
    """Tuples as lists, so a saved config compares equal to a fresh one."""
    if isinstance(data, Mapping):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return data


def engine_steps(config: TrainConfig, images: int, world_size: int = 1) -> int:
    """The steps the engine will run for ``images`` training images (``config.steps`` or epochs × batches)."""
    if config.steps is not None:
        return config.steps
    per_rank = math.ceil(images / world_size)
    batches = per_rank // config.batch_size
    if batches == 0:
        raise InputError(f"{images} training images are too few for one batch of {config.batch_size} per process")
    return config.epochs * batches


def train_supernet(supernet: OneShotSupernet, train_data: Dataset, config: TrainConfig,
                   mct: MCTNASConfig = MCTNASConfig(), *, feasibility: CostModel | None = None,
                   eval_data: Dataset | None = None, checkpoint_path: str | Path | None = None, resume: bool = False,
                   device: torch.device | str | None = None) -> tuple[MCTNASTrainer, Trainer]:
    """Train ``supernet`` with MCT-NAS' sampling on the engine; returns the step object and the finished trainer.

    ``resume=True`` continues from ``checkpoint_path`` if it exists (exactly: the sampler is in the checkpoint).
    ``eval_data``, if given, is scored at the evaluation cadence on one fixed path (the middle op of every
    layer), a cheap progress signal; candidates are scored by :func:`search_stage`.
    """
    steps = engine_steps(config, len(train_data), env_info().world_size)  # type: ignore[arg-type]
    seed_everything(config.seed)  # the sampler's tree, whatever the caller drew since building the supernet
    mcts = MCTNASTrainer(supernet, steps, mct, feasibility)
    middle = tuple(len(c) // 2 for c in supernet.choices)

    def evaluator(model: nn.Module, loader: DataLoader) -> dict[str, float]:
        top1, loss = evaluate(model, loader, forward=lambda x: supernet.forward_path(x, middle), reduce=True)
        return {"top1_middle_path": top1, "loss_middle_path": loss}

    trainer = Trainer(supernet, config, train_data, eval_data=eval_data, step_fn=mcts.step_fn,
                      extras={"mcts": mcts}, evaluator=evaluator if eval_data is not None else None,
                      checkpoint_path=checkpoint_path, device=device)
    if trainer.total_steps != steps:
        raise RuntimeError(f"the engine runs {trainer.total_steps} steps, the MCT-NAS schedule was made for {steps}")
    if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
        trainer.load_checkpoint(checkpoint_path)
    trainer.fit()
    return mcts, trainer


# --- scoring ------------------------------------------------------------------------------------------------------


def _loader(data: Dataset, batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    # Seeded keys (search.data): augmentation and order are fixed by the seed, so scores are reproducible.
    return DataLoader(SeededDataset(data), batch_size=batch_size,
                      sampler=EpochSampler(data, seed=seed, shuffle=shuffle), drop_last=False)  # type: ignore[arg-type]


class SubnetScorer:
    """Top-1 (%) and loss of an architecture: its zoo model extracted from the supernet, BN statistics
    re-estimated on ``bn_batches`` batches of ``bn_data`` (the same batches for every arch), evaluated on ``val_data``.

    ``bn_batches`` is capped at the batches ``bn_data`` holds. Each call returns ``(top1, loss)``.
    """

    def __init__(self, supernet: OneShotSupernet, bn_data: Dataset, val_data: Dataset, *, bn_batches: int = 20,
                 batch_size: int = 64, seed: int = 0, device: torch.device | str | None = None) -> None:
        self.supernet = supernet
        self.bn_loader = _loader(bn_data, batch_size, seed, shuffle=True)
        self.val_loader = _loader(val_data, batch_size, seed, shuffle=False)
        self.bn_batches = max(1, min(bn_batches, len(self.bn_loader)))
        self.device = torch.device(device) if device is not None else next(supernet.parameters()).device

    def __call__(self, arch: Arch) -> tuple[float, float]:
        model = self.supernet.subnet(arch).to(self.device)
        recalibrate_bn(model, self.bn_loader, self.bn_batches, device=self.device)
        return evaluate(model, self.val_loader, device=self.device)


@dataclass(frozen=True)
class SearchConfig:
    """The search stage (papers.md §4.4, ``mct_searcher``).

    Attributes:
        count: distinct leaves to score (official: 20).
        batch_size: size of the fixed training batch node updates are scored on.
        refresh_every: draw a new fixed batch after this many node-update evaluations (official: 1000).
        bn_batches: BN recalibration batches before a candidate's validation score (official: 20).
        eval_batch_size: batch size of recalibration and validation.
        seed: seeds the selection's random draws and the data order.
        progress: a bar over scored candidates on stderr.
    """

    count: int = 20
    batch_size: int = 64
    refresh_every: int = 1000
    bn_batches: int = 20
    eval_batch_size: int = 64
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("count", "batch_size", "refresh_every", "bn_batches", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"SearchConfig.{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True)
class Candidate:
    """A scored leaf of the search: validation top-1 and loss, and what its space network costs."""

    arch: Arch
    top1: float
    loss: float
    macs: int
    params: int
    costs: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"arch": list(self.arch), "top1": self.top1, "loss": self.loss, "macs": self.macs,
                "params": self.params, "window_costs": self.costs}


class _FixedBatch:
    """One training batch, redrawn after every ``refresh`` uses (the official searcher's ``search_loader``)."""

    def __init__(self, data: Dataset, batch_size: int, seed: int, refresh: int, device: torch.device) -> None:
        self.loader = DataLoader(SeededDataset(data), batch_size=batch_size, drop_last=True,
                                 sampler=EpochSampler(data, seed=seed))  # type: ignore[arg-type]
        if len(self.loader) == 0:
            raise InputError(f"the search needs one training batch of {batch_size}; the data has "
                             f"{len(data)} images")  # type: ignore[arg-type]
        self.refresh, self.device, self.uses, self.epoch = refresh, device, 0, 0
        self._iter = iter(self.loader)
        self.batch = self._next()

    def _next(self) -> tuple[Tensor, Tensor]:
        try:
            images, targets = next(self._iter)
        except StopIteration:
            self.epoch += 1
            self.loader.sampler.set_epoch(self.epoch)  # type: ignore[attr-defined]
            self._iter = iter(self.loader)
            images, targets = next(self._iter)
        return images.to(self.device), targets.to(self.device)

    def get(self) -> tuple[Tensor, Tensor]:
        if self.uses and self.uses % self.refresh == 0:
            self.batch = self._next()
        self.uses += 1
        return self.batch


def search_stage(supernet: OneShotSupernet, sampler: MCTSampler, train_data: Dataset, val_data: Dataset,
                 config: SearchConfig = SearchConfig(), *, feasibility: CostModel | None = None,
                 device: torch.device | str | None = None) -> list[Candidate]:
    """The official search on a trained supernet and its tree: ``config.count`` distinct leaves, best top-1 first.

    Leaves come from hierarchical node selection (:meth:`MCTSampler.search`); node updates score a path by its
    loss on a fixed training batch (BN by batch statistics), rewards L̃ / loss against the training run's L̃;
    leaves outside ``feasibility`` are dropped; each selected leaf is scored by :class:`SubnetScorer`. The tree
    is modified (scored leaves are removed), as in the official searcher. Fewer than ``count`` candidates
    come back when the tree (which only holds paths the training stage visited) runs out of feasible leaves.
    """
    if sampler.rewards.tilde is None or sampler.tree.root.visits == 0:
        raise InputError("the search stage needs a tree built during training (no reward was backed up: the run "
                         "was uniform-only or shorter than its warm-up)")
    device = torch.device(device) if device is not None else next(supernet.parameters()).device
    fixed = _FixedBatch(train_data, config.batch_size, config.seed, config.refresh_every, device)
    scorer = SubnetScorer(supernet, train_data, val_data, bn_batches=config.bn_batches,
                          batch_size=config.eval_batch_size, seed=config.seed, device=device)
    losses: dict[tuple[int, ...], float] = {}
    bar = tqdm(total=config.count, desc="search", file=sys.stderr, disable=not config.progress, leave=False)

    def loss_of(path: tuple[int, ...]) -> float:
        images, targets = fixed.get()
        with torch.no_grad(), batch_statistics(supernet):
            return max(float(F.cross_entropy(supernet.forward_path(images, path), targets)), 1e-12)

    def score_of(path: tuple[int, ...]) -> float:
        top1, loss = scorer(supernet.arch_of(path))
        losses[path] = loss
        bar.update(1)
        return top1

    def accept(path: tuple[int, ...]) -> bool:
        return feasibility is None or feasibility(supernet.arch_of(path))

    try:
        found = sampler.search(random.Random(config.seed), loss_of, score_of, config.count,
                               accept if feasibility is not None else None)
    finally:
        bar.close()
    out = []
    for path, top1 in found:
        arch = supernet.arch_of(path)
        spec, size = supernet.space.to_spec(arch)
        cost = zoo.count(spec, size)
        costs = ({f"{w.metric}{'' if w.device is None else '@' + w.device}": feasibility.cost(i, arch)
                  for i, w in enumerate(feasibility.windows)} if feasibility is not None else {})
        out.append(Candidate(arch, top1, losses[path], cost.macs, cost.params, costs))
    return out


def search_result(supernet: OneShotSupernet, candidates: Sequence[Candidate], *, windows: Sequence[CostWindow] = (),
                  history: Sequence[Mapping[str, float]] = (), extra: Mapping[str, Any] | None = None,
                  device: str | None = None) -> SearchResult:
    """The best candidate as the search's saved result (``spec.json``, ``weights.pth``, ``report.json``: the same
    three-file layout as the width searches), holding the supernet's weights for its path."""
    if not candidates:
        raise InputError("no candidate was found: nothing to save")
    best = candidates[0]
    spec = supernet.spec_of(best.arch)
    cost = zoo.count(spec, supernet.input_size)
    latency = next((v for k, v in best.costs.items() if k.startswith("latency")), None)
    return SearchResult(
        "mct-nas", supernet.space.name, best.arch, spec, supernet.input_size, cost.macs, cost.params, latency,
        device, best.top1, {"kind": "path", "ops": list(supernet.path_of(best.arch))},
        supernet.subnet(best.arch).eval(), {"windows": [w.to_dict() for w in windows]}, [dict(r) for r in history],
        {"space_macs": best.macs, "space_params": best.params,
         "candidates": [c.to_dict() for c in candidates], **dict(extra or {})})


# --- rank correlation ---------------------------------------------------------------------------------------------


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b between two paired sequences (ties counted as in τ-b; NaN if either is constant)."""
    if len(x) != len(y) or len(x) < 2:
        raise InputError(f"kendall_tau needs two sequences of equal length >= 2, got {len(x)} and {len(y)}")
    concordant = discordant = tie_x = tie_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tie_x += 1
            elif dy == 0:
                tie_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + tie_x) * (concordant + discordant + tie_y))
    return (concordant - discordant) / denom if denom else float("nan")


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # ties share their average rank
        i = j + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: the Pearson correlation of the (average-tie) ranks; NaN if either is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise InputError(f"spearman_rho needs two sequences of equal length >= 2, got {len(x)} and {len(y)}")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else float("nan")

