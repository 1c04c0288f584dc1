"""The one supernet training loop every search method runs on (BCNet/CafeNet, EoiNAS/DARTS, MCT-NAS).

Owns the recipe (:class:`TrainConfig`: SGD with momentum/Nesterov and weight decay, linear warm-up then
cosine to a minimum lr, label smoothing, gradient clipping, seed, evaluation and checkpoint cadence), the
:class:`Trainer` (device choice, seeding, optimizer and schedule, the step loop with a rank-0 progress
bar, periodic evaluation, checkpoints and exact resumption, torchrun/DDP-style multi-process training through
:mod:`search.distributed`). The checkpoint format, its reading and atomic writing live in :mod:`search.checkpoint`;
the two helpers every width or one-shot search scores candidates with, :func:`evaluate` (top-1, loss) and
:func:`recalibrate_bn`, in :mod:`search.scoring` (both re-exported here).

A step is not "one forward, one backward": the per-step work is a :class:`StepFn` that runs its own
forward(s) and backward(s) (BCNet: left and right sub-networks, gradients accumulated; DARTS: also an
architecture update on a validation batch; MCT-NAS: needs the step's loss) and returns float metrics.
Around it the trainer zeroes gradients, averages gradients and metrics over processes, clips, and steps
the optimizer and the schedule. Search state (loss records, a tree, architecture parameters and their
optimizer) is registered as ``extras`` (anything with ``state_dict``/``load_state_dict``) and travels in
checkpoints; extra data (DARTS' validation half) is registered as ``streams`` and drawn inside a step
with ``ctx.next_batch(name)``. Data order and augmentation are pure functions of the seed, epoch and
image (see :mod:`search.data`) and the step's ``ctx.rng`` is seeded from the seed and the step, so all
ranks sample the same architecture and a resumed run continues bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.errors import InputError
from search.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, read_checkpoint,  # noqa: F401
                               rng_state, set_rng_state, write_checkpoint)
from search.data import EpochSampler, SeededDataset, ShardSampler, mix_seed
from search.scoring import evaluate, recalibrate_bn  # noqa: F401 (re-exported: the engine's scoring helpers)
from search.distributed import (DistInfo, all_reduce_mean, average_gradients, broadcast_module,
                                broadcast_object, env_info, gather_objects, init_distributed, sync_buffers)

__all__ = [
    "CheckpointError",
    "RUNTIME_FIELDS",
    "StepContext",
    "StepFn",
    "Stateful",
    "TrainConfig",
    "Trainer",
    "WarmupCosine",
    "cross_entropy_step",
    "evaluate",
    "read_checkpoint",
    "recalibrate_bn",
    "seed_everything",
    "select_device",
]

# Fields that change how a run is watched, not what it computes: a checkpoint resumes under other values.
RUNTIME_FIELDS = frozenset({"workers", "progress", "eval_every", "checkpoint_every", "eval_batch_size"})
_STEP_RNG_SALT = 0x57E9  # separates ctx.rng's streams from the data streams seeded from the same seed


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. ``batch_size`` is per process (global batch = ``batch_size × world_size``).

    ``steps`` (optimizer steps), when set, replaces ``epochs × steps_per_epoch`` as the length of the run;
    the schedule spans the whole run. The lr rises linearly from ``warmup_start_lr`` to ``lr`` over
    ``warmup_epochs`` (fractions allowed), then follows a cosine to ``min_lr``. ``eval_every`` and
    ``checkpoint_every`` are in steps; ``None`` means at the end of every epoch (and always at the end).
    ``grad_clip_norm`` clips the global L2 norm of the averaged gradients. Defaults are NAS-Bench-Macro's
    CIFAR recipe (SGD 0.1, momentum 0.9, wd 5e-4, cosine).
    """

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.0
    label_smoothing: float = 0.0
    grad_clip_norm: float | None = None
    seed: int = 0
    eval_every: int | None = None
    checkpoint_every: int | None = None
    eval_batch_size: int | None = None
    workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise InputError(f"TrainConfig.{name} must be {what}, got {getattr(self, name)!r}")

        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        need(is_int(self.epochs) and self.epochs >= 1, "epochs", "an int >= 1")
        need(self.steps is None or (is_int(self.steps) and self.steps >= 1), "steps", "None or an int >= 1")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an int >= 1")
        need(is_num(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(is_num(self.momentum) and 0 <= self.momentum < 1, "momentum", "in [0, 1)")
        need(isinstance(self.nesterov, bool) and (not self.nesterov or self.momentum > 0), "nesterov",
             "a bool, and False when momentum is 0")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(is_num(self.min_lr) and 0 <= self.min_lr <= self.lr, "min_lr", f"in [0, lr={self.lr}]")
        need(is_num(self.warmup_epochs) and self.warmup_epochs >= 0, "warmup_epochs", "a number >= 0")
        need(is_num(self.warmup_start_lr) and self.warmup_start_lr >= 0, "warmup_start_lr", "a number >= 0")
        need(is_num(self.label_smoothing) and 0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)")
        need(self.grad_clip_norm is None or (is_num(self.grad_clip_norm) and self.grad_clip_norm > 0),
             "grad_clip_norm", "None or a number > 0")
        need(is_int(self.seed) and self.seed >= 0, "seed", "an int >= 0")
        for name in ("eval_every", "checkpoint_every", "eval_batch_size"):
            value = getattr(self, name)
            need(value is None or (is_int(value) and value >= 1), name, "None or an int >= 1")
        need(is_int(self.workers) and self.workers >= 0, "workers", "an int >= 0")
        need(isinstance(self.progress, bool), "progress", "a bool")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown TrainConfig fields {unknown}")
        return cls(**data)

    def differences(self, other: TrainConfig, ignore: Iterable[str] = RUNTIME_FIELDS) -> list[str]:
        """``"name: <self> != <other>"`` for every field that differs, ``ignore`` left out."""
        skip = set(ignore)
        return [f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
                for f in dataclasses.fields(self)
                if f.name not in skip and getattr(self, f.name) != getattr(other, f.name)]


@dataclass(frozen=True)
class WarmupCosine:
    """The lr of step ``s`` (0-based): linear warm-up over ``warmup_steps``, then cosine to ``min_lr``.

    Warm-up reaches ``lr`` at its last step: ``start + (lr - start)·(s + 1)/warmup_steps``; after it,
    ``min_lr + (lr - min_lr)·(1 + cos(π·t))/2`` with ``t = (s - warmup_steps)/(total_steps - warmup_steps)``.
    As a ``LambdaLR`` factor it is called with the step and returns ``lr_at(step) / lr``.
    """

    lr: float
    min_lr: float
    warmup_start_lr: float
    warmup_steps: int
    total_steps: int

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start_lr + (self.lr - self.warmup_start_lr) * (step + 1) / self.warmup_steps
        t = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def __call__(self, step: int) -> float:
        return self.lr_at(step) / self.lr


@runtime_checkable
class Stateful(Protocol):
    """What an extra object must offer to travel in checkpoints (optimizers and modules already do).

    Its state must be tensors, numbers, strings and containers of them: checkpoints are read with
    ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
    """

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


@dataclass(frozen=True)
class StepContext:
    """What a step function gets besides the model and the batch.

    ``step`` is the 0-based index of the optimizer step being taken, ``epoch`` that of the batch, ``lr``
    the weight optimizer's lr for this step (DARTS' second-order update needs it).
    ``rng`` is seeded from the config seed and ``step`` only: identical on every rank and after a resume,
    so architectures sampled from it agree everywhere. ``criterion`` is cross-entropy with the config's
    label smoothing.
    """

    step: int
    epoch: int
    lr: float
    rank: int
    world_size: int
    device: torch.device
    rng: random.Random
    criterion: nn.Module
    _trainer: Trainer = field(repr=False)

    def next_batch(self, stream: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(images, targets)`` batch of a registered stream, on the device (cycles over epochs)."""
        return self._trainer._stream(stream).next()

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Average these parameters' gradients over ranks now (e.g. architecture parameters before their
        own optimizer steps inside the step; the trainer averages its optimizer's parameters itself)."""
        average_gradients(params, device=self.device)

    def global_mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """The mean over ranks of each value (every rank must pass the same names), e.g. MCT-NAS' loss."""
        names = sorted(values)
        return dict(zip(names, all_reduce_mean([float(values[n]) for n in names], self.device)))

    @property
    def weight_optimizer(self) -> torch.optim.Optimizer:
        """The trainer's weight optimiser (DARTS' second-order step reads its momentum buffers, never steps it)."""
        return self._trainer.optimizer

    def zero_grad(self) -> None:
        """Clear the weight optimizer's gradients (DARTS' architecture step leaves some on the weights)."""
        self._trainer.optimizer.zero_grad(set_to_none=True)


class StepFn(Protocol):
    """One training step's work: forward(s) and backward(s), no optimizer step; returns float metrics.

    Every rank must return the same metric names. Losses should be means over the batch, so that
    averaging gradients over ranks gives the global batch's gradient.
    """

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 ctx: StepContext) -> Mapping[str, float]: ...


Evaluator = Callable[[nn.Module, DataLoader], Mapping[str, float]]


def cross_entropy_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                       ctx: StepContext) -> dict[str, float]:
    """The default step: one forward, cross-entropy (with label smoothing), one backward."""
    logits = model(images)
    loss = ctx.criterion(logits, targets)
    loss.backward()
    return {"loss": loss.item(), "top1": 100.0 * (logits.argmax(1) == targets).float().mean().item()}


def select_device(local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is available, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if not 0 <= local_rank < torch.cuda.device_count():
        raise InputError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are visible")
    return torch.device("cuda", local_rank)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (what weight init, dropout and drop-path draw from).

    The one seeding helper: every search and training entry point calls it with its run's seed before it creates
    anything random (a model, a supernet, a Dagger), so the same seed gives the same weights whatever ran before
    in the process; the :class:`Trainer` then reseeds with ``(seed, rank)`` for the training itself.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader(dataset: Dataset, batch_size: int, sampler: Any, workers: int, device: torch.device,
            drop_last: bool) -> DataLoader:
    # Persistent workers open a zip once per run instead of once per epoch (seconds for CIFAR-10); the
    # sampler runs in this process, so set_epoch still reaches them. A private generator: the loader draws
    # its workers' base seed from it, not from the global RNG (a resumed run would draw at other times).
    return DataLoader(SeededDataset(dataset), batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=drop_last, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator())


class _Stream:
    """Endless batches of one dataset for this rank, epoch after epoch, resumable at any batch."""

    def __init__(self, name: str, dataset: Dataset, batch_size: int, seed: int, info: DistInfo, workers: int,
                 device: torch.device) -> None:
        self.name, self.dataset, self.batch_size, self.device = name, dataset, batch_size, device
        self.sampler = EpochSampler(dataset, seed=seed, rank=info.rank, world_size=info.world_size)
        self.batches_per_epoch = self.sampler.num_samples // batch_size
        if self.batches_per_epoch == 0:
            raise InputError(f"{name} data has {len(dataset)} images: too few for one batch of {batch_size} "
                             f"per process on {info.world_size} process(es)")
        self.workers = workers
        self.loader = _loader(dataset, batch_size, self.sampler, workers, device, drop_last=True)
        self.epoch = 0
        self.position = 0  # batches of this epoch already drawn
        self._iter: Any = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._iter = self.epoch + 1, 0, None
        if self._iter is None:
            self.sampler.set_epoch(self.epoch, start=self.position * self.batch_size)
            self._iter = iter(self.loader)
        images, targets = next(self._iter)
        self.position += 1
        return images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop this stream's worker processes (a later ``next`` starts new ones where it left off)."""
        self._iter = None
        self.loader = _loader(self.dataset, self.batch_size, self.sampler, self.workers, self.device, drop_last=True)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "size": len(self.dataset),
                "batches_per_epoch": self.batches_per_epoch}

    def load_state_dict(self, state: Mapping[str, int], where: str) -> None:
        for key in ("size", "batches_per_epoch"):
            if state[key] != self.state_dict()[key]:
                raise CheckpointError(f"checkpoint {where} was made with {self.name} data of {key} {state[key]}, "
                                      f"this run has {self.state_dict()[key]}")
        self.epoch, self.position, self._iter = int(state["epoch"]), int(state["position"]), None


class Trainer:
    """Trains ``model`` on ``train_data`` with ``config``, one :class:`StepFn` call per optimizer step.

    Under torchrun (``WORLD_SIZE > 1``) it joins the process group (gloo on CPU, NCCL on CUDA), copies
    rank 0's weights and ``extras`` to every rank, shards the data with :class:`search.data.EpochSampler`,
    and averages gradients over ranks after each step function (see :mod:`search.distributed` for why
    not DDP); only rank 0 shows progress and writes checkpoints. Without torchrun it is a plain loop. A
    torchrun script ends with :func:`search.distributed.shutdown`.
    Datasets are any map-style ``Dataset`` of ``(image, target)``; the trainer loads them through
    :class:`search.data.SeededDataset`, so their random transforms are reproducible.

    ``params`` are what the SGD optimizer owns (default: every parameter that requires grad; DARTS passes
    the weights without its architecture parameters). ``streams`` are extra datasets a step draws from
    with ``ctx.next_batch(name)``; ``extras`` are saved and restored with checkpoints. ``eval_data`` is
    scored by ``evaluator(model, loader)`` (default: :func:`evaluate`, reduced over ranks) at the
    evaluation cadence. The constructor seeds the global generators with ``(config.seed, rank)``.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train_data: Dataset, *,
                 eval_data: Dataset | None = None, step_fn: StepFn = cross_entropy_step,
                 params: Iterable[nn.Parameter] | Iterable[dict[str, Any]] | None = None,
                 extras: Mapping[str, Stateful] | None = None, streams: Mapping[str, Dataset] | None = None,
                 evaluator: Evaluator | None = None, checkpoint_path: str | os.PathLike[str] | None = None,
                 device: torch.device | str | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.device = torch.device(device) if device is not None else select_device(env_info().local_rank)
        self.dist = init_distributed(self.device)
        self.rank, self.world_size = self.dist.rank, self.dist.world_size
        seed_everything(mix_seed(config.seed, self.rank))
        self.model = model.to(self.device)
        broadcast_module(self.model)
        self.step_fn = step_fn
        self.extras = dict(extras or {})
        for name, obj in self.extras.items():
            if not isinstance(obj, Stateful):
                raise TypeError(f"extra {name!r} ({type(obj).__name__}) has no state_dict/load_state_dict")
        if self.world_size > 1 and self.extras:
            states = broadcast_object({name: obj.state_dict() for name, obj in self.extras.items()})
            if self.rank != 0:
                for name, obj in self.extras.items():
                    obj.load_state_dict(states[name])
        workers = config.workers
        if "train" in (streams or {}):
            raise InputError("a stream may not be named 'train': that is the training data's stream")
        self.train_stream = _Stream("train", train_data, config.batch_size, config.seed, self.dist, workers,
                                    self.device)
        # Each stream its own data order, derived from the seed and its name (so adding one changes no other).
        self.streams = {name: _Stream(name, data, config.batch_size, mix_seed(config.seed, zlib.crc32(name.encode())),
                                      self.dist, workers, self.device)
                        for name, data in (streams or {}).items()}
        self.steps_per_epoch = self.train_stream.batches_per_epoch
        self.total_steps = config.steps if config.steps is not None else config.epochs * self.steps_per_epoch
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        if warmup >= self.total_steps and warmup > 0:
            raise InputError(f"TrainConfig.warmup_epochs={config.warmup_epochs} is {warmup} steps, not fewer "
                             f"than the {self.total_steps} steps of the run")
        owned = list(params) if params is not None else [p for p in self.model.parameters() if p.requires_grad]
        if not owned:
            raise InputError("the optimizer has no parameters to train (params is empty)")
        self.optimizer = torch.optim.SGD(owned, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                                         weight_decay=config.weight_decay)
        self.schedule = WarmupCosine(config.lr, config.min_lr, config.warmup_start_lr, warmup, self.total_steps)
        self.scheduler = LambdaLR(self.optimizer, self.schedule)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.eval_loader: DataLoader | None = None
        self._eval_data = eval_data
        if eval_data is not None:
            sampler = ShardSampler(len(eval_data), rank=self.rank, world_size=self.world_size, seed=config.seed)
            self.eval_loader = _loader(eval_data, config.eval_batch_size or config.batch_size, sampler, workers,
                                       self.device, drop_last=False)
        self.evaluator: Evaluator = evaluator or self._default_evaluator
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._running: dict[str, list[float]] = {}  # metric -> [sum, count] since the last record

    # --- the loop -------------------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch of the latest batch (0-based)."""
        return self.train_stream.epoch

    @property
    def lr(self) -> float:
        """The lr the next step will use (of the first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def fit(self) -> list[dict[str, float]]:
        """Run (or continue, after :meth:`load_checkpoint`) to ``total_steps``; returns :attr:`history`.

        A history row is recorded at the evaluation cadence and at the end: ``step``, ``epoch`` (fractional),
        ``lr``, the step metrics averaged since the previous row (``train_<name>``) and the evaluator's
        results (``eval_<name>``). Checkpoints are written at their cadence and at the end.
        """
        cfg = self.config
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", file=sys.stderr, dynamic_ncols=True,
                   disable=not (cfg.progress and self.rank == 0))
        try:
            while self.step < self.total_steps:
                images, targets = self.train_stream.next()
                metrics = self._train_step(images, targets)
                self.step += 1
                bar.update(1)
                shown = {k: f"{v:.4g}" for k, v in list(metrics.items())[:3]}
                bar.set_postfix(shown, epoch=self.train_stream.epoch, refresh=False)
                epoch_end = self.train_stream.position == self.steps_per_epoch
                done = self.step == self.total_steps
                if done or self._due(cfg.eval_every, epoch_end):
                    row = self._record()
                    if cfg.progress and self.rank == 0:
                        bar.write(" ".join(f"{k} {v:.4g}" for k, v in row.items()), file=sys.stderr)
                if self.checkpoint_path is not None and (done or self._due(cfg.checkpoint_every, epoch_end)):
                    self.save_checkpoint(self.checkpoint_path)
        finally:
            bar.close()
            self.close()
        return self.history

    def close(self) -> None:
        """Stop the DataLoader worker processes (``fit`` does this when it returns or fails)."""
        for stream in (self.train_stream, *self.streams.values()):
            stream.close()
        if self.eval_loader is not None:
            self.eval_loader = _loader(self._eval_data, self.eval_loader.batch_size or 1, self.eval_loader.sampler,
                                       self.config.workers, self.device, drop_last=False)

    def _due(self, every: int | None, epoch_end: bool) -> bool:
        return epoch_end if every is None else self.step % every == 0

    def _train_step(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        ctx = StepContext(self.step, self.train_stream.epoch, self.lr, self.rank, self.world_size, self.device,
                          random.Random(mix_seed(self.config.seed, _STEP_RNG_SALT, self.step)), self.criterion, self)
        raw = self.step_fn(self.model, images, targets, ctx)
        names, values = _metric_values(raw, self.step)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        metrics = dict(zip(names, average_gradients(params, values, device=self.device)))
        bad = [n for n, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"step {self.step}: metric {bad[0]!r} is {metrics[bad[0]]} (training diverged)")
        if self.config.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], self.config.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        for name, value in metrics.items():
            total = self._running.setdefault(name, [0.0, 0.0])
            total[0] += value
            total[1] += 1
        return metrics

    def _record(self) -> dict[str, float]:
        sync_buffers(self.model)
        row: dict[str, float] = {"step": self.step, "epoch": self.step / self.steps_per_epoch,
                                 "lr": self.schedule.lr_at(self.step - 1)}
        row.update({f"train_{name}": s / n for name, (s, n) in sorted(self._running.items())})
        self._running.clear()
        if self.eval_loader is not None:
            row.update({f"eval_{k}": float(v) for k, v in self.evaluator(self.model, self.eval_loader).items()})
        self.history.append(row)
        return row

    def _default_evaluator(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        top1, loss = evaluate(model, loader, device=self.device, reduce=True)
        return {"top1": top1, "loss": loss}

    def _stream(self, name: str) -> _Stream:
        if name not in self.streams:
            raise KeyError(f"no data stream {name!r}; registered streams: {sorted(self.streams) or 'none'}")
        return self.streams[name]

    # --- checkpoints ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, except the per-rank RNG states (see :meth:`save_checkpoint`)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "world_size": self.world_size,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "streams": {"train": self.train_stream.state_dict(),
                        **{name: s.state_dict() for name, s in self.streams.items()}},
            "extras": {name: obj.state_dict() for name, obj in self.extras.items()},
            "history": [dict(row) for row in self.history],
            "running": {name: list(v) for name, v in self._running.items()},
        }

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write a checkpoint atomically (temp file, fsync, rename); every rank must call it, rank 0 writes.

        Norm layers' running statistics are averaged over ranks first and each rank's Python, NumPy and
        torch RNG states are gathered, so a resumed multi-process run continues exactly.
        """
        sync_buffers(self.model)
        rng = gather_objects(rng_state(self.device))
        error = None
        if self.rank == 0:
            state = self.state_dict()
            state["rng"] = rng
            try:
                write_checkpoint(Path(path), state)
            except CheckpointError as err:
                error = str(err)
        # Rank 0's outcome reaches every rank (and doubles as the barrier), so a failed write raises everywhere
        # instead of leaving the other ranks waiting in their next collective.
        error = broadcast_object(error)
        if error is not None:
            raise CheckpointError(error)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint of this run; :meth:`fit` then continues exactly where it was written.

        Raises :class:`CheckpointError` if it is missing or unreadable, or was made with another config
        (naming the differing fields; :data:`RUNTIME_FIELDS` may differ), number of processes, data size,
        extras or streams.
        """
        where = repr(str(path))
        state = read_checkpoint(path, map_location=self.device)
        saved = TrainConfig.from_dict(state["config"])
        diff = saved.differences(self.config)
        if diff:
            raise CheckpointError(f"checkpoint {where} was made with a different config "
                                  f"(checkpoint != this run): {'; '.join(diff)}")
        if state["world_size"] != self.world_size:
            raise CheckpointError(f"checkpoint {where} was made with world size {state['world_size']}, "
                                  f"this run has {self.world_size}")
        for kind, mine in (("extras", self.extras), ("streams", {"train": 0, **self.streams})):
            if sorted(state[kind]) != sorted(mine):
                raise CheckpointError(f"checkpoint {where} has {kind} {sorted(state[kind])}, this run registers "
                                      f"{sorted(mine)}")
        self.train_stream.load_state_dict(state["streams"]["train"], where)
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name], where)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint {where} does not fit this model or optimizer: "
                                  f"{str(err).splitlines()[0]}") from err
        self.scheduler.load_state_dict(state["scheduler"])
        for name, obj in self.extras.items():
            obj.load_state_dict(state["extras"][name])
        self.step = int(state["step"])
        self.history = [dict(row) for row in state["history"]]
        self._running = {name: list(v) for name, v in state["running"].items()}
        set_rng_state(state["rng"][self.rank], self.device)


def _metric_values(raw: object, step: int) -> tuple[list[str], list[float]]:
    if not isinstance(raw, Mapping):
        raise TypeError(f"step {step}: the step function must return a mapping of metric name to float, "
                        f"got {type(raw).__name__}")
    names = sorted(raw)
    values = []
    for name in names:
        value = raw[name]
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise TypeError(f"step {step}: metric {name!r} is a tensor of shape {tuple(value.shape)}, not a scalar")
            value = value.item()
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"step {step}: metric {name!r} is {type(value).__name__}, not a number")
        values.append(float(value))
    return [str(n) for n in names], values


