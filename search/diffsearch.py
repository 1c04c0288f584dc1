"""The differentiable searches end to end: supernet search, derivation, training of the result, its files.

Owns :func:`run_eoinas` (DARTS cell supernet with EoiNAS' indicator and gradual pruning, or plain DARTS; the
genotype built as ``NetworkCIFAR`` / ``NetworkImageNet`` and trained from scratch, as DARTS evaluates a
cell) and :func:`run_metakernel` (the Meta-Kernel supernet; the derived MobileNetV2-style network inherits
the supernet's weights and is fine-tuned), both on the training engine with the bilevel step of
:mod:`search.differentiable` (α on the held-out half, weights on the other, as DARTS' 50/50 split), both
resumable by rerunning (``supernet.pth``, ``train.pth`` in the output directory), and :class:`DiffResult`,
which writes the three files every search result has (``spec.json``, ``weights.pth``, ``report.json``; see
:mod:`zoo.searched`). Costs of the result are those of the searched space's networks (MACs from the one
walker, latency from the device's table), reported next to the trained network's own MACs and params.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import InputError
import zoo
from common.files import prepare_directory
from search.budget import CostTarget
from search.distributed import env_info
from search.differentiable import ArchConfig, BilevelStep, weight_parameters
from search.engine import StepContext, TrainConfig, Trainer, evaluate, seed_everything
from search.timings import PhaseTimings
from search.eoinas import CellCostModel, DartsSupernet, EoiNASConfig, ema_decay, iter_live_counts
from zoo.darts import cifar_cellnet_spec, imagenet_cellnet_spec
from zoo.searched import write_searched
from zoo.spec import AnySpec

__all__ = ["CostTarget", "DiffResult", "EoiNASStep", "EvalNetConfig", "MetaKernelOptions", "run_eoinas",
           "run_metakernel", "search_recipe", "train_recipe"]


def search_recipe(epochs: int, batch_size: int = 64, seed: int = 0, progress: bool = True,
                  steps: int | None = None, workers: int = 0) -> TrainConfig:
    """DARTS' weight recipe for the search (papers.md §1.3): SGD 0.025 cosine to 0.001, momentum 0.9, wd 3e-4,
    gradient clipping at 5."""
    return TrainConfig(epochs=epochs, steps=steps, batch_size=batch_size, lr=0.025, min_lr=0.001, momentum=0.9,
                       weight_decay=3e-4, grad_clip_norm=5.0, seed=seed, progress=progress, workers=workers)


def train_recipe(epochs: int, batch_size: int = 96, lr: float = 0.025, seed: int = 0,
                 progress: bool = True) -> TrainConfig:
    """DARTS' evaluation recipe (SGD 0.025 cosine to 0, momentum 0.9, wd 3e-4, clipping at 5), any length."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=0.9, weight_decay=3e-4,
                       grad_clip_norm=5.0, seed=seed, progress=progress)


@dataclass(frozen=True)
class EvalNetConfig:
    """The network a genotype is evaluated as: DARTS' CIFAR body (C=36, 20 cells) or ImageNet mobile (C=48, 14)."""

    stem: str = "cifar"
    init_chs: int = 36
    layers: int = 20
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.stem not in ("cifar", "imagenet"):
            raise InputError(f"EvalNetConfig.stem must be 'cifar' or 'imagenet', got {self.stem!r}")

    def spec(self, genotype: Any, num_classes: int, family: str) -> AnySpec:
        build = cifar_cellnet_spec if self.stem == "cifar" else imagenet_cellnet_spec
        spec = build(genotype, init_chs=self.init_chs, layers=self.layers, num_classes=num_classes, family=family)
        return dataclasses.replace(spec, drop_path_rate=self.drop_path_rate) if self.drop_path_rate else spec


