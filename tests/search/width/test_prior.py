"""BCNet's prior: fitted to the loss records under a MACs target, λ grown until the target holds, sampled."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

import zoo
from search.width import Prior, PriorConfig, fit_prior
from search.width.prior import fill_losses
from search.width.supernet import PairwiseCost

# Two positions whose MACs add: 10 MACs per unit of width, widths 1..4.
TOY = PairwiseCost(0.0, {0: np.array([10.0, 20, 30, 40]), 1: np.array([10.0, 20, 30, 40])}, {})


def test_the_fit_meets_the_target_and_lambda_follows_bcnets_schedule() -> None:
    flat = [[1.0] * 4, [1.0] * 4]
    prior = fit_prior(flat, TOY, 40.0, PriorConfig(steps=100, lr=0.05))
    assert prior.converged and (prior.expected_macs / 40.0 - 1) ** 2 <= 0.01
    assert prior.lam == pytest.approx(0.5 * 1.3 ** (prior.rounds - 1))
    assert prior.rounds > 1  # uniform gives 50 MACs, 25 % over: one round at λ = 0.5 is not enough
    probs = [torch.tensor(r, dtype=torch.float64) for r in prior.probs]
    assert float(TOY.expected(probs)) == pytest.approx(prior.expected_macs)
    assert all(sum(r) == pytest.approx(1.0) for r in prior.probs)


def test_lower_losses_draw_probability_at_the_same_cost() -> None:
    # Position 0's wide widths have lower losses, position 1's narrow ones: under the same MACs target
    # the prior shifts position 0 wider than position 1.
    records = [[2.0, 1.8, 1.6, 1.4], [1.4, 1.6, 1.8, 2.0]]
    prior = fit_prior(records, TOY, 50.0, PriorConfig(steps=300, lr=0.5))
    mean = [sum(j * p for j, p in enumerate(row)) for row in prior.probs]
    assert mean[0] > 1.5 > mean[1]


def test_an_unreachable_target_is_reported_not_converged() -> None:
    prior = fit_prior([[1.0] * 4, [1.0] * 4], TOY, 5.0, PriorConfig(steps=50, lr=0.5, max_rounds=3))
    assert not prior.converged and prior.rounds == 3
    with pytest.raises(ValueError, match="target_macs"):
        fit_prior([[1.0] * 4, [1.0] * 4], TOY, 0.0)


def test_missing_records_are_neutral() -> None:
    assert fill_losses([[None, 2.0, 4.0], [None, None]]) == [[3.0, 2.0, 4.0], [0.0, 0.0]]


def test_fit_on_a_width_space_reaches_the_budget(supernet_of) -> None:
    sup = supernet_of("mobilenetv2")
    space = sup.space
    full = zoo.count(*space.to_spec(sup.full_arch)).macs
    records = [[2.0 - 0.1 * j for j in range(len(c))] for c in space.choices()]
    prior = fit_prior(records, sup.macs_model(), 0.5 * full, PriorConfig(steps=300, lr=0.05))
    assert prior.converged
    rng = random.Random(0)
    macs = [zoo.count(*space.to_spec(prior.sample(space.choices(), rng))).macs for _ in range(200)]
    # Sampled networks cost what the prior expects, and about half the full network.
    assert np.mean(macs) == pytest.approx(prior.expected_macs, rel=0.05)
    assert 0.4 * full < np.mean(macs) < 0.6 * full


def test_sampling_follows_the_probabilities_and_the_seed() -> None:
    prior = Prior(((0.1, 0.2, 0.7), (1.0, 0.0, 0.0)))
    choices = (("a", "b", "c"), (1, 2, 3))
    draws = [prior.sample(choices, random.Random(s)) for s in range(3)]
    assert draws == [prior.sample(choices, random.Random(s)) for s in range(3)]
    rng = random.Random(0)
    counts = Counter(prior.sample(choices, rng)[0] for _ in range(5000))
    assert counts["c"] / 5000 == pytest.approx(0.7, abs=0.03) and counts["a"] / 5000 == pytest.approx(0.1, abs=0.02)
    assert all(prior.sample(choices, rng)[1] == 1 for _ in range(100))
    assert Prior.from_dict(prior.to_dict()) == prior
    assert Prior.uniform(choices).probs == ((1 / 3,) * 3,) * 2
