"""Core ML export settings: owns what a conversion is asked to produce and the exact image normalisation.

Owns the deployment targets and their MIL opsets, the verification thresholds, ``CoremlExportConfig`` (how to
convert and how strictly to verify), the split of ``(pixel / 255 - mean) / std`` into an ``ImageType``
scale/bias plus an exact per-channel multiply (``image_normalization``), the ``CoremlAdapter`` module that is
actually converted, and the small rules that both :mod:`export.coreml` (the exporter) and
:mod:`export.coreml_verify` (the checks) derive from a config: the accepted input size and the output dtype.
Importing it imports no coremltools.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from common.errors import InputError

Precision = Literal["fp16", "fp32"]
Source = Literal["trace", "export"]

# Deployment targets offered, as Core ML specification versions (coremltools' AvailableTarget values): the
# ML Program backend starts at iOS15/macOS12; each later year adds opset versions.
TARGETS: dict[str, int] = {
    "iOS15": 6,
    "iOS16": 7,
    "iOS17": 8,
    "iOS18": 9,
    "macOS12": 6,
    "macOS13": 7,
    "macOS14": 8,
    "macOS15": 9,
}
# The MIL opset a function declares at each specification version (coremltools' ``_OPSET``).
OPSET_NAMES: dict[int, str] = {6: "CoreML5", 7: "CoreML6", 8: "CoreML7", 9: "CoreML8"}
# fp16 multi-array inputs/outputs exist from iOS16/macOS13; below that an fp16 program still outputs fp32.
_FP16_IO_SPEC_VERSION = 7

FP32_ATOL = 1e-3
# fp16 is gated on agreement, not elementwise atol (coremltools #2625: fp16 MobileNetV3 logits drift while
# top-1 accuracy moves by 0.02 %). Over 16 seeded images, >= 0.9 top-1 agreement tolerates one near-tie
# flip; a cosine of 0.99 still allows ~14 % relative error in a logit vector. A torch fp16 proxy (eager,
# fp16 weights and activations) on random-init zoo models gives 93.8-100 % and >= 0.9996 for hgcnet,
# nbmacro, bcnet; darts_v2_cifar (0.984) and mctnas_c (87.5 %, 0.941), whose random-init logits are
# ill-conditioned, would fail: export those as fp32 until trained weights exist.
FP16_MIN_TOP1_AGREEMENT = 0.9
FP16_MIN_COSINE = 0.99
NUMERICAL_SAMPLES = 16

CLASSIFIER_LABEL_OUTPUT = "classLabel"


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class CoremlExportConfig:
    """How to convert and how strictly to verify.

    ``minimum_deployment_target`` is one of :data:`TARGETS`. ``source`` "trace" (``torch.jit.trace``) is the
    path coremltools recommends; "export" uses ``torch.export`` + ``run_decompositions({})`` (beta there).
    ``image_input=False`` gives a float32 ``TensorType`` input that expects already-normalised tensors.
    ``class_labels`` makes a classifier: a softmax is appended and Core ML outputs ``classLabel`` (string)
    and ``classLabel_probs`` (label -> probability); their count must equal the model's number of classes.
    The numerical thresholds apply only where Core ML can run (macOS).
    """

    precision: Precision = "fp16"
    minimum_deployment_target: str = "iOS16"
    source: Source = "trace"
    image_input: bool = True
    class_labels: tuple[str, ...] | None = None
    input_name: str = "image"
    output_name: str = "logits"
    seed: int = 0
    numerical_samples: int = NUMERICAL_SAMPLES
    fp32_atol: float = FP32_ATOL
    fp16_min_top1_agreement: float = FP16_MIN_TOP1_AGREEMENT
    fp16_min_cosine: float = FP16_MIN_COSINE

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "fp32"):
            raise InputError(f"precision {self.precision!r} is not supported; choose 'fp16' or 'fp32'")
        if self.minimum_deployment_target not in TARGETS:
            raise InputError(
                f"minimum_deployment_target {self.minimum_deployment_target!r} is not supported; "
                f"choose one of {', '.join(TARGETS)}"
            )
        if self.source not in ("trace", "export"):
            raise InputError(f"source {self.source!r} is not supported; choose 'trace' or 'export'")
        if self.class_labels is not None:
            labels = self.class_labels
            if not isinstance(labels, tuple) or not labels or not all(isinstance(c, str) and c for c in labels):
                raise InputError(f"class_labels must be a non-empty tuple of non-empty str, got {labels!r}")
            if len(set(labels)) != len(labels):
                dupes = sorted({c for c in labels if labels.count(c) > 1})
                raise InputError(f"class_labels must be unique; repeated: {dupes}")
        names = {self.input_name, self.output_name, CLASSIFIER_LABEL_OUTPUT}
        if not self.input_name or not self.output_name or len(names) != 3:
            raise InputError(
                f"input_name {self.input_name!r} and output_name {self.output_name!r} must be non-empty, differ "
                f"and not be {CLASSIFIER_LABEL_OUTPUT!r}"
            )
        if self.numerical_samples < 1:
            raise InputError(f"numerical_samples must be >= 1, got {self.numerical_samples!r}")
        if not (math.isfinite(self.fp32_atol) and self.fp32_atol > 0):
            raise InputError(f"fp32_atol must be a positive finite number, got {self.fp32_atol!r}")
        for name in ("fp16_min_top1_agreement", "fp16_min_cosine"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {value!r}")

    @property
    def spec_version(self) -> int:
        """The Core ML specification version of the deployment target."""
        return TARGETS[self.minimum_deployment_target]

    @property
    def probabilities_output(self) -> str:
        """Name of the classifier's label -> probability output (coremltools names it after the label)."""
        return f"{CLASSIFIER_LABEL_OUTPUT}_probs"


