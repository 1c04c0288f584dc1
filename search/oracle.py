"""Search against a query oracle (NAS-Bench-Macro mode): constraints, the query session, the trace, the entry point.

Owns :class:`OracleSession` (what a searcher sees:
the space, whether an architecture is feasible or already queried, and ``query``, which refuses repeats,
infeasible architectures and queries past the budget, so the budget counts distinct queries only),
:class:`SearchTrace` (the query-by-query trajectory with how many queries each target took, JSON in and
out) and :func:`run_oracle_search`, which runs MCTS (prioritized or hierarchical), random search or
regularised evolution on one seed. Targets are defined within the feasible set: the best architecture(s),
the top 10 and the top 1 % by mean accuracy (ties at a boundary included), so with a window "the best"
is the best inside it.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.errors import InputError
from common.files import write_json_atomic

from .mcts import ORACLE_CONFIG, MCTSConfig, mcts_search
from .random_search import random_search
from .regularized_evolution import EvolutionConfig, regularized_evolution
from zoo.spaces.base import Arch

from .budget import METRICS, CostModel, CostWindow  # noqa: F401 (re-exported: the trace's window type)
from .query import BudgetReached, QueryOracle, QuerySession  # noqa: F401 (re-exported: the driver's names)

SEARCHERS = ("mcts", "mcts-hier", "random", "evolution")
TARGETS = ("best", "top10", "top1pct")
TRACE_SCHEMA_VERSION = 1


class OracleSession:
    """One run's view of the oracle: distinct, feasible queries up to ``budget``, recorded in order."""

    def __init__(self, oracle: QueryOracle, budget: int, feasibility: CostModel, progress: bool = False,
                 label: str = "", stop_at: frozenset[str] = frozenset()) -> None:
        self.oracle = oracle
        self.space = oracle.space
        self.budget = budget
        self.feasibility = feasibility
        self.history: list[tuple[str, float]] = []
        self._seen: set[str] = set()
        self.stop_at = stop_at
        self.stopped_early = False
        self._bar = tqdm(total=budget, disable=not progress, file=sys.stderr, desc=label or "queries",
                         leave=False, unit="query")

    @property
    def exhausted(self) -> bool:
        """True once the budget is spent (or, with ``stop_at``, a member of it was queried)."""
        return self.stopped_early or len(self.history) >= self.budget

    def feasible(self, arch: Arch) -> bool:
        return self.feasibility(self.oracle.arch(self.oracle.key(arch)))

    def queried(self, arch: Arch) -> bool:
        return self.oracle.key(arch) in self._seen

    def query(self, arch: Arch) -> float:
        """The oracle's accuracy (%) of ``arch``; refuses a repeat, an infeasible arch and a spent budget."""
        key = self.oracle.key(arch)
        if self.exhausted:
            raise BudgetReached(f"query budget of {self.budget} spent (or the run stopped at its target); "
                                f"{key!r} was not queried")
        if key in self._seen:
            raise InputError(f"architecture {key!r} was already queried (queries must be distinct)")
        if not self.feasibility(self.oracle.arch(key)):
            raise InputError(f"architecture {key!r} is outside the constraints ({self.feasibility.describe()})")
        accuracy = self.oracle.accuracy(key)
        self._seen.add(key)
        self.history.append((key, accuracy))
        self.stopped_early = key in self.stop_at
        self._bar.update(1)
        return accuracy

    def close(self) -> None:
        self._bar.close()


