"""BCNet's supernet training: bilateral (left + right) sub-networks, the complementary cycle, and the loss records.

Paper: Su et al., "BCNet: Searching for Network Width with Bilaterally Coupled Network", CVPR 2021
(arXiv:2105.10533); code facts from xiusu/BCNetV2 (papers.md §3.3–3.5). A width is trained and scored
through two sub-networks of the same widths: the leftmost channels (L) and the rightmost ones (R, the left
mask reversed), so every channel takes part in as many widths as every other. One training step
(:meth:`BCNetTrainer.step_fn`, the engine's ``step_fn(model, images, targets, ctx)`` shape) forwards L and
R on the same batch and back-propagates half of each loss (gradients accumulate; the engine steps once).
The schedule is the CVPR code's stochastic complementary training (``Equal_train: True``, papers.md
§3.4): step ≡ 0 (mod 3) samples one width per arch position uniformly; step ≡ 1 trains the complement
(new L = NOT previous R and new R = NOT previous L, i.e. width ``C − c`` on both sides, so over the pair
every channel is used once per side); step ≡ 2 trains the full network. ``schedule="alternate"`` is the
code's default (``Equal_train: False``): sampled pair, full network, alternating. ``sides=("left",)`` is the
unilateral baseline BCNet argues against (AutoSlim/TAS/MetaPruning: a width is its leftmost channels only),
with everything else equal, so that a comparison isolates the bilateral coupling.

:class:`LossRecords` keeps, for every (arch position, width choice), the ``k = 100`` smallest training
losses observed while that position had that width (``Efficient_topk``, papers.md §3.5); their means are
what the prior (:mod:`search.width.prior`) is fitted to. Assumed where the code was not explicit:

* the recorded loss of a step is the mean of its L and R losses (averaged over processes), and only
  sampled and complementary steps are recorded, never the full-network step, whose losses would all
  land on the widest choices;
* the space's widths are a finite list, so a complement ``C − c`` that is not a choice becomes the
  smallest choice ``>= C − c`` (it still covers every channel the previous pair left out), and the
  complement of the full width (nothing left out) is the smallest choice.

Architectures are drawn from the engine's ``ctx.rng`` (seeded from the run's seed and the step), so all
processes agree and a resumed run continues exactly; the trainer's own state (the previous sample, the
records) travels in checkpoints through :meth:`state_dict`.
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from common.errors import InputError
from zoo.spaces import Arch

from search.steps import StepLike, global_mean, resolve_supernet
from .supernet import LEFT, RIGHT, SidePlacement, WidthSupernet


SCHEDULES = ("complementary", "alternate")
SIDES = (("left", "right"), ("left",))  # BCNet's bilateral coupling, and the unilateral baseline
PHASES = ("random", "complement", "full")


@dataclass(frozen=True)
class BCNetConfig:
    """BCNet's training hyper-parameters (papers.md §3.4–3.5).

    Attributes:
        schedule: ``"complementary"`` (random, complement, full; the CVPR ``Equal_train`` configs) or
            ``"alternate"`` (random, full).
        record_topk: how many of the smallest losses each (position, width) record keeps (``Efficient_topk``).
        sides: ``("left", "right")`` (BCNet) or ``("left",)``, the unilateral baseline.
    """

    schedule: str = "complementary"
    record_topk: int = 100
    sides: tuple[str, ...] = ("left", "right")

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise InputError(f"BCNetConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if tuple(self.sides) not in SIDES:
            raise InputError(f"BCNetConfig.sides must be one of {SIDES}, got {self.sides!r}")
        if self.record_topk < 1:
            raise InputError(f"BCNetConfig.record_topk must be >= 1, got {self.record_topk}")


class LossRecords:
    """Per (arch position, width choice): the ``k`` smallest training losses seen with that width.

    ``state_dict`` holds only lists of floats and ints, so it travels in the engine's checkpoints.
    """

    def __init__(self, choices: Sequence[Sequence[int]], k: int = 100) -> None:
        if k < 1:
            raise InputError(f"LossRecords.k must be >= 1, got {k}")
        self.choices = tuple(tuple(c) for c in choices)
        self.k = k
        # Max-heaps (negated) of the k smallest losses per (gene, choice index).
        self._heaps: list[list[list[float]]] = [[[] for _ in c] for c in self.choices]

    def add(self, arch: Arch, loss: float) -> None:
        """Record ``loss`` for every (position, width) of ``arch``."""
        if len(arch) != len(self.choices):
            raise InputError(f"LossRecords: arch has {len(arch)} positions, the records {len(self.choices)}")
        for g, width in enumerate(arch):
            try:
                j = self.choices[g].index(width)
            except ValueError:
                raise InputError(f"LossRecords: width {width!r} is not a choice of position {g} "
                                 f"({self.choices[g]})") from None
            heap = self._heaps[g][j]
            if len(heap) < self.k:
                heapq.heappush(heap, -float(loss))
            elif -heap[0] > loss:
                heapq.heapreplace(heap, -float(loss))

    def counts(self) -> list[list[int]]:
        return [[len(h) for h in gene] for gene in self._heaps]

    def means(self) -> list[list[float | None]]:
        """``E[l][j]``: the mean of the recorded losses (``None`` where nothing was recorded yet)."""
        return [[(-sum(h) / len(h)) if h else None for h in gene] for gene in self._heaps]

    def state_dict(self) -> dict[str, Any]:
        return {"k": self.k, "choices": [list(c) for c in self.choices],
                "losses": [[sorted(-x for x in h) for h in gene] for gene in self._heaps]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        choices = tuple(tuple(int(w) for w in c) for c in state["choices"])
        if choices != self.choices or int(state["k"]) != self.k:
            raise InputError(f"LossRecords: the saved records are for other widths or k (k={state['k']}); "
                             f"this run has k={self.k} and {len(self.choices)} positions")
        self._heaps = [[[-float(x) for x in h] for h in gene] for gene in state["losses"]]
        for gene in self._heaps:
            for h in gene:
                heapq.heapify(h)


def complement(arch: Arch, choices: Sequence[Sequence[int]]) -> Arch:
    """The complementary widths of ``arch``: per position the smallest choice ``>= C − c`` (see module doc)."""
    out = []
    for width, allowed in zip(arch, choices):
        full = max(allowed)
        ordered = sorted(allowed)
        i = bisect.bisect_left(ordered, full - width)
        out.append(ordered[min(i, len(ordered) - 1)] if full - width > 0 else ordered[0])
    return tuple(out)


class BCNetTrainer:
    """BCNet's training step over a :class:`WidthSupernet` (see the module docstring).

    Register the trainer as an engine extra (it has ``state_dict``/``load_state_dict``) and pass
    :meth:`step_fn` as the engine's step function.
    """

    def __init__(self, supernet: WidthSupernet, config: BCNetConfig = BCNetConfig()) -> None:
        self.supernet = supernet
        self.config = config
        self.records = LossRecords(supernet.space.choices(), config.record_topk)
        self._previous: Arch | None = None  # the last sampled widths, for the complementary step

    def phase(self, step: int) -> str:
        """``"random"``, ``"complement"`` or ``"full"``: what step ``step`` (0-based) trains."""
        if self.config.schedule == "complementary":
            return PHASES[step % 3]
        return ("random", "full")[step % 2]

    def sample(self, rng: random.Random) -> Arch:
        """Widths drawn uniformly and independently per position (papers.md §3.4)."""
        return self.supernet.space.sample(rng)

    def step_fn(self, model: nn.Module, images: Tensor, targets: Tensor, ctx: StepLike) -> dict[str, float]:
        """One BCNet step: forward(s) and backward(s); the engine zeroes, averages, clips and steps."""
        sup = resolve_supernet(model, self.supernet)
        phase = self.phase(ctx.step)
        if phase == "full":
            logits = sup(images)
            loss = ctx.criterion(logits, targets)
            loss.backward()
            value = float(loss.detach())
            return {"loss": value, "loss_left": value, "loss_right": value, "phase": 2.0, "width": 1.0}
        if phase == "complement" and self._previous is not None:
            arch = complement(self._previous, sup.space.choices())
        else:
            arch = self.sample(ctx.rng)
        self._previous = arch
        placements = placements_of(self.config.sides)
        losses = {}
        for placement in placements:
            loss = ctx.criterion(sup.forward_subnet(images, arch, placement), targets)
            # The mean over the sides; gradients accumulate before the one optimizer step.
            (loss / len(placements)).backward()
            losses[placement.side] = float(loss.detach())
        mean = global_mean(ctx, losses)
        self.records.add(arch, sum(mean.values()) / len(mean))
        width = sum(w / max(c) for w, c in zip(arch, sup.space.choices())) / len(arch)
        right = losses.get("right", losses["left"])
        return {"loss": sum(losses.values()) / len(losses), "loss_left": losses["left"], "loss_right": right,
                "phase": float(PHASES.index(phase)), "width": width}

    def _config_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"schedule": self.config.schedule, "record_topk": self.config.record_topk}
        if tuple(self.config.sides) != SIDES[0]:  # states written before the unilateral option lack the field
            state["sides"] = list(self.config.sides)
        return state

    def state_dict(self) -> dict[str, Any]:
        return {"previous": list(self._previous) if self._previous is not None else None,
                "records": self.records.state_dict(), "config": self._config_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = dict(state["config"])
        if saved != self._config_state():
            raise InputError(f"BCNetTrainer: the saved state was made with config {saved}, this run has "
                             f"{self.config}")
        self.records.load_state_dict(state["records"])
        prev = state["previous"]
        self._previous = tuple(int(w) for w in prev) if prev is not None else None


def placements_of(sides: Sequence[str]) -> tuple[SidePlacement, ...]:
    """The placements of ``sides`` (``("left", "right")`` or ``("left",)``)."""
    return tuple(LEFT if side == "left" else RIGHT for side in sides)


def bilateral_scores(supernet: WidthSupernet, arch: Arch, score: Callable[[nn.Module], float]) -> dict[str, float]:
    """``{"left": s_L, "right": s_R}``: ``score`` of the standalone L and R sub-networks of ``arch``."""
    return {p.side: float(score(supernet.subnet(arch, p))) for p in (LEFT, RIGHT)}


__all__ = ["BCNetConfig", "BCNetTrainer", "LossRecords", "PHASES", "SCHEDULES", "SIDES", "StepLike",
           "bilateral_scores", "complement", "placements_of"]