class EoiNASStep:
    """The EoiNAS step: apply the pruning schedule, then DARTS' bilevel step with the indicator read after
    every architecture backward. An engine extra: its state is the bilevel step's and the pruning log."""

    def __init__(self, supernet: DartsSupernet, config: EoiNASConfig, arch: ArchConfig) -> None:
        self.supernet, self.config = supernet, config
        self.bilevel = BilevelStep(supernet, arch, after_arch_backward=self._indicator)
        self.total_steps = 1
        self.decay = 0.9
        self.events: list[dict[str, int]] = []

    def bind(self, total_steps: int, steps_per_epoch: int) -> None:
        """Set the run's length (the pruning schedule) and the indicator's per-step decay."""
        self.total_steps = total_steps
        self.decay = ema_decay(self.config.half_life_epochs, steps_per_epoch)

    def _indicator(self) -> None:
        self.supernet.update_importance(self.decay)

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 ctx: StepContext) -> dict[str, float]:
        start = time.perf_counter()
        live = self.config.live_ops_at(ctx.step, self.total_steps, len(self.supernet.ops))
        if max(iter_live_counts(self.supernet)) > live:
            removed = self.supernet.prune_to(live)
            self.events.append({"step": ctx.step, "live_ops": live, "removed": removed})
        metrics = self.bilevel(model, images, targets, ctx)
        metrics["live_ops"] = float(sum(iter_live_counts(self.supernet)))
        metrics["step_s"] = time.perf_counter() - start  # wall time (pruned ops are no longer computed)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"bilevel": self.bilevel.state_dict(), "events": [dict(e) for e in self.events]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.bilevel.load_state_dict(state["bilevel"])
        self.events = [dict(e) for e in state["events"]]


@dataclass
class DiffResult:
    """A differentiable search's outcome: the derived network's spec, its weights (None if untrained), report."""

    spec: AnySpec
    model: nn.Module | None
    report: dict[str, Any]

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``spec.json``, ``weights.pth`` (when trained) and ``report.json`` (:func:`zoo.searched.write_searched`)."""
        return write_searched(directory, self.spec, self.report,
                              None if self.model is None else self.model.state_dict())


def _fit(trainer: Trainer, path: Path) -> None:
    if path.exists():
        trainer.load_checkpoint(path)
    trainer.fit()


def _supernet_trainer(supernet: nn.Module, step: Any, search: TrainConfig, data: Mapping[str, Any],
                      out: Path) -> Trainer:
    """The engine run of a differentiable supernet: SGD owns the weights only, α steps on the ``held`` half."""
    return Trainer(supernet, search, data["train"], step_fn=step, params=weight_parameters(supernet),
                   streams={"val": data["held"]}, extras={"search": step}, checkpoint_path=out / "supernet.pth")


def _data_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """What a result's report says of its data: what the registered model expects as input, and the classes."""
    size = int(data["input_size"])
    return {"input_size": [3, size, size], "mean": data["mean"], "std": data["std"], "data": data["description"],
            "classes": list(data["classes"])}


def _finish(spec: AnySpec, model: nn.Module | None, report: dict[str, Any], out: Path) -> DiffResult | None:
    """Rank 0 writes the result and returns it; under torchrun the other ranks return ``None``."""
    if env_info().rank != 0:
        return None
    result = DiffResult(spec, model, report)
    result.save(out)
    return result


def train_network(model: nn.Module, config: TrainConfig, train: Any, test: Any, checkpoint: Path) -> float:
    """Train ``model`` with the plain cross-entropy step (resumable from ``checkpoint``); its test top-1."""
    trainer = Trainer(model, config, train, checkpoint_path=checkpoint)
    _fit(trainer, checkpoint)
    loader = torch.utils.data.DataLoader(test, batch_size=200)
    return float(evaluate(model, loader)[0])


