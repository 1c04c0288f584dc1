"""DAGGER: data-agnostic filter gating (papers.md §6), and pruning a trained network to a registered channel list.

Owns the gate layout of a prunable network (which convs produce each width and which BatchNorms each gate
multiplies), the :class:`Dagger` module (weights in, per-filter gates out), :class:`DaggerNetwork` (a trained
zoo model run with its gates, plus the differentiable MACs of the gated network), the joint training step
(:class:`DaggerStep`: cross-entropy + λ·R, R the distance of the soft MACs to the target), the selection of
filters to keep at a target MACs (:func:`select_channels`, also used with L1-norm and uniform scores by the
baselines), the pruned zoo model with inherited weights (:func:`prune`), and the end-to-end
:func:`run_dagger` with its result in the width searches' three-file layout (``spec.json``, ``weights.pth``,
``report.json``: :class:`search.result.SearchResult`).

Structure comes from the width spaces, so a pruned network is a channel list the zoo registers:
MobileNetV2 (BCNet's 52-entry list, CIFAR layout), ResNet-50 (53-entry list; at 32×32 it keeps its ImageNet
layout, which is acceptable for tests and benchmarks only) and HGCNet (one width per MobileNetV2 row, stem
and head, :class:`~zoo.spaces.HGCNetWidthSpace`). Widths tied by the network are one gene and share one
gate vector: residual additions, depthwise = expand, and for HGCNet a row's hidden widths, which are ``t ×``
its input width (hidden channel ``j`` of a group goes with input channel ``j // t``, the width supernet's
rule). :class:`~search.width.supernet.WidthSupernet` supplies the slicing plan, the extraction of the kept
filters' weights, and its exact MACs model: the MACs of every conv are a product of at most two widths, so
the network's MACs are a polynomial of degree ≤ 2 in each width, read off the walker-tested pairwise cost
at three widths per gene and interpolated (Lagrange) at the soft widths Σ gates. At 0/1 gates this equals
:func:`zoo.count` of the pruned spec exactly (tested), so R is the walker's MACs, not a second counter.

Verified mechanism [V]: the Dagger maps the pretrained weights to per-filter gates, pruning follows the
gates, an explicit FLOPs regulariser drives the gated network to the target. Recalled or designed here [R]:
one head per producing conv (two linear layers on each filter's weights, normalised by the layer's weight
std, summed over a tied group's producers, plus a learnt bias per filter started at ``init_logit`` so training
starts from the pretrained function); the sigmoid gate multiplies the BatchNorm output channel-wise (before
the activation); the Dagger reads the weights detached (the network learns from the task only, the
Dagger from both losses); R = |F(g)/F_target − 1| (or squared); the network and the Dagger are trained
jointly, the network by the engine's SGD and the Dagger by Adam (its per-filter gradients are tiny, so a
scale-free optimizer; DARTS does the same for its architecture parameters). Pruning keeps the
highest-gated filters under one global ranking until the MACs of the pruned network are at most the target
(within :attr:`DaggerConfig.tolerance` below it); a grouped slot (HGC) keeps the same positions in every
group, ranked by the mean gate over the groups; the kept gates are folded into their BatchNorms' affine
parameters, so for MobileNetV2 and ResNet-50 the pruned model computes exactly the gated network with the
removed filters' gates at 0 (tested). For HGCNet that is not exact: HGC's hierarchical fusion reads a
group's conv output before its BatchNorm and gate.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from common.errors import InputError
from search import budget
import zoo
from search.data import EpochSampler, SeededDataset
from search.engine import (TrainConfig, Trainer, cross_entropy_step, evaluate, recalibrate_bn, seed_everything,
                           select_device)
from zoo.spaces import Arch, HGCNetWidthSpace, MobileNetV2WidthSpace, ResNet50WidthSpace
from search.result import SearchResult
from search.width.supernet import WidthSpace, WidthSupernet

PENALTIES = ("abs", "square")
SCORES = ("dagger", "l1", "uniform")

__all__ = ["DaggerConfig", "DaggerNetwork", "DaggerStep", "Dagger", "GateLayout", "KeepPlacement", "PENALTIES",
           "PRUNABLE", "Pruned", "Selection", "finetune", "gate_scores", "l1_scores", "parse_macs", "prunable_space",
           "prune", "pretrain", "run_dagger", "select_channels", "train_dagger", "uniform_scores"]

# Prunable networks: their width space (the full arch is the zoo model) and the channel multiple a pruned
# width keeps by default (HGCNet: multiples of 8, so every group conv of 2, 4 or 8 groups divides them).
PRUNABLE: dict[str, str] = {"mobilenetv2_cifar": "MobileNetV2 1.0, BCNet's CIFAR layout (bcnet_mobilenetv2_cifar_100)",
                            "resnet50": "ResNet-50 (bcnet_resnet50_100) with 10 classes, ImageNet layout at 32×32",
                            "hgcnet_cifar": "HGCNet 1.0×, CIFAR layout (hgcnet_1x_cifar)"}


def prunable_space(name: str, num_classes: int = 10) -> WidthSpace:
    """The width space whose full network is the prunable model ``name`` (one of :data:`PRUNABLE`)."""
    if name == "mobilenetv2_cifar":
        return MobileNetV2WidthSpace(fractions=(1.0,), layout="cifar", num_classes=num_classes)
    if name == "resnet50":
        return ResNet50WidthSpace(fractions=(1.0,), resolution=32, num_classes=num_classes)
    if name == "hgcnet_cifar":
        return HGCNetWidthSpace(multipliers=(1.0,), layout="cifar", num_classes=num_classes)
    raise InputError(f"unknown prunable model {name!r}; known: {', '.join(PRUNABLE)}")


def parse_macs(text: str, full_macs: int) -> int:
    """A pruning target: ``"50%"`` of ``full_macs`` or a count below it (:func:`search.budget.parse_macs`)."""
    return budget.parse_macs(text, full_macs, below_full=True)


@dataclass(frozen=True)
class DaggerConfig:
    """DAGGER's hyper-parameters ([R]/designed, see the module docstring).

    Attributes:
        hidden: width of each head's hidden layer.
        init_logit: every gate starts at sigmoid(init_logit) (3.0: 0.95).
        lam: weight λ of the MACs regulariser R.
        penalty: ``"abs"`` (R = |F/F_target − 1|) or ``"square"``.
        dagger_lr: Adam learning rate of the Dagger (its gradients are tiny per channel, ~MACs of one filter over
            the target, so a scale-free optimizer, as DARTS uses for architecture parameters).
        divisor: pruned widths are multiples of this (None: 8 for HGCNet, else 1).
        tolerance: the pruned network's MACs lie in [(1 − tolerance)·target, target].
    """

    hidden: int = 16
    init_logit: float = 3.0
    lam: float = 2.0
    penalty: str = "abs"
    dagger_lr: float = 0.05
    divisor: int | None = None
    tolerance: float = 0.03

    def __post_init__(self) -> None:
        if self.penalty not in PENALTIES:
            raise InputError(f"DaggerConfig.penalty must be one of {', '.join(PENALTIES)}, got {self.penalty!r}")
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1:
            raise InputError(f"DaggerConfig.hidden must be an int >= 1, got {self.hidden!r}")
        for name in ("lam", "dagger_lr", "tolerance"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(f"DaggerConfig.{name} must be a number >= 0, got {value!r}")
        if not 0 < self.tolerance < 1:
            raise InputError(f"DaggerConfig.tolerance must be in (0, 1), got {self.tolerance!r}")
        if self.divisor is not None and (isinstance(self.divisor, bool) or not isinstance(self.divisor, int)
                                         or self.divisor < 1):
            raise InputError(f"DaggerConfig.divisor must be None or an int >= 1, got {self.divisor!r}")

    def divisor_for(self, space: WidthSpace) -> int:
        if self.divisor is not None:
            return self.divisor
        return 8 if isinstance(space, HGCNetWidthSpace) else 1


# --- structure ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Producer:
    """A conv whose output channels ``[start, stop)`` of gene ``gene``'s full width it computes."""

    module: str
    gene: int
    start: int
    stop: int


