"""CafeNet's locally free weight sharing: base + free channels, FLOPs-sensitive bins, min-min training.

Paper: Su et al., "Locally Free Weight Sharing for Network Width Search", ICLR 2021 (arXiv:2102.05258).
No code is public and only the abstract and a review could be read (papers.md §5), so the details below
are the most faithful design we could make; the [R] items of papers.md §5.3 are assumptions:

* **Bins.** A layer's channels are grouped into bins and a width is a number of bins ``k``. Bins are
  FLOPs-sensitive [V: "bin sizes set adaptively from each layer's FLOPs contribution"; the rule is R]:
  each arch position's bin size is inversely proportional to its per-channel MACs, so a bin costs about
  the same everywhere. Per-channel MACs of position ``g`` is the walker's slope
  ``(MACs(full) − MACs(full with g at its narrowest base choice)) / (C_g − narrowest)``; the bin cost
  ``T`` is set so that positions have ``target_bins`` (20, BCNet's granularity) bins on average; then
  ``B_g = clamp(round(C_g · slope_g / T), min_bins, max_bins)`` bins of ``C_g // B_g`` channels (a
  multiple of the layer's group count, for HGCNet), the last bin taking the remainder. The space's
  choices are the bin edges: widths ``s_g, 2·s_g, …, C_g`` (:func:`flops_sensitive_bins`).
* **Locally free placement.** Width ``k`` bins with offset ``r`` (default 1, the paper's Fig. 1) keeps
  the leftmost ``k − r`` bins as *base* and ``r`` *free* bins chosen in the local free zone of the ``2r``
  bins straddling position ``k`` (bins ``k − r … k + r − 1``, 0-based, clipped to the layer); with
  ``k < r`` the base is empty and ``k`` bins are free. Placements are per arch position, so tensors
  that a residual adds keep the same channels; tensors whose width derives from another (HGCNet's hidden
  width, an SE reduce width) follow their base's bins scaled, or keep their leftmost channels.
* **Min-min optimisation** [V]: for a sampled width, the sub-networks of several placements are
  evaluated on the batch (without gradients, training-mode BatchNorm whose statistics are not kept) and
  the one with the smallest loss is trained. All ``(2r choose r)^positions`` placements cannot be tried,
  so ``train_candidates`` (default 2) distinct ones are drawn uniformly per step [R].
* **Scoring** [R]: a width is scored by its best placement: ``score_candidates`` placements (drawn from
  an RNG seeded by the search seed and the arch, so the score is deterministic) are each scored
  (BN recalibration, validation accuracy) and the best counts; the search is the same evolution as
  BCNet's, without the prior (uniform sampling), under MACs and/or latency budgets.
* No full-network step is specified for CafeNet; ``full_every`` adds one every n steps (0: never).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from common.errors import InputError
import zoo
from zoo.spaces import Arch, HGCNetWidthSpace

from search.steps import StepLike, global_mean, resolve_supernet
from .supernet import Interval, WidthSpace, WidthSupernet


@dataclass(frozen=True)
class CafeNetConfig:
    """CafeNet's hyper-parameters (see the module docstring for which are assumptions).

    Attributes:
        offset: ``r``, free bins per width (the local free zone has ``2r`` bins).
        train_candidates: placements compared per training step (min-min).
        score_candidates: placements scored per width in the search (its best counts).
        full_every: train the full network every this many steps (0: never).
        seed: seeds the per-arch placements drawn for scoring.
        target_bins: bins per arch position on average (BCNet's 20-step granularity).
        min_bins: fewest bins of a searchable position.
        max_bins: most bins of a position.
    """

    offset: int = 1
    train_candidates: int = 2
    score_candidates: int = 2
    full_every: int = 0
    seed: int = 0
    target_bins: int = 20
    min_bins: int = 2
    max_bins: int = 64

    def __post_init__(self) -> None:
        if self.offset < 1 or self.train_candidates < 1 or self.score_candidates < 1 or self.full_every < 0:
            raise InputError(f"CafeNetConfig: need offset, train_candidates, score_candidates >= 1 and "
                             f"full_every >= 0, got {self}")
        if not 1 <= self.min_bins <= self.max_bins or self.target_bins < 1:
            raise InputError(f"CafeNetConfig: need 1 <= min_bins <= max_bins and target_bins >= 1, got "
                             f"min_bins={self.min_bins}, max_bins={self.max_bins}, target_bins={self.target_bins}")


@dataclass(frozen=True)
class BinLayout:
    """Per arch position, the bin edges in channels (``edges[g] = (0, e_1, …, C_g)``) and the space they define.

    ``space`` is the base space with these widths as its choices (``widths=``): its ``choices()[g]`` are
    ``edges[g][1:]``.
    """

    edges: tuple[tuple[int, ...], ...]
    space: WidthSpace
    per_channel_macs: tuple[float, ...] = ()

    def bins(self, gene: int, width: int) -> int:
        """How many bins width ``width`` of position ``gene`` is."""
        try:
            return self.edges[gene].index(width)
        except ValueError:
            raise InputError(f"width {width} of position {gene} is not a bin edge {self.edges[gene][1:]}") from None

    def options(self, arch: Arch, offset: int = 1) -> list[list[tuple[int, ...]]]:
        """Per position, every bin selection of its width: base bins plus ``r`` free bins in the local zone."""
        out = []
        for g, width in enumerate(arch):
            edges = self.edges[g]
            k, n = self.bins(g, width), len(edges) - 1
            free = min(offset, k)
            base = k - free
            zone = range(base, min(n, base + 2 * offset))
            sizes = [edges[b + 1] - edges[b] for b in range(n)]
            need = width - edges[base]
            # Only selections of exactly the width's channels: the last bin may hold a remainder.
            out.append([tuple(range(base)) + combo for combo in itertools.combinations(zone, free)
                        if sum(sizes[b] for b in combo) == need])
        return out

    def placements(self, arch: Arch, offset: int, n: int, rng: random.Random) -> list[BinPlacement]:
        """Up to ``n`` distinct placements of ``arch``, each position's selection drawn uniformly."""
        options = self.options(arch, offset)
        total = 1
        for o in options:
            total *= len(o)
        out: list[BinPlacement] = []
        seen: set[tuple[tuple[int, ...], ...]] = set()
        for _ in range(20 * n):
            if len(out) == min(n, total):
                break
            pick = tuple(o[rng.randrange(len(o))] for o in options)
            if pick not in seen:
                seen.add(pick)
                out.append(BinPlacement(self.edges, pick))
        return out


@dataclass(frozen=True)
class BinPlacement:
    """A CafeNet placement: per arch position, the selected bins (indices into ``edges``)."""

    edges: tuple[tuple[int, ...], ...]
    bins: tuple[tuple[int, ...], ...]

    @property
    def derived_side(self) -> str:
        return "left"

    def intervals(self, gene: int, full: int, width: int) -> tuple[Interval, ...]:
        edges = self.edges[gene]
        per = edges[-1] // full  # the slot's groups: edges are in channels, intervals per group
        out: list[Interval] = []
        for b in self.bins[gene]:
            a, z = edges[b] // per, edges[b + 1] // per
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], z)
            else:
                out.append((a, z))
        return tuple(out)

    def describe(self) -> dict[str, Any]:
        return {"kind": "bins", "bins": [list(b) for b in self.bins]}