def run_eoinas(out_dir: str | Path, data: Mapping[str, Any], *, search: TrainConfig, arch: ArchConfig = ArchConfig(),
               eoinas: EoiNASConfig = EoiNASConfig(), supernet_chs: int = 16, supernet_layers: int = 8,
               cost: CostTarget | None = None, eval_net: EvalNetConfig = EvalNetConfig(),
               train: TrainConfig | None = None, name: str | None = None) -> DiffResult | None:
    """Search the DARTS cell space with EoiNAS (or plain DARTS: ``eoinas.selection="darts"``) and evaluate the
    genotype. ``data`` is :func:`search.data.search_splits` (``train``/``held`` halves, ``test``, ``all_train``).

    Writes ``supernet.pth`` (and ``train.pth``) into ``out_dir`` as it goes; rerunning continues them. The
    derived network is trained with ``train`` on all training images (both halves) when given. Under torchrun
    every process searches and trains; rank 0 writes the files and gets the result, the others ``None``.
    """
    out = Path(out_dir)
    prepare_directory(out)
    classes = len(data["classes"])
    timings = PhaseTimings(out / "timings.json")
    seed_everything(search.seed)
    supernet = DartsSupernet(init_chs=supernet_chs, layers=supernet_layers, num_classes=classes)
    cost_model = None
    if cost is not None:
        cost_model = CellCostModel(cost.metric, device=cost.device, tables=cost.tables)
        supernet.set_cost_objective(cost_model, cost.target, cost.weight)
    step = EoiNASStep(supernet, eoinas, arch)
    trainer = _supernet_trainer(supernet, step, search, data, out)
    step.bind(trainer.total_steps, trainer.steps_per_epoch)
    with timings.phase("search"):
        _fit(trainer, out / "supernet.pth")
    supernet.eval()
    genotypes = {sel: supernet.genotype(sel) for sel in ("eoinas", "darts")}
    genotype = genotypes[eoinas.selection]
    family = "eoinas" if eoinas.selection == "eoinas" else "darts"
    spec = eval_net.spec(genotype, classes, family)
    model = None
    report: dict[str, Any] = {}
    if train is not None:
        seed_everything(train.seed)
        model = zoo.build_model(spec)
        with timings.phase("train"):
            report["test_top1"] = train_network(model, train, data["all_train"], data["test"], out / "train.pth")
        model.eval()
    counted = zoo.count(spec, data["input_size"])
    macs_model = cost_model if cost_model is not None and cost_model.metric == "macs" else CellCostModel("macs")
    space_costs = {"macs": {sel: macs_model.exact(g) for sel, g in genotypes.items()}}
    if cost_model is not None and cost_model.metric == "latency":
        space_costs["latency"] = {sel: cost_model.exact(g) for sel, g in genotypes.items()}
    report |= {
        "name": name or f"{family}_{eval_net.stem}",
        "method": family, "selection": eoinas.selection, "space": "darts",
        "genotype": genotype.to_dict(), "genotypes": {k: g.to_dict() for k, g in genotypes.items()},
        **_data_fields(data), "macs": counted.macs, "params": counted.params, "space_costs": space_costs,
        "supernet": {"init_chs": supernet_chs, "layers": supernet_layers, "steps": trainer.total_steps,
                     "pruning_events": step.events, "arch": supernet.arch_summary()},
        "config": {"search": search.to_dict(), "arch": arch.to_dict(), "eoinas": eoinas.to_dict(),
                   "cost": cost.to_dict() if cost else None, "eval_net": dataclasses.asdict(eval_net),
                   "train": train.to_dict() if train else None},
        "history": trainer.history, **timings.totals(),
        "assumptions": "indicator and pruning schedule designed (papers.md §1.4: not retrievable); see "
                       "search/eoinas.py",
    }
    return _finish(spec, model, report, out)


@dataclass(frozen=True)
class MetaKernelOptions:
    """The Meta-Kernel supernet's options (see :mod:`search.metakernel`): ``mode`` ``"meta"`` (merged kernels and
    expansions) or ``"sum"`` (DARTS-style weighted sum of every candidate's output: the baseline), ``identity``
    (skip as a candidate), Gumbel noise and the temperature schedule ``temperature · temperature_decay^epoch``."""

    mode: str = "meta"
    identity: bool = False
    gumbel: bool = False
    temperature: float = 5.0
    temperature_decay: float = 0.965

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def metakernel_cost_model(space: Any, cost: CostTarget) -> Any:
    """The :class:`search.metakernel.MetaKernelCostModel` of ``cost``'s metric for ``space`` (raises if a table is missing)."""
    from search.metakernel import MetaKernelCostModel

    if cost.metric == "macs":
        return MetaKernelCostModel.macs(space)
    return MetaKernelCostModel.latency(space, cost.device or "", Path(cost.tables) if cost.tables else None)


