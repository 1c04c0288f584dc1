"""DAGGER end to end: the prunable networks, pretraining, the joint gate training, pruning to a MACs target,
fine-tuning and the result in the search layout (:func:`run_dagger`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from common.errors import InputError
from search import budget
import zoo
from search.data import EpochSampler, SeededDataset
from search.engine import (TrainConfig, Trainer, cross_entropy_step, evaluate, recalibrate_bn, seed_everything,
                           select_device)
from zoo.spaces import HGCNetWidthSpace, MobileNetV2WidthSpace, ResNet50WidthSpace
from search.result import SearchResult
from search.width.supernet import WidthSpace
from search.dagger.gates import DaggerConfig, DaggerNetwork, DaggerStep
from search.dagger.pruning import Pruned, gate_scores, l1_scores, prune, select_channels, uniform_scores


SCORES = ("dagger", "l1", "uniform")


# Prunable networks: their width space (the full arch is the zoo model) and the channel multiple a pruned
# width keeps by default (HGCNet: multiples of 8, so every group conv of 2, 4 or 8 groups divides them).
PRUNABLE: dict[str, str] = {"mobilenetv2_cifar": "MobileNetV2 1.0, BCNet's CIFAR layout (bcnet_mobilenetv2_cifar_100)",
                            "resnet50": "ResNet-50 (bcnet_resnet50_100) with 10 classes, ImageNet layout at 32×32",
                            "hgcnet_cifar": "HGCNet 1.0×, CIFAR layout (hgcnet_1x_cifar)"}


def prunable_space(name: str, num_classes: int = 10) -> WidthSpace:
    """The width space whose full network is the prunable model ``name`` (one of :data:`PRUNABLE`)."""
    if name == "mobilenetv2_cifar":
        return MobileNetV2WidthSpace(fractions=(1.0,), layout="cifar", num_classes=num_classes)
    if name == "resnet50":
        return ResNet50WidthSpace(fractions=(1.0,), resolution=32, num_classes=num_classes)
    if name == "hgcnet_cifar":
        return HGCNetWidthSpace(multipliers=(1.0,), layout="cifar", num_classes=num_classes)
    raise InputError(f"unknown prunable model {name!r}; known: {', '.join(PRUNABLE)}")


def parse_macs(text: str, full_macs: int) -> int:
    """A pruning target: ``"50%"`` of ``full_macs`` or a count below it (:func:`search.budget.parse_macs`)."""
    return budget.parse_macs(text, full_macs, below_full=True)


def pretrain(space: WidthSpace, train_data: Dataset, config: TrainConfig, *, eval_data: Dataset | None = None,
             device: torch.device | str | None = None) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train the full network of ``space`` from scratch with the engine (the "pretrained" network DAGGER prunes)."""
    spec, _ = space.to_spec(tuple(max(c) for c in space.choices()))
    seed_everything(config.seed)  # the initial weights are a function of the seed
    model = zoo.build_model(spec)
    history = Trainer(model, config, train_data, eval_data=eval_data, device=device).fit()
    return model.eval(), history


def train_dagger(network: DaggerNetwork, train_data: Dataset, config: TrainConfig, target_macs: int, *,
                 eval_data: Dataset | None = None, checkpoint_path: str | None = None,
                 device: torch.device | str | None = None) -> list[dict[str, float]]:
    """Joint training of the network (the engine's SGD, ``config``) and the Dagger (Adam at the config's
    ``dagger_lr``) on CE + λ·R; returns the engine's history."""
    step = DaggerStep(network, target_macs)
    trainer = Trainer(network, config, train_data, eval_data=eval_data, step_fn=step.step_fn,
                      params=list(network.net.parameters()), extras={"dagger": step},
                      checkpoint_path=checkpoint_path, device=device)
    return trainer.fit()


def finetune(model: nn.Module, train_data: Dataset, config: TrainConfig, *, eval_data: Dataset | None = None,
             device: torch.device | str | None = None) -> list[dict[str, float]]:
    """Fine-tune a pruned model with the engine's cross-entropy step."""
    return Trainer(model, config, train_data, eval_data=eval_data, step_fn=cross_entropy_step, device=device).fit()


@dataclass(frozen=True)
class RunConfig:
    """An end-to-end DAGGER run: the recipes of the three trainings (``pretrain`` skipped with given weights), and
    ``bn_batches``: training batches the pruned network's BatchNorm statistics are re-estimated on before it is
    scored and fine-tuned (0: keep the full network's, which no longer fit the narrower inputs)."""

    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10))
    dagger: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=0.01))
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=0.01))
    method: DaggerConfig = field(default_factory=DaggerConfig)
    bn_batches: int = 10


