"""End to end: a trained supernet searched under a budget, the result saved, rebuilt and exportable as data."""

from __future__ import annotations

import json
import random

import pytest
import torch

import zoo
from export.pipeline import resolve_spec
from search.width import (LEFT, RIGHT, BCNetTrainer, Budget, CafeNetConfig, CostModel, EvolutionConfig,
                          PriorConfig, RecalibratedScorer, flops_sensitive_bins, run_bcnet_search,
                          run_cafenet_search)
from search.width.cafenet import BinPlacement
from search.width.supernet import WidthSupernet

from .conftest import SPACES, Ctx, batch, fresh, toy_table

TINY = EvolutionConfig(population=3, generations=2, topk=2, mutations=2, crossovers=1, seed=1)


def _loaders(sup, n: int, size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch(sup, size, seed + i) for i in range(n)]


class Counting:
    """A scorer that counts how often it is asked (wrapping a real one)."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, model: torch.nn.Module) -> float:
        self.calls += 1
        return self.inner(model)


def test_recalibrated_scorer_recalibrates_before_it_evaluates() -> None:
    log = []
    scorer = RecalibratedScorer(["train"], ["val"], batches=20,
                                recalibrate=lambda m, loader, n: log.append(("bn", loader, n)),
                                evaluate=lambda m, loader: (log.append(("eval", loader)) or (87.5, 0.4)))
    assert scorer(torch.nn.Linear(1, 1)) == 87.5
    assert log == [("bn", ["train"], 20), ("eval", ["val"])]


def test_bcnet_search_end_to_end(tmp_path, supernet_of) -> None:
    sup = fresh(supernet_of("mobilenetv2")).train()
    bcnet = BCNetTrainer(sup)
    opt = torch.optim.SGD(sup.parameters(), lr=0.05, momentum=0.9)
    for step in range(3):  # random, complement, full: the records get two entries per position
        x, y = batch(sup, 2, seed=step)
        opt.zero_grad()
        bcnet.step_fn(sup, x, y, Ctx(step, random.Random(step)))
        opt.step()
    budget = 150_000_000
    cost = CostModel(sup.space, Budget(max_macs=budget))
    scorer = Counting(RecalibratedScorer(_loaders(sup, 2, 2, 10), _loaders(sup, 1, 4, 20), batches=2))
    state = tmp_path / "state.json"
    result = run_bcnet_search(sup, bcnet.records, scorer, cost, evolution=TINY,
                              prior=PriorConfig(steps=100, lr=0.05), state_path=state, progress=False)
    spec, size = sup.space.to_spec(result.arch)
    assert result.spec == spec and result.input_size == size
    assert result.macs == zoo.count(spec, size).macs <= budget and result.latency_ms is None
    sides = result.placement["scores"]
    assert result.score == pytest.approx(0.5 * (sides["left"] + sides["right"]))
    placement = LEFT if sides["left"] >= sides["right"] else RIGHT
    assert result.placement["side"] == placement.side
    inherited = sup.subnet(result.arch, placement).state_dict()
    assert all(torch.equal(v, inherited[k]) for k, v in result.model.state_dict().items())
    assert result.extra["prior"]["target_macs"] == budget

    paths = result.save(tmp_path / "out")
    rebuilt = zoo.build_model(zoo.spec_from_json(paths["spec"].read_text()))
    rebuilt.load_state_dict(torch.load(paths["weights"], weights_only=True), strict=True)
    x, _ = batch(sup, 2, seed=99)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), result.model.eval()(x))
    resolved = resolve_spec(paths["spec"], paths["weights"])  # what `mzoo export --spec … --checkpoint …` runs
    with torch.no_grad():
        torch.testing.assert_close(resolved.model(x), result.model(x))
    report = json.loads(paths["report"].read_text())
    assert (report["method"], report["macs"], report["arch"]) == ("bcnet", result.macs, list(result.arch))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporaries left

    # The finished search resumes from its state: nothing is evaluated again but the winner's two sides.
    again = Counting(scorer.inner)
    resumed = run_bcnet_search(sup, bcnet.records, again, cost, evolution=TINY,
                               prior=PriorConfig(steps=100, lr=0.05), state_path=state, progress=False)
    assert (resumed.arch, resumed.score) == (result.arch, result.score) and again.calls == 2


def test_cafenet_search_under_a_latency_budget(tmp_path) -> None:
    layout = flops_sensitive_bins(SPACES["mobilenetv2"])
    torch.manual_seed(0)
    sup = WidthSupernet(layout.space)
    root = tmp_path / "tables"
    toy_table(root, "toy-cpu", SPACES["mobilenetv2"])  # measured on the quarter widths only
    # The bins' widths are not in the table: the predictor interpolates them from same-signature entries.
    cost = CostModel(layout.space, Budget(max_latency_ms=15.0, device="toy-cpu", tables_root=str(root),
                                          interpolate=True))

    def scorer(model: torch.nn.Module) -> float:  # cheap and placement-dependent: the weights differ
        return float(sum(p.detach().double().abs().sum() for p in model.parameters()))

    result = run_cafenet_search(sup, layout, scorer, cost, cafenet=CafeNetConfig(score_candidates=2),
                                evolution=TINY, progress=False)
    assert result.latency_ms is not None and result.latency_ms <= 15.0 and result.device == "toy-cpu"
    bins = tuple(tuple(b) for b in result.placement["bins"])
    chosen = BinPlacement(layout.edges, bins)
    assert all(sel in options for sel, options in zip(bins, layout.options(result.arch, 1)))
    assert result.score == pytest.approx(scorer(sup.subnet(result.arch, chosen))) == result.placement["score"]
    assert result.extra["bins"] == [list(e) for e in layout.edges]
