"""Search against a query oracle (NAS-Bench-Macro mode): constraints, the query session, the trace, the entry point.

Owns :class:`CostWindow` (a MACs window from the cost walker, or a latency window from a device's latency
table through :class:`latency_tables.predict.Predictor`), :class:`Feasibility` (windows bound to a space,
with per-architecture caches that several runs can share), :class:`OracleSession` (what a searcher sees:
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
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from export.files import write_json_atomic

from .mcts import ORACLE_CONFIG, MCTSConfig, mcts_search
from .random_search import random_search
from .regularized_evolution import EvolutionConfig, regularized_evolution
from .spaces.base import Arch, SearchSpace

SEARCHERS = ("mcts", "mcts-hier", "random", "evolution")
TARGETS = ("best", "top10", "top1pct")
METRICS = ("macs", "latency")
TRACE_SCHEMA_VERSION = 1


class BudgetReached(RuntimeError):
    """A query was asked for after the budget was spent (the driver stops the searcher with it)."""


class QueryOracle(Protocol):
    """What the driver needs from a benchmark (:class:`search.nasbench.NASBenchMacro` is one)."""

    space: SearchSpace
    source: str

    def key(self, arch: Any) -> str: ...

    def arch(self, key: str) -> Arch: ...

    def keys(self) -> Sequence[str]: ...

    def accuracy(self, arch: Any) -> float: ...

    def optimal(self, among: Any = None) -> frozenset[str]: ...

    def top_k(self, k: int, among: Any = None) -> frozenset[str]: ...

    def top_fraction(self, fraction: float, among: Any = None) -> frozenset[str]: ...


class QuerySession(Protocol):
    """What a searcher sees of a run."""

    space: SearchSpace

    @property
    def exhausted(self) -> bool: ...

    def feasible(self, arch: Arch) -> bool: ...

    def queried(self, arch: Arch) -> bool: ...

    def query(self, arch: Arch) -> float: ...


@dataclass(frozen=True)
class CostWindow:
    """Architectures whose ``metric`` lies in [low, high] (either bound may be None).

    ``metric`` "macs" counts with the walker (:func:`zoo.count`); "latency" predicts milliseconds from the
    tables of ``device`` (under ``tables``, default the shipped ones), which must hold the space's table.
    """

    metric: str
    low: float | None = None
    high: float | None = None
    device: str | None = None
    tables: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown constraint metric {self.metric!r}; known: {', '.join(METRICS)}")
        if self.low is None and self.high is None:
            raise ValueError(f"a {self.metric} window needs a low or a high bound, got neither")
        for name in ("low", "high"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ValueError(f"{self.metric} window {name} must be a finite number or None, got {value!r}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"{self.metric} window is empty: low {self.low!r} > high {self.high!r}")
        if self.metric == "latency" and not self.device:
            raise ValueError("a latency window needs the device whose latency table predicts it")
        if self.metric == "macs" and (self.device or self.tables):
            raise ValueError(f"a MACs window takes no device or tables, got device={self.device!r}")

    def contains(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def cost_function(self, space: SearchSpace) -> Callable[[Arch], float]:
        """The metric of an architecture of ``space`` (loads the latency tables now, for latency)."""
        if self.metric == "macs":
            import zoo

            return lambda arch: float(zoo.count(*space.to_spec(arch)).macs)
        from latency_tables.predict import Predictor

        predictor = Predictor.for_device(self.device, None if self.tables is None else Path(self.tables))
        return lambda arch: predictor.predict_arch(space, arch).total_ms

    def describe(self) -> str:
        what = "MACs" if self.metric == "macs" else f"latency on {self.device} (ms)"
        if self.low is not None and self.high is not None:
            return f"{what} in [{self.low:g}, {self.high:g}]"
        return f"{what} ≥ {self.low:g}" if self.high is None else f"{what} ≤ {self.high:g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostWindow:
        return cls(**dict(data))


class Feasibility:
    """``windows`` bound to ``space``: ``feasibility(arch)`` is True when every window holds the arch.

    Costs and verdicts are cached per architecture, so one instance shared by many runs computes each once.
    """

    def __init__(self, space: SearchSpace, windows: Sequence[CostWindow] = ()) -> None:
        self.space = space
        self.windows = tuple(windows)
        self._functions: list[Callable[[Arch], float] | None] = [None] * len(self.windows)
        self._costs: dict[tuple[int, Arch], float] = {}
        self._verdicts: dict[Arch, bool] = {}

    def cost(self, index: int, arch: Arch) -> float:
        """The metric of window ``index`` for ``arch``."""
        arch = tuple(arch)
        if (index, arch) not in self._costs:
            if self._functions[index] is None:
                self._functions[index] = self.windows[index].cost_function(self.space)
            self._costs[(index, arch)] = self._functions[index](arch)  # type: ignore[misc]
        return self._costs[(index, arch)]

    def __call__(self, arch: Arch) -> bool:
        arch = tuple(arch)
        verdict = self._verdicts.get(arch)
        if verdict is None:
            verdict = all(w.contains(self.cost(i, arch)) for i, w in enumerate(self.windows))
            self._verdicts[arch] = verdict
        return verdict

    def describe(self) -> str:
        return "; ".join(w.describe() for w in self.windows) or "unconstrained"


class OracleSession:
    """One run's view of the oracle: distinct, feasible queries up to ``budget``, recorded in order."""

    def __init__(self, oracle: QueryOracle, budget: int, feasibility: Feasibility, progress: bool = False,
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
            raise ValueError(f"architecture {key!r} was already queried (queries must be distinct)")
        if not self.feasibility(self.oracle.arch(key)):
            raise ValueError(f"architecture {key!r} is outside the constraints ({self.feasibility.describe()})")
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
            raise ValueError(f"search trace schema_version {data.get('schema_version')!r} is not supported "
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
            raise ValueError(f"search trace {str(source)!r} does not exist") from None
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"search trace {str(source)!r} is invalid: {err}") from None


def target_sets(oracle: QueryOracle, feasible: Sequence[str]) -> dict[str, frozenset[str]]:
    """The target sets within ``feasible``: best, top 10 and top 1 % (ties at a boundary included)."""
    return {"best": oracle.optimal(feasible), "top10": oracle.top_k(10, feasible),
            "top1pct": oracle.top_fraction(0.01, feasible)}


def queries_to_reach(queries: Sequence[tuple[str, float]], target: frozenset[str]) -> int | None:
    """How many queries it took to query a member of ``target`` (1-based), or None if none was queried."""
    return next((i + 1 for i, (key, _) in enumerate(queries) if key in target), None)


def run_oracle_search(searcher: str, budget: int, seed: int, *,
                      constraints: Sequence[CostWindow] | Feasibility = (), oracle: QueryOracle | None = None,
                      config: MCTSConfig | EvolutionConfig | None = None, stop_at_best: bool = False,
                      progress: bool = False) -> SearchTrace:
    """Run ``searcher`` (one of :data:`SEARCHERS`) for ``budget`` distinct queries on one ``seed``.

    ``oracle`` defaults to NAS-Bench-Macro read from the shared data folder. ``constraints`` are windows (or
    a prepared :class:`Feasibility`, whose caches then serve several runs); no architecture outside them
    is queried. ``config`` is an :class:`MCTSConfig` for "mcts" (prioritized sampling) and "mcts-hier"
    (hierarchical selection), default :data:`search.mcts.ORACLE_CONFIG`; an :class:`EvolutionConfig` for
    "evolution"; None for "random" (and for the defaults). ``stop_at_best`` ends the run as soon as a best
    architecture is queried (every target is then reached, since the best is in the top 10 and the top 1 %).
    ``progress`` shows a query bar on stderr.
    """
    if searcher not in SEARCHERS:
        raise ValueError(f"unknown searcher {searcher!r}; known: {', '.join(SEARCHERS)}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"the query budget must be an int >= 1, got {budget!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"the seed must be an int, got {seed!r}")
    run = _runner(searcher, config)
    if oracle is None:
        from .nasbench import NASBenchMacro

        oracle = NASBenchMacro.load()
    feasibility = constraints if isinstance(constraints, Feasibility) else Feasibility(oracle.space, constraints)
    if feasibility.space != oracle.space:
        raise ValueError(f"the constraints are bound to space {feasibility.space.name!r}, the oracle's is "
                         f"{oracle.space.name!r}")
    feasible = [k for k in oracle.keys() if feasibility(oracle.arch(k))]
    if not feasible:
        raise ValueError(f"no architecture of the oracle satisfies the constraints ({feasibility.describe()})")
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
        raise ValueError(f"searcher {searcher!r} takes a {expected[searcher].__name__} config, "
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
