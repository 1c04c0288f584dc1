"""Helpers of the engine's step functions shared by every supernet method (BCNet, CafeNet, MCT-NAS): the
context a step reads, the supernet a step was given, and losses averaged over processes under torchrun.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from torch import Tensor, nn

from common.errors import InputError

SupernetT = TypeVar("SupernetT", bound=nn.Module)


class StepLike(Protocol):
    """What the training steps read from the engine's ``StepContext`` (tests pass a small stand-in)."""

    step: int
    rng: random.Random
    criterion: Callable[[Tensor, Tensor], Tensor]


def global_mean(ctx: Any, values: Mapping[str, float]) -> dict[str, float]:
    """``ctx.global_mean(values)`` when the context averages over processes, else ``values`` as floats."""
    reduce = getattr(ctx, "global_mean", None)
    return dict(reduce(values)) if reduce is not None else {k: float(v) for k, v in values.items()}


def resolve_supernet(model: nn.Module, supernet: SupernetT) -> SupernetT:
    """The supernet a step was given: the trainer's own (possibly wrapped, e.g. ``model.module``). Any supernet
    with a ``space`` (width supernets, MCT-NAS' one-shot supernet)."""
    inner = getattr(model, "module", model)
    if inner is not supernet:
        raise InputError(f"the step function was built for {supernet.space.name}'s supernet but got a "
                         f"{type(inner).__name__}; pass the same {type(supernet).__name__} to the engine")
    return supernet
