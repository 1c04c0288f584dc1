"""The weight-sharing width supernet: one full-width zoo model per width space, and its sub-networks.

A :class:`WidthSupernet` is the zoo model of a space's widest arch (``space.to_spec(full_arch)`` built by
:func:`zoo.build_model`). A sub-network is a width arch of the space plus a channel *placement*: which of
each layer's channels it keeps (BCNet: the leftmost or the rightmost ``c``, :data:`LEFT` / :data:`RIGHT`;
CafeNet: base plus free bins, :mod:`search.width.cafenet`). Its forward builds the sub-spec's module
skeleton on the meta device and runs it with :func:`torch.func.functional_call` on slices of the
supernet's parameters and buffers, so it computes exactly what a standalone model of the sub-spec holding
those slices computes, and gradients flow back into the shared weights. Contiguous slices are views, so
BatchNorm statistics updated in training land in the supernet; gathered slices (grouped layers, free bins)
are written back after the forward. :meth:`WidthSupernet.subnet` materialises the same slices into a
standalone zoo model that inherits the supernet's weights (the search output).

Which weights a slice takes is planned once per space from the full spec (architectures are data): every
tensor width of the network is a *slot*, either one arch position (a gene: tied widths share one slot,
so tensors a residual adds share their channels) or derived from another slot (an SE reduce width from
its base, an HGCNet hidden width ``t ×`` its input). A slot used by a grouped or hierarchical group conv
(HGCNet, :mod:`zoo.hgc`) is split into ``groups`` equal groups and a placement selects channels per group,
so every group conv of the sub-network is a group conv of the supernet's groups. Image channels and
classes are never sliced. The same plan gives :class:`PairwiseCost`: the MACs of any arch as a sum of
terms that each depend on at most two genes, which the prior (:mod:`search.width.prior`) needs to take
the expected MACs under per-gene distributions exactly (tested equal to :func:`zoo.count`, the one walker).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from common.errors import InputError
import zoo
from zoo.spaces import (Arch, EfficientNetB0WidthSpace, HGCNetWidthSpace, InputSize, MobileNetV2WidthSpace,
                           ResNet50WidthSpace)
from zoo.mbconv import hidden_chs
from zoo.mobilenetv2 import MBV2_SETTINGS
from zoo.spec import ArchSpec, SESpec

WidthSpace = MobileNetV2WidthSpace | EfficientNetB0WidthSpace | ResNet50WidthSpace | HGCNetWidthSpace
Interval = tuple[int, int]
SIDES = ("left", "right")


@runtime_checkable
class Placement(Protocol):
    """Which channels of each slot a sub-network keeps.

    ``intervals(gene, full, width)`` gives, in per-group channel coordinates ``[0, full)``, the sorted
    disjoint intervals that hold ``width`` channels of arch position ``gene``. Derived slots whose width is
    an exact multiple of their base's follow the base's intervals scaled; other derived slots take the
    ``derived_side`` (``"left"`` or ``"right"``) ``width`` channels. Placements are hashable (plans are cached).
    """

    @property
    def derived_side(self) -> str: ...

    def intervals(self, gene: int, full: int, width: int) -> tuple[Interval, ...]: ...


@dataclass(frozen=True)
class SidePlacement:
    """BCNet's placements: the leftmost (``"left"``) or the rightmost (``"right"``) channels of every layer.

    The right mask is the left mask reversed (papers.md §3.3): width ``c`` of ``C`` keeps ``[C − c, C)``.
    """

    side: str

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise InputError(f"SidePlacement.side must be 'left' or 'right', got {self.side!r}")

    @property
    def derived_side(self) -> str:
        return self.side

    def intervals(self, gene: int, full: int, width: int) -> tuple[Interval, ...]:
        return side_intervals(self.side, full, width)


LEFT = SidePlacement("left")
RIGHT = SidePlacement("right")


def side_intervals(side: str, full: int, width: int) -> tuple[Interval, ...]:
    if not 0 < width <= full:
        raise InputError(f"a width must be in 1..{full}, got {width}")
    return ((0, width),) if side == "left" else ((full - width, full),)


@dataclass(frozen=True)
class Slot:
    """One tensor width of the network: an arch position (``gene``) or derived from slot ``base``.

    Derived widths: ``int(round(base × scale))`` (an inverted residual's hidden width without an explicit
    ``mid_chs``, as :func:`zoo.mbconv.hidden_chs`) or ``se.reduced_chs`` of the base (SE reduce width).
    ``groups``: how many equal groups the channels form (the groups of the group convs that read or write it).
    """

    full: int
    groups: int = 1
    gene: int | None = None
    base: int | None = None
    scale: float | None = None
    se: SESpec | None = None

    def derive(self, base_width: int) -> int:
        if self.scale is not None:
            return int(round(base_width * self.scale))
        assert self.se is not None
        return self.se.reduced_chs(base_width, base_width)


Part = tuple[int, int | None]  # (slot, group index or None for all its channels)
Dim = tuple[Part, ...] | None  # the parts a tensor dimension concatenates; None: not sliced


@dataclass(frozen=True)
class Rule:
    """How one parameter or buffer is sliced: per leading dimension its parts (trailing dims are kept).

    ``when``: the tensor exists only when the widths of these two slots differ (an inverted residual's
    expansion conv, a ResNet shortcut conv at stride 1), as the zoo builds it.
    """

    dims: tuple[Dim, ...]
    when: tuple[int, int] | None = None


class _Planner:
    """Collects slots and slicing rules while a family walker visits the full spec."""

    def __init__(self, full_arch: Arch) -> None:
        self.slots: list[Slot] = [Slot(full=int(w), gene=g) for g, w in enumerate(full_arch)]
        self.rules: dict[str, Rule] = {}

    def derived(self, base: int, *, scale: float | None = None, se: SESpec | None = None) -> int:
        slot = Slot(full=0, base=base, scale=scale, se=se)
        self.slots.append(dataclasses.replace(slot, full=slot.derive(self.slots[base].full)))
        return len(self.slots) - 1

    def use_groups(self, slot: int, groups: int, where: str) -> None:
        current = self.slots[slot].groups
        if groups == 1 or current == groups:
            return
        if current != 1:
            raise InputError(f"width supernet: {where} splits a tensor into {groups} groups that another layer "
                             f"splits into {current}; one channel layout cannot serve both")
        if self.slots[slot].full % groups:
            raise InputError(f"width supernet: {where}: full width {self.slots[slot].full} is not divisible by "
                             f"groups={groups}")
        self.slots[slot] = dataclasses.replace(self.slots[slot], groups=groups)

    @staticmethod
    def _dim(d: int | Dim) -> Dim:
        return ((d, None),) if isinstance(d, int) else d

    def conv(self, name: str, out: int | Dim, inp: int | Dim, when: tuple[int, int] | None = None) -> None:
        self.rules[f"{name}.weight"] = Rule((self._dim(out), self._dim(inp)), when)

    def depthwise(self, name: str, slot: int) -> None:
        self.rules[f"{name}.weight"] = Rule((self._dim(slot),))

    def bn(self, name: str, slot: int, when: tuple[int, int] | None = None) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            self.rules[f"{name}.{p}"] = Rule((self._dim(slot),), when)
        self.rules[f"{name}.num_batches_tracked"] = Rule((), when)

    def linear(self, name: str, inp: int) -> None:
        self.rules[f"{name}.weight"] = Rule((None, self._dim(inp)))
        self.rules[f"{name}.bias"] = Rule(())

    def pointwise(self, name: str, out: int, inp: int, kind: str, groups: int,
                  when: tuple[int, int] | None = None) -> None:
        if kind == "ir":
            self.conv(name, out, inp, when)
            return
        # (Hierarchical) group conv, zoo.hgc: conv i maps input group i (+ output group i-1) to output group i.
        self.use_groups(inp, groups, name)
        self.use_groups(out, groups, name)
        for i in range(groups):
            extra: tuple[Part, ...] = ((out, i - 1),) if kind == "hgc_ir" and i else ()
            self.conv(f"{name}.convs.{i}", ((out, i),), ((inp, i),) + extra, when)

    def squeeze_excite(self, name: str, se: SESpec, base: int, mid: int) -> None:
        reduced = self.derived(base, se=se)
        self.conv(f"{name}.conv_reduce", reduced, mid)
        self.rules[f"{name}.conv_reduce.bias"] = Rule((self._dim(reduced),))
        self.conv(f"{name}.conv_expand", mid, reduced)
        self.rules[f"{name}.conv_expand.bias"] = Rule((self._dim(mid),))


def _plan_mobile(p: _Planner, spec: ArchSpec, stem: int, blocks: Sequence[tuple[int | None, int]], head: int) -> None:
    """Slots and rules of a :class:`zoo.specnet.SpecNet` (timm MobileNet names)."""
    if spec.pre_logits_chs is not None:
        raise InputError(f"width supernet: post-pool pre-logits convs ({spec.family}) are not supported")
    p.conv("conv_stem", stem, None)
    p.bn("bn1", stem)
    cur, k = stem, 0
    for s, stage in enumerate(spec.stages):
        for i, b in enumerate(stage):
            pre, (mid_gene, out) = f"blocks.{s}.{i}", blocks[k]
            k += 1
            if b.kind == "ds":
                p.depthwise(f"{pre}.conv_dw", cur)
                p.bn(f"{pre}.bn1", cur)
                if b.se:
                    p.squeeze_excite(f"{pre}.se", b.se, cur, cur)
                p.conv(f"{pre}.conv_pw", out, cur)
                p.bn(f"{pre}.bn2", out)
            elif b.kind in ("ir", "hgc_ir", "gc_ir"):
                # The zoo keeps an expansion conv wherever the full network has one (zoo.mbconv.has_expansion),
                # whatever the searched widths, so a sub-network has exactly the full network's modules.
                groups = 1 if b.kind == "ir" else b.groups
                if mid_gene is not None:
                    mid = mid_gene
                elif hidden_chs(p.slots[cur].full, b) == p.slots[cur].full:
                    mid = cur  # no expansion: the depthwise conv runs on the block input
                else:
                    mid = p.derived(cur, scale=b.expand)
                if mid != cur:
                    p.pointwise(f"{pre}.conv_pw", mid, cur, b.kind, groups)
                    p.bn(f"{pre}.bn1", mid)
                p.depthwise(f"{pre}.conv_dw", mid)
                p.bn(f"{pre}.bn2", mid)
                if b.se:
                    p.squeeze_excite(f"{pre}.se", b.se, cur if b.se.base == "in" else mid, mid)
                p.pointwise(f"{pre}.conv_pwl", out, mid, b.kind, groups)
                p.bn(f"{pre}.bn3", out)
            else:
                raise InputError(f"width supernet: block kind {b.kind!r} at {pre} is not supported")
            cur = out
    if spec.head_chs is not None:
        p.conv("conv_head", head, cur)
        p.bn("bn2", head)
        cur = head
    if spec.num_classes:
        p.linear("classifier", cur)


def _plan_resnet(p: _Planner, spec: ArchSpec, stem: int, blocks: Sequence[tuple[int, int, int]]) -> None:
    """Slots and rules of a :class:`zoo.specnet.SpecResNet` (timm ResNet names)."""
    p.conv("conv1", stem, None)
    p.bn("bn1", stem)
    cur, k = stem, 0
    for s, stage in enumerate(spec.stages):
        for i, b in enumerate(stage):
            pre, (c1, c2, out) = f"layer{s + 1}.{i}", blocks[k]
            k += 1
            if b.kind != "bottleneck" or b.groups != 1:
                raise InputError(f"width supernet: {pre} is a {b.kind!r} block with groups={b.groups}; only "
                                 f"plain bottlenecks are supported in the resnet layout")
            p.conv(f"{pre}.conv1", c1, cur)
            p.bn(f"{pre}.bn1", c1)
            p.conv(f"{pre}.conv2", c2, c1)
            p.bn(f"{pre}.bn2", c2)
            p.conv(f"{pre}.conv3", out, c2)
            p.bn(f"{pre}.bn3", out)
            # A projection shortcut where the full network has one (the zoo keeps it when widths happen to
            # match: residual=False); an identity where it has none (tied widths keep those shapes equal).
            when = None if b.stride != 1 or not b.residual else (cur, out)
            p.conv(f"{pre}.downsample.0", out, cur, when)
            p.bn(f"{pre}.downsample.1", out, when)
            cur = out
    if spec.num_classes:
        p.linear("fc", cur)


def _plan(space: WidthSpace, spec: ArchSpec, full_arch: Arch) -> _Planner:
    """The slot plan of ``space``'s full spec: the family walker with the space's gene of every width."""
    p = _Planner(full_arch)
    if isinstance(space, HGCNetWidthSpace):
        n_rows = len(space.choices()) - 2
        row_of_block = [r for r, (_, _, n, _) in enumerate(MBV2_SETTINGS) for _ in range(n)]
        _plan_mobile(p, spec, 0, [(None, 1 + r) for r in row_of_block], n_rows + 1)
        return p
    if not isinstance(space, (MobileNetV2WidthSpace, EfficientNetB0WidthSpace, ResNet50WidthSpace)):
        raise TypeError(f"width supernet: no slot plan for space {getattr(space, 'name', space)!r} "
                        f"({type(space).__name__}); supported: mobilenetv2_width, efficientnet_b0_width, "
                        f"resnet50_width, hgcnet_width")
    gene = {e: g for g, entries in enumerate(space.tied_entries()) for e in entries}
    n_blocks = len(spec.blocks)
    if isinstance(space, ResNet50WidthSpace):
        blocks, pos = [], 1
        for stage in spec.stages:
            for i in range(len(stage)):
                blocks.append((gene[pos], gene[pos + 1], gene[pos + 2]))
                pos += 4 if i == 0 else 3
        _plan_resnet(p, spec, gene[0], blocks)
        return p
    mobile: list[tuple[int | None, int]] = [(None, gene[2])]
    mobile += [(gene[3 + 3 * j], gene[5 + 3 * j]) for j in range(n_blocks - 1)]
    _plan_mobile(p, spec, gene[0], mobile, gene[len(gene) - 1])
    return p


@dataclass(frozen=True)
class PairwiseCost:
    """A network cost as ``const + Σ_a unary[a][j_a] + Σ_(a<b) pair[a, b][j_a, j_b]`` over choice indices ``j``.

    Every conv's MACs is a product of at most two widths, each a function of one gene (and whether a conv
    exists depends on the same genes), so the MACs of a width space have this form exactly. It makes the
    expectation under independent per-gene distributions exact and differentiable (:meth:`expected`).
    """

    const: float
    unary: dict[int, np.ndarray]
    pair: dict[tuple[int, int], np.ndarray]

    def value(self, indices: Sequence[int]) -> float:
        total = self.const + sum(float(v[indices[a]]) for a, v in self.unary.items())
        return total + sum(float(m[indices[a], indices[b]]) for (a, b), m in self.pair.items())

    def expected(self, probs: Sequence[Tensor]) -> Tensor:
        """E[cost] when gene ``a`` takes choice ``j`` with probability ``probs[a][j]`` independently."""
        width = max(len(p) for p in probs)
        padded = torch.stack([torch.nn.functional.pad(p, (0, width - len(p))) for p in probs])
        return self.stacked(width, probs[0].dtype).expected(padded)

    def stacked(self, width: int, dtype: torch.dtype = torch.float64) -> StackedCost:
        """The terms as padded tensors over ``width`` choices per gene, for fast repeated expectations."""
        n = 1 + max([g for g in self.unary] + [g for ab in self.pair for g in ab], default=0)
        unary = torch.zeros(n, width, dtype=dtype)
        for a, v in self.unary.items():
            unary[a, :len(v)] = torch.as_tensor(v, dtype=dtype)
        pairs = sorted(self.pair)
        mats = torch.zeros(len(pairs), width, width, dtype=dtype)
        for k, (a, b) in enumerate(pairs):
            m = self.pair[(a, b)]
            mats[k, :m.shape[0], :m.shape[1]] = torch.as_tensor(m, dtype=dtype)
        first = torch.tensor([a for a, _ in pairs], dtype=torch.long)
        second = torch.tensor([b for _, b in pairs], dtype=torch.long)
        return StackedCost(self.const, unary, first, second, mats)


@dataclass(frozen=True)
class StackedCost:
    """:class:`PairwiseCost` as tensors: ``expected(P)`` for a (genes × width) probability matrix ``P``."""

    const: float
    unary: Tensor
    first: Tensor
    second: Tensor
    mats: Tensor

    def expected(self, probs: Tensor) -> Tensor:
        total = self.const + (probs[:self.unary.shape[0]] * self.unary).sum()
        if self.mats.shape[0]:
            total = total + torch.einsum("ki,kij,kj->", probs[self.first], self.mats, probs[self.second])
        return total


class WidthSupernet(nn.Module):
    """The full-width zoo model of ``space`` and its weight-sharing sub-networks (see the module docstring).

    ``forward(x)`` runs the full network; :meth:`forward_subnet` a sub-network; :meth:`subnet` extracts one
    as a standalone model. The full model is ``self.net`` (zoo state-dict names under ``net.``).

    Args:
        space: a width space (MobileNetV2, EfficientNet-B0, ResNet-50 or HGCNet).
        cache_size: how many sub-network skeletons and slice plans to keep (building one costs ~0.1 s).
    """

    def __init__(self, space: WidthSpace, cache_size: int = 16) -> None:
        super().__init__()
        self.space = space
        self.full_arch: Arch = tuple(max(c) for c in space.choices())
        spec, self.input_size = space.to_spec(self.full_arch)
        self.net = zoo.build_model(spec)
        plan = _plan(space, spec, self.full_arch)
        self.slots: tuple[Slot, ...] = tuple(plan.slots)
        names = set(self.net.state_dict())
        self.rules: dict[str, Rule] = {k: r for k, r in plan.rules.items() if k in names}
        missing = sorted(names - set(self.rules))
        if missing:
            raise InputError(f"width supernet for {space.name}: no slicing rule for {missing[:3]}")
        self._cache_size = max(1, cache_size)
        self._skeletons: OrderedDict[Arch, nn.Module] = OrderedDict()
        self._plans: OrderedDict[tuple, dict[str, list[tuple[int, Tensor]]]] = OrderedDict()
        self._cost: PairwiseCost | None = None

    @property
    def spec(self) -> ArchSpec:
        return self.net.arch_spec

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def spec_of(self, arch: Arch) -> tuple[ArchSpec, InputSize]:
        return self.space.to_spec(arch)

    # -- slicing -------------------------------------------------------------------------------------------

    def slot_widths(self, arch: Arch) -> list[int]:
        """The width of every slot in ``arch``."""
        arch = self.space.check(arch)
        widths = [0] * len(self.slots)
        for i, s in enumerate(self.slots):
            widths[i] = arch[s.gene] if s.gene is not None else s.derive(widths[s.base])
        return widths

    def local_indices(self, arch: Arch, placement: Placement) -> list[Tensor]:
        """Per slot, the kept channels within each of its groups (sorted, per-group coordinates)."""
        widths = self.slot_widths(arch)
        spans: list[tuple[Interval, ...]] = []
        out: list[Tensor] = []
        for i, s in enumerate(self.slots):
            if widths[i] % s.groups:
                raise InputError(f"{self.space.name}: width {widths[i]} (arch position {s.gene}) is not divisible "
                                 f"by the {s.groups} groups of its layer")
            full, width = s.full // s.groups, widths[i] // s.groups
            if s.gene is not None:
                ivs = tuple(placement.intervals(s.gene, full, width))
            else:
                b = self.slots[s.base]
                t = s.scale
                exact = (t is not None and float(t).is_integer() and b.groups == s.groups
                         and s.full == int(t) * b.full and widths[i] == int(t) * widths[s.base])
                ivs = (tuple((a * int(t), z * int(t)) for a, z in spans[s.base]) if exact
                       else side_intervals(placement.derived_side, full, width))
            _check_intervals(ivs, full, width, f"{self.space.name} arch position {s.gene} / slot {i}", placement)
            spans.append(ivs)
            out.append(torch.cat([torch.arange(a, z) for a, z in ivs]))
        return out

    def index_plan(self, arch: Arch, placement: Placement) -> dict[str, list[tuple[int, Tensor]]]:
        """For every tensor of the sub-network: ``(dim, indices into the supernet's tensor)`` per sliced dim."""
        arch = self.space.check(arch)
        device = self.net_device()
        key = (arch, placement, str(device))
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        local = self.local_indices(arch, placement)
        widths = self.slot_widths(arch)
        plan: dict[str, list[tuple[int, Tensor]]] = {}
        for name, rule in self.rules.items():
            if rule.when is not None and widths[rule.when[0]] == widths[rule.when[1]]:
                continue
            dims = []
            for d, parts in enumerate(rule.dims):
                if parts is not None:
                    dims.append((d, self._dim_index(parts, local).to(device)))
            plan[name] = dims
        self._plans[key] = plan
        if len(self._plans) > self._cache_size:
            self._plans.popitem(last=False)
        return plan

    def _dim_index(self, parts: tuple[Part, ...], local: list[Tensor]) -> Tensor:
        pieces, offset = [], 0
        for slot, group in parts:
            s = self.slots[slot]
            per_group = s.full // s.groups
            if group is None:
                pieces += [offset + g * per_group + local[slot] for g in range(s.groups)]
                offset += s.full
            else:
                pieces.append(offset + local[slot])
                offset += per_group
        return torch.cat(pieces)

    def net_device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _skeleton(self, arch: Arch) -> nn.Module:
        if arch in self._skeletons:
            self._skeletons.move_to_end(arch)
            return self._skeletons[arch]
        spec, _ = self.spec_of(arch)
        # Built on the CPU, then its tensors dropped to the meta device: functional_call supplies them all.
        # (Building under torch.device("meta") is slower: the weight init goes through Python refs there.)
        skeleton = zoo.build_model(spec).to(device="meta")
        self._skeletons[arch] = skeleton
        if len(self._skeletons) > self._cache_size:
            self._skeletons.popitem(last=False)
        return skeleton

    def sliced(self, arch: Arch, placement: Placement, *, detach: bool = False
               ) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor, str]]]:
        """The sub-network's tensors sliced from the supernet, and the gathered buffers to write back.

        Returns ``(tensors, writeback)``; ``writeback`` lists ``(full buffer, indices, name)`` for buffers
        that are copies (non-contiguous slices), which :meth:`forward_subnet` scatters back after a
        training forward. Raises ``ValueError`` when a tensor of the sub-spec has no rule or the wrong shape.
        """
        arch = self.space.check(arch)
        plan = self.index_plan(arch, placement)
        skeleton = self._skeleton(arch)
        buffers = dict(self.net.named_buffers())
        full = dict(self.net.named_parameters()) | buffers
        tensors: dict[str, Tensor] = {}
        writeback: list[tuple[Tensor, Tensor, str]] = []
        expected = dict(skeleton.named_parameters()) | dict(skeleton.named_buffers())
        for name, ref in expected.items():
            if name not in plan:
                raise InputError(f"{self.space.name}: sub-network {arch} has tensor {name!r} that the supernet "
                                 f"cannot provide")
            t = full[name].detach() if detach else full[name]
            gathered = None
            for d, idx in plan[name]:
                n = idx.numel()
                if n and int(idx[-1]) - int(idx[0]) + 1 == n:
                    t = t.narrow(d, int(idx[0]), n)
                else:
                    t = t.index_select(d, idx)
                    gathered = idx
            if tuple(t.shape) != tuple(ref.shape):
                raise InputError(f"{self.space.name}: slicing {name!r} for arch {arch} gave shape {tuple(t.shape)}, "
                                 f"the sub-network needs {tuple(ref.shape)}")
            if gathered is not None and name in buffers:
                writeback.append((full[name], gathered, name))
            tensors[name] = t
        return tensors, writeback

    def forward_subnet(self, x: Tensor, arch: Arch, placement: Placement = LEFT, *,
                       update_stats: bool = True) -> Tensor:
        """Logits of the sub-network ``(arch, placement)`` on ``x``; gradients reach the supernet's weights.

        In training mode BatchNorm updates the running statistics of the kept channels in the supernet
        (``update_stats=False`` discards those updates, e.g. for CafeNet's candidate scoring).
        """
        tensors, writeback = self.sliced(arch, placement)
        if not update_stats:
            buffers = dict(self.net.named_buffers())
            tensors = {k: (v.clone() if k in buffers else v) for k, v in tensors.items()}
            writeback = []
        skeleton = self._skeleton(self.space.check(arch))
        skeleton.train(self.training)
        out = functional_call(skeleton, tensors, (x,))
        if self.training and writeback:
            with torch.no_grad():
                for full, idx, name in writeback:
                    if full.dim():
                        full.index_copy_(0, idx, tensors[name])
        return out

    def subnet(self, arch: Arch, placement: Placement = LEFT) -> nn.Module:
        """A standalone zoo model of ``arch`` holding copies of the supernet's weights for ``placement``."""
        tensors, _ = self.sliced(arch, placement, detach=True)
        spec, _ = self.spec_of(self.space.check(arch))
        model = zoo.build_model(spec).to(self.net_device())
        model.load_state_dict(tensors, strict=True)
        return model.train(self.training)

    # -- cost ----------------------------------------------------------------------------------------------

    def macs_model(self) -> PairwiseCost:
        """The MACs of any arch of the space as a :class:`PairwiseCost` (built once)."""
        if self._cost is None:
            self._cost = _pairwise_macs(self)
        return self._cost


