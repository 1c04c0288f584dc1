"""The width search as a user runs it: data, supernet training, search under budgets, fine-tuning, a registrable result.

:func:`run_width_search` takes a :class:`WidthSearchConfig` and an output directory and does, resumably:

1. data: CIFAR-10 from ``../shared/data`` or an ImageFolder directory/zip (``train`` split, and ``val`` or ``test``
   for the final accuracy), an optional class-balanced subset, and a held-out part of the training data on which
   candidates are scored (BCNet scores on data the supernet did not train on);
2. the supernet of the model's width space trained with the method's step on the training engine
   (``supernet.ckpt``: an interrupted run resumes exactly; under ``torchrun`` this phase runs on every process);
3. the evolutionary search under the MACs and/or latency budget (``search_state.json``: resumes to the same
   result), candidates scored as standalone sub-networks after BN recalibration;
4. the inherited network's test accuracy (after BN recalibration), optionally fine-tuning (``finetune.ckpt``) and
   its test accuracy;
5. ``spec.json``, ``weights.pth`` and ``report.json`` (name, input size, normalisation, accuracies, costs, timings),
   which :func:`zoo.searched.register_searched` registers as a zoo model and ``mzoo export --spec`` exports.

Methods: ``bcnet`` (bilateral, complementary training, prior-seeded evolution), ``unilateral`` (the same with the
leftmost channels only: the baseline BCNet argues against) and ``cafenet`` (locally free placement, min-min).
Steps 3-5 run on rank 0 alone after a distributed supernet phase.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from common.errors import InputError
import zoo
from zoo.searched import is_valid_name
from zoo.spaces import (HGCNetWidthSpace, SearchSpace)
from zoo.spaces.widths import BCNET_FRACTIONS, scaled_width
from search.budget import parse_latency, parse_macs  # noqa: F401 (re-exported: the width CLI's parsers)
from search.timings import PhaseTimings

from .bcnet import BCNetConfig, BCNetTrainer
from .cafenet import CafeNetConfig, CafeNetTrainer, flops_sensitive_bins
from search.budget import Budget, CostModel
from .evolution import EvolutionConfig
from .options import GRANULARITIES, METHODS, MODELS  # noqa: F401  (GRANULARITIES: the CLI's choices)
from .search import RecalibratedScorer, WidthSearchResult, run_bcnet_search, run_cafenet_search
from .supernet import WidthSupernet

CIFAR10 = "cifar10"
SPEC_FILE, WEIGHTS_FILE, REPORT_FILE = "spec.json", "weights.pth", "report.json"


@dataclass(frozen=True)
class WidthSearchConfig:
    """One width search. ``supernet`` and ``finetune`` are the engine's recipes (``finetune=None`` skips it).

    Attributes:
        model: a key of :data:`MODELS`.
        method: ``"bcnet"``, ``"unilateral"`` or ``"cafenet"``.
        max_macs, max_latency_ms, device, interpolate: the budget (see :class:`search.width.Budget`).
        macs_share: a MACs budget as a share of the full network (0.5: half), resolved into ``max_macs`` once the
            data say how many classes the classifier has; instead of ``max_macs``.
        granularity: ``"bcnet"`` (20 width ratios, 5 % steps) or ``"coarse"`` (quarters: the shipped latency
            tables' spaces at 224×224). HGCNet's space has its own multipliers and ignores it.
        width_multiplier: the supernet's full widths as a share of the model's (e.g. 0.35: a MobileNetV2-CIFAR
            supernet a CPU can train); the ratios then apply to those widths. 1 for HGCNet.
        data: ``"cifar10"`` or an ImageFolder directory/zip with ``train`` and ``val`` (or ``test``) splits.
        input_size: image side (default 32 for CIFAR-10 data, else the space's).
        per_class: train on this many images per class (None: all).
        search_fraction: the share of the training images held out to score candidates.
        test_per_class: evaluate on this many test images per class (None: all).
        recalibration_batches: training batches that re-estimate BN statistics before a candidate is scored.
        name: the registered model name (default ``<model>_<method>_<budget>``).
    """

    model: str
    method: str = "bcnet"
    max_macs: int | None = None
    max_latency_ms: float | None = None
    device: str | None = None
    interpolate: bool = False
    macs_share: float | None = None
    granularity: str = "bcnet"
    width_multiplier: float = 1.0
    data: str = CIFAR10
    input_size: int | None = None
    per_class: int | None = None
    search_fraction: float = 0.1
    test_per_class: int | None = None
    supernet: Any = None  # search.engine.TrainConfig (default: TrainConfig())
    finetune: Any = None  # search.engine.TrainConfig or None
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    recalibration_batches: int = 20
    name: str | None = None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"unknown width-search model {self.model!r}; known: {', '.join(MODELS)}")
        if self.method not in METHODS:
            raise InputError(f"unknown width-search method {self.method!r}; known: {', '.join(METHODS)}")
        if self.granularity not in GRANULARITIES:
            raise InputError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if not 0.0 < self.search_fraction < 1.0:
            raise InputError(f"search_fraction must be in (0, 1), got {self.search_fraction!r}")
        if not 0.0 < self.width_multiplier <= 1.0:
            raise InputError(f"width_multiplier must be in (0, 1], got {self.width_multiplier!r}")
        if self.width_multiplier != 1.0 and MODELS[self.model][0] is HGCNetWidthSpace:
            raise InputError("width_multiplier: HGCNet's width space has its own multipliers (widths are multiples "
                             "of 8 so its groups divide them); use 1")
        if self.name is not None and not is_valid_name(self.name):
            raise InputError(f"name {self.name!r} must be lowercase letters, digits and '_' starting with a letter "
                             "(the zoo registers the result under it)")
        if self.recalibration_batches < 1:
            raise InputError(f"recalibration_batches must be >= 1, got {self.recalibration_batches!r}")
        if self.macs_share is not None:
            if self.max_macs is not None:
                raise InputError("give max_macs or macs_share, not both")
            if isinstance(self.macs_share, bool) or not 0.0 < self.macs_share <= 1.0:
                raise InputError(f"macs_share must be in (0, 1], got {self.macs_share!r}")
        placeholder = 1 if self.macs_share is not None else self.max_macs  # the share is resolved with the data
        Budget(placeholder, self.max_latency_ms, self.device, self.interpolate)  # validates the budget
        if self.supernet is None:
            from search.engine import TrainConfig

            object.__setattr__(self, "supernet", TrainConfig())

    def budget_label(self) -> str:
        """``"40m"``, ``"1g"``, ``"5ms"``, ``"40m_5ms"``: the budget as part of a model name."""
        parts = []
        if self.max_macs is not None:
            value, unit = (self.max_macs / 1e9, "g") if self.max_macs >= 1e9 else (self.max_macs / 1e6, "m")
            parts.append(f"{value:.3g}{unit}".replace(".", "p"))
        if self.max_latency_ms is not None:
            parts.append(f"{self.max_latency_ms:.3g}ms".replace(".", "p"))
        return "_".join(parts)

    def model_name(self) -> str:
        scale = "" if self.width_multiplier == 1.0 else f"_{self.width_multiplier:g}x".replace(".", "p")
        return self.name or f"{self.model}{scale}_{self.method}_{self.budget_label()}"


@dataclass
class WidthRun:
    """What :func:`run_width_search` produced: the search result (saved in ``directory``) and its report."""

    result: WidthSearchResult
    directory: Path
    report: dict[str, Any]


def make_space(config: WidthSearchConfig, num_classes: int) -> SearchSpace:
    """The width space of ``config.model`` for ``num_classes`` classes at the configured input size."""
    cls, kwargs = MODELS[config.model]
    options: dict[str, Any] = dict(kwargs, num_classes=num_classes)
    if cls is HGCNetWidthSpace:
        return cls(**options)
    if config.granularity == "bcnet":
        options["fractions"] = BCNET_FRACTIONS
    size = config.input_size or (32 if config.data == CIFAR10 else None)
    if size is not None and options.get("layout") != "cifar":
        options["resolution"] = size
    space = cls(**options)
    if config.width_multiplier == 1.0:
        return space
    fractions = options.get("fractions", space.fractions)
    full = [max(1, round(config.width_multiplier * max(c))) for c in space.choices()]
    widths = tuple(tuple(sorted({scaled_width(w, f) for f in fractions})) for w in full)
    return cls(**options, widths=widths)


def load_data(config: WidthSearchConfig, input_size: int) -> dict[str, Any]:
    """``train`` (weights), ``search`` (held out, eval transform), ``test`` datasets and a description."""
    from search.data import search_splits

    data = search_splits(config.data, input_size, per_class=config.per_class, test_per_class=config.test_per_class,
                         held_fraction=config.search_fraction, held_transform="eval")
    data["search"] = data.pop("held")
    return data


def run_width_search(config: WidthSearchConfig, out_dir: str | os.PathLike[str], *,
                     progress: bool = True) -> WidthRun | None:
    """Run (or resume) the search of ``config`` into ``out_dir``; ``None`` on ranks other than 0 under torchrun."""
    from search import distributed
    from search.engine import Trainer, seed_everything

    seed_everything(config.supernet.seed)  # before the supernet's (and the methods') initial weights are drawn
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    probe = make_space(config, num_classes=10)
    input_size = probe.to_spec(tuple(max(c) for c in probe.choices()))[1][1]
    data = load_data(config, input_size)
    space = make_space(config, num_classes=len(data["classes"]))
    if config.macs_share is not None:
        full_macs = zoo.count(*space.to_spec(tuple(max(c) for c in space.choices()))).macs
        config = dataclasses.replace(config, max_macs=int(config.macs_share * full_macs), macs_share=None)
    supernet, method, layout = _supernet_and_method(config, space)
    # The budget and the tables are checked before the supernet trains, not after: a missing table or op key,
    # or a budget no network of the space meets, fails in the first seconds.
    cost_model = budget_cost_model(config, space if layout is None else layout.space)
    timings = PhaseTimings(out / "timings.json")

    with timings.phase("supernet"):
        trainer = Trainer(supernet, _quiet(config.supernet, progress), data["train"], step_fn=method.step_fn,
                          extras={"method": method}, checkpoint_path=out / "supernet.ckpt")
        if (out / "supernet.ckpt").exists():
            trainer.load_checkpoint(out / "supernet.ckpt")
        trainer.fit()
    if distributed.is_active():
        rank = distributed.env_info().rank
        distributed.shutdown()
        if rank != 0:
            return None
        os.environ.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0")  # the rest runs on rank 0 alone

    recalibration = _loader(data["train"], 64, shuffle=True)
    # A small training set has fewer batches than BCNet's 20: then all of them re-estimate the statistics.
    batches = min(config.recalibration_batches, len(recalibration))
    with timings.phase("search"):
        result = _search(config, supernet, method, layout, cost_model, RecalibratedScorer(
            recalibration, _loader(data["search"], 200), batches), out / "search_state.json", progress)

    test_loader = _loader(data["test"], 200)
    accuracy = {"inherited_top1": _test_top1(result.model, recalibration, test_loader, batches)}
    if config.finetune is not None:
        with timings.phase("finetune"):
            tuner = Trainer(result.model, _quiet(config.finetune, progress), data["train"],
                            checkpoint_path=out / "finetune.ckpt")
            if (out / "finetune.ckpt").exists():
                tuner.load_checkpoint(out / "finetune.ckpt")
            tuner.fit()
        from search.engine import evaluate

        accuracy["finetuned_top1"] = float(evaluate(result.model, test_loader)[0])
    report = {"name": config.model_name(), "recalibration_batches": batches, "mean": data["mean"],
              "std": data["std"], "data": data["description"], "classes": list(data["classes"]),
              "config": _config_dict(config), **accuracy, **timings.totals()}
    result.extra |= report
    result.save(out)
    return WidthRun(result, out, result.report())


def budget_cost_model(config: WidthSearchConfig, space: SearchSpace) -> CostModel:
    """The cost model of ``config``'s budget over ``space``; ``ValueError`` when the device lacks the space's table
    or keys, or when even the space's smallest network exceeds the budget."""
    cost_model = CostModel(space, Budget(config.max_macs, config.max_latency_ms, config.device, config.interpolate))
    smallest = tuple(min(c) for c in space.choices())  # type: ignore[attr-defined]
    too_big = cost_model.violations(smallest)
    if too_big:
        raise InputError(f"no network of the {config.model} width space meets the budget: the smallest one costs "
                         f"{'; '.join(too_big)}; raise the budget")
    return cost_model


def _search(config: WidthSearchConfig, supernet: WidthSupernet, method: Any, layout: Any, cost_model: CostModel,
            scorer: RecalibratedScorer, state: Path, progress: bool) -> WidthSearchResult:
    if config.method == "cafenet":
        return run_cafenet_search(supernet, layout, scorer, cost_model, evolution=config.evolution,
                                  state_path=state, progress=progress)
    return run_bcnet_search(supernet, method.records, scorer, cost_model, evolution=config.evolution,
                            state_path=state, progress=progress, sides=method.config.sides)


def _supernet_and_method(config: WidthSearchConfig, space: SearchSpace) -> tuple[WidthSupernet, Any, Any]:
    if config.method == "cafenet":
        layout = flops_sensitive_bins(space, CafeNetConfig())
        supernet = WidthSupernet(layout.space)
        return supernet, CafeNetTrainer(supernet, layout, CafeNetConfig()), layout
    supernet = WidthSupernet(space)
    sides = ("left", "right") if config.method == "bcnet" else ("left",)
    return supernet, BCNetTrainer(supernet, BCNetConfig(sides=sides)), None


def _test_top1(model: torch.nn.Module, recalibration: DataLoader, test_loader: DataLoader, batches: int) -> float:
    """Top-1 of the inherited weights after re-estimating BN statistics on training images (as when scored)."""
    from search.engine import evaluate, recalibrate_bn

    recalibrate_bn(model, recalibration, batches)
    return float(evaluate(model, test_loader)[0])


def _loader(dataset: Any, batch_size: int, shuffle: bool = False) -> DataLoader:
    """Batches of ``dataset``; shuffled ones are the same images, augmented the same, on every pass (one fixed
    permutation, per-image seeds), so a candidate's score does not depend on how many were scored before it
    (a resumed search scores the same as an uninterrupted one)."""
    from search.data import EpochSampler, SeededDataset

    if not shuffle:
        return DataLoader(dataset, batch_size=batch_size)
    return DataLoader(SeededDataset(dataset), batch_size=batch_size, sampler=EpochSampler(dataset, seed=0))


def _quiet(train_config: Any, progress: bool) -> Any:
    return train_config if progress else dataclasses.replace(train_config, progress=False)


def _config_dict(config: WidthSearchConfig) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = value.to_dict() if hasattr(value, "to_dict") else (
            dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)
    return out


__all__ = ["GRANULARITIES", "METHODS", "MODELS", "WidthRun", "WidthSearchConfig", "load_data", "make_space",
           "parse_latency", "parse_macs", "run_width_search"]
