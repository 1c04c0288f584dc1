"""BCNet's prior distribution over widths: per-position categoricals fitted to the loss records under a MACs target.

Paper and code: BCNet (papers.md §3.5, CVPR code). Each arch position ``l`` gets ``P[l, ·] = softmax(X[l, ·])``
over its width choices, fitted by plain gradient descent on

    Σ_l Σ_j P[l, j] · E[l, j]  +  λ · (F̂(P) / F_target − 1)²

where ``E[l, j]`` is the mean of the recorded smallest training losses with width ``j`` at position ``l``
(:class:`search.width.bcnet.LossRecords`) and ``F̂`` the expected MACs. λ starts at 0.5; after each round
of ``steps`` updates (lr 0.01, 1000 steps, as the CVPR code) it is multiplied by 1.3 and the fit goes on
until ``(F̂/F_target − 1)² <= 0.01``. The initial population and the mutations of the evolutionary
search then sample widths from ``P`` (:mod:`search.width.evolution`).

Assumed where papers.md is silent: X starts at 0 (uniform) and each round continues from the previous
one; an unrecorded ``E[l, j]`` takes the mean of its position's recorded entries (a position with no
record at all is flat), so missing data neither attracts nor repels; ``F̂`` is the exact expectation
of the MACs under independent positions (:class:`search.width.supernet.PairwiseCost`), which is BCNet's
"each layer's FLOPs scaled by the expected width ratios of its input and output" made exact where a
layer's input and output share a position; after ``max_rounds`` rounds without meeting the tolerance the
last fit is returned with ``converged=False``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import InputError
from zoo.spaces import Arch

from .supernet import PairwiseCost


@dataclass(frozen=True)
class PriorConfig:
    """Hyper-parameters of the prior fit (CVPR code: 1000 steps of 0.01, λ 0.5 × 1.3 until within 0.01)."""

    steps: int = 1000
    lr: float = 0.01
    lambda_init: float = 0.5
    lambda_growth: float = 1.3
    tolerance: float = 0.01
    max_rounds: int = 60

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.lambda_init <= 0 or self.lambda_growth <= 1 or self.max_rounds < 1:
            raise InputError(f"PriorConfig: need steps >= 1, lr > 0, lambda_init > 0, lambda_growth > 1 and "
                             f"max_rounds >= 1, got {self}")
        if self.tolerance <= 0:
            raise InputError(f"PriorConfig.tolerance must be > 0, got {self.tolerance}")


@dataclass(frozen=True)
class Prior:
    """Per-position categorical distributions over the width choices (choice indices, not widths).

    Attributes:
        probs: ``probs[l][j]``, each row summing to 1.
        target_macs: the MACs target it was fitted to (``None`` for a uniform prior).
        expected_macs: ``F̂`` under ``probs``.
        lam: the final λ.
        rounds: rounds of ``steps`` updates used.
        converged: whether ``(F̂/F_target − 1)² <= tolerance`` was reached.
    """

    probs: tuple[tuple[float, ...], ...]
    target_macs: float | None = None
    expected_macs: float | None = None
    lam: float | None = None
    rounds: int = 0
    converged: bool = True

    @classmethod
    def uniform(cls, choices: Sequence[Sequence[Any]]) -> Prior:
        return cls(tuple(tuple(1.0 / len(c) for _ in c) for c in choices))

    def sample_index(self, gene: int, rng: random.Random) -> int:
        """A choice index of position ``gene`` drawn from ``probs[gene]`` with ``rng``."""
        u, acc = rng.random(), 0.0
        row = self.probs[gene]
        for j, p in enumerate(row):
            acc += p
            if u < acc:
                return j
        return len(row) - 1

    def sample(self, choices: Sequence[Sequence[Any]], rng: random.Random) -> Arch:
        """An architecture with every position drawn independently from the prior."""
        if len(choices) != len(self.probs):
            raise InputError(f"Prior has {len(self.probs)} positions, the space {len(choices)}")
        return tuple(choices[g][self.sample_index(g, rng)] for g in range(len(choices)))

    def to_dict(self) -> dict[str, Any]:
        return {"probs": [list(r) for r in self.probs], "target_macs": self.target_macs,
                "expected_macs": self.expected_macs, "lam": self.lam, "rounds": self.rounds,
                "converged": self.converged}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prior:
        return cls(tuple(tuple(float(p) for p in r) for r in data["probs"]), data.get("target_macs"),
                   data.get("expected_macs"), data.get("lam"), int(data.get("rounds", 0)),
                   bool(data.get("converged", True)))


def fill_losses(losses: Sequence[Sequence[float | None]]) -> list[list[float]]:
    """Missing entries take their position's mean of recorded entries (0 where a position has none)."""
    out = []
    for row in losses:
        seen = [x for x in row if x is not None]
        mean = sum(seen) / len(seen) if seen else 0.0
        out.append([mean if x is None else float(x) for x in row])
    return out