def _check_intervals(ivs: tuple[Interval, ...], full: int, width: int, where: str, placement: Placement) -> None:
    last, total = 0, 0
    for a, z in ivs:
        if a < last or z <= a or z > full:
            raise InputError(f"{where}: placement {placement!r} gave intervals {ivs} outside 0..{full} or unsorted")
        last, total = z, total + z - a
    if total != width:
        raise InputError(f"{where}: placement {placement!r} keeps {total} channels per group, the width needs {width}")


def _output_hw(net: nn.Module, input_size: InputSize) -> dict[str, int]:
    """Output H×W of every conv and linear of ``net``'s spec (a shape-only forward on the meta device)."""
    skeleton = zoo.build_model(net.arch_spec).to(device="meta")
    hw: dict[str, int] = {}
    handles = []
    for name, m in skeleton.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            def hook(_m: nn.Module, _i: tuple, out: Tensor, name: str = name) -> None:
                hw[name] = out.shape[-2] * out.shape[-1] if out.dim() == 4 else 1
            handles.append(m.register_forward_hook(hook))
    skeleton.eval()(torch.empty(1, *input_size, device="meta"))
    for h in handles:
        h.remove()
    return hw


def _pairwise_macs(sup: WidthSupernet) -> PairwiseCost:
    choices = sup.space.choices()
    gene_of: list[int] = []
    phi: list[np.ndarray] = []  # width of each slot for each choice of its gene
    for s in sup.slots:
        if s.gene is not None:
            gene_of.append(s.gene)
            phi.append(np.array(choices[s.gene], dtype=np.float64))
        else:
            gene_of.append(gene_of[s.base])
            phi.append(np.array([s.derive(int(w)) for w in phi[s.base]], dtype=np.float64))
    hw = _output_hw(sup.net, sup.input_size)
    modules = dict(sup.net.named_modules())
    const, unary, pair = 0.0, {}, {}
    for name, rule in sup.rules.items():
        module = name.rsplit(".", 1)[0]
        if not name.endswith(".weight") or not isinstance(modules.get(module), (nn.Conv2d, nn.Linear)):
            continue
        shape = modules[module].weight.shape
        fixed = float(hw[module])
        sums: list[list[tuple[int, float]]] = []
        for d, size in enumerate(shape):
            parts = rule.dims[d] if d < len(rule.dims) else None
            if parts is None:
                fixed *= size
            else:
                sums.append([(slot, 1.0 / sup.slots[slot].groups if g is not None else 1.0) for slot, g in parts])
        for combo in _products(sums):
            slots = [slot for slot, _ in combo]
            coef = fixed * float(np.prod([c for _, c in combo]))
            genes = sorted({gene_of[x] for x in slots + list(rule.when or ())})
            if len(genes) > 2:
                raise RuntimeError(f"{name}: a MACs term depends on genes {genes}; the pairwise form needs <= 2")
            axes = {g: i for i, g in enumerate(genes)}

            def along(x: int) -> np.ndarray:
                v = phi[x]
                return v if len(genes) == 1 else (v[:, None] if axes[gene_of[x]] == 0 else v[None, :])

            term = np.full([len(choices[g]) for g in genes] or [1], coef)
            for x in slots:
                term = term * along(x)
            if rule.when is not None:
                term = term * (along(rule.when[0]) != along(rule.when[1]))
            if not genes:
                const += float(term[0])
            elif len(genes) == 1:
                unary[genes[0]] = unary.get(genes[0], 0.0) + term
            else:
                pair[(genes[0], genes[1])] = pair.get((genes[0], genes[1]), 0.0) + term
    return PairwiseCost(const, unary, pair)


def _products(sums: list[list[tuple[int, float]]]) -> list[list[tuple[int, float]]]:
    out: list[list[tuple[int, float]]] = [[]]
    for parts in sums:
        out = [prefix + [p] for prefix in out for p in parts]
    return out
