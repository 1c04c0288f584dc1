"""Width spaces: BCNet-style per-layer widths of MobileNetV2, EfficientNet-B0 and ResNet-50, and HGCNet's row widths.

Widths tied by the network (expand = depthwise, residual additions: BCNet's ``skip_list``) are one arch
position. A layer's op key depends on its own widths and its input's, so the covering specs hold every
combination of each layer's width and its input layer's (:func:`~zoo.spaces.base.covering_rows`).
Every width space can also take explicit per-position choices (``widths``, e.g. CafeNet's FLOPs-sensitive
bins, :mod:`search.width.cafenet`) and a ``num_classes``; MobileNetV2 has BCNet's CIFAR ``layout`` too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from common.errors import InputError
from zoo.efficientnet import B0_FULL_WIDTH, B0_ROWS, efficientnet_b0_width_spec
from zoo.hgcnet import hgcnet_spec
from zoo.mobilenetv2 import FULL_WIDTH as MBV2_FULL_WIDTH
from zoo.mobilenetv2 import CIFAR_ROWS, IMAGENET_ROWS, MBV2_SETTINGS, mobilenetv2_width_spec
from zoo.resnet import FULL_WIDTH as RESNET50_FULL_WIDTH
from zoo.resnet import RESNET50_STAGES, resnet50_width_spec
from zoo.spec import AnySpec, make_divisible
from zoo.widths import StageRow

from .base import Arch, GeneSpace, InputSize

# BCNet's width granularity: 20 ratios 0.05, 0.10, ..., 1.00 (every "20list" config, papers.md §3.6).
BCNET_FRACTIONS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 21))


def scaled_width(full: int, fraction: float, divisor: int = 1) -> int:
    """A fraction of a full width, as BCNet's lists round it: ``floor(full × fraction)``, at least 1.

    BCNet's search-time masks keep ``int(C × p)`` channels (papers.md §3.3; e.g. 30 of 32 at p = 0.95 in
    ``zoo.mobilenetv2.BCNET_IMAGENET``), so its widths are not multiples of 8. With ``divisor > 1``, a
    width whose full width is a multiple of ``divisor`` is rounded down to a multiple of it (at least
    ``divisor``), for devices that prefer aligned channels.
    """
    if full < 1 or not 0.0 < fraction <= 1.0 or divisor < 1:
        raise InputError(f"scaled_width: need full >= 1, 0 < fraction <= 1 and divisor >= 1, "
                         f"got full={full}, fraction={fraction}, divisor={divisor}")
    width = max(1, math.floor(full * fraction + 1e-9))
    if divisor > 1 and full % divisor == 0:
        width = max(divisor, width // divisor * divisor)
    return width


def _tie_groups(n: int, ties: Iterable[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    """Union-find: entries ``0..n-1`` grouped by the ties, each group ascending, groups by first entry."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for group in ties:
        for e in group[1:]:
            parent[find(e)] = find(group[0])
    groups: dict[int, list[int]] = {}
    for e in range(n):
        groups.setdefault(find(e), []).append(e)
    return tuple(sorted(tuple(g) for g in groups.values()))


def mobile_width_layout(rows: Sequence[StageRow], full: Sequence[int]
                        ) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """(ties, scopes) of a BCNet MobileNet-format width list (see :mod:`zoo.widths`), in list entries.

    Ties: stem = block-0 depthwise, expand = depthwise of each block, and a block's output = its input
    where the full network adds a residual (stride 1, equal full widths): BCNet's ``skip_list``.
    Scopes: the entries each op's key depends on: its input width, hidden width and output width.
    """
    ties: list[tuple[int, ...]] = [(0, 1)]
    scopes: list[tuple[int, ...]] = [(0,), (0, 2)]  # stem; block 0 (depthwise at the stem width → entry 2)
    if rows[0].stride == 1 and full[0] == full[2]:
        ties.append((0, 2))
    prev, pos = 2, 3
    for row in rows[1:]:
        for i in range(row.n):
            ties.append((pos, pos + 1))
            if (row.stride if i == 0 else 1) == 1 and full[prev] == full[pos + 2]:
                ties.append((prev, pos + 2))
            scopes.append((prev, pos, pos + 2))
            prev, pos = pos + 2, pos + 3
    scopes += [(prev, pos), (pos,)]  # head conv, classifier
    return tuple(ties), tuple(scopes)


