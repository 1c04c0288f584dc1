"""DAGGER's pruning: ranking filters (by gate, by L1 norm, or uniformly), choosing the channels to keep under a
MACs target (:func:`select_channels`), folding the kept gates into BatchNorm, and the pruned network (:func:`prune`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from common.errors import InputError
import zoo
from zoo.spaces import Arch
from search.width.supernet import WidthSpace, WidthSupernet
from search.dagger.gates import DaggerNetwork


@dataclass(frozen=True)
class KeepPlacement:
    """A width-supernet placement keeping, per gene, these channel positions (per-group coordinates, sorted)."""

    kept: tuple[tuple[int, ...], ...]
    derived_side: str = "left"

    def intervals(self, gene: int, full: int, width: int) -> tuple[tuple[int, int], ...]:
        kept = self.kept[gene]
        if len(kept) != width or (kept and (kept[0] < 0 or kept[-1] >= full)):
            raise InputError(f"KeepPlacement: gene {gene} keeps {len(kept)} positions of {full}, the width needs {width}")
        runs: list[tuple[int, int]] = []
        for c in kept:
            if runs and runs[-1][1] == c:
                runs[-1] = (runs[-1][0], c + 1)
            else:
                runs.append((c, c + 1))
        return tuple(runs)


@dataclass(frozen=True)
class Selection:
    """Widths per gene and the kept positions (per group) at a MACs target, and the MACs reached."""

    widths: tuple[int, ...]
    kept: tuple[tuple[int, ...], ...]
    macs: int
    target: int


def gate_scores(gates: Sequence[Tensor]) -> list[Tensor]:
    """DAGGER's filter scores: the gates themselves."""
    return [g.detach().cpu().double() for g in gates]


def l1_scores(network: DaggerNetwork) -> list[Tensor]:
    """The data-agnostic baseline (L1-norm filter pruning): per filter the L1 norm of its weights divided by the
    mean over its layer, averaged over a tied gene's producing convs (so layers of any size, and genes with any
    number of producers, compare on one scale)."""
    weights = network.conv_weights()
    sums = [torch.zeros(f, dtype=torch.float64) for f in network.layout.full]
    counts = [torch.zeros(f, dtype=torch.float64) for f in network.layout.full]
    for p in network.layout.producers:
        l1 = weights[p.module].detach().cpu().double().abs().flatten(1).sum(1)
        sums[p.gene][p.start:p.stop] += l1 / (l1.mean() + 1e-12)
        counts[p.gene][p.start:p.stop] += 1
    return [s / c.clamp(min=1) for s, c in zip(sums, counts)]


def uniform_scores(network: DaggerNetwork) -> list[Tensor]:
    """Uniform width scaling: every gene keeps its leftmost channels, all genes shrinking together (a channel's
    score is one minus its relative position, equal across genes)."""
    out = []
    for full, groups in zip(network.layout.full, network.layout.groups):
        per = full // groups
        out.append((1.0 - torch.arange(per, dtype=torch.float64) / per).repeat(groups))
    return out


