"""The evolutionary search: budgets respected, prior used, reproducible, and resumable to the same result."""

from __future__ import annotations

import json
import random

import pytest

from zoo.spaces import MobileNetV2WidthSpace
from search.width import Budget, CostModel, EvolutionConfig, EvolutionSearch, Prior

SPACE = MobileNetV2WidthSpace(layout="cifar")
CHOICES = SPACE.choices()
BUDGET = 150_000_000
CONFIG = EvolutionConfig(population=10, generations=4, topk=4, mutations=5, crossovers=5, seed=3)
# A cheap synthetic fitness: a fixed random value per (position, width) choice, summed.
_RNG = random.Random(100)
_WEIGHTS = [[_RNG.random() for _ in c] for c in CHOICES]


class Fitness:
    """Counts its calls; ``fail_after`` raises mid-search, as an interrupted run would stop."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail_after = fail_after

    def __call__(self, arch: tuple) -> float:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append(arch)
        return sum(_WEIGHTS[g][CHOICES[g].index(w)] for g, w in enumerate(arch))


@pytest.fixture(scope="module")
def cost() -> CostModel:
    return CostModel(SPACE, Budget(max_macs=BUDGET))


def _search(cost: CostModel, fitness: Fitness, **kwargs) -> EvolutionSearch:
    kwargs.setdefault("config", CONFIG)
    return EvolutionSearch(CHOICES, fitness, cost, progress=False, **kwargs)


def test_candidates_meet_the_budget_and_topk_is_the_best_seen(cost: CostModel, tmp_path) -> None:
    fitness = Fitness()
    search = _search(cost, fitness, state_path=tmp_path / "s.json")
    outcome = search.run()
    assert len(fitness.calls) == len(set(fitness.calls)) == outcome.evaluated  # nothing evaluated twice
    assert all(cost.costs(a).macs <= BUDGET for a in fitness.calls)
    first = fitness.calls[:CONFIG.population]  # the initial population lies in (0.9·budget, budget]
    assert all(0.9 * BUDGET < cost.costs(a).macs for a in first)
    scores = search.state.scores
    best = sorted(scores.values(), reverse=True)[:CONFIG.topk]
    assert [s for _, s in outcome.topk] == best and outcome.score == best[0]
    assert [h["best"] for h in outcome.history] == sorted(h["best"] for h in outcome.history)
    assert len(outcome.history) == CONFIG.generations
    assert outcome.score > max(scores[a] for a in first)  # breeding found better networks


def test_the_same_seed_gives_the_same_search(cost: CostModel) -> None:
    a, b, c = Fitness(), Fitness(), Fitness()
    _search(cost, a).run()
    _search(cost, b).run()
    _search(cost, c, config=EvolutionConfig(**{**CONFIG.__dict__, "seed": 4})).run()
    assert a.calls == b.calls and a.calls != c.calls


def test_an_interrupted_search_resumes_to_the_same_result(cost: CostModel, tmp_path) -> None:
    straight = Fitness()
    expected = _search(cost, straight).run()
    path = tmp_path / "state.json"
    done = 0
    for stop in (3, 17, 26):  # in the initial population, mid-breeding, late
        interrupted = Fitness(fail_after=stop - done)
        done = stop
        with pytest.raises(KeyboardInterrupt):
            _search(cost, interrupted, state_path=path).run()
        assert len(json.loads(path.read_text())["scores"]) == stop  # every finished evaluation was saved
    resumed = Fitness()
    outcome = _search(cost, resumed, state_path=path).run()
    assert resumed.calls == straight.calls[26:]  # only what was left, in the same order
    assert (outcome.best, outcome.score, outcome.topk, outcome.history) == \
        (expected.best, expected.score, expected.topk, expected.history)


def test_a_state_file_of_another_search_is_refused(cost: CostModel, tmp_path) -> None:
    path = tmp_path / "state.json"
    _search(cost, Fitness(), state_path=path, config=EvolutionConfig(population=4, generations=1, topk=2,
                                                                      mutations=2, crossovers=2)).run()
    with pytest.raises(ValueError, match="different search"):
        _search(cost, Fitness(), state_path=path).run()
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        _search(cost, Fitness(), state_path=path)


def test_initial_population_and_mutations_draw_from_the_prior(cost: CostModel) -> None:
    # All of position 5's mass on its narrowest width: no candidate may have another width there.
    probs = [tuple(1 / len(c) for _ in c) for c in CHOICES]
    probs[5] = (1.0,) + (0.0,) * (len(CHOICES[5]) - 1)
    fitness = Fitness()
    _search(cost, fitness, prior=Prior(tuple(probs))).run()
    assert {a[5] for a in fitness.calls} == {CHOICES[5][0]}
    uniform = Fitness()
    _search(cost, uniform).run()
    assert len({a[5] for a in uniform.calls}) > 1


def test_a_budget_below_the_space_is_an_error() -> None:
    tiny = CostModel(SPACE, Budget(max_macs=1000))
    with pytest.raises(ValueError, match="no architecture within the budget"):
        EvolutionSearch(CHOICES, Fitness(), tiny, EvolutionConfig(population=2, generations=1, max_tries=2),
                        progress=False).run()
