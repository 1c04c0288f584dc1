"""The query protocol between a searcher and the driver that answers its queries (NAS-Bench-Macro mode).

:class:`QueryOracle` is what the driver (:mod:`search.oracle`) needs from a benchmark, :class:`QuerySession` what a
searcher (:mod:`search.mcts`, :mod:`search.random_search`, :mod:`search.regularized_evolution`) sees of a run,
and :class:`BudgetReached` how the driver stops a searcher. It lives apart from the driver so that the searchers
and the driver that imports them depend on it, not on each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from zoo.spaces.base import Arch, SearchSpace


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
