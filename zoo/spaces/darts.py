"""The DARTS / EoiNAS cell space: normal and reduction genotypes as flat archs, at search-network scale."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.errors import InputError
from zoo.darts import cifar_cellnet_spec
from zoo.spec import CELL_OPS, AnySpec, Genotype

from .base import Arch, InputSize, check_prob


@dataclass(frozen=True)
class DartsSpace:
    """The DARTS / EoiNAS cell space (papers.md §1.3) at search-network scale (C=16, 8 cells, 32×32).

    Arch: for the normal then the reduction cell, for each of ``nodes`` intermediate nodes, its two
    edges as ``op, src, op, src`` (``src`` an earlier state: 0, 1 the previous cells, ``2 + j`` node
    ``j``), the two sources distinct and in increasing order (the order of a node's edges does not change
    the network, so one order is canonical); ops from the 7 non-``none`` primitives. The cell outputs
    concatenate all intermediate nodes. An edge's key depends on its op, its cell (shape) and, in
    reduction cells, whether it reads a previous cell (stride 2) or a node (stride 1); the covering specs
    rotate every op through every edge position of a wiring that has both kinds of reduction edge.
    """

    init_chs: int = 16
    layers: int = 8
    resolution: int = 32
    ops: tuple[str, ...] = CELL_OPS[1:]
    nodes: int = 4
    name: str = field(default="darts", init=False)

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in CELL_OPS or op == "none"]
        if len(self.ops) < 2 or unknown or len(set(self.ops)) != len(self.ops):
            raise InputError(f"DartsSpace.ops must be at least two distinct non-'none' DARTS primitives, "
                             f"got {self.ops!r}")
        if self.nodes < 1:
            raise InputError(f"DartsSpace.nodes must be >= 1, got {self.nodes}")

    def genotype(self, arch: Arch) -> Genotype:
        """The DARTS genotype of ``arch`` (checked)."""
        return self._genotype(self.check(arch))

    def _genotype(self, arch: Arch) -> Genotype:
        cells = []
        for c in range(2):
            flat = arch[c * 4 * self.nodes:(c + 1) * 4 * self.nodes]
            cells.append(tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2)))
        concat = tuple(range(2, 2 + self.nodes))
        return Genotype(normal=cells[0], normal_concat=concat, reduce=cells[1], reduce_concat=concat)

    def check(self, arch: Sequence[Any]) -> Arch:
        """``arch`` as a tuple; raises ``ValueError`` naming the first bad position."""
        need = 2 * 4 * self.nodes
        if isinstance(arch, (str, bytes)) or not isinstance(arch, Sequence) or len(arch) != need:
            raise InputError(f"darts: an arch is a sequence of {need} values (op, src per edge), got {arch!r}")
        for pos in range(0, need, 4):
            node = (pos // 4) % self.nodes
            op_a, src_a, op_b, src_b = arch[pos:pos + 4]
            for i, op in ((pos, op_a), (pos + 2, op_b)):
                if not isinstance(op, str) or op not in self.ops:
                    raise InputError(f"darts: arch position {i} is {op!r}; allowed: {', '.join(self.ops)}")
            for i, src in ((pos + 1, src_a), (pos + 3, src_b)):
                if type(src) is not int or not 0 <= src < 2 + node:
                    raise InputError(f"darts: arch position {i} is {src!r}; node {node} reads states 0..{1 + node}")
            if src_a >= src_b:
                raise InputError(f"darts: arch positions {pos + 1} and {pos + 3} (sources {src_a}, {src_b}) must "
                                 f"be distinct and increasing")
        return tuple(arch)

    def from_genotype(self, genotype: Genotype) -> Arch:
        """The canonical arch of a DARTS genotype (e.g. ``zoo.darts.DARTS_V2``); raises if it leaves the space."""
        flat: list[Any] = []
        for edges in (genotype.normal, genotype.reduce):
            for i in range(0, len(edges), 2):
                for op, src in sorted(edges[i:i + 2], key=lambda e: e[1]):
                    flat += [op, src]
        return self.check(flat)

    def sample(self, rng: random.Random) -> Arch:
        flat: list[Any] = []
        for _cell in range(2):
            for node in range(self.nodes):
                for src in sorted(rng.sample(range(2 + node), 2)):
                    flat += [rng.choice(self.ops), src]
        return tuple(flat)

    def mutate(self, arch: Arch, rng: random.Random, prob: float = 0.1) -> Arch:
        """Each op, with probability ``prob``, becomes another op; each source another free state of its node."""
        arch = self.check(arch)
        check_prob(prob)
        out = list(arch)
        for pos in range(0, len(out), 4):
            node = (pos // 4) % self.nodes
            edges = [[out[pos], out[pos + 1]], [out[pos + 2], out[pos + 3]]]
            for edge in edges:
                if rng.random() < prob:
                    edge[0] = rng.choice([op for op in self.ops if op != edge[0]])
                free = [s for s in range(2 + node) if s not in (edges[0][1], edges[1][1])]
                if free and rng.random() < prob:
                    edge[1] = rng.choice(free)
            edges.sort(key=lambda e: e[1])
            out[pos:pos + 4] = edges[0] + edges[1]
        return tuple(out)

    def to_spec(self, arch: Arch) -> tuple[AnySpec, InputSize]:
        spec = cifar_cellnet_spec(self._genotype(self.check(arch)), init_chs=self.init_chs, layers=self.layers)
        return spec, (3, self.resolution, self.resolution)

    def covering_archs(self) -> list[Arch]:
        """One arch per op: op ``(shift + edge) mod n`` on every edge; node ``j`` reads states 0 and ``j + 1``."""
        archs = []
        edges = 2 * self.nodes
        for shift in range(len(self.ops)):
            flat: list[Any] = []
            for _cell in range(2):
                for e in range(edges):
                    node = e // 2
                    flat += [self.ops[(shift + e) % len(self.ops)], 0 if e % 2 == 0 else node + 1]
            archs.append(self.check(flat))
        return archs

    def covering_specs(self) -> Iterator[tuple[AnySpec, InputSize]]:
        for arch in self.covering_archs():
            yield self.to_spec(arch)
