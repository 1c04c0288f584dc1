"""Reduced-precision ONNX variants (fp16, static int8) made from a verified fp32 ONNX file, each checked on real images.

Owns converting a verified fp32 ``.onnx`` file to fp16 (``onnxconverter_common``, fp32 inputs and outputs kept)
and to static int8 (ONNX Runtime's ``quant_pre_process`` then ``quantize_static``: QDQ, per-channel 7-bit QInt8
weights, QUInt8 activations, MinMax calibration), and the agreement check every variant must pass before it is
published: on a batch of real images (64 by default) the variant, run in ONNX Runtime as deployed
(``ORT_ENABLE_ALL``), is compared with a reference (eager PyTorch logits passed in as a callable, else the fp32
file in ONNX Runtime) by top-1 agreement and by the cosine similarity of each image's logits, mean and minimum
over the batch. Every report also gives the cosine that an output ignoring the image would score (each image's
reference logits against the batch's mean logits), because for a random-init network that figure is often
close to 1. A variant below any threshold raises ``AgreementError`` and nothing is left at the target.

Thresholds. The zoo has no trained weights: its networks are random-init, with BatchNorm statistics set on
random inputs (``export.pipeline.resolve_model``), and such networks are chaotic. Rounding only the *input
image* to fp16 moves mctnas_c to 95.3 % top-1 agreement, cosine 0.998 (min 0.961); rounding its weights to
fp16 in eager PyTorch gives 79.7 % / 0.987 (min 0.873), the same as its fp16 ONNX file (78.1 % / 0.990 / 0.894);
8-bit per-channel weights alone in eager PyTorch take bcnet_mobilenetv2_cifar_200m to 85.9 % / 0.987. Their
logits are also dominated by a per-class offset that hardly depends on the image (an image-independent output
scores cosine 0.76 to 0.998 below), so top-1 agreement and high cosines say little on their own. Measured with
these defaults on 64 CIFAR-10 test JPEGs, int8 calibrated on 128 CIFAR-10 train JPEGs, against eager PyTorch:

    model (input)                      constant | fp16 top-1 / cos mean / min | int8 top-1 / cos mean / min (gain)
    hgcnet_0_5x_cifar (32)                0.988 | 100 %  / 0.99998 / 0.99993  | 62.5 % / 0.9756 / 0.941 (-0.013)
    nbmacro_22212220 (32)                 0.765 | 100 %  / 1.00000 / 0.99999  | 90.6 % / 0.9926 / 0.974 (+0.228)
    bcnet_mobilenetv2_cifar_200m (32)     0.884 | 100 %  / 0.99995 / 0.99988  | 79.7 % / 0.9635 / 0.882 (+0.080)
    darts_v2_cifar (32)                   0.779 | 92.2 % / 0.98716 / 0.88151  | 42.2 % / 0.7682 / -0.230 (-0.011)
    mctnas_c (224)                        0.841 | 78.1 % / 0.98984 / 0.89354  | 14.1 % / 0.7915 / 0.275 (-0.050)
    hgcnet_1x (224)                       0.979 | 100 %  / 0.99997 / 0.99990  | 43.8 % / 0.9678 / 0.948 (-0.011)
    bcnet_resnet50_100 (224)              0.998 | 100 %  / 1.00000 / 1.00000  | 100 %  / 0.9991 / 0.998 (+0.001)

"gain" is cosine mean minus the image-independent ("constant") figure. The defaults sit well below every
healthy figure and above what broken variants score:

- fp16: top-1 >= 0.5, cosine mean >= 0.9, min >= 0.5, gain >= 0 (the variant must follow the images at least
  as well as an output that ignores them; the worst healthy gain is +0.002, bounded by resnet50's 0.998
  constant). A negated or zeroed first-conv weight fails on all three models tried: nbmacro_22212220 cosine
  0.596 / 0.378, darts_v2_cifar 0.684 / 0.778, hgcnet_0_5x_cifar 0.974 / 0.976 with gain -0.014 / -0.012.
- int8: top-1 >= 0.03 (2 of 64 images; healthy mctnas_c agrees on 9), cosine mean >= 0.5, min not gated
  (-1: healthy darts_v2_cifar has an image at -0.23), gain >= -0.1 (healthy worst -0.050). Calibrating on
  unnormalised pixels (x64 + 128) or on inputs x1000 fails 11 of these 14 variants: 6 on cosine mean (0 to
  0.06), 4 on gain (-0.14 to -0.23), hgcnet_0_5x_cifar x1000 on top-1 (1.6 %, cosine 0.956). The 3 that pass
  are where the reference barely depends on the image (hgcnet_1x: gain -0.039 / -0.076, bcnet_resnet50_100
  x64: gain -0.055), which no check of the outputs can tell apart. ReLU6 networks are less exposed, as the
  clip bounds every range after the first layers: bcnet_mobilenetv2_cifar_28m calibrated on unnormalised
  pixels passes.

On x86 CPUs ONNX Runtime has few fp16 kernels and runs most fp16 nodes in fp32 between inserted Casts, so
here the fp16 check covers the conversion (fp16 weights and constants, graph integrity), not fp16
arithmetic overflow, which only a device with fp16 kernels exercises.

int8 choices, measured. Per-channel weights match or beat per-tensor on 6 of 7 models (cosine mean with
int8 activations, per-channel vs per-tensor: 0.975/0.973, 0.993/0.987, 0.964/0.960, 0.768/0.768,
0.788/0.796, 0.968/0.963, 0.999/0.998). ``reduce_range`` (7-bit weights) because on a CPU without
VNNI (this AVX2 machine) ORT's u8s8 kernels accumulate pairs in int16 (VPMADDUBSW) and full-range per-channel
weights saturate: nbmacro_22212220 with BN set on real images ran at cosine 0.933 fused vs 0.994 for the same
file with QDQ left unfused (``ORT_ENABLE_BASIC``); with 7-bit weights fused and unfused agree (0.990).
QUInt8 activations because accuracy is the same as QInt8 (0.9756 / 0.9926 / 0.9635 vs 0.9754 / 0.9925 /
0.9636 on the first three models) but ORT 1.31's CPU provider fuses every QDQ Conv and Add of the uint8 file
into QLinearConv / QLinearAdd (nbmacro_22212220: 23 of 23 Conv, 4 of 4 Add), while with int8 activations 7
Convs and all Adds stay float between DequantizeLinear/QuantizeLinear; batch-1 latency there was 2.2 ms
(uint8) vs 3.6-7 ms (int8) vs 6.7 ms fp32, one thread on a busy 2-core machine. MinMax calibration:
Percentile took 6x as long for +0.008 cosine on hgcnet_0_5x_cifar.

BatchNorm statistics set on 32 real images instead of random inputs were tried and not chosen: agreement
was no better (int8 cosine mean 0.960, 0.990, 0.948, 0.698, 0.481, 0.928, 0.967 for the models above;
mctnas_c's int8 would fail), predictions stay concentrated (hgcnet_0_5x_cifar: 49 of 64 images in one
class), and the fp32 check on random inputs becomes fragile (mctnas_c: max abs diff 2.4e3, passed only via
the float64 noise-floor rule). These thresholds are for random-init models. For trained weights the
pipeline (``export.formats``) uses ``FP16_THRESHOLDS_TRAINED`` / ``INT8_THRESHOLDS_TRAINED`` instead:
deployment-grade gates taken from published behaviour, not measured here, since no trained weights exist yet.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort

from common.errors import InputError
from export.errors import AgreementError, CalibrationDataError, ExportError, exporter, one_line
from common.files import check_target, publish, temporary_path
from common.images import RANDOM_CALIBRATION_SOURCE, RANDOM_VERIFICATION_SOURCE, random_images
from export.onnx import load_onnx

Variant = Literal["fp16", "int8"]
Reference = Callable[[np.ndarray], np.ndarray]
ActivationType = Literal["QInt8", "QUInt8"]
CalibrationMethodName = Literal["MinMax", "Entropy", "Percentile"]

ARRAY_SOURCE = "images passed as an array"
_ORT_REFERENCE = "fp32 ONNX in ONNX Runtime"
_EAGER_REFERENCE = "eager PyTorch fp32"


@dataclass(frozen=True)
class AgreementThresholds:
    """The minimum a variant must reach against its reference on the verification batch.

    ``gain_over_constant`` bounds ``mean_cosine - constant_output_cosine``: how much better (or, if
    negative, how much worse) the variant may follow the images than an output that ignores them.
    """

    top1_agreement: float
    mean_cosine: float
    min_cosine: float
    gain_over_constant: float

    def __post_init__(self) -> None:
        for name in ("top1_agreement", "mean_cosine", "min_cosine", "gain_over_constant"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and -1.0 <= value <= 1.0):
                raise InputError(f"threshold {name} must be a finite number in [-1, 1], got {value!r}")


# For random-init weights (every zoo model today): measured on seven zoo models; see the module docstring.
FP16_THRESHOLDS = AgreementThresholds(top1_agreement=0.5, mean_cosine=0.9, min_cosine=0.5, gain_over_constant=0.0)
INT8_THRESHOLDS = AgreementThresholds(top1_agreement=0.03, mean_cosine=0.5, min_cosine=-1.0, gain_over_constant=-0.1)
# For trained weights (a checkpoint was loaded): deployment gates, assumed, not measured here (no trained
# weights exist yet). fp16 should be indistinguishable (coremltools #2625: MobileNetV3 fp16 top-1 74.72 %
# vs 74.74 % eager); post-training per-channel int8 of a CNN typically costs about a point of top-1, so
# nine in ten predictions must agree and logits must stay closely aligned.
FP16_THRESHOLDS_TRAINED = AgreementThresholds(top1_agreement=0.99, mean_cosine=0.999, min_cosine=0.99,
                                              gain_over_constant=0.0)
INT8_THRESHOLDS_TRAINED = AgreementThresholds(top1_agreement=0.9, mean_cosine=0.98, min_cosine=0.8,
                                              gain_over_constant=0.0)


@dataclass(frozen=True)
class Fp16Config:
    """How to convert to fp16 and verify it.

    ``op_block_list`` adds op types to keep in fp32 on top of onnxconverter-common's default list;
    ``num_images``/``seed`` size the verification batch when the caller gives none (random data, with a
    warning); ``batch_size`` bounds memory while running it; ``threads`` is ORT's intra-op thread count
    (0: ORT's default).
    """

    thresholds: AgreementThresholds = FP16_THRESHOLDS
    op_block_list: tuple[str, ...] = ()
    num_images: int = 64
    seed: int = 0
    batch_size: int = 16
    threads: int = 0

    def __post_init__(self) -> None:
        _check_ints(self, {"num_images": 1, "batch_size": 1, "threads": 0})


@dataclass(frozen=True)
class Int8Config:
    """How to quantise to static int8 and verify it.

    QDQ format with symmetric per-channel QInt8 weights (7-bit, ``reduce_range``). Activations default to
    QUInt8 (see the module docstring for why); ``num_calibration`` sizes the random calibration set used when the caller gives no
    images.
    """

    thresholds: AgreementThresholds = INT8_THRESHOLDS
    per_channel: bool = True
    activation_type: ActivationType = "QUInt8"
    calibrate_method: CalibrationMethodName = "MinMax"
    reduce_range: bool = True
    num_calibration: int = 128
    calibration_batch_size: int = 16
    num_images: int = 64
    seed: int = 0
    batch_size: int = 16
    threads: int = 0

    def __post_init__(self) -> None:
        _check_ints(self, {"num_images": 1, "batch_size": 1, "threads": 0, "num_calibration": 1,
                           "calibration_batch_size": 1})
        if self.activation_type not in ("QInt8", "QUInt8"):
            raise InputError(f"activation_type must be 'QInt8' or 'QUInt8', got {self.activation_type!r}")
        if self.calibrate_method not in ("MinMax", "Entropy", "Percentile"):
            raise InputError(f"calibrate_method must be MinMax, Entropy or Percentile, got {self.calibrate_method!r}")


def _check_ints(config: object, minimum: Mapping[str, int]) -> None:
    for name, low in minimum.items():
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputError(f"{type(config).__name__}.{name} must be an int >= {low}, got {value!r}")


@dataclass(frozen=True)
class Agreement:
    """How closely a variant's logits follow the reference's on one batch.

    ``constant_output_cosine`` is the mean cosine that an output ignoring the image (always the reference's
    batch-mean logits) would score: when it is close to 1 the reference barely depends on the image and the
    cosine figures cannot tell a working variant from a broken one.
    """

    num_images: int
    top1_agreement: float
    mean_cosine: float
    min_cosine: float
    constant_output_cosine: float


@dataclass(frozen=True)
class PrecisionReport:
    """What was written, from which fp32 file, and how well it agreed with its reference on which images."""

    variant: Variant
    path: str
    source_path: str
    verification: str
    reference: str
    num_images: int
    image_source: str
    calibration_source: str | None
    num_calibration: int
    top1_agreement: float
    mean_cosine: float
    min_cosine: float
    constant_output_cosine: float
    thresholds: dict[str, float]
    settings: dict[str, Any]
    num_nodes: int
    source_num_nodes: int
    file_size_bytes: int
    source_file_size_bytes: int
    size_ratio: float
    export_seconds: float
    verify_seconds: float
    onnx_version: str
    onnxruntime_version: str

    @property
    def summary(self) -> str:
        return (f"top-1 agreement {100 * self.top1_agreement:.1f} %, cosine mean {self.mean_cosine:.4f} "
                f"(min {self.min_cosine:.4f}; a constant output scores {self.constant_output_cosine:.4f})")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary
        return data


# ------------------------------------------------------------------------------------------------ fp16


@exporter
def convert_fp16(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    images: np.ndarray | None = None,
    image_source: str | None = None,
    reference: Reference | None = None,
    cfg: Fp16Config = Fp16Config(),
) -> PrecisionReport:
    """Convert the fp32 ONNX file ``source`` to fp16 at ``path`` (fp32 inputs/outputs) and verify it.

    ``images`` is the float32 NCHW verification batch (see :func:`common.images.load_images`) and
    ``image_source`` says where it came from; without images, random data is used with a loud warning.
    ``reference`` maps that batch to reference logits (eager PyTorch); without it the fp32 source run in
    ONNX Runtime is the reference. Raises ``AgreementError`` if the variant falls below ``cfg.thresholds``
    (nothing is written), ``OnnxLoadError`` for a bad source and ``ExportError`` if conversion fails.
    """
    from onnxconverter_common import float16

    src, target, proto = _open_source(source, path, "fp16")
    batch, batch_source = _verification_batch(proto, images, image_source, cfg.num_images, cfg.seed)
    block_list = tuple(dict.fromkeys((*float16.DEFAULT_OP_BLOCK_LIST, *cfg.op_block_list)))
    settings = {"keep_io_types": True, "op_block_list_added": list(cfg.op_block_list)}
    with temporary_path(target, suffix=".onnx.tmp") as tmp:
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            # The converter warns once per tensor whose values it clamps to fp16's range; count them instead.
            warnings.simplefilter("always")
            try:
                converted = float16.convert_float_to_float16(
                    _without_value_info(proto), keep_io_types=True, op_block_list=list(block_list),
                    disable_shape_infer=False,
                )
                converted = onnx.shape_inference.infer_shapes(converted, check_type=True, strict_mode=True)
            except Exception as err:
                raise ExportError(f"cannot convert {str(src)!r} to fp16: {one_line(err)}") from err
        clamped = [w for w in caught if "truncated" in str(w.message)]
        for w in caught:
            if w not in clamped:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        settings["clamped_tensor_warnings"] = len(clamped)
        _save(converted, tmp, proto, "fp16", {})
        export_seconds = time.perf_counter() - start
        return _verify_and_publish(
            "fp16", src, target, tmp, batch, batch_source, reference, cfg.thresholds, cfg.batch_size,
            cfg.threads, export_seconds, settings, None, 0,
        )


def _without_value_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    # The converter re-types the value_info it finds but not around the Casts it adds for blocked ops, which
    # leaves fp16 annotations on fp32 tensors that ONNX Runtime rejects; shapes are re-inferred afterwards.
    bare = copy.deepcopy(proto)
    del bare.graph.value_info[:]
    return bare


# ------------------------------------------------------------------------------------------------ int8


@exporter
def quantize_int8(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    images: np.ndarray | None = None,
    image_source: str | None = None,
    calibration: np.ndarray | None = None,
    calibration_source: str | None = None,
    reference: Reference | None = None,
    cfg: Int8Config = Int8Config(),
) -> PrecisionReport:
    """Quantise the fp32 ONNX file ``source`` to static int8 (QDQ) at ``path`` and verify it.

    ``calibration`` is the float32 NCHW calibration set (``calibration_source`` says where it came from);
    without it, ``cfg.num_calibration`` random inputs are used with a loud warning and the report says so.
    ``images``/``image_source``/``reference`` are as for :func:`convert_fp16`; the verification batch must
    not share an image with the calibration set. Raises ``CalibrationDataError`` for calibration data of
    the wrong shape or with non-finite values, ``AgreementError`` below ``cfg.thresholds``; nothing is
    written on failure.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    src, target, proto = _open_source(source, path, "int8")
    batch, batch_source = _verification_batch(proto, images, image_source, cfg.num_images, cfg.seed)
    if calibration is None:
        calibration = random_images(cfg.num_calibration, _static_input_size(proto), seed=cfg.seed + 1)
        calibration_source = RANDOM_CALIBRATION_SOURCE
    else:
        _check_batch(proto, calibration, "calibration")
        calibration_source = calibration_source or ARRAY_SOURCE
        _check_disjoint(calibration, batch)
    settings = {
        "quant_format": "QDQ",
        "per_channel": cfg.per_channel,
        "weight_type": "QInt8",
        "activation_type": cfg.activation_type,
        "calibrate_method": cfg.calibrate_method,
        "reduce_range": cfg.reduce_range,
        "pre_process": "quant_pre_process",
    }
    reader = _CalibrationReader(proto.graph.input[0].name, calibration, cfg.calibration_batch_size)
    with temporary_path(target, suffix=".onnx.tmp") as tmp, tempfile.TemporaryDirectory(prefix="mzoo-int8-") as work:
        start = time.perf_counter()
        prepared = Path(work) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=False)
        except Exception as err:
            raise ExportError(f"ONNX Runtime's quantisation pre-processing failed on {str(src)!r}: "
                              f"{one_line(err)}") from err
        try:
            quantize_static(
                str(prepared), str(tmp), reader,
                quant_format=QuantFormat.QDQ,
                per_channel=cfg.per_channel,
                reduce_range=cfg.reduce_range,
                activation_type=QuantType[cfg.activation_type],
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod[cfg.calibrate_method],
                calibration_providers=["CPUExecutionProvider"],
            )
        except Exception as err:
            raise ExportError(f"int8 quantisation of {str(src)!r} failed: {one_line(err)}") from err
        _save(onnx.load_model(str(tmp)), tmp, proto, "int8", {"mzoo.calibration": calibration_source})
        export_seconds = time.perf_counter() - start
        return _verify_and_publish(
            "int8", src, target, tmp, batch, batch_source, reference, cfg.thresholds, cfg.batch_size,
            cfg.threads, export_seconds, settings, calibration_source, len(calibration),
        )