@dataclass(frozen=True)
class GatedNorm:
    """A BatchNorm whose output is multiplied by gene ``gene``'s gate, each channel repeated ``repeat`` times per
    group (``repeat > 1``: an HGCNet hidden width, ``repeat ×`` its gene's width)."""

    module: str
    gene: int
    repeat: int = 1


@dataclass(frozen=True)
class GateLayout:
    """Per gene (tied width) its full width and groups; the producing convs; the gated BatchNorms."""

    full: tuple[int, ...]
    groups: tuple[int, ...]
    producers: tuple[Producer, ...]
    norms: tuple[GatedNorm, ...]

    @classmethod
    def from_supernet(cls, sup: WidthSupernet) -> GateLayout:
        genes = len(sup.full_arch)
        modules = dict(sup.net.named_modules())
        producers: list[Producer] = []
        norms: list[GatedNorm] = []
        for name, rule in sup.rules.items():
            module = name.rsplit(".", 1)[0]
            if not name.endswith(".weight") or not rule.dims or rule.dims[0] is None:
                continue
            parts, kind = rule.dims[0], modules.get(module)
            if isinstance(kind, nn.Conv2d):
                if len(parts) != 1:
                    raise InputError(f"DAGGER: conv {module!r} writes a concatenation of widths {parts}")
                slot, group = parts[0]
                s = sup.slots[slot]
                if s.gene is None:
                    continue  # writes a derived width (an HGC hidden width): gated through its base gene
                per = s.full // s.groups
                start, stop = (0, s.full) if group is None else (group * per, (group + 1) * per)
                producers.append(Producer(module, s.gene, start, stop))
            elif isinstance(kind, nn.BatchNorm2d):
                slot = parts[0][0]
                s = sup.slots[slot]
                if s.gene is not None:
                    norms.append(GatedNorm(module, s.gene))
                    continue
                base = sup.slots[s.base] if s.base is not None else None
                t = s.scale
                if (base is None or base.gene is None or t is None or not float(t).is_integer()
                        or base.groups != s.groups or s.full != int(t) * base.full):
                    raise InputError(f"DAGGER: BatchNorm {module!r} normalises a width that is not a whole multiple "
                                     f"of one gene's (e.g. an SE reduction); not supported")
                norms.append(GatedNorm(module, base.gene, int(t)))
        slots = [sup.slots[g] for g in range(genes)]
        layout = cls(tuple(s.full for s in slots), tuple(s.groups for s in slots), tuple(producers), tuple(norms))
        missing = sorted(set(range(genes)) - {p.gene for p in producers})
        if missing:
            raise InputError(f"DAGGER: genes {missing} of {sup.space.name} have no producing conv")
        return layout

    def expand(self, norm: GatedNorm, gate: Tensor) -> Tensor:
        """The gate of ``norm``'s channels from its gene's gate (repeated per group for derived widths)."""
        if norm.repeat == 1:
            return gate
        groups = self.groups[norm.gene]
        return gate.view(groups, -1).repeat_interleave(norm.repeat, dim=1).reshape(-1)