def fit_prior(losses: Sequence[Sequence[float | None]], cost: PairwiseCost, target_macs: float,
              config: PriorConfig = PriorConfig()) -> Prior:
    """Fit BCNet's prior to the loss records ``losses[l][j]`` under ``target_macs`` (see the module docstring)."""
    if target_macs <= 0:
        raise InputError(f"fit_prior: target_macs must be positive, got {target_macs}")
    table = fill_losses(losses)
    if not table or any(not row for row in table):
        raise InputError("fit_prior: every position needs at least one width choice")
    sizes = [len(row) for row in table]
    width = max(sizes)
    # Positions padded to one width; padded logits are -inf, so their probability is exactly 0.
    pad = np.array([[0.0 if j < n else -np.inf for j in range(width)] for n in sizes])
    values = np.array([row + [0.0] * (width - len(row)) for row in table])
    stacked = cost.stacked(width)
    unary = np.zeros_like(values)
    unary[:stacked.unary.shape[0]] = stacked.unary.numpy()
    first, second, mats = stacked.first.numpy(), stacked.second.numpy(), stacked.mats.numpy()
    # One-hot scatter matrices: summing each pair's gradient into its two positions is one matmul each.
    to_first = np.eye(len(table))[first].T if len(mats) else None
    to_second = np.eye(len(table))[second].T if len(mats) else None

    def expected(probs: np.ndarray) -> float:
        pairs = np.einsum("ki,kij,kj->", probs[first], mats, probs[second]) if len(mats) else 0.0
        return float(stacked.const + (probs * unary).sum() + pairs)

    # Plain gradient descent on the logits with the gradient written out (the objective is a quadratic
    # in P through a softmax): thousands of tiny steps, where autograd's per-op overhead would dominate.
    logits = np.zeros_like(values)
    lam, gap, rounds = config.lambda_init, float("inf"), 0
    probs = _softmax(logits + pad)
    for rounds in range(1, config.max_rounds + 1):
        for _ in range(config.steps):
            probs = _softmax(logits + pad)
            ratio = expected(probs) / target_macs
            d_cost = unary.copy()
            if len(mats):
                d_cost += to_first @ np.einsum("kij,kj->ki", mats, probs[second])
                d_cost += to_second @ np.einsum("kij,ki->kj", mats, probs[first])
            d_probs = values + lam * 2.0 * (ratio - 1.0) / target_macs * d_cost
            logits -= config.lr * probs * (d_probs - (probs * d_probs).sum(1, keepdims=True))
        probs = _softmax(logits + pad)
        value = expected(probs)
        gap = (value / target_macs - 1.0) ** 2
        if gap <= config.tolerance or rounds == config.max_rounds:
            break
        lam *= config.lambda_growth
    rows = tuple(tuple(float(v) for v in probs[g, :n]) for g, n in enumerate(sizes))
    return Prior(rows, float(target_macs), value, lam, rounds, gap <= config.tolerance)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)

__all__ = ["Prior", "PriorConfig", "fill_losses", "fit_prior"]