@dataclass(frozen=True)
class SearchTrace:
    """One search run: the distinct queries in order, and how many queries each target took.

    ``feasible`` is how many architectures satisfy the constraints; ``targets`` the size of each target
    set (best, top 10, top 1 %, within the feasible set); ``optimum`` the best feasible accuracy;
    ``reached[t]`` the number of queries after which target t was first hit (None: not within the run);
    ``stopped`` is "budget", "best" (the run was asked to stop once it reached the best) or "exhausted" (no
    feasible architecture was left to query).
    """

    searcher: str
    seed: int
    budget: int
    space: str
    oracle: str
    constraints: tuple[dict[str, Any], ...]
    config: dict[str, Any]
    feasible: int
    targets: dict[str, int]
    optimum: float
    queries: tuple[tuple[str, float], ...]
    reached: dict[str, int | None]
    stopped: str
    wall_s: float
    schema_version: int = field(default=TRACE_SCHEMA_VERSION)

    def best(self) -> tuple[str, float] | None:
        """The most accurate query (the first of equals), or None for an empty run."""
        return max(self.queries, key=lambda q: q[1]) if self.queries else None

    def best_so_far(self) -> list[float]:
        """The best accuracy after each query."""
        out: list[float] = []
        for _, accuracy in self.queries:
            out.append(max(out[-1], accuracy) if out else accuracy)
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["constraints"] = [dict(c) for c in self.constraints]
        data["queries"] = [[k, a] for k, a in self.queries]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchTrace:
        if data.get("schema_version") != TRACE_SCHEMA_VERSION:
            raise InputError(f"search trace schema_version {data.get('schema_version')!r} is not supported "
                             f"(this code reads {TRACE_SCHEMA_VERSION})")
        values = dict(data)
        values["constraints"] = tuple(dict(c) for c in data["constraints"])
        values["queries"] = tuple((str(k), float(a)) for k, a in data["queries"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trace as JSON atomically; returns the path."""
        target = Path(path)
        write_json_atomic(target, self.to_dict())
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SearchTrace:
        source = Path(path)
        try:
            return cls.from_dict(json.loads(source.read_text()))
        except FileNotFoundError:
            raise InputError(f"search trace {str(source)!r} does not exist") from None
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise InputError(f"search trace {str(source)!r} is invalid: {err}") from None


def target_sets(oracle: QueryOracle, feasible: Sequence[str]) -> dict[str, frozenset[str]]:
    """The target sets within ``feasible``: best, top 10 and top 1 % (ties at a boundary included)."""
    return {"best": oracle.optimal(feasible), "top10": oracle.top_k(10, feasible),
            "top1pct": oracle.top_fraction(0.01, feasible)}


def queries_to_reach(queries: Sequence[tuple[str, float]], target: frozenset[str]) -> int | None:
    """How many queries it took to query a member of ``target`` (1-based), or None if none was queried."""
    return next((i + 1 for i, (key, _) in enumerate(queries) if key in target), None)


def run_oracle_search(searcher: str, budget: int, seed: int, *,
                      constraints: Sequence[CostWindow] | CostModel = (), oracle: QueryOracle | None = None,
                      config: MCTSConfig | EvolutionConfig | None = None, stop_at_best: bool = False,
                      progress: bool = False) -> SearchTrace:
    """Run ``searcher`` (one of :data:`SEARCHERS`) for ``budget`` distinct queries on one ``seed``.

    ``oracle`` defaults to NAS-Bench-Macro read from the shared data folder. ``constraints`` are windows (or
    a prepared :class:`search.budget.CostModel`, whose caches then serve several runs); no architecture outside them
    is queried. ``config`` is an :class:`MCTSConfig` for "mcts" (prioritized sampling) and "mcts-hier"
    (hierarchical selection), default :data:`search.mcts.ORACLE_CONFIG`; an :class:`EvolutionConfig` for
    "evolution"; None for "random" (and for the defaults). ``stop_at_best`` ends the run as soon as a best
    architecture is queried (every target is then reached, since the best is in the top 10 and the top 1 %).
    ``progress`` shows a query bar on stderr.
    """
    if searcher not in SEARCHERS:
        raise InputError(f"unknown searcher {searcher!r}; known: {', '.join(SEARCHERS)}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"the query budget must be an int >= 1, got {budget!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"the seed must be an int, got {seed!r}")
    run = _runner(searcher, config)
    if oracle is None:
        from .nasbench import NASBenchMacro

        oracle = NASBenchMacro.load()
    feasibility = constraints if isinstance(constraints, CostModel) else CostModel.of_windows(oracle.space, constraints)
    if feasibility.space != oracle.space:
        raise InputError(f"the constraints are bound to space {feasibility.space.name!r}, the oracle's is "
                         f"{oracle.space.name!r}")
    feasible = [k for k in oracle.keys() if feasibility(oracle.arch(k))]
    if not feasible:
        raise InputError(f"no architecture of the oracle satisfies the constraints ({feasibility.describe()})")
    targets = target_sets(oracle, feasible)
    session = OracleSession(oracle, budget, feasibility, progress, label=f"{searcher} seed {seed}",
                            stop_at=targets["best"] if stop_at_best else frozenset())
    start = time.perf_counter()
    try:
        run(session, random.Random(seed))
    except BudgetReached:
        pass
    finally:
        session.close()
    queries = tuple(session.history)
    return SearchTrace(
        searcher=searcher, seed=seed, budget=budget, space=oracle.space.name, oracle=oracle.source,
        constraints=tuple(w.to_dict() for w in feasibility.windows), config=_config_dict(searcher, config),
        feasible=len(feasible), targets={t: len(s) for t, s in targets.items()},
        optimum=max(oracle.accuracy(k) for k in targets["best"]), queries=queries,
        reached={t: queries_to_reach(queries, s) for t, s in targets.items()},
        stopped="best" if session.stopped_early else "budget" if session.exhausted else "exhausted",
        wall_s=time.perf_counter() - start)


def _runner(searcher: str,
            config: MCTSConfig | EvolutionConfig | None) -> Callable[[OracleSession, random.Random], None]:
    expected = {"mcts": MCTSConfig, "mcts-hier": MCTSConfig, "evolution": EvolutionConfig, "random": type(None)}
    if config is not None and not isinstance(config, expected[searcher]):
        raise InputError(f"searcher {searcher!r} takes a {expected[searcher].__name__} config, "
                         f"got {type(config).__name__}")
    if searcher in ("mcts", "mcts-hier"):
        selection = "prioritized" if searcher == "mcts" else "hierarchical"
        mcts_config = config if isinstance(config, MCTSConfig) else ORACLE_CONFIG
        return lambda session, rng: mcts_search(session, rng, mcts_config, selection)
    if searcher == "evolution":
        evo_config = config if isinstance(config, EvolutionConfig) else EvolutionConfig()
        return lambda session, rng: regularized_evolution(session, rng, evo_config)
    return random_search


def _config_dict(searcher: str, config: MCTSConfig | EvolutionConfig | None) -> dict[str, Any]:
    if searcher in ("mcts", "mcts-hier"):
        selection = "prioritized" if searcher == "mcts" else "hierarchical"
        return {**asdict(config or ORACLE_CONFIG), "selection": selection}
    if searcher == "evolution":
        return asdict(config or EvolutionConfig())
    return {}