# --- the Dagger module ----------------------------------------------------------------------------------------------


class Dagger(nn.Module):
    """Per-filter gates from the network's weights: one two-layer head per producing conv (``heads.<k>``) applied
    to each filter (flattened, divided by the layer's weight std), summed over a gene's producers, plus a bias
    per filter (``bias.<g>``: one vector per gene, started at ``init_logit``); gate = sigmoid(logit)."""

    def __init__(self, layout: GateLayout, weights: Mapping[str, Tensor], hidden: int = 16,
                 init_logit: float = 3.0) -> None:
        super().__init__()
        self.layout = layout
        heads = []
        for p in layout.producers:
            fan = weights[p.module][0].numel()
            head = nn.Sequential(nn.Linear(fan, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
            nn.init.normal_(head[2].weight, 0.0, 0.01)  # start near the bias: gates ≈ sigmoid(init_logit)
            nn.init.zeros_(head[2].bias)
            heads.append(head)
        self.heads = nn.ModuleList(heads)
        self.bias = nn.ParameterList(nn.Parameter(torch.full((f,), float(init_logit))) for f in layout.full)

    def forward(self, weights: Mapping[str, Tensor]) -> list[Tensor]:
        """The gates of every gene (each of its full width), from ``weights`` (conv name → weight tensor)."""
        logits = [b for b in self.bias]
        for p, head in zip(self.layout.producers, self.heads):
            w = weights[p.module].detach()  # data agnostic: the gates read the weights, they do not move them
            features = w.flatten(1) / (w.std() + 1e-8)
            out = head(features).squeeze(1)
            logits[p.gene] = logits[p.gene] + F.pad(out, (p.start, self.layout.full[p.gene] - p.stop))
        return [torch.sigmoid(z) for z in logits]


class _Structure:
    """The width supernet over a three-width grid per gene (a plain holder, not a submodule: its network is the
    DaggerNetwork's own ``net``, registered once)."""

    def __init__(self, supernet: WidthSupernet, grid: Sequence[tuple[int, int, int]]) -> None:
        self.supernet = supernet
        self.grid = torch.tensor(grid, dtype=torch.float64)
        self.cost = supernet.macs_model().stacked(3, torch.float64)


def _grid(full: int, multiple: int) -> tuple[int, int, int]:
    """Three distinct widths in [1, full], multiples of ``multiple``, full included (where MACs are sampled)."""
    steps = full // multiple
    if steps < 3:
        raise InputError(f"DAGGER needs 3 distinct widths per gene; full width {full} has only {steps} multiples "
                         f"of {multiple}")
    return (multiple, max(2, steps // 2) * multiple, full)


def _lagrange(w: Tensor, grid: Tensor) -> Tensor:
    """Per gene, the Lagrange basis at the three grid widths evaluated at ``w`` (genes × 3)."""
    w = w.to(grid.dtype)
    basis = []
    for j in range(3):
        term = torch.ones_like(w)
        for k in range(3):
            if k != j:
                term = term * (w - grid[:, k]) / (grid[:, j] - grid[:, k])
        basis.append(term)
    return torch.stack(basis, dim=1)


class DaggerNetwork(nn.Module):
    """A prunable zoo model (``net``, the full network of ``space``) run with the Dagger's gates (``dagger``).

    ``forward(x)`` is the gated network; :meth:`gates` the current gates; :meth:`macs` the MACs of the network
    at given soft widths (exact at integer widths); :meth:`soft_macs` at the gates' sums. ``weights`` (a state
    dict of the full zoo model, e.g. the pretrained one) initialise ``net``.
    """

    def __init__(self, space: WidthSpace, weights: Mapping[str, Tensor] | None = None,
                 config: DaggerConfig = DaggerConfig()) -> None:
        super().__init__()
        self.space, self.config = space, config
        full_arch = tuple(max(c) for c in space.choices())
        multiple = space.groups if isinstance(space, HGCNetWidthSpace) else 1
        grid = [_grid(f, multiple) for f in full_arch]
        sup = WidthSupernet(dataclasses.replace(space, widths=tuple(tuple(g) for g in grid)))
        if weights is not None:
            sup.net.load_state_dict(weights)
        self.net = sup.net
        self._structure = _Structure(sup, grid)
        self.layout = GateLayout.from_supernet(sup)
        self.dagger = Dagger(self.layout, self.conv_weights(), config.hidden, config.init_logit)
        self.full_macs = int(zoo.count(*space.to_spec(full_arch)).macs)

    @property
    def supernet(self) -> WidthSupernet:
        return self._structure.supernet

    def conv_weights(self) -> dict[str, Tensor]:
        modules = dict(self.net.named_modules())
        return {p.module: modules[p.module].weight for p in self.layout.producers}

    def gates(self) -> list[Tensor]:
        return self.dagger(self.conv_weights())

    def macs(self, widths: Tensor) -> Tensor:
        """MACs of the network at (soft) widths per gene: exact for integer widths, differentiable in them (CPU,
        float64)."""
        return self._structure.cost.expected(_lagrange(widths.double().cpu(), self._structure.grid))

    def soft_macs(self, gates: Sequence[Tensor]) -> Tensor:
        return self.macs(torch.stack([g.sum() for g in gates]).double().cpu())

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_gated(x, self.gates())

    def forward_gated(self, x: Tensor, gates: Sequence[Tensor]) -> Tensor:
        """The network with ``gates`` multiplied onto its BatchNorm outputs."""
        with _gated(self.net, self.layout, gates):
            return self.net(x)


@contextmanager
def _gated(net: nn.Module, layout: GateLayout, gates: Sequence[Tensor]) -> Iterator[None]:
    modules = dict(net.named_modules())
    handles = []
    for norm in layout.norms:
        gate = layout.expand(norm, gates[norm.gene]).view(1, -1, 1, 1)
        handles.append(modules[norm.module].register_forward_hook(lambda m, i, out, g=gate: out * g))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class DaggerStep:
    """The joint step: cross-entropy of the gated network + λ·R(soft MACs / target), one backward; the Dagger's
    Adam steps here (an engine extra: its state travels in checkpoints), the engine steps the network's SGD."""

    def __init__(self, network: DaggerNetwork, target_macs: int) -> None:
        if not 0 < target_macs < network.full_macs:
            raise InputError(f"target MACs {target_macs} must be between 0 and the full {network.full_macs}")
        self.network, self.target = network, float(target_macs)
        self.optimizer = torch.optim.Adam(network.dagger.parameters(), lr=network.config.dagger_lr)

    def regulariser(self, macs: Tensor) -> Tensor:
        gap = macs / self.target - 1.0
        return gap.abs() if self.network.config.penalty == "abs" else gap * gap

    def step_fn(self, model: nn.Module, images: Tensor, targets: Tensor, ctx: Any) -> dict[str, float]:
        net = self.network
        if getattr(model, "module", model) is not net:
            raise InputError("the DAGGER step was built for another network; pass the same DaggerNetwork to the engine")
        self.optimizer.zero_grad(set_to_none=True)
        gates = net.gates()
        logits = net.forward_gated(images, gates)
        ce = ctx.criterion(logits, targets)
        macs = net.soft_macs(gates)
        reg = self.regulariser(macs)
        loss = ce + net.config.lam * reg.to(ce.dtype).to(ce.device)
        loss.backward()
        params = list(net.dagger.parameters())
        if hasattr(ctx, "average_gradients"):  # several processes: every rank steps the same Dagger
            ctx.average_gradients(params)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": float(loss.detach()), "ce": float(ce.detach()), "reg": float(reg.detach()),
                "macs_ratio": float(macs.detach()) / net.full_macs,
                "gate_mean": float(torch.cat([g.detach() for g in gates]).mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "target": self.target}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if float(state["target"]) != self.target:
            raise InputError(f"DaggerStep: the saved state aims at {state['target']} MACs, this run at {self.target}")
        self.optimizer.load_state_dict(state["optimizer"])


# --- pruning --------------------------------------------------------------------------------------------------------


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


# --- end to end -------------------------------------------------------------------------------------------------------


def pretrain(space: WidthSpace, train_data: Dataset, config: TrainConfig, *, eval_data: Dataset | None = None,
             device: torch.device | str | None = None) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train the full network of ``space`` from scratch with the engine (the "pretrained" network DAGGER prunes)."""
    spec, _ = space.to_spec(tuple(max(c) for c in space.choices()))
    seed_everything(config.seed)  # the initial weights are a function of the seed
    model = zoo.build_model(spec)
    history = Trainer(model, config, train_data, eval_data=eval_data, device=device).fit()
    return model.eval(), history


def train_dagger(network: DaggerNetwork, train_data: Dataset, config: TrainConfig, target_macs: int, *,
                 eval_data: Dataset | None = None, checkpoint_path: str | None = None,
                 device: torch.device | str | None = None) -> list[dict[str, float]]:
    """Joint training of the network (the engine's SGD, ``config``) and the Dagger (Adam at the config's
    ``dagger_lr``) on CE + λ·R; returns the engine's history."""
    step = DaggerStep(network, target_macs)
    trainer = Trainer(network, config, train_data, eval_data=eval_data, step_fn=step.step_fn,
                      params=list(network.net.parameters()), extras={"dagger": step},
                      checkpoint_path=checkpoint_path, device=device)
    return trainer.fit()


def finetune(model: nn.Module, train_data: Dataset, config: TrainConfig, *, eval_data: Dataset | None = None,
             device: torch.device | str | None = None) -> list[dict[str, float]]:
    """Fine-tune a pruned model with the engine's cross-entropy step."""
    return Trainer(model, config, train_data, eval_data=eval_data, step_fn=cross_entropy_step, device=device).fit()


@dataclass(frozen=True)
class RunConfig:
    """An end-to-end DAGGER run: the recipes of the three trainings (``pretrain`` skipped with given weights), and
    ``bn_batches``: training batches the pruned network's BatchNorm statistics are re-estimated on before it is
    scored and fine-tuned (0: keep the full network's, which no longer fit the narrower inputs)."""

    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10))
    dagger: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=0.01))
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=0.01))
    method: DaggerConfig = field(default_factory=DaggerConfig)
    bn_batches: int = 10


