"""DAGGER's gates: which convolutions produce which channels (:class:`GateLayout`), the Dagger module that maps
the pretrained weights to per-filter gates, the gated network and the joint training step (:class:`DaggerStep`).
See :mod:`search.dagger` for the method and what was designed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import InputError
import zoo
from zoo.spaces import HGCNetWidthSpace
from search.width.supernet import WidthSpace, WidthSupernet


PENALTIES = ("abs", "square")


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
