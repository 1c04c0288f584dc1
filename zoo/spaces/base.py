"""The pieces every search space shares: the :class:`SearchSpace` protocol, covering arrays, and choice spaces.

:func:`covering_rows` builds the small sets of architectures whose ops contain every op key of a space.
:class:`GeneSpace` implements sampling, mutation, validation and covering for the spaces whose arch is
one independent choice per position (every space but DARTS, whose edges have a joint constraint).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from itertools import product
from typing import Any, Protocol, runtime_checkable

from common.errors import InputError
from zoo.spec import AnySpec

Arch = tuple
InputSize = tuple[int, int, int]


@runtime_checkable
class SearchSpace(Protocol):
    """What search algorithms, latency-table builders and benchmarks need from a space."""

    name: str

    def sample(self, rng: random.Random) -> Arch: ...

    def mutate(self, arch: Arch, rng: random.Random, prob: float = 0.1) -> Arch: ...

    def to_spec(self, arch: Arch) -> tuple[AnySpec, InputSize]: ...

    def covering_specs(self) -> Iterator[tuple[AnySpec, InputSize]]: ...


def covering_rows(sizes: Sequence[int], scopes: Iterable[Sequence[int]],
                  fill: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """A covering array: rows of choice indices in which every combination of every scope occurs.

    ``sizes[g]`` is the number of choices of gene ``g``; a scope is a tuple of genes. First-fit greedy,
    largest scopes first: each missing combination goes into the first row whose assigned genes agree
    with it, else into a new row. For chains of overlapping scopes (a layer and its input layer) this
    meets the lower bound, the largest scope's number of combinations. Genes no scope fixes take
    ``fill[g]`` (default: the last choice).
    """
    if any(s < 1 for s in sizes):
        raise InputError(f"every gene needs at least one choice, got sizes {tuple(sizes)}")
    fill = tuple(fill) if fill is not None else tuple(s - 1 for s in sizes)
    if len(fill) != len(sizes) or any(not 0 <= f < s for f, s in zip(fill, sizes)):
        raise InputError(f"fill {fill} must hold one valid choice index per gene (sizes {tuple(sizes)})")
    unique = {tuple(sorted(set(scope))) for scope in scopes}
    for scope in unique:
        if any(not 0 <= g < len(sizes) for g in scope):
            raise InputError(f"scope {scope} names a gene outside 0..{len(sizes) - 1}")
    ordered = sorted(unique, key=lambda s: (-math.prod(sizes[g] for g in s), s))
    rows: list[list[int | None]] = []
    for scope in ordered:
        present = {tuple(row[g] for g in scope) for row in rows}
        # Rows fully assigned on this scope cannot take a missing combination; skip them when placing.
        open_rows = [row for row in rows if any(row[g] is None for g in scope)]
        for combo in product(*(range(sizes[g]) for g in scope)):
            if combo in present:
                continue
            for row in open_rows:
                if all(row[g] is None or row[g] == v for g, v in zip(scope, combo)):
                    open_rows.remove(row)
                    break
            else:
                row = [None] * len(sizes)
                rows.append(row)
            for g, v in zip(scope, combo):
                row[g] = v
    if not rows:
        rows.append([None] * len(sizes))
    return [tuple(f if v is None else v for v, f in zip(row, fill)) for row in rows]


def sample_distinct(space: SearchSpace, rng: random.Random, wanted: int, tries_per_arch: int = 20) -> list[Arch]:
    """Up to ``wanted`` distinct architectures sampled from ``space`` in draw order (fewer if the space is that
    small: sampling stops after ``wanted × tries_per_arch`` draws)."""
    archs: list[Arch] = []
    seen: set[Arch] = set()
    for _ in range(wanted * tries_per_arch):
        if len(archs) == wanted:
            break
        arch = space.sample(rng)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs


def check_prob(prob: float) -> None:
    if not 0.0 <= prob <= 1.0:
        raise InputError(f"mutation probability must be in [0, 1], got {prob!r}")


def _same(value: Any, choice: Any) -> bool:
    # Strict: True == 1 and 1.0 == 1 in Python, but they are not valid genes of an int space.
    return type(value) is type(choice) and value == choice


class GeneSpace:
    """Sampling, mutation, validation and covering for spaces whose arch is one independent choice per position.

    Subclasses give :meth:`choices` (the allowed values of each position), ``_scopes`` (for every op of
    the network, the positions its op key depends on) and ``_build``; ``_fill`` gives the choice index
    that positions named by no scope take in covering specs (default: the last choice).
    """

    name: str

    def choices(self) -> tuple[tuple[Any, ...], ...]:
        """The allowed values of every position of an arch."""
        raise NotImplementedError

    def _scopes(self) -> Iterable[tuple[int, ...]]:
        raise NotImplementedError

    def _build(self, arch: Arch) -> tuple[AnySpec, InputSize]:
        raise NotImplementedError

    def _fill(self) -> tuple[int, ...] | None:
        return None

    def check(self, arch: Sequence[Any]) -> Arch:
        """``arch`` as a tuple; raises ``ValueError`` naming the space and the first bad position."""
        choices = self.choices()
        if isinstance(arch, (str, bytes)) or not isinstance(arch, Sequence) or len(arch) != len(choices):
            raise InputError(f"{self.name}: an arch is a sequence of {len(choices)} values, got {arch!r}")
        for i, (value, allowed) in enumerate(zip(arch, choices)):
            if not any(_same(value, c) for c in allowed):
                raise InputError(f"{self.name}: arch position {i} is {value!r}; allowed: "
                                 f"{', '.join(map(repr, allowed))}")
        return tuple(arch)

    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random arch (each position independently)."""
        return tuple(rng.choice(allowed) for allowed in self.choices())

    def mutate(self, arch: Arch, rng: random.Random, prob: float = 0.1) -> Arch:
        """``arch`` with each position, with probability ``prob``, replaced by a different allowed value."""
        arch = self.check(arch)
        check_prob(prob)
        out = list(arch)
        for i, allowed in enumerate(self.choices()):
            others = [c for c in allowed if not _same(arch[i], c)]
            if others and rng.random() < prob:
                out[i] = rng.choice(others)
        return tuple(out)

    def to_spec(self, arch: Arch) -> tuple[AnySpec, InputSize]:
        """The spec of ``arch`` and the (C, H, W) input it runs at."""
        return self._build(self.check(arch))

    def covering_archs(self) -> list[Arch]:
        """Architectures whose ops together contain every op key of the space (see :func:`covering_rows`)."""
        choices = self.choices()
        rows = covering_rows([len(c) for c in choices], self._scopes(), self._fill())
        return [tuple(c[i] for c, i in zip(choices, row)) for row in rows]

    def covering_specs(self) -> Iterator[tuple[AnySpec, InputSize]]:
        for arch in self.covering_archs():
            yield self.to_spec(arch)
