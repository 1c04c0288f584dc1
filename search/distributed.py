"""Multi-process training launched by ``torchrun``: the process group and the few collectives the trainer uses.

Owns reading torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), starting the default process group (gloo on CPU, NCCL on CUDA) and ending it, and the
collectives: broadcasting a module and picklable state from rank 0, gathering objects, averaging
gradients and metrics, and reconciling buffers. Without a torchrun environment (or with ``WORLD_SIZE=1``)
nothing is initialised and every collective is a no-op, so single-process code runs unchanged.

Why an explicit all-reduce of gradients rather than ``DistributedDataParallel``: a search step is not
"one forward, one backward". BCNet runs two forward/backward passes (left and right sub-networks) before
one optimizer step, DARTS also backpropagates a validation loss into architecture parameters inside the
step, and a single-path supernet touches only some parameters in a step. DDP reduces inside the backward
pass, so every extra backward would need ``no_sync()`` from the step function, unused parameters need
``find_unused_parameters=True`` (a graph walk per forward) and a parameter reached twice in one backward
breaks its hooks. Reducing once, after the step function returned, is correct for any number of passes;
parameters that no rank touched are left out (their gradient stays ``None``, so SGD neither decays nor
moves them, as in a single process), which for a single-path supernet sends far less than DDP would.
The cost is that communication does not overlap the backward pass, which matters little at supernet
sizes and not at all on CPU. Buffers are not synchronised on every forward as DDP does: the trainer
averages BatchNorm running statistics across ranks (and broadcasts other buffers from rank 0) before it
evaluates or saves, which gives the same statistics as averaging them at every step, since they are
linear in the batch statistics.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from common.errors import InputError

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "all_reduce_sum",
    "average_gradients",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "env_info",
    "gather_objects",
    "init_distributed",
    "is_active",
    "shutdown",
    "sync_buffers",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank among ``world_size`` processes and its rank on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise InputError(f"environment variable {name}={text!r} is not an integer") from None


def env_info(environ: Mapping[str, str] | None = None) -> DistInfo:
    """The rank layout torchrun put in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    With none of them set this is a single process, rank 0 of 1. Raises ``ValueError`` naming the
    variable if one is malformed, out of range, or if ``MASTER_ADDR``/``MASTER_PORT`` is missing for
    more than one process.
    """
    env = os.environ if environ is None else environ
    info = DistInfo(_env_int(env, "RANK", 0), _env_int(env, "WORLD_SIZE", 1), _env_int(env, "LOCAL_RANK", 0))
    if info.world_size < 1:
        raise InputError(f"environment variable WORLD_SIZE={info.world_size} must be >= 1")
    if not 0 <= info.rank < info.world_size:
        raise InputError(f"environment variable RANK={info.rank} is not in 0..{info.world_size - 1}")
    if info.local_rank < 0:
        raise InputError(f"environment variable LOCAL_RANK={info.local_rank} must be >= 0")
    if info.distributed:
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not env.get(name):
                raise InputError(f"environment variable {name} is not set but WORLD_SIZE={info.world_size}; "
                                 f"launch with torchrun")
    return info


def is_active() -> bool:
    """Whether a default process group with more than one process exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the default process group torchrun describes (gloo for a CPU ``device``, NCCL for CUDA).

    Returns the layout. A group the caller already initialised is used as it is; with one process
    nothing is initialised. For CUDA the caller picks ``cuda:LOCAL_RANK`` (see ``engine.select_device``).
    """
    if dist.is_available() and dist.is_initialized():
        env = env_info()
        return DistInfo(dist.get_rank(), dist.get_world_size(), env.local_rank)
    info = env_info()
    if not info.distributed:
        return info
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={info.world_size} but this torch build has no torch.distributed")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size)
    return info


def shutdown() -> None:
    """Destroy the default process group if one exists (end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_active():
        dist.barrier()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (as DDP does at wrap time)."""
    if not is_active():
        return
    with torch.no_grad():
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            dist.broadcast(tensor.data, src=src)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (``obj`` itself with one process)."""
    if not is_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` with one process)."""
    if not is_active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(values: Sequence[float], device: torch.device) -> list[float]:
    """The mean over ranks of each value (float64; every rank must pass the same number of values)."""
    if not is_active() or not values:
        return [float(v) for v in values]
    buffer = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(buffer)
    return (buffer / dist.get_world_size()).tolist()


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """The sum over ranks of each value (float64; every rank must pass the same number of values)."""
    if not is_active() or not values:
        return [float(v) for v in values]
    buffer = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(buffer)
    return buffer.tolist()


def average_gradients(params: Iterable[torch.Tensor], extra: Sequence[float] = (),
                      device: torch.device | None = None) -> list[float]:
    """Average ``params``' gradients over ranks in place; return the mean over ranks of ``extra``.

    A rank whose parameter has no gradient counts it as zero; a parameter that has no gradient on any
    rank keeps ``None``. This is the gradient of the mean loss over the global batch when every rank's
    loss is a mean over its equal-sized batch. One float64 all-reduce carries the "has a gradient"
    flags and ``extra`` (e.g. the step's metrics), then one flat all-reduce per (device, dtype) carries
    the gradients that exist somewhere. Every rank must pass the same parameters in the same order.
    """
    unique: dict[int, torch.Tensor] = {}
    for p in params:
        unique.setdefault(id(p), p)
    tensors = list(unique.values())
    if not is_active():
        return [float(v) for v in extra]
    world = dist.get_world_size()
    where = device if device is not None else (tensors[0].device if tensors else torch.device("cpu"))
    meta = torch.tensor([float(p.grad is not None) for p in tensors] + [float(v) for v in extra],
                        dtype=torch.float64, device=where)
    dist.all_reduce(meta)
    has_grad = meta[:len(tensors)].tolist()
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for p, flag in zip(tensors, has_grad):
        if flag > 0:
            groups.setdefault((p.device, p.dtype), []).append(p)
    for (dev, dtype), members in groups.items():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in members])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for p in members:
            n = p.numel()
            chunk = flat[offset:offset + n].view_as(p)
            if p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)
            offset += n
    return (meta[len(tensors):] / world).tolist()


def sync_buffers(module: nn.Module, src: int = 0) -> None:
    """Average normalisation layers' running mean/var over ranks; broadcast every other buffer from ``src``.

    Integer buffers (``num_batches_tracked``) are equal on every rank and are broadcast.
    """
    if not is_active():
        return
    world = dist.get_world_size()
    with torch.no_grad():
        for sub in module.modules():
            for name, buffer in sub.named_buffers(recurse=False):
                if buffer is None:
                    continue
                if isinstance(sub, _NormBase) and name in ("running_mean", "running_var") \
                        and buffer.is_floating_point():
                    dist.all_reduce(buffer)
                    buffer /= world
                else:
                    dist.broadcast(buffer, src=src)