def _unit(space: WidthSpace) -> int:
    return space.groups if isinstance(space, HGCNetWidthSpace) else 1


def flops_sensitive_bins(space: WidthSpace, config: CafeNetConfig = CafeNetConfig()) -> BinLayout:
    """CafeNet's FLOPs-sensitive bins of ``space`` (see the module docstring for the rule).

    Uses ``config.target_bins``, ``min_bins`` and ``max_bins``; per-channel MACs come from the walker.
    """
    target_bins, min_bins, max_bins = config.target_bins, config.min_bins, config.max_bins
    choices = space.choices()
    full = tuple(max(c) for c in choices)
    full_macs = zoo.count(*space.to_spec(full)).macs
    unit = _unit(space)
    slopes: list[float] = []
    for g, allowed in enumerate(choices):
        low = min(allowed)
        if low == full[g]:
            slopes.append(0.0)
            continue
        arch = full[:g] + (low,) + full[g + 1:]
        slopes.append((full_macs - zoo.count(*space.to_spec(arch)).macs) / (full[g] - low))
    costs = [s * c for s, c in zip(slopes, full)]
    searchable = [c for c, allowed in zip(costs, choices) if len(allowed) > 1 and c > 0]
    per_bin = (sum(searchable) / len(searchable) / target_bins) if searchable else 1.0
    edges = []
    for g, c in enumerate(costs):
        most = max(1, min(max_bins, full[g] // unit))
        n = 1 if len(choices[g]) == 1 else max(min(min_bins, most), min(most, round(c / per_bin) if c > 0 else 1))
        size = max(unit, full[g] // n // unit * unit)
        n = full[g] // size
        edges.append(tuple(b * size for b in range(n)) + (full[g],))
    derived = dataclasses.replace(space, widths=tuple(e[1:] for e in edges))
    return BinLayout(tuple(edges), derived, tuple(slopes))


class CafeNetTrainer:
    """CafeNet's min-min training step over a supernet of a :func:`flops_sensitive_bins` space."""

    def __init__(self, supernet: WidthSupernet, layout: BinLayout, config: CafeNetConfig = CafeNetConfig()) -> None:
        if supernet.space != layout.space:
            raise InputError("CafeNetTrainer: the supernet must be built on the bin layout's space (layout.space)")
        self.supernet = supernet
        self.layout = layout
        self.config = config

    def step_fn(self, model: nn.Module, images: Tensor, targets: Tensor, ctx: StepLike) -> dict[str, float]:
        """Sample a width, keep the placement with the smallest loss on this batch, train it."""
        sup = resolve_supernet(model, self.supernet)
        cfg = self.config
        if cfg.full_every and (ctx.step + 1) % cfg.full_every == 0:
            loss = ctx.criterion(sup(images), targets)
            loss.backward()
            return {"loss": float(loss.detach()), "candidates": 1.0, "loss_spread": 0.0, "width": 1.0}
        arch = sup.space.sample(ctx.rng)
        candidates = self.layout.placements(arch, cfg.offset, cfg.train_candidates, ctx.rng)
        losses = []
        if len(candidates) > 1:
            with torch.no_grad():
                for p in candidates:
                    losses.append(float(ctx.criterion(sup.forward_subnet(images, arch, p, update_stats=False),
                                                      targets)))
            # Every process must train the same placement: compare the losses averaged over processes.
            mean = global_mean(ctx, {str(i): v for i, v in enumerate(losses)})
            best = min(range(len(candidates)), key=lambda i: (mean[str(i)], i))
        else:
            best = 0
        loss = ctx.criterion(sup.forward_subnet(images, arch, candidates[best]), targets)
        loss.backward()
        spread = (max(losses) - min(losses)) if losses else 0.0
        width = sum(w / max(c) for w, c in zip(arch, sup.space.choices())) / len(arch)
        return {"loss": float(loss.detach()), "candidates": float(len(candidates)), "loss_spread": spread,
                "width": width}

    def state_dict(self) -> dict[str, Any]:
        return {"edges": [list(e) for e in self.layout.edges], "offset": self.config.offset}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if [list(e) for e in self.layout.edges] != [list(e) for e in state["edges"]]:
            raise InputError("CafeNetTrainer: the saved state was made with other bins; rebuild the layout "
                             "with the same space and bin settings")


def score_placements(supernet: WidthSupernet, layout: BinLayout, config: CafeNetConfig) -> Callable[[Arch], list[BinPlacement]]:
    """The placements a width is scored with: drawn from an RNG seeded by ``config.seed`` and the arch."""

    def placements(arch: Arch) -> list[BinPlacement]:
        seed = zlib.crc32(json.dumps([config.seed, list(arch)]).encode())
        return layout.placements(arch, config.offset, config.score_candidates, random.Random(seed))

    return placements


def best_placement_scores(supernet: WidthSupernet, arch: Arch, placements: Sequence[BinPlacement],
                          score: Callable[[nn.Module], float]) -> list[float]:
    """``score`` of the standalone sub-network of every placement of ``arch``."""
    return [float(score(supernet.subnet(arch, p))) for p in placements]


__all__ = ["BinLayout", "BinPlacement", "CafeNetConfig", "CafeNetTrainer", "best_placement_scores",
           "flops_sensitive_bins", "score_placements"]