def resnet50_width_layout() -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """(ties, scopes) of BCNet's 53-entry ResNet-50 list: a stage's conv3 and downsample widths are one width."""
    ties: list[tuple[int, ...]] = []
    scopes: list[tuple[int, ...]] = [(0,)]  # stem conv and its max pool
    prev, pos = 0, 1
    for n, _stride in RESNET50_STAGES:
        group = []
        for i in range(n):
            scopes.append((prev, pos, pos + 1, pos + 2))
            group.append(pos + 2)
            prev, pos = pos + 2, pos + 3
            if i == 0:
                group.append(pos)
                pos += 1
        ties.append(tuple(group))
    scopes.append((prev,))  # classifier
    return tuple(ties), tuple(scopes)


def _explicit_widths(cls: str, widths: Sequence[Sequence[int]], full: Sequence[int | None],
                     multiple: int) -> tuple[tuple[int, ...], ...]:
    """Explicit per-position choices, sorted and deduplicated; ``ValueError`` names the first bad position."""
    if len(widths) != len(full):
        raise InputError(f"{cls}.widths needs one tuple of widths per arch position ({len(full)}), got {len(widths)}")
    out = []
    for i, (allowed, top) in enumerate(zip(widths, full)):
        values = tuple(sorted(set(allowed)))
        bad = [w for w in values if isinstance(w, bool) or not isinstance(w, int) or w < 1
               or (top is not None and w > top) or w % multiple]
        if not values or bad:
            limit = f" and at most the full width {top}" if top is not None else ""
            raise InputError(f"{cls}.widths[{i}] = {tuple(allowed)!r}: widths must be positive ints{limit}, "
                             f"multiples of {multiple}")
        out.append(values)
    return tuple(out)