@dataclass(frozen=True)
class ImageNormalization:
    """Core ML ``ImageType`` preprocessing plus the in-graph per-channel multiply that makes it exact.

    For pixels p in 0..255: ``channel_multiplier_c * (scale * p + bias_c) == (p / 255 - mean_c) / std_c``.
    """

    scale: float
    bias: tuple[float, ...]
    channel_multiplier: tuple[float, ...] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def image_normalization(mean: Sequence[float], std: Sequence[float]) -> ImageNormalization:
    """Split ``(pixel / 255 - mean) / std`` into ImageType scale/bias and an exact per-channel multiply.

    Core ML's ``ImageType`` computes ``scale * pixel + bias_c`` with ONE scalar ``scale`` and a per-channel
    ``bias`` (coremltools #64, #2461: a list-valued scale is rejected), so per-channel std cannot be expressed
    by scale/bias alone. With pixels in 0..255 and any s > 0, ``scale = 1 / (255 s)`` and
    ``bias_c = -mean_c / s`` give ``(pixel / 255 - mean_c) / s``; multiplying that by ``s / std_c`` gives
    exactly ``(pixel / 255 - mean_c) / std_c``. So when the channel stds differ the converted graph is a tiny
    :class:`CoremlAdapter` that prepends that per-channel multiply to the model (one ``mul`` op); when they are
    equal s is that std and no multiply is needed. s is the mean of the stds: then the ImageType alone already
    equals the widely used approximation (timm #2594 uses one std for all channels) and the multipliers stay
    within a few percent of 1, where fp16 rounding of the constant (relative step 2**-11) is harmless.
    """
    mean_t = tuple(float(m) for m in mean)
    std_t = tuple(float(s) for s in std)
    if not mean_t or len(mean_t) != len(std_t):
        raise InputError(f"mean {mean_t} and std {std_t} must be non-empty and of equal length")
    if not all(math.isfinite(m) for m in mean_t) or not all(math.isfinite(s) and s > 0 for s in std_t):
        raise InputError(f"mean {mean_t} must be finite and std {std_t} finite and positive")
    common = std_t[0] if len(set(std_t)) == 1 else sum(std_t) / len(std_t)
    multiplier = None if len(set(std_t)) == 1 else tuple(common / s for s in std_t)
    return ImageNormalization(
        scale=1.0 / (255.0 * common),
        bias=tuple(-m / common for m in mean_t),
        channel_multiplier=multiplier,
        mean=mean_t,
        std=std_t,
    )


class CoremlAdapter(nn.Module):
    """The module that is converted: optional per-channel input multiply, the model, optional softmax."""

    def __init__(
        self, model: nn.Module, channel_multiplier: Sequence[float] | None = None, softmax: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.softmax = softmax
        multiplier = None
        if channel_multiplier is not None:
            multiplier = torch.tensor(list(channel_multiplier), dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("channel_multiplier", multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_multiplier is not None:
            x = x * self.channel_multiplier
        out = self.model(x)
        return out.softmax(-1) if self.softmax else out


def output_dtype(cfg: CoremlExportConfig) -> type:
    """The numpy dtype of the (non-classifier) output tensor ``cfg`` asks for."""
    fp16_out = cfg.precision == "fp16" and cfg.spec_version >= _FP16_IO_SPEC_VERSION
    return np.float16 if fp16_out else np.float32
