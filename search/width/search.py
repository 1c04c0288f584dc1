"""A width search from a trained supernet to a saved network: scoring, the BCNet and CafeNet searches, the result.

:func:`run_bcnet_search` fits BCNet's prior to the trainer's loss records under the MACs target and runs
the evolutionary search with fitness ``mean(acc_L, acc_R)``; :func:`run_cafenet_search` runs it with
fitness ``max`` over a width's scored placements and no prior. Candidates are scored as standalone
sub-networks with inherited weights (:meth:`WidthSupernet.subnet`) by a :class:`RecalibratedScorer`: BN
statistics re-estimated on training batches (``search.engine.recalibrate_bn``, 20 batches as BCNet), then
top-1 on the validation data (``search.engine.evaluate``); both are injectable. The result
(:class:`WidthSearchResult`) holds the best arch, its spec, MACs, params, predicted latency, score, the
placement whose weights it inherits, and that standalone model; :meth:`WidthSearchResult.save` writes
``spec.json`` (``spec.to_json()``), ``weights.pth`` (the state dict) and ``report.json`` atomically,
which ``mzoo export --spec DIR/spec.json --checkpoint DIR/weights.pth`` ships.

With only a latency budget, the prior's MACs target is the full network's MACs scaled by the budget's
share of the full network's predicted latency (an assumption: BCNet fits the prior to FLOPs only).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import InputError
from zoo.spaces import Arch

from search.result import SearchResult

from .bcnet import LossRecords, placements_of
from .cafenet import BinLayout, BinPlacement, CafeNetConfig, score_placements
from search.budget import CostModel
from .evolution import EvolutionConfig, EvolutionSearch, SearchOutcome
from .prior import Prior, PriorConfig, fit_prior
from .supernet import LEFT, RIGHT, WidthSupernet

Scorer = Callable[[nn.Module], float]


class RecalibratedScorer:
    """Score = validation top-1 of a standalone sub-network after re-estimating its BN statistics.

    Args:
        train_loader: batches for BN recalibration (``(images, targets)`` or images).
        val_loader: ``(images, targets)`` batches to evaluate on.
        batches: recalibration batches (BCNet: 20).
        recalibrate: ``(model, loader, batches)``; default :func:`search.engine.recalibrate_bn`.
        evaluate: ``(model, loader) -> accuracy`` or ``(accuracy, loss)``; default :func:`search.engine.evaluate`.
        device: where to run (default: where the model is).
    """

    def __init__(self, train_loader: Iterable[Any], val_loader: Iterable[Any], batches: int = 20, *,
                 recalibrate: Callable[..., Any] | None = None, evaluate: Callable[..., Any] | None = None,
                 device: torch.device | str | None = None) -> None:
        from search import engine  # late: the engine pulls in the data and distributed modules

        self.train_loader, self.val_loader, self.batches = train_loader, val_loader, batches
        self.recalibrate = recalibrate or engine.recalibrate_bn
        self.evaluate = evaluate or engine.evaluate
        self.device = torch.device(device) if device is not None else None

    def __call__(self, model: nn.Module) -> float:
        if self.device is not None:
            model = model.to(self.device)
        self.recalibrate(model, self.train_loader, self.batches)
        result = self.evaluate(model, self.val_loader)
        return float(result[0] if isinstance(result, (tuple, list)) else result)


class BCNetFitness:
    """BCNet's fitness of a width: the mean score of its left and right sub-networks (papers.md §3.5); with
    ``sides=("left",)``, the unilateral baseline's: its leftmost channels only."""

    def __init__(self, supernet: WidthSupernet, scorer: Scorer, sides: tuple[str, ...] = ("left", "right")) -> None:
        self.supernet, self.scorer = supernet, scorer
        self.placements = placements_of(sides)
        self.sides: dict[Arch, dict[str, float]] = {}

    def placement_scores(self, arch: Arch) -> dict[str, float]:
        if arch not in self.sides:
            self.sides[arch] = {p.side: float(self.scorer(self.supernet.subnet(arch, p))) for p in self.placements}
        return self.sides[arch]

    def __call__(self, arch: Arch) -> float:
        s = self.placement_scores(arch)
        return sum(s.values()) / len(s)


class CafeNetFitness:
    """CafeNet's fitness of a width: the best score over its scored placements (see :mod:`.cafenet`)."""

    def __init__(self, supernet: WidthSupernet, layout: BinLayout, scorer: Scorer,
                 config: CafeNetConfig = CafeNetConfig()) -> None:
        self.supernet, self.layout, self.scorer, self.config = supernet, layout, scorer, config
        self.draw = score_placements(supernet, layout, config)
        self.details: dict[Arch, list[tuple[BinPlacement, float]]] = {}

    def placement_scores(self, arch: Arch) -> list[tuple[BinPlacement, float]]:
        if arch not in self.details:
            self.details[arch] = [(p, float(self.scorer(self.supernet.subnet(arch, p)))) for p in self.draw(arch)]
        return self.details[arch]

    def __call__(self, arch: Arch) -> float:
        return max(s for _, s in self.placement_scores(arch))


