"""How every width and one-shot search scores a candidate network: top-1 and loss over a loader
(:func:`evaluate`), and BatchNorm statistics re-estimated for a sub-network of a supernet (:func:`recalibrate_bn`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm import tqdm

from common.errors import InputError
from search.distributed import all_reduce_sum, sync_buffers


def _images_of(batch: object) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch  # type: ignore[return-value]


def evaluate(model: nn.Module, loader: Iterable[Any], *, device: torch.device | str | None = None,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None, reduce: bool = False,
             progress: bool = False) -> tuple[float, float]:
    """Top-1 accuracy (percent) and mean cross-entropy of ``model`` over ``loader``'s ``(images, targets)``.

    Runs in eval mode without gradients and restores the model's mode. ``forward(images) -> logits``
    replaces ``model(images)`` (e.g. ``lambda x: model(x, arch=a)``). ``reduce=True`` sums the counts over
    ranks (each rank passing its shard, as :class:`search.data.ShardSampler` makes); with one process it
    changes nothing.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    call = forward if forward is not None else model
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        with torch.no_grad():
            for images, targets in tqdm(loader, desc="eval", leave=False, disable=not progress, file=sys.stderr):
                images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                logits = call(images)
                loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").double()
                correct += (logits.argmax(1) == targets).sum().double()
                count += targets.numel()
    finally:
        model.train(was_training)
    totals = [correct.item(), loss_sum.item(), float(count)]
    if reduce:
        totals = all_reduce_sum(totals, device)
    if totals[2] == 0:
        raise InputError("evaluate: the loader yielded no images")
    return 100.0 * totals[0] / totals[2], totals[1] / totals[2]


def recalibrate_bn(model: nn.Module, loader: Iterable[Any], batches: int, *, device: torch.device | str | None = None,
                   forward: Callable[[torch.Tensor], Any] | None = None, reduce: bool = False,
                   progress: bool = False) -> None:
    """Re-estimate every BatchNorm's running statistics on ``batches`` batches, without touching weights.

    Running statistics are reset and re-accumulated as a plain average over the batches (momentum None)
    in train mode under ``no_grad``; momentum and the model's mode are restored. This is how BCNet, SPOS
    and MCT-NAS score a sub-network of a supernet, whose shared statistics fit no single path.
    ``forward`` replaces ``model(images)``; batches may be ``(images, targets)`` or images. ``reduce=True``
    averages the statistics over ranks (equal batch counts make that the average over all batches).
    """
    if not isinstance(batches, int) or isinstance(batches, bool) or batches < 1:
        raise InputError(f"batches must be a positive int, got {batches!r}")
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return
    if hasattr(loader, "__len__") and len(loader) < batches:  # type: ignore[arg-type]
        raise InputError(f"the loader has {len(loader)} batches, "  # type: ignore[arg-type]
                         f"fewer than batches={batches}")
    device = torch.device(device) if device is not None else _model_device(model)
    call = forward if forward is not None else model
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="bn", total=batches, leave=False, disable=not progress, file=sys.stderr):
                if seen == batches:
                    break
                call(_images_of(batch).to(device, non_blocking=True))
                seen += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    if seen < batches:
        raise InputError(f"the loader yielded {seen} batches, fewer than batches={batches}")
    if reduce:
        sync_buffers(model)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
