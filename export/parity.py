"""What every exporter's verification shares: the input-size check, the eager PyTorch reference, and the
float64 noise-floor rule.

The rule: a network whose own fp32 forward is not reproducible to ``atol`` (deep random-init cell networks
drift ~1e-4 from a float64 run of the same weights) cannot be held to ``atol`` against fp32 eager. An artefact
that misses ``atol`` is then compared with a float64 eager run of the same input, and passes only if it is
within ``atol`` of that exact reference or no further from it than ``factor`` × PyTorch fp32's own distance.
ONNX and ExecuTorch exports apply the same rule, so both formats are held to one standard.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from common.errors import InputError
from common.images import MAX_IMAGE_SIDE, check_image_side, check_input_size  # noqa: F401 (re-exported)
from export.errors import ExportError


def run_eager(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The model's single output tensor for ``x`` as float32 numpy; ``ExportError`` for any other output."""
    with torch.inference_mode():
        out = model(x)
    if not isinstance(out, torch.Tensor):
        raise ExportError(f"{type(model).__name__} must return a single tensor, got {type(out).__name__}")
    return out.detach().float().cpu().numpy()


def float64_distances(model64: nn.Module, x: torch.Tensor, got: np.ndarray,
                      expected: np.ndarray) -> tuple[float, float]:
    """(artefact vs float64 eager, fp32 eager vs float64 eager), max abs, for the input ``x``."""
    with torch.inference_mode():
        exact = model64(x.double()).cpu().numpy()
    artefact_err = float(np.max(np.abs(got.astype(np.float64) - exact), initial=0.0))
    eager_err = float(np.max(np.abs(expected.astype(np.float64) - exact), initial=0.0))
    return artefact_err, eager_err


def within_noise_floor(artefact_err: float, eager_err: float, atol: float, factor: float) -> bool:
    """Whether an artefact that missed ``atol`` against fp32 eager is as exact as fp32 eager itself allows."""
    return artefact_err <= atol or artefact_err <= factor * eager_err


def noise_floor_detail(diff: float, artefact_err: float, eager_err: float, atol: float, factor: float) -> str:
    """The one-line reason a noise-floor check failed."""
    return (f"max abs diff {diff:.3g} exceeds atol {atol:.3g}, and against a float64 run it is "
            f"{artefact_err:.3g} where PyTorch fp32 is {eager_err:.3g} (allowed: {factor:g}x that)")


def check_model(model: object) -> nn.Module:
    """``model`` itself if it is an ``nn.Module``; ``TypeError`` naming its type otherwise."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block (exporters trace inference), restored to its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_metadata(metadata: Mapping[str, str] | None, reserved: tuple[str, ...] = ("mzoo.",),
                   reserved_by: str = "the exporter") -> dict[str, str]:
    """A str -> str copy of the caller's metadata; keys starting with a ``reserved`` prefix are refused."""
    props = dict(metadata or {})
    for key, value in props.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata entries must be str -> str, got {key!r}: {type(value).__name__}")
        if key.startswith(reserved):
            raise InputError(f"metadata key {key!r} is reserved: it is written by {reserved_by}")
    return props


def run_batched(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int) -> np.ndarray:
    """``run`` over ``images`` in batches of exactly ``batch_size`` (a file with a static batch), the last one padded
    with zeros whose outputs are dropped."""
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), dtype=chunk.dtype)])
        out.append(np.asarray(run(np.ascontiguousarray(chunk)))[:batch_size - pad])
    return np.concatenate(out).astype(np.float32, copy=False)