@dataclass(frozen=True)
class _WidthSpace(GeneSpace):
    """A BCNet-style width space: every tied group of a width list takes one fraction of its full width.

    Arch: one width (int) per tied group, in the order of the group's first list entry; choices are the
    distinct :func:`scaled_width` values of ``fractions``, or, when ``widths`` is given, exactly those
    widths per position (each between 1 and the position's full width; ``fractions`` and ``divisor`` are
    then unused). A layer's key depends on its own widths and its input's, so the covering specs hold
    every combination of adjacent groups (:func:`covering_rows`). ``resolution`` defaults to the layout's
    input size (224 for ``"imagenet"``, 32 for ``"cifar"``); ``num_classes`` to the family's.
    """

    fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    divisor: int = 1
    resolution: int | None = None
    num_classes: int | None = None
    widths: tuple[tuple[int, ...], ...] | None = None
    layout: str = "imagenet"
    # Derived once from the fields (every sample, check and to_spec reads them).
    _groups: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)
    _choices: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cls = type(self).__name__
        if not self.fractions or any(not 0.0 < f <= 1.0 for f in self.fractions):
            raise InputError(f"{cls}.fractions must be in (0, 1], got {self.fractions!r}")
        if self.layout not in self._layouts():
            raise InputError(f"{cls}.layout must be one of {', '.join(map(repr, self._layouts()))}, got {self.layout!r}")
        if self.divisor < 1 or (self.resolution is not None and self.resolution < 32):
            raise InputError(f"{cls}: need divisor >= 1 and resolution >= 32, "
                             f"got divisor={self.divisor}, resolution={self.resolution}")
        if self.num_classes is not None and self.num_classes < 0:
            raise InputError(f"{cls}.num_classes must be >= 0, got {self.num_classes}")
        full = self._full()
        groups = _tie_groups(len(full), self._layout()[0])
        for g in groups:
            if len({full[e] for e in g}) != 1:
                raise InputError(f"{self.name}: tied entries {g} have different full widths {[full[e] for e in g]}")
        if self.widths is None:
            choices = tuple(tuple(sorted({scaled_width(full[g[0]], f, self.divisor) for f in self.fractions}))
                            for g in groups)
        else:
            choices = _explicit_widths(cls, self.widths, [full[g[0]] for g in groups], 1)
        object.__setattr__(self, "_groups", groups)
        object.__setattr__(self, "_choices", choices)

    def _layouts(self) -> tuple[str, ...]:
        return ("imagenet",)

    def layouts(self) -> tuple[str, ...]:
        """The input layouts this space offers (its ``layout`` field takes any of them)."""
        return self._layouts()

    def input_size(self) -> InputSize:
        """The (C, H, W) the space's networks run at."""
        size = self.resolution if self.resolution is not None else (32 if self.layout == "cifar" else 224)
        return (3, size, size)

    def _full(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _layout(self) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
        raise NotImplementedError

    def _build_list(self, channels: list[int]) -> AnySpec:
        raise NotImplementedError

    def tied_entries(self) -> tuple[tuple[int, ...], ...]:
        """The width-list entries of each arch position (one group per position, singletons included)."""
        return self._groups

    def choices(self) -> tuple[tuple[int, ...], ...]:
        return self._choices

    def _scopes(self) -> list[tuple[int, ...]]:
        gene = {e: i for i, g in enumerate(self.tied_entries()) for e in g}
        _, scopes = self._layout()
        return [tuple(sorted({gene[e] for e in scope})) for scope in scopes]

    def width_list(self, arch: Arch) -> tuple[int, ...]:
        """The full BCNet width list of ``arch`` (what the zoo's ``*_width_spec`` builders take)."""
        arch = self.check(arch)
        channels = [0] * len(self._full())
        for width, group in zip(arch, self.tied_entries()):
            for e in group:
                channels[e] = width
        return tuple(channels)

    def _build(self, arch: Arch) -> tuple[AnySpec, InputSize]:
        return self._build_list(list(self.width_list(arch))), self.input_size()


@dataclass(frozen=True)
class MobileNetV2WidthSpace(_WidthSpace):
    """BCNet's MobileNetV2 width space (52-entry list, 25 tied groups), ImageNet or BCNet's CIFAR layout.

    The CIFAR layout (``layout="cifar"``: 32×32, stem stride 1, strides (1,1,1,2,1,2,1), 10 classes) has
    the same list and ties: a stride does not change which widths a residual adds.
    """

    name: str = field(default="mobilenetv2_width", init=False)

    def _layouts(self) -> tuple[str, ...]:
        return ("imagenet", "cifar")

    def _full(self) -> tuple[int, ...]:
        return MBV2_FULL_WIDTH

    def _layout(self) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
        return mobile_width_layout(CIFAR_ROWS if self.layout == "cifar" else IMAGENET_ROWS, MBV2_FULL_WIDTH)

    def _build_list(self, channels: list[int]) -> AnySpec:
        return mobilenetv2_width_spec(channels, self.layout, self.num_classes)


@dataclass(frozen=True)
class EfficientNetB0WidthSpace(_WidthSpace):
    """EfficientNet-B0's widths in BCNet's MobileNet list format (49 entries), as :mod:`zoo.efficientnet`."""

    name: str = field(default="efficientnet_b0_width", init=False)

    def _full(self) -> tuple[int, ...]:
        return B0_FULL_WIDTH

    def _layout(self) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
        return mobile_width_layout(B0_ROWS, B0_FULL_WIDTH)

    def _build_list(self, channels: list[int]) -> AnySpec:
        return efficientnet_b0_width_spec(channels, 1000 if self.num_classes is None else self.num_classes)


@dataclass(frozen=True)
class ResNet50WidthSpace(_WidthSpace):
    """BCNet's ResNet-50 width space (53-entry list: stem, per bottleneck conv1/conv2, one width per stage)."""

    name: str = field(default="resnet50_width", init=False)

    def _full(self) -> tuple[int, ...]:
        return RESNET50_FULL_WIDTH

    def _layout(self) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
        return resnet50_width_layout()

    def _build_list(self, channels: list[int]) -> AnySpec:
        return resnet50_width_spec(channels, 1000 if self.num_classes is None else self.num_classes)


def _identity_shortcuts(spec: AnySpec) -> list[bool]:
    """For every block of ``spec`` in order, whether it adds an identity shortcut (stride 1, equal widths)."""
    chs, out = spec.stem.out_chs, []
    for stage in spec.stages:
        for block in stage:
            out.append(block.residual and block.stride == 1 and chs == block.out_chs)
            chs = block.out_chs
    return out


@dataclass(frozen=True)
class HGCNetWidthSpace(GeneSpace):
    """HGCNet (:mod:`zoo.hgcnet`) with a searched width per MobileNetV2 row, stem and head.

    Design (the paper's own search space is not retrievable, papers.md §2.3): the family's layout with a
    width multiplier chosen independently for the stem, each of the 7 (t, c, n, s) rows and the head, from
    ``multipliers`` (default the family's 0.5/1/1.5/2). Widths follow ``hgcnet_spec``: ``make_divisible(c ×
    m, 8)``, head ``make_divisible(1280 × max(1, m), 8)``. One width per row keeps the residual-tied
    blocks of a row equal, and multiples of 8 keep every hierarchical group conv divisible by ``groups``
    (hidden widths are ``t ×`` a multiple of 8), which is why ``groups`` must divide 8. Choosing the same
    multiplier everywhere gives ``hgcnet_spec(m)`` exactly. Arch: 9 widths (stem, rows 1..7, head).
    ``widths`` replaces the multipliers' choices by explicit widths per position (each a multiple of
    ``groups``, e.g. CafeNet's FLOPs-sensitive bins); ``num_classes`` defaults to the layout's.
    """

    multipliers: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    groups: int = 4
    layout: str = "imagenet"
    num_classes: int | None = None
    widths: tuple[tuple[int, ...], ...] | None = None
    name: str = field(default="hgcnet_width", init=False)

    def __post_init__(self) -> None:
        if not self.multipliers or any(m <= 0 for m in self.multipliers):
            raise InputError(f"HGCNetWidthSpace.multipliers must be positive, got {self.multipliers!r}")
        if self.groups < 1 or 8 % self.groups:
            raise InputError(f"HGCNetWidthSpace.groups={self.groups}: widths are multiples of 8, so groups "
                             f"must divide 8 (1, 2, 4 or 8)")
        if self.layout not in self.layouts():
            raise InputError(f"HGCNetWidthSpace.layout must be 'imagenet' or 'cifar', got {self.layout!r}")
        if self.num_classes is not None and self.num_classes < 0:
            raise InputError(f"HGCNetWidthSpace.num_classes must be >= 0, got {self.num_classes}")
        if self.widths is not None:
            _explicit_widths("HGCNetWidthSpace", self.widths, [None] * (len(MBV2_SETTINGS) + 2), self.groups)

    def layouts(self) -> tuple[str, ...]:
        """The input layouts this space offers (its ``layout`` field takes any of them)."""
        return ("imagenet", "cifar")

    def choices(self) -> tuple[tuple[int, ...], ...]:
        if self.widths is not None:
            return tuple(tuple(sorted(set(w))) for w in self.widths)
        bases = [32] + [c for _, c, _, _ in MBV2_SETTINGS]
        genes = [tuple(sorted({make_divisible(b * m, 8) for m in self.multipliers})) for b in bases]
        head = tuple(sorted({make_divisible(1280 * max(1.0, m), 8) for m in self.multipliers}))
        return tuple(genes) + (head,)

    def _scopes(self) -> list[tuple[int, ...]]:
        rows = len(MBV2_SETTINGS)
        scopes: list[tuple[int, ...]] = [(0,)]
        for r in range(1, rows + 1):
            scopes += [(r - 1, r), (r,)]  # a row's first block reads the previous row's width
        return scopes + [(rows, rows + 1), (rows + 1,)]  # head conv, classifier

    def _build(self, arch: Arch) -> tuple[AnySpec, InputSize]:
        base = hgcnet_spec(1.0, self.layout, self.groups, num_classes=self.num_classes)
        row_of_block = iter([r for r, (_, _, n, _) in enumerate(MBV2_SETTINGS) for _ in range(n)])
        # A block keeps the family's shortcut pattern (identity exactly where the full network has one), even
        # where the chosen widths of two rows happen to match.
        has_identity = iter(_identity_shortcuts(base))
        stages = tuple(tuple(dataclasses.replace(b, out_chs=arch[1 + next(row_of_block)], residual=next(has_identity))
                             for b in stage) for stage in base.stages)
        spec = base.replace(stem=dataclasses.replace(base.stem, out_chs=arch[0]), stages=stages, head_chs=arch[-1])
        size = 32 if self.layout == "cifar" else 224
        return spec, (3, size, size)