class _CalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over an in-memory NCHW batch.

    Duck-typed rather than subclassed so that importing this module does not import
    ``onnxruntime.quantization`` (~0.3 s); ``quantize_static`` only calls ``get_next``.
    """

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int) -> None:
        self.input_name, self.images, self.batch_size = input_name, images, batch_size
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.images):
            return None
        chunk = self.images[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return {self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self) -> None:
        self.position = 0

    def __iter__(self) -> _CalibrationReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _check_disjoint(calibration: np.ndarray, batch: np.ndarray) -> None:
    def digest(image: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()

    seen = {digest(x) for x in calibration}
    shared = sum(digest(x) in seen for x in batch)
    if shared:
        raise CalibrationDataError(
            f"the verification batch shares {shared} of its {len(batch)} images with the calibration set; "
            "draw them from different splits or offsets (common.images.load_images(split=, offset=))"
        )


# ------------------------------------------------------------------------------------------------ shared


def _open_source(source: str | os.PathLike[str], path: str | os.PathLike[str],
                 variant: Variant) -> tuple[Path, Path, onnx.ModelProto]:
    src, target = Path(source), Path(path)
    proto = load_onnx(src)
    if len(proto.graph.input) != 1 or len(proto.graph.output) != 1:
        raise ExportError(f"{str(src)!r} must have one input and one output to make an {variant} variant, has "
                          f"{len(proto.graph.input)} and {len(proto.graph.output)}")
    if src.resolve() == target.resolve():
        raise ExportError(f"the {variant} variant cannot overwrite its fp32 source {str(src)!r}")
    check_target(target, f"ONNX {variant}")
    return src, target, proto


def _static_input_size(proto: onnx.ModelProto) -> tuple[int, int, int]:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    size = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims)[1:]
    if len(size) != 3 or not all(size):
        raise ExportError(f"the model input must be (batch, C, H, W) with static C, H, W to make random data, "
                          f"got {[d.dim_param or d.dim_value for d in dims]}")
    return size  # type: ignore[return-value]


def _check_batch(proto: onnx.ModelProto, images: np.ndarray, what: str) -> None:
    expected = _static_input_size(proto)
    if not isinstance(images, np.ndarray) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
        shape = getattr(images, "shape", type(images).__name__)
        raise CalibrationDataError(f"{what} images must be an (N, {', '.join(map(str, expected))}) array, got {shape}")
    if images.dtype != np.float32:
        raise CalibrationDataError(f"{what} images must be float32, got {images.dtype}")
    if len(images) == 0:
        raise CalibrationDataError(f"{what} images are an empty batch")
    if not np.all(np.isfinite(images)):
        raise CalibrationDataError(f"{what} images contain NaN or infinite values")


def _verification_batch(proto: onnx.ModelProto, images: np.ndarray | None, image_source: str | None,
                        count: int, seed: int) -> tuple[np.ndarray, str]:
    if images is None:
        size = _static_input_size(proto)
        return random_images(count, size, seed=seed, purpose="verification"), RANDOM_VERIFICATION_SOURCE
    _check_batch(proto, images, "verification")
    return images, image_source or ARRAY_SOURCE


def _save(model: onnx.ModelProto, tmp: Path, source: onnx.ModelProto, variant: Variant,
          extra: Mapping[str, str]) -> None:
    """Carry the fp32 file's metadata over, mark the variant, and write ``tmp`` (checked on reload)."""
    props = {p.key: p.value for p in source.metadata_props}
    props.update({"mzoo.variant": variant, **extra})
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(tmp), save_as_external_data=False)
    load_onnx(tmp)


