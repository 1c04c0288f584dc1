"""The evolutionary search over a width space: prior-sampled population, mutation, crossover, top-k, resumable.

BCNet's searcher (edgenn config ``bcnet_train_search.yaml``, papers.md §3.5): a population of 50, 40
generations; each generation evaluates its candidates, keeps the 10 best architectures seen so far, and
breeds the next population from them: 25 mutations (every position redrawn with probability 0.1) and 25
crossovers (every position from one of two parents), topped up with fresh samples if too few new
feasible candidates turn up. Positions are drawn from a :class:`~search.width.prior.Prior` (BCNet's
prior; uniform for CafeNet), for the initial population and for mutation alike. The initial population
must lie in ``(lower × budget, budget]`` (the CVPR code's ``Neq_Random``, ``lower = 0.9``; relaxed to
``<= budget`` if too few such samples turn up), every later candidate within the budget. Candidates
already evaluated are not bred again.

The search state (generation, population, top-k, every evaluated score, RNG state and history) is written
atomically to ``state_path`` after every evaluation, so an interrupted search resumes where it stopped
and ends exactly as an uninterrupted one with the same seed: the RNG state is saved together with the
population it drew, and scores already computed are read back rather than recomputed. A state file
written with another space, config, prior or budget is refused. Fitness is higher-is-better and must be
deterministic in the architecture.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.errors import InputError
from common.files import write_json_atomic
from search.budget import CostModel
from zoo.spaces import Arch

from .prior import Prior

STATE_FORMAT = "mobile-zoo/width-evolution"
STATE_VERSION = 1


@dataclass(frozen=True)
class EvolutionConfig:
    """BCNet's evolutionary search (edgenn): population 50, 40 generations, top-k 10, 25 + 25 children.

    Attributes:
        population: candidates per generation.
        generations: generations evaluated.
        topk: best architectures kept as parents.
        mutations: children by mutation per generation.
        crossovers: children by crossover per generation.
        mutation_prob: per-position probability that a mutation redraws it.
        lower: the initial population must cost more than ``lower ×`` each budget.
        max_tries: draws allowed per wanted candidate before giving up on finding more.
        seed: the search's random seed.
    """

    population: int = 50
    generations: int = 40
    topk: int = 10
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.1
    lower: float = 0.9
    max_tries: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("population", "generations", "topk", "max_tries"):
            if getattr(self, name) < 1:
                raise InputError(f"EvolutionConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("mutations", "crossovers", "seed"):
            if getattr(self, name) < 0:
                raise InputError(f"EvolutionConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.mutation_prob <= 1.0 or not 0.0 <= self.lower < 1.0:
            raise InputError(f"EvolutionConfig: need 0 <= mutation_prob <= 1 and 0 <= lower < 1, got "
                             f"mutation_prob={self.mutation_prob}, lower={self.lower}")


@dataclass
class SearchState:
    """Everything an interrupted search needs to continue exactly (JSON-serialisable)."""

    fingerprint: str
    generation: int = 0
    population: list[Arch] | None = None
    topk: list[tuple[Arch, float]] = field(default_factory=list)
    scores: dict[Arch, float] = field(default_factory=dict)
    rng_state: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "fingerprint": self.fingerprint,
                "generation": self.generation,
                "population": None if self.population is None else [list(a) for a in self.population],
                "topk": [[list(a), s] for a, s in self.topk],
                "scores": [[list(a), s] for a, s in self.scores.items()],
                "rng_state": _rng_to_json(self.rng_state), "history": self.history}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "search state") -> SearchState:
        if data.get("format") != STATE_FORMAT or data.get("version") != STATE_VERSION:
            raise InputError(f"{where} is not a width-evolution state of version {STATE_VERSION} "
                             f"(format {data.get('format')!r}, version {data.get('version')!r})")
        pop = data["population"]
        return cls(fingerprint=data["fingerprint"], generation=int(data["generation"]),
                   population=None if pop is None else [tuple(a) for a in pop],
                   topk=[(tuple(a), float(s)) for a, s in data["topk"]],
                   scores={tuple(a): float(s) for a, s in data["scores"]},
                   rng_state=_rng_from_json(data["rng_state"]), history=list(data["history"]))


@dataclass(frozen=True)
class SearchOutcome:
    """The best architecture found, its score, the final top-k and the per-generation history."""

    best: Arch
    score: float
    topk: tuple[tuple[Arch, float], ...]
    history: tuple[dict[str, Any], ...]
    evaluated: int


def _rng_to_json(state: Any) -> Any:
    if state is None:
        return None
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(data: Any) -> Any:
    if data is None:
        return None
    version, internal, gauss = data
    return (int(version), tuple(int(x) for x in internal), gauss)


class EvolutionSearch:
    """Evolution over ``choices`` (one tuple of allowed values per position), maximising ``fitness``.

    Args:
        choices: the space's ``choices()``.
        fitness: arch -> score (higher is better; deterministic).
        constraint: the budget (``feasible(arch, lower)``).
        config: hyper-parameters.
        prior: where positions are drawn from (default uniform).
        state_path: JSON file the state is saved to after every evaluation and resumed from if present.
        identity: what else identifies the search (space name, budget, method...), checked on resume.
        progress: show a progress bar on stderr.
    """

    def __init__(self, choices: Sequence[Sequence[Any]], fitness: Callable[[Arch], float], constraint: CostModel,
                 config: EvolutionConfig = EvolutionConfig(), *, prior: Prior | None = None,
                 state_path: str | Path | None = None, identity: Mapping[str, Any] | None = None,
                 progress: bool = True) -> None:
        self.choices = tuple(tuple(c) for c in choices)
        self.fitness = fitness
        self.constraint = constraint
        self.config = config
        self.prior = prior if prior is not None else Prior.uniform(self.choices)
        if len(self.prior.probs) != len(self.choices) or any(
                len(p) != len(c) for p, c in zip(self.prior.probs, self.choices)):
            raise InputError("EvolutionSearch: the prior's positions and choices do not match the space's")
        self.state_path = Path(state_path) if state_path is not None else None
        self.progress = progress
        ident = {"choices": [list(c) for c in self.choices], "config": asdict(config),
                 "prior": self.prior.to_dict(), "identity": dict(identity or {})}
        self.fingerprint = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.state = self._load_or_new()

    def _load_or_new(self) -> SearchState:
        if self.state_path is None or not self.state_path.exists():
            return SearchState(self.fingerprint, rng_state=random.Random(self.config.seed).getstate())
        where = f"search state {str(self.state_path)!r}"
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"{where} cannot be read: {err}") from None
        state = SearchState.from_dict(data, where)
        if state.fingerprint != self.fingerprint:
            raise InputError(f"{where} was written by a different search (space, config, prior or budget differ: "
                             f"fingerprint {state.fingerprint} != {self.fingerprint}); remove it or use another path")
        return state

    def _save(self) -> None:
        if self.state_path is not None:
            write_json_atomic(self.state_path, self.state.to_dict())

    # -- candidates -----------------------------------------------------------------------------------------

    def _draw(self, rng: random.Random) -> Arch:
        return self.prior.sample(self.choices, rng)

    def _collect(self, wanted: int, make: Callable[[], Arch | None], taken: set[Arch], lower: float = 0.0) -> list[Arch]:
        """Up to ``wanted`` new feasible, not yet evaluated, distinct candidates from ``make``."""
        out: list[Arch] = []
        for _ in range(wanted * self.config.max_tries):
            if len(out) == wanted:
                break
            arch = make()
            if arch is None or arch in taken or arch in self.state.scores:
                continue
            if self.constraint.feasible(arch, lower):
                out.append(arch)
                taken.add(arch)
        return out

    def _initial(self, rng: random.Random) -> list[Arch]:
        n = self.config.population
        taken: set[Arch] = set()
        pop = self._collect(n, lambda: self._draw(rng), taken, self.config.lower)
        if len(pop) < n:  # the (lower·budget, budget] window is too narrow for the prior: relax it
            pop += self._collect(n - len(pop), lambda: self._draw(rng), taken)
        if not pop:
            raise InputError(f"no architecture within the budget was found in {n * self.config.max_tries * 2} "
                             f"draws; the budget is below what this space can reach")
        return pop

    def _mutant(self, rng: random.Random, parents: Sequence[Arch]) -> Arch:
        parent = parents[rng.randrange(len(parents))]
        p = self.config.mutation_prob
        return tuple(self.choices[g][self.prior.sample_index(g, rng)] if rng.random() < p else v
                     for g, v in enumerate(parent))

    def _crossover(self, rng: random.Random, parents: Sequence[Arch]) -> Arch | None:
        if len(parents) < 2:
            return None
        a, b = rng.sample(list(parents), 2)
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))

    def _breed(self, rng: random.Random) -> list[Arch]:
        parents = [a for a, _ in self.state.topk]
        taken: set[Arch] = set()
        children = self._collect(self.config.mutations, lambda: self._mutant(rng, parents), taken)
        children += self._collect(self.config.crossovers, lambda: self._crossover(rng, parents), taken)
        if len(children) < self.config.population:
            children += self._collect(self.config.population - len(children), lambda: self._draw(rng), taken)
        return children

    # -- the loop -------------------------------------------------------------------------------------------

    def run(self) -> SearchOutcome:
        """Run (or resume) the search to ``config.generations``; returns the best architecture found."""
        st = self.state
        rng = random.Random()
        rng.setstate(st.rng_state)
        if st.population is None:
            st.population = self._initial(rng)
            st.rng_state = rng.getstate()
            self._save()
        bar = tqdm(total=self.config.generations, initial=st.generation, desc="evolution", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        try:
            while st.generation < self.config.generations:
                for arch in st.population:
                    if arch not in st.scores:
                        st.scores[arch] = float(self.fitness(arch))
                        self._save()
                pool = dict(st.topk) | {a: st.scores[a] for a in st.population}
                ranked = sorted(pool.items(), key=lambda kv: (-kv[1], repr(kv[0])))
                st.topk = ranked[:self.config.topk]
                st.history.append({"generation": st.generation, "best": st.topk[0][1],
                                   "best_arch": list(st.topk[0][0]), "evaluated": len(st.scores),
                                   "population": len(st.population)})
                st.generation += 1
                if st.generation < self.config.generations:
                    st.population = self._breed(rng)
                st.rng_state = rng.getstate()
                self._save()
                bar.update(1)
                bar.set_postfix(best=f"{st.topk[0][1]:.4g}", refresh=False)
        finally:
            bar.close()
        return SearchOutcome(st.topk[0][0], st.topk[0][1], tuple(st.topk), tuple(st.history), len(st.scores))


__all__ = ["EvolutionConfig", "EvolutionSearch", "SearchOutcome", "SearchState"]