def run_metakernel(out_dir: str | Path, data: Mapping[str, Any], *, search: TrainConfig,
                   arch: ArchConfig = ArchConfig(), options: MetaKernelOptions = MetaKernelOptions(),
                   cost: CostTarget | None = None, finetune: TrainConfig | None = None,
                   name: str | None = None) -> DiffResult | None:
    """Search the Meta-Kernel space with its supernet (bilevel, α on the held-out half), derive the most probable
    architecture, take its weights from the supernet and fine-tune it with ``finetune`` on all training images.

    ``data`` is :func:`search.data.search_splits`. Resumable (``supernet.pth``, ``train.pth``); under torchrun
    rank 0 writes the files and gets the result, the others ``None``.
    """
    from search.engine import recalibrate_bn
    from search.metakernel import MetaKernelSupernet
    from zoo.spaces import MetaKernelSpace

    out = Path(out_dir)
    prepare_directory(out)
    classes = len(data["classes"])
    space = MetaKernelSpace(identity=options.identity)
    timings = PhaseTimings(out / "timings.json")
    seed_everything(search.seed)
    supernet = MetaKernelSupernet(space, classes, options.mode, gumbel=options.gumbel,
                                  temperature=options.temperature, temperature_decay=options.temperature_decay)
    cost_model = None
    if cost is not None:
        cost_model = metakernel_cost_model(space, cost)
        supernet.set_cost_objective(cost_model, cost.target, cost.weight)
    step = BilevelStep(supernet, arch)
    trainer = _supernet_trainer(supernet, step, search, data, out)
    with timings.phase("search"):
        _fit(trainer, out / "supernet.pth")
    supernet.eval()
    tokens = supernet.derive()
    model = supernet.subnet(tokens)
    report: dict[str, Any] = {}
    if finetune is not None:
        with timings.phase("finetune"):
            report["test_top1"] = train_network(model, finetune, data["all_train"], data["test"], out / "train.pth")
    else:  # inherited weights: the supernet's shared statistics fit no single path, re-estimate them
        loader = torch.utils.data.DataLoader(data["all_train"], batch_size=search.batch_size, shuffle=False)
        recalibrate_bn(model, loader, min(20, len(loader)))
        report["test_top1"] = float(evaluate(model, torch.utils.data.DataLoader(data["test"], batch_size=200))[0])
    model.eval()
    spec = supernet.spec_of(tokens)
    size = int(data["input_size"])
    counted = zoo.count(spec, size)
    space_costs = {"macs": zoo.count(*space.to_spec(tokens)).macs}
    if cost_model is not None and cost_model.metric == "latency":
        space_costs["latency_ms"] = cost_model.exact(tokens)
    report |= {
        "name": name or ("metakernel_cifar" if size <= 64 else "metakernel"),
        "method": "metakernel", "space": space.name, "arch": list(tokens), "tokens": " ".join(tokens),
        **_data_fields(data), "macs": counted.macs, "params": counted.params, "space_costs": space_costs,
        "weights": "inherited from the supernet" + (", fine-tuned" if finetune is not None else
                                                    ", BatchNorm re-estimated"),
        "supernet": {"steps": trainer.total_steps, "arch": supernet.arch_summary()},
        "config": {"search": search.to_dict(), "arch": arch.to_dict(), "options": options.to_dict(),
                   "cost": cost.to_dict() if cost else None, "finetune": finetune.to_dict() if finetune else None},
        "history": trainer.history, **timings.totals(),
        "assumptions": "macro layout, merging details, schedule and cost loss designed (papers.md §7.4: not "
                       "retrievable); see search/metakernel.py",
    }
    return _finish(spec, model, report, out)