def _session(path: Path, level: ort.GraphOptimizationLevel, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ExportError(f"ONNX Runtime cannot load {str(path)!r}: {one_line(err)}") from err


def _run(session: ort.InferenceSession, batch: np.ndarray, batch_size: int) -> np.ndarray:
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: batch[i:i + batch_size]})[0] for i in range(0, len(batch), batch_size)]
    return np.concatenate(out).astype(np.float32, copy=False)


def _run_reference(reference: Reference, batch: np.ndarray, batch_size: int) -> np.ndarray:
    out = [np.asarray(reference(batch[i:i + batch_size])) for i in range(0, len(batch), batch_size)]
    return np.concatenate(out).astype(np.float32, copy=False)


def measure_agreement(reference: np.ndarray, actual: np.ndarray) -> Agreement:
    """Top-1 agreement and per-image cosine similarity (mean, min) of two (N, classes) logit arrays.

    Computed in float64. An all-zero row counts as cosine 1 against another all-zero row and 0 against
    anything else; non-finite logits give NaN, which fails every threshold.
    """
    ref, act = np.asarray(reference, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape or ref.ndim != 2 or len(ref) == 0:
        raise InputError(f"logits must be two (N, classes) arrays of one shape, got {ref.shape} and {act.shape}")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(act))):
        return Agreement(len(ref), math.nan, math.nan, math.nan, math.nan)
    cosine = _row_cosine(ref, act)
    constant = _row_cosine(ref, np.broadcast_to(ref.mean(axis=0), ref.shape))
    top1 = float(np.mean(np.argmax(ref, axis=1) == np.argmax(act, axis=1)))
    return Agreement(len(ref), top1, float(np.mean(cosine)), float(np.min(cosine)), float(np.mean(constant)))


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = ~np.any(a, axis=1) & ~np.any(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0),
                        np.where(both_zero, 1.0, 0.0))