def select_channels(network: DaggerNetwork, scores: Sequence[Tensor], target_macs: int,
                    divisor: int | None = None) -> Selection:
    """The widest pruning whose MACs are at most ``target_macs``: filters removed in one global order of rising
    score (a grouped gene's positions by their mean score over its groups) until the MACs fit, then genes grown
    back one step at a time (best next filter first) while they still fit; widths are multiples of ``divisor``
    (default the config's) and at least one multiple; each gene keeps its highest-scoring positions.

    Raises ``ValueError`` when even the narrowest widths exceed the target, or the result falls more than the
    config's ``tolerance`` below it.
    """
    layout = network.layout
    divisor = divisor or network.config.divisor_for(network.space)
    local: list[Tensor] = []
    steps: list[int] = []
    for g, (full, groups) in enumerate(zip(layout.full, layout.groups)):
        per = full // groups
        step = max(1, divisor // groups) if divisor % groups == 0 else divisor
        if (step * groups) % divisor or per < step:
            raise InputError(f"gene {g}: width {full} in {groups} groups cannot take multiples of {divisor}")
        local.append(scores[g].detach().cpu().double().view(groups, per).mean(0))
        steps.append(step)
    units = sorted(((float(s), g, j) for g, s_g in enumerate(local) for j, s in enumerate(s_g.tolist())))

    def widths_after(k: int) -> list[int]:
        removed = [0] * len(local)
        for _, g, _j in units[:k]:
            removed[g] += 1
        out = []
        for g, per in enumerate(len(s) for s in local):
            kept = max(steps[g], (per - removed[g]) // steps[g] * steps[g])
            out.append(kept * layout.groups[g])
        return out

    def macs_of(widths: Sequence[int]) -> int:
        return int(round(float(network.macs(torch.tensor(widths, dtype=torch.float64)))))

    lo, hi = 0, len(units)
    if macs_of(widths_after(hi)) > target_macs:
        raise InputError(f"the MACs target {target_macs / 1e6:.2f}M is below the narrowest pruning of "
                         f"{network.space.name} ({macs_of(widths_after(hi)) / 1e6:.2f}M)")
    while lo < hi:  # the smallest k whose MACs fit (MACs never grow with k)
        mid = (lo + hi) // 2
        if macs_of(widths_after(mid)) <= target_macs:
            hi = mid
        else:
            lo = mid + 1
    widths = widths_after(lo)
    # Fill: rounding to multiples can leave room under the target; grow, one step at a time, the gene whose next
    # filter scores highest, while the MACs still fit.
    order = [torch.argsort(s_g, descending=True, stable=True) for s_g in local]
    while True:
        growable = [(float(local[g][order[g][w // layout.groups[g]]]), g) for g, w in enumerate(widths)
                    if w // layout.groups[g] + steps[g] <= len(local[g])]
        for _, g in sorted(growable, reverse=True):
            trial = list(widths)
            trial[g] += steps[g] * layout.groups[g]
            if macs_of(trial) <= target_macs:
                widths = trial
                break
        else:
            break
    macs = macs_of(widths)
    tolerance = network.config.tolerance
    if macs < (1 - tolerance) * target_macs:
        raise InputError(f"pruning {network.space.name} to multiples of {divisor} reaches {macs / 1e6:.2f}M MACs, more "
                         f"than {tolerance:.0%} below the target {target_macs / 1e6:.2f}M; use a finer divisor")
    kept = [tuple(sorted(int(i) for i in order[g][:w // layout.groups[g]])) for g, w in enumerate(widths)]
    return Selection(tuple(widths), tuple(kept), macs, int(target_macs))


def folded_state(network: DaggerNetwork, gates: Sequence[Tensor] | None) -> dict[str, Tensor]:
    """The network's state dict with each gated BatchNorm's γ and β multiplied by its gate (none: unchanged)."""
    state = {k: v.detach().clone() for k, v in network.net.state_dict().items()}
    if gates is None:
        return state
    for norm in network.layout.norms:
        gate = network.layout.expand(norm, gates[norm.gene].detach()).to(state[f"{norm.module}.weight"])
        state[f"{norm.module}.weight"] = state[f"{norm.module}.weight"] * gate
        state[f"{norm.module}.bias"] = state[f"{norm.module}.bias"] * gate
    return state


@dataclass
class Pruned:
    """A pruned network: its arch (widths per gene) in ``space``, the zoo spec, the model with inherited weights."""

    space: WidthSpace
    selection: Selection
    spec: Any
    model: nn.Module
    macs: int
    params: int

    @property
    def width_list(self) -> list[int] | None:
        lister = getattr(self.space, "width_list", None)
        return list(lister(self.selection.widths)) if lister is not None else None


def prune(network: DaggerNetwork, selection: Selection, gates: Sequence[Tensor] | None = None) -> Pruned:
    """The zoo model of ``selection`` holding the kept filters' weights (gates folded into BatchNorm, if given).

    Its MACs are the walker's (:func:`zoo.count`) and must equal the selection's (a ``RuntimeError`` otherwise).
    """
    space = network.space
    full = [max(c) for c in space.choices()]
    pruned_space = dataclasses.replace(space, widths=tuple(tuple(sorted({w, f})) for w, f in zip(selection.widths, full)))
    sup = WidthSupernet(pruned_space)
    sup.net.load_state_dict(folded_state(network, gates))
    arch: Arch = tuple(selection.widths)
    model = sup.subnet(arch, KeepPlacement(selection.kept)).eval()
    spec, size = pruned_space.to_spec(arch)
    cost = zoo.count(spec, size)
    if cost.macs != selection.macs:
        raise RuntimeError(f"the pruned {space.name} has {cost.macs} MACs by the walker but the selection computed "
                           f"{selection.macs}")
    return Pruned(pruned_space, selection, spec, model, cost.macs, cost.params)