def run_dagger(model_name: str, target: str | int, train_data: Dataset, val_data: Dataset,
               config: RunConfig = RunConfig(), *, weights: Mapping[str, Tensor] | None = None,
               scores: str = "dagger", num_classes: int = 10,
               device: torch.device | str | None = None) -> SearchResult:
    """Pretrain (unless ``weights``), gate and prune ``model_name`` to ``target`` MACs, fine-tune, score on ``val_data``.

    ``target`` is a MACs count or a :func:`parse_macs` string (``"50%"``, ``"40M"``). ``scores`` picks the filter
    ranking: ``"dagger"`` (trains the Dagger), ``"l1"`` or ``"uniform"`` (the baselines; no gate training).
    ``num_classes`` is the data's (the classifier's width).
    """
    if scores not in SCORES:
        raise InputError(f"unknown filter scores {scores!r}; known: {', '.join(SCORES)}")
    device = torch.device(device) if device is not None else select_device()
    space = prunable_space(model_name, num_classes)
    history: dict[str, Any] = {}
    if weights is None:
        pretrained, history["pretrain"] = pretrain(space, train_data, config.pretrain, eval_data=val_data,
                                                   device=device)
        weights = pretrained.state_dict()
    seed_everything(config.dagger.seed)  # the Dagger's initial weights
    network = DaggerNetwork(space, weights, config.method).to(device)
    loader = _eval_loader(val_data, config.finetune)
    full_top1 = evaluate(network.net, loader, device=device)[0]
    target_macs = parse_macs(target, network.full_macs) if isinstance(target, str) else int(target)
    gates = None
    if scores == "dagger":
        history["dagger"] = train_dagger(network, train_data, config.dagger, target_macs, device=device)
        with torch.no_grad():
            gates = [g.detach().cpu() for g in network.gates()]
        ranking = gate_scores(gates)
    else:
        ranking = l1_scores(network) if scores == "l1" else uniform_scores(network)
    selection = select_channels(network, ranking, target_macs)
    pruned = prune(network, selection, gates)
    pruned.model.to(device)
    if config.bn_batches:
        batches = DataLoader(SeededDataset(train_data), batch_size=config.finetune.batch_size,  # seeded augmentation
                             sampler=EpochSampler(train_data, seed=config.finetune.seed))  # type: ignore[arg-type]
        recalibrate_bn(pruned.model, batches, min(config.bn_batches, len(batches)), device=device)
    pruned_top1 = evaluate(pruned.model, loader, device=device)[0]
    history["finetune"] = finetune(pruned.model, train_data, config.finetune, eval_data=val_data, device=device)
    top1, loss = evaluate(pruned.model, loader, device=device)
    return result_of(model_name, pruned, top1, network.full_macs, history,
                     {"scores": scores, "full_top1": full_top1, "pruned_top1_before_finetune": pruned_top1,
                      "val_loss": loss, "dagger": dataclasses.asdict(config.method), "bn_batches": config.bn_batches,
                      "recipes": {k: getattr(config, k).to_dict() for k in ("pretrain", "dagger", "finetune")},
                      "gates": [g.tolist() for g in gates] if gates is not None else None})


def _eval_loader(data: Dataset, config: TrainConfig) -> DataLoader:
    return DataLoader(data, batch_size=config.eval_batch_size or config.batch_size, shuffle=False)


def result_of(model_name: str, pruned: Pruned, top1: float, full_macs: int, history: Mapping[str, Any],
              extra: Mapping[str, Any]) -> SearchResult:
    """A pruning as the width searches' result (``save`` writes spec.json, weights.pth, report.json)."""
    sel = pruned.selection
    _, size = pruned.space.to_spec(sel.widths)
    rows = [dict(r, phase=phase) for phase, rs in history.items() for r in rs]
    return SearchResult(
        "dagger", pruned.space.name, sel.widths, pruned.spec, size, pruned.macs, pruned.params, None, None, top1,
        {"kind": "kept", "kept": [list(k) for k in sel.kept]}, copy.deepcopy(pruned.model).cpu().eval(),
        {"target_macs": sel.target, "full_macs": full_macs, "ratio": pruned.macs / full_macs}, rows,
        {"model": model_name, "width_list": pruned.width_list, **dict(extra)})