def _check_agreement(variant: Variant, target: Path, agreement: Agreement, thresholds: AgreementThresholds,
                     detail: str) -> None:
    gain = agreement.mean_cosine - agreement.constant_output_cosine
    for metric, value, minimum in (
        ("mean cosine similarity", agreement.mean_cosine, thresholds.mean_cosine),
        ("mean cosine gain over an image-independent output", gain, thresholds.gain_over_constant),
        ("min cosine similarity", agreement.min_cosine, thresholds.min_cosine),
        ("top-1 agreement", agreement.top1_agreement, thresholds.top1_agreement),
    ):
        if not value >= minimum:  # `not >=` so that NaN fails
            raise AgreementError(f"ONNX {variant} {str(target)!r}", metric, value, minimum, detail=detail)


def _verify_and_publish(
    variant: Variant, src: Path, target: Path, tmp: Path, batch: np.ndarray, batch_source: str,
    reference: Reference | None, thresholds: AgreementThresholds, batch_size: int, threads: int,
    export_seconds: float, settings: dict[str, Any], calibration_source: str | None, num_calibration: int,
) -> PrecisionReport:
    start = time.perf_counter()
    # The variant runs as deployed (all ORT fusions: QDQ becomes int8 kernels only at the extended levels);
    # an ORT fp32 reference runs at BASIC, the level its own export was verified at.
    actual = _run(_session(tmp, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, threads), batch, batch_size)
    if reference is None:
        expected = _run(_session(src, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, threads), batch, batch_size)
        reference_name = _ORT_REFERENCE
    else:
        expected = _run_reference(reference, batch, batch_size)
        reference_name = _EAGER_REFERENCE
    if expected.shape != actual.shape:
        raise ExportError(f"the {variant} variant's output shape {actual.shape} differs from the reference's "
                          f"{expected.shape}")
    agreement = measure_agreement(expected, actual)
    verify_seconds = time.perf_counter() - start
    verification = f"ORT {variant} vs {reference_name} on {len(batch)} images ({batch_source})"
    detail = (f"top-1 agreement {agreement.top1_agreement:.4f}, cosine mean {agreement.mean_cosine:.6f} "
              f"min {agreement.min_cosine:.6f}, a constant output would score {agreement.constant_output_cosine:.4f}; "
              f"{verification}")
    _check_agreement(variant, target, agreement, thresholds, detail)
    source_proto, variant_proto = onnx.load_model(str(src)), onnx.load_model(str(tmp))
    report = PrecisionReport(
        variant=variant,
        path=str(target),
        source_path=str(src),
        reference=reference_name,
        num_images=len(batch),
        image_source=batch_source,
        calibration_source=calibration_source,
        num_calibration=num_calibration,
        top1_agreement=agreement.top1_agreement,
        mean_cosine=agreement.mean_cosine,
        min_cosine=agreement.min_cosine,
        constant_output_cosine=agreement.constant_output_cosine,
        thresholds=asdict(thresholds),
        settings=settings,
        num_nodes=len(variant_proto.graph.node),
        source_num_nodes=len(source_proto.graph.node),
        file_size_bytes=tmp.stat().st_size,
        source_file_size_bytes=src.stat().st_size,
        size_ratio=tmp.stat().st_size / src.stat().st_size,
        export_seconds=export_seconds,
        verify_seconds=verify_seconds,
        onnx_version=onnx.__version__,
        onnxruntime_version=ort.__version__,
        verification=verification,
    )
    publish(tmp, target)
    return report