def run_dagger(model_name: str, target: str | int, train_data: Dataset, val_data: Dataset,
               config: RunConfig = RunConfig(), *, weights: Mapping[str, Tensor] | None = None,
               scores: str = "dagger", num_classes: int = 10,
               device: torch.device | str | None = None) -> SearchResult:
    """Pretrain (unless ``weights``), gate and prune ``model_name`` to ``target`` MACs, fine-tune, score on ``val_data``.

    ``target`` is a MACs count or a :func:`parse_macs` string (``"50%"``, ``"40M"``). ``scores`` picks the filter
    ranking: ``"dagger"`` (trains the Dagger), ``"l1"`` or ``"uniform"`` (the baselines; no gate training).
    ``num_classes`` is the data's (the classifier's width).
    """
    if scores not in SCORES:
        raise InputError(f"unknown filter scores {scores!r}; known: {', '.join(SCORES)}")
    device = torch.device(device) if device is not None else select_device()
    space = prunable_space(model_name, num_classes)
    history: dict[str, Any] = {}
    if weights is None:
        pretrained, history["pretrain"] = pretrain(space, train_data, config.pretrain, eval_data=val_data,
                                                   device=device)
        weights = pretrained.state_dict()
    seed_everything(config.dagger.seed)  # the Dagger's initial weights
    network = DaggerNetwork(space, weights, config.method).to(device)
    loader = _eval_loader(val_data, config.finetune)
    full_top1 = evaluate(network.net, loader, device=device)[0]
    target_macs = parse_macs(target, network.full_macs) if isinstance(target, str) else int(target)
    gates = None
    if scores == "dagger":
        history["dagger"] = train_dagger(network, train_data, config.dagger, target_macs, device=device)
        with torch.no_grad():
            gates = [g.detach().cpu() for g in network.gates()]
        ranking = gate_scores(gates)
    else:
        ranking = l1_scores(network) if scores == "l1" else uniform_scores(network)
    selection = select_channels(network, ranking, target_macs)
    pruned = prune(network, selection, gates)
    pruned.model.to(device)
    if config.bn_batches:
        batches = DataLoader(SeededDataset(train_data), batch_size=config.finetune.batch_size,  # seeded augmentation
                             sampler=EpochSampler(train_data, seed=config.finetune.seed))  # type: ignore[arg-type]
        recalibrate_bn(pruned.model, batches, min(config.bn_batches, len(batches)), device=device)
    pruned_top1 = evaluate(pruned.model, loader, device=device)[0]
    history["finetune"] = finetune(pruned.model, train_data, config.finetune, eval_data=val_data, device=device)
    top1, loss = evaluate(pruned.model, loader, device=device)
    return result_of(model_name, pruned, top1, network.full_macs, history,
                     {"scores": scores, "full_top1": full_top1, "pruned_top1_before_finetune": pruned_top1,
                      "val_loss": loss, "dagger": dataclasses.asdict(config.method), "bn_batches": config.bn_batches,
                      "recipes": {k: getattr(config, k).to_dict() for k in ("pretrain", "dagger", "finetune")},
                      "gates": [g.tolist() for g in gates] if gates is not None else None})


def _eval_loader(data: Dataset, config: TrainConfig) -> DataLoader:
    return DataLoader(data, batch_size=config.eval_batch_size or config.batch_size, shuffle=False)


def result_of(model_name: str, pruned: Pruned, top1: float, full_macs: int, history: Mapping[str, Any],
              extra: Mapping[str, Any]) -> SearchResult:
    """A pruning as the width searches' result (``save`` writes spec.json, weights.pth, report.json)."""
    sel = pruned.selection
    _, size = pruned.space.to_spec(sel.widths)
    rows = [dict(r, phase=phase) for phase, rs in history.items() for r in rs]
    return SearchResult(
        "dagger", pruned.space.name, sel.widths, pruned.spec, size, pruned.macs, pruned.params, None, None, top1,
        {"kind": "kept", "kept": [list(k) for k in sel.kept]}, copy.deepcopy(pruned.model).cpu().eval(),
        {"target_macs": sel.target, "full_macs": full_macs, "ratio": pruned.macs / full_macs}, rows,
        {"model": model_name, "width_list": pruned.width_list, **dict(extra)})