# A width search's result is the project's search result (search.result); the old name stays for its callers.
WidthSearchResult = SearchResult


def save_result(result: WidthSearchResult, directory: str | Path) -> dict[str, Path]:
    """:meth:`WidthSearchResult.save`."""
    return result.save(directory)


def prior_target_macs(cost_model: CostModel) -> float:
    """The MACs the prior aims at: the MACs budget, or the full network's MACs scaled to the latency budget."""
    budget = cost_model.budget
    if budget.max_macs is not None:
        return float(budget.max_macs)
    full = cost_model.costs(tuple(max(c) for c in cost_model.space.choices()))  # type: ignore[attr-defined]
    assert full.latency_ms is not None and budget.max_latency_ms is not None
    return full.macs * min(1.0, budget.max_latency_ms / full.latency_ms)


def _result(method: str, supernet: WidthSupernet, cost_model: CostModel, outcome: SearchOutcome,
            placement: Any, description: dict[str, Any], extra: dict[str, Any]) -> WidthSearchResult:
    arch = outcome.best
    spec, size = supernet.spec_of(arch)
    costs = cost_model.costs(arch)
    model = supernet.subnet(arch, placement).eval()
    if hasattr(supernet.space, "width_list"):  # BCNet's list format: what the zoo's *_width_spec builders take
        extra = extra | {"width_list": list(supernet.space.width_list(arch))}
    return WidthSearchResult(method, supernet.space.name, arch, spec, size, costs.macs, costs.params,
                             costs.latency_ms, cost_model.budget.device, outcome.score, description, model,
                             cost_model.budget.to_dict(), list(outcome.history),
                             extra | {"evaluated": outcome.evaluated,
                                      "topk": [[list(a), s] for a, s in outcome.topk]})


def run_bcnet_search(supernet: WidthSupernet, records: LossRecords, scorer: Scorer, cost_model: CostModel, *,
                     evolution: EvolutionConfig = EvolutionConfig(), prior: PriorConfig | Prior | None = PriorConfig(),
                     state_path: str | Path | None = None, progress: bool = True,
                     sides: tuple[str, ...] = ("left", "right")) -> WidthSearchResult:
    """BCNet's search: the prior fitted to ``records`` (or given, or uniform with ``None``), then evolution.

    The returned model inherits the weights of whichever side (left or right) of the best width scored higher.
    ``sides=("left",)`` is the unilateral baseline (method ``"unilateral"``): scored and inherited from the left.
    """
    if cost_model.space != supernet.space:
        raise InputError("run_bcnet_search: the cost model and the supernet are for different spaces")
    if isinstance(prior, PriorConfig):
        fitted = fit_prior(records.means(), supernet.macs_model(), prior_target_macs(cost_model), prior)
    else:
        fitted = prior if prior is not None else Prior.uniform(supernet.space.choices())
    fitness = BCNetFitness(supernet, scorer, sides)
    method = "bcnet" if len(sides) == 2 else "unilateral"
    identity = {"method": method, "space": repr(supernet.space), "budget": cost_model.budget.to_dict()}
    outcome = EvolutionSearch(supernet.space.choices(), fitness, cost_model, evolution, prior=fitted,
                              state_path=state_path, identity=identity, progress=progress).run()
    scores = fitness.placement_scores(outcome.best)
    side = LEFT if scores["left"] >= scores.get("right", -math.inf) else RIGHT
    return _result(method, supernet, cost_model, outcome, side,
                   {"kind": "side", "side": side.side, "scores": scores},
                   {"prior": fitted.to_dict(), "evolution": dataclasses.asdict(evolution)})


def run_cafenet_search(supernet: WidthSupernet, layout: BinLayout, scorer: Scorer, cost_model: CostModel, *,
                       cafenet: CafeNetConfig = CafeNetConfig(), evolution: EvolutionConfig = EvolutionConfig(),
                       state_path: str | Path | None = None, progress: bool = True) -> WidthSearchResult:
    """CafeNet's search: evolution with uniform sampling, a width scored by its best placement."""
    if supernet.space != layout.space:
        raise InputError("run_cafenet_search: the supernet must be built on layout.space")
    fitness = CafeNetFitness(supernet, layout, scorer, cafenet)
    identity = {"method": "cafenet", "space": repr(supernet.space), "budget": cost_model.budget.to_dict(),
                "cafenet": dataclasses.asdict(cafenet)}
    outcome = EvolutionSearch(supernet.space.choices(), fitness, cost_model, evolution, state_path=state_path,
                              identity=identity, progress=progress).run()
    scored = fitness.placement_scores(outcome.best)
    best, score = max(scored, key=lambda ps: ps[1])
    return _result("cafenet", supernet, cost_model, outcome, best, best.describe() | {"score": score},
                   {"bins": [list(e) for e in layout.edges], "cafenet": dataclasses.asdict(cafenet),
                    "evolution": dataclasses.asdict(evolution)})


__all__ = ["BCNetFitness", "CafeNetFitness", "RecalibratedScorer", "Scorer", "WidthSearchResult",
           "prior_target_macs", "run_bcnet_search", "run_cafenet_search", "save_result"]
