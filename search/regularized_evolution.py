"""Regularised (aging) evolution (Real et al., "Regularized Evolution for Image Classifier Architecture Search",
AAAI 2019, Algorithm 1) against a query session.

Owns :class:`EvolutionConfig` and :func:`regularized_evolution`: a population of P architectures drawn at
random; each cycle draws S members *with replacement* (as Algorithm 1 does), mutates the most accurate of
them, queries the child, appends it and removes the *oldest* member. A child is one layer away from its
parent by default (:func:`mutate_one_layer`: one position, uniformly, takes a different allowed value,
the replacement rule of the space's own ``mutate``), or the space's ``mutate`` at a per-layer probability.
Because the budget counts distinct queries and nothing is queried twice, a child that was already queried
or falls outside the window is re-drawn from the same parent (up to ``max_mutation_tries`` times); if every
try fails, the child is the next unqueried feasible architecture of a uniformly random order.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from common.errors import InputError
from .random_search import random_order
from zoo.spaces.base import Arch, SearchSpace

from .query import QuerySession


@dataclass(frozen=True)
class EvolutionConfig:
    """Population size P, tournament sample size S (defaults: P = 20, S = 5), and the mutation.

    ``mutation_prob`` None mutates exactly one layer; a number mutates with the space's ``mutate`` at that
    per-layer probability (re-drawn until the child differs from its parent).
    """

    population: int = 20
    sample: int = 5
    mutation_prob: float | None = None
    max_mutation_tries: int = 100

    def __post_init__(self) -> None:
        for name in ("population", "sample", "max_mutation_tries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"EvolutionConfig.{name} must be an int >= 1, got {value!r}")
        if self.mutation_prob is not None and not 0.0 < self.mutation_prob <= 1.0:
            raise InputError(f"EvolutionConfig.mutation_prob must be in (0, 1] or None, got {self.mutation_prob!r}")


def mutate_one_layer(space: SearchSpace, arch: Arch, rng: random.Random) -> Arch:
    """``arch`` with one uniformly chosen position set to a different allowed value, uniformly."""
    choices = getattr(space, "choices", None)
    if choices is None:
        raise TypeError(f"one-layer mutation needs a space with choices(); {space.name!r} has none "
                        f"(set EvolutionConfig.mutation_prob to use the space's mutate)")
    allowed = choices()
    movable = [i for i, c in enumerate(allowed) if len(c) > 1]
    if not movable:
        raise InputError(f"space {space.name!r} has no position with more than one choice to mutate")
    i = rng.choice(movable)
    out = list(arch)
    out[i] = rng.choice([c for c in allowed[i] if c != arch[i]])
    return tuple(out)


def _mutant(space: SearchSpace, parent: Arch, rng: random.Random, config: EvolutionConfig) -> Arch:
    if config.mutation_prob is None:
        return mutate_one_layer(space, parent, rng)
    while True:  # terminates with probability 1 for prob > 0
        child = space.mutate(parent, rng, config.mutation_prob)
        if child != parent:
            return child


def regularized_evolution(session: QuerySession, rng: random.Random,
                          config: EvolutionConfig = EvolutionConfig()) -> None:
    """Aging evolution until the session's budget is spent or no feasible architecture is left to query."""
    space = session.space
    fresh = random_order(space, rng)

    def next_random() -> Arch | None:
        for arch in fresh:
            if not session.queried(arch) and session.feasible(arch):
                return arch
        return None

    population: deque[tuple[Arch, float]] = deque()
    while len(population) < config.population and not session.exhausted:
        arch = next_random()
        if arch is None:
            return
        population.append((arch, session.query(arch)))
    while not session.exhausted:
        tournament = [rng.choice(population) for _ in range(config.sample)]
        parent = max(tournament, key=lambda member: member[1])[0]
        child = None
        for _ in range(config.max_mutation_tries):
            candidate = _mutant(space, parent, rng, config)
            if not session.queried(candidate) and session.feasible(candidate):
                child = candidate
                break
        if child is None:
            child = next_random()
            if child is None:
                return
        population.append((child, session.query(child)))
        population.popleft()
