"""Spaces of fixed-position layers that each pick an op: NAS-Bench-Macro, MCT-NAS, Meta-Kernel, Once-for-All MobileNetV3.

In these spaces a layer's shapes are fixed by its position (and, for OFA, the resolution), so its op key
depends on its own choice only, and a handful of covering specs (one per op, per resolution) contain
every key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from common.errors import InputError
from zoo.mctnas import SPACE_STAGES as MCTNAS_STAGES
from zoo.mctnas import mctnas_spec
from zoo.metakernel import EXPANSIONS as MK_EXPANSIONS
from zoo.metakernel import KERNELS as MK_KERNELS
from zoo.metakernel import NUM_LAYERS as MK_LAYERS
from zoo.metakernel import metakernel_spec
from zoo.nbmacro import NUM_LAYERS as NBMACRO_LAYERS
from zoo.nbmacro import nbmacro_spec
from zoo.spec import AnySpec

from .base import Arch, GeneSpace, InputSize


def _each_own(n: int) -> list[tuple[int, ...]]:
    """Scopes of spaces whose layers sit at fixed shapes: a layer's key depends on its own choice only."""
    return [(i,) for i in range(n)]


def _ir_tokens(expands: Sequence[int], kernels: Sequence[int], identity: bool) -> tuple[str, ...]:
    return (("id",) if identity else ()) + tuple(f"e{e}k{k}" for e in expands for k in kernels)


@dataclass(frozen=True)
class NBMacroSpace(GeneSpace):
    """NAS-Bench-Macro (papers.md §4.2): 8 layers, each ``0`` identity, ``1`` MB3 k3 or ``2`` MB6 k5; 32×32.

    Arch: 8 ints, e.g. ``(2, 2, 2, 1, 2, 2, 2, 0)`` is the benchmark's string ``"22212220"``. Every layer
    sits at a fixed position (shape), so its key depends on its own choice only: 3 covering specs.
    """

    name: str = field(default="nbmacro", init=False)

    def choices(self) -> tuple[tuple[int, ...], ...]:
        return ((0, 1, 2),) * NBMACRO_LAYERS

    def _scopes(self) -> list[tuple[int, ...]]:
        return _each_own(NBMACRO_LAYERS)

    def _build(self, arch: Arch) -> tuple[AnySpec, InputSize]:
        return nbmacro_spec("".join(map(str, arch))), (3, 32, 32)


@dataclass(frozen=True)
class MCTNASSpace(GeneSpace):
    """MCT-NAS' ImageNet space (papers.md §4.3): 21 layers of ``id`` or ``e{3,6}k{3,5,7}``; 224×224.

    Arch: 21 tokens, e.g. ``zoo.mctnas.MCTNAS_A.split()``. Layer positions fix their shapes: 7 covering specs.
    """

    name: str = field(default="mctnas", init=False)

    def choices(self) -> tuple[tuple[str, ...], ...]:
        return (_ir_tokens((3, 6), (3, 5, 7), identity=True),) * sum(depth for _, depth, _ in MCTNAS_STAGES)

    def _scopes(self) -> list[tuple[int, ...]]:
        return _each_own(len(self.choices()))

    def _build(self, arch: Arch) -> tuple[AnySpec, InputSize]:
        return mctnas_spec(" ".join(arch)), (3, 224, 224)


@dataclass(frozen=True)
class MetaKernelSpace(GeneSpace):
    """The (assumed) Meta-Kernel space (papers.md §7, :mod:`zoo.metakernel`): 15 layers of ``e{3,6}k{3,5,7}``.

    ``identity=True`` adds ``id`` as a candidate (the paper's use of skip is not retrievable). 224×224.
    """

    identity: bool = False
    name: str = field(default="metakernel", init=False)

    def choices(self) -> tuple[tuple[str, ...], ...]:
        return (_ir_tokens(MK_EXPANSIONS, MK_KERNELS, self.identity),) * MK_LAYERS

    def _scopes(self) -> list[tuple[int, ...]]:
        return _each_own(MK_LAYERS)

    def _build(self, arch: Arch) -> tuple[AnySpec, InputSize]:
        return metakernel_spec(" ".join(arch)), (3, 224, 224)


OFA_STAGES = 5
OFA_MAX_DEPTH = 4


@dataclass(frozen=True)
class OFAMobileNetV3Space(GeneSpace):
    """Once-for-All's MobileNetV3 w1.2 space: resolution, 5 stage depths, 20 kernels, 20 expand ratios.

    Arch: ``(resolution, d_1..d_5, k_1..k_20, e_1..e_20)`` (46 ints), as OFA samples it: all 20 kernel
    and expand slots are always present, stage ``i`` uses the first ``d_i`` of its 4 slots, so the
    unused slots of a shallow stage do not change the network. Depth only removes layers, it never
    changes another layer's shape, so a slot's key depends on (resolution, its kernel, its expand), and
    the covering specs use every slot (full depth): resolutions × kernels × expands specs.
    The spec builder is :func:`zoo.ofa.ofa_mbv3_spec`, imported when a spec is built.
    """

    resolutions: tuple[int, ...] = (160, 176, 192, 208, 224)
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 4, 6)
    depths: tuple[int, ...] = (2, 3, 4)
    name: str = field(default="ofa_mbv3", init=False)

    def __post_init__(self) -> None:
        for attr in ("resolutions", "kernels", "expands", "depths"):
            values = getattr(self, attr)
            if not values or len(set(values)) != len(values) or any(not isinstance(v, int) or v < 1 for v in values):
                raise InputError(f"OFAMobileNetV3Space.{attr} must be distinct positive ints, got {values!r}")
        if max(self.depths) > OFA_MAX_DEPTH:
            raise InputError(f"OFAMobileNetV3Space.depths {self.depths} exceed the {OFA_MAX_DEPTH} slots of a stage")

    def choices(self) -> tuple[tuple[int, ...], ...]:
        slots = OFA_STAGES * OFA_MAX_DEPTH
        return ((self.resolutions,) + (self.depths,) * OFA_STAGES + (self.kernels,) * slots
                + (self.expands,) * slots)

    def _scopes(self) -> list[tuple[int, ...]]:
        slots, first_kernel = OFA_STAGES * OFA_MAX_DEPTH, 1 + OFA_STAGES
        return [(0, first_kernel + i, first_kernel + slots + i) for i in range(slots)]

    def _fill(self) -> tuple[int, ...]:
        # Depth genes are in no scope: the covering specs take the deepest choice so every slot is active.
        fill = [len(c) - 1 for c in self.choices()]
        fill[1:1 + OFA_STAGES] = [self.depths.index(max(self.depths))] * OFA_STAGES
        return tuple(fill)

    def _build(self, arch: Arch) -> tuple[AnySpec, InputSize]:
        from zoo.ofa import ofa_mbv3_spec  # written alongside this module; imported only when needed

        slots, res = OFA_STAGES * OFA_MAX_DEPTH, arch[0]
        depths = arch[1:1 + OFA_STAGES]
        kernels = arch[1 + OFA_STAGES:1 + OFA_STAGES + slots]
        expands = arch[1 + OFA_STAGES + slots:]
        return ofa_mbv3_spec(kernels, expands, depths), (3, res, res)
