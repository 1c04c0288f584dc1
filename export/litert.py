"""LiteRT (TensorFlow Lite) export that always verifies: convert with ``litert-torch``, write a ``.tflite`` file,
run it in ``ai-edge-litert``'s interpreter with the XNNPACK delegate (the CPU kernels Android phones use), compare
with eager PyTorch, then publish.

Owns the four precisions, each made through the converter's own quantisation path: ``fp32``; ``fp16`` (fp16
weights, fp32 compute: ``full_fp16_recipe``); ``int8-dynamic`` (per-channel int8 weights, activations quantised at
run time: ``full_dynamic_recipe``); ``int8`` (full-integer: PT2E static quantisation, symmetric per-channel int8
weights and int8 activations calibrated on a set of images, int8 input and output tensors). It also owns reading
such files back (``load_litert``, ``litert_metadata``) and the per-op delegation breakdown of a loaded file
(``LitertOps``: ops by type, which ones XNNPACK runs, partitions, layout ops).

fp32 is held to ``atol`` (1e-4) on seeded random inputs, with the float64 noise-floor rule of
:mod:`export.parity`; fp16 and int8 are held to the agreement gates measured for ONNX fp16 / int8
(:mod:`export.onnx_precision`: top-1 agreement and cosine of the logits on real images against eager PyTorch),
the random-init or trained figures as the caller chooses. Those gates were measured on ORT's variants, not on
LiteRT's; a LiteRT variant that passes follows the images at least as well as a healthy ORT one is required to.
A file appears at the requested path only once it passed. ``litert-torch`` and ``ai-edge-litert`` come with the
``android`` extra and are imported on first use (litert-torch takes ~10 s to import).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from common.errors import InputError
from common.files import check_target, publish, temporary_path
from common.images import RANDOM_CALIBRATION_SOURCE, RANDOM_VERIFICATION_SOURCE, random_images
from export.errors import AgreementError, ExportError, LitertVerificationError, exporter, missing_extra, one_line
from export.parity import (check_input_size, check_metadata, check_model, eval_mode, float64_distances, run_batched,
                           noise_floor_detail, run_eager, within_noise_floor)

Precision = Literal["fp32", "fp16", "int8-dynamic", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8-dynamic", "int8")
LITERT_RUNTIME = "litert-xnnpack"
METADATA_NAME = "mzoo_metadata"
_TFLITE_IDENTIFIER = b"TFL3"
# Ops that move data without computing: layout changes, and the slices and concatenations a grouped convolution
# written as per-group convs (HGC) becomes.
_LAYOUT_OPS = frozenset({"TRANSPOSE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SLICE", "STRIDED_SLICE", "SPLIT",
                         "SPLIT_V", "CONCATENATION"})
_DELEGATE = "DELEGATE"
_MAX_WHERE = 50
Reference = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LitertExportConfig:
    """How to convert and how strictly to verify.

    ``batch_size`` is baked into the file (static shapes). fp32 is compared with eager PyTorch on ``verify_runs``
    seeded inputs within ``atol``; the other precisions on the caller's images (``num_images`` seeded random ones,
    with a warning, when none are given) against ``thresholds`` (None: the random-init gate of the precision).
    ``num_calibration`` sizes the random calibration set of ``int8`` when the caller gives none. ``xnnpack``
    False verifies with LiteRT's built-in kernels only.
    """

    precision: Precision = "fp32"
    batch_size: int = 1
    atol: float = 1e-4
    verify_runs: int = 3
    seed: int = 0
    noise_floor_factor: float = 2.0
    thresholds: Any = None  # export.onnx_precision.AgreementThresholds (imported lazily: it loads ONNX Runtime)
    num_images: int = 64
    num_calibration: int = 128
    threads: int = 1
    xnnpack: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r} is not supported; choose one of {PRECISIONS}")
        for name in ("batch_size", "verify_runs", "num_images", "num_calibration", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"LitertExportConfig.{name} must be a positive int, got {value!r}")
        if not (math.isfinite(self.atol) and self.atol > 0):
            raise InputError(f"LitertExportConfig.atol must be a positive finite number, got {self.atol!r}")
        if not (math.isfinite(self.noise_floor_factor) and self.noise_floor_factor >= 0):
            raise InputError(f"LitertExportConfig.noise_floor_factor must be finite and >= 0, "
                             f"got {self.noise_floor_factor!r}")

    def gate(self) -> Any:
        """The agreement thresholds a reduced-precision file is held to."""
        from export.onnx_precision import default_thresholds

        if self.thresholds is not None:
            return self.thresholds
        return default_thresholds("fp16" if self.precision == "fp16" else "int8", trained=False)


@dataclass(frozen=True)
class LitertOps:
    """What the interpreter runs: the file's ops by type, which of them the XNNPACK delegate took (in how many
    partitions), the ones left to LiteRT's own kernels, and the layout and plumbing ops in the graph (transposes,
    reshapes, slices, concatenations). The NCHW -> NHWC ``TRANSPOSE`` at the input is added by the converter:
    LiteRT kernels are channels-last."""

    ops: dict[str, int]
    delegated_ops: int
    total_ops: int
    partitions: int
    not_delegated: dict[str, int]
    layout_ops: dict[str, int]
    delegate: str = "XNNPACK"
    # Each op left to LiteRT's kernels as "OP @ module.path" (the module its output tensor was named after by the
    # converter; e.g. "blocks.0.0.conv2" is the spec's first block), in graph order, at most _MAX_WHERE of them.
    not_delegated_at: tuple[str, ...] = ()

    @property
    def fraction(self) -> float:
        """Delegated ops / all ops (0 for an empty graph)."""
        return self.delegated_ops / self.total_ops if self.total_ops else 0.0

    def describe(self) -> str:
        text = (f"{100 * self.fraction:.1f} % of {self.total_ops} ops delegated to {self.delegate} in "
                f"{self.partitions} partition{'s' if self.partitions != 1 else ''}")
        if self.not_delegated:
            text += "; not delegated: " + ", ".join(f"{k} x{v}" for k, v in self.not_delegated.items())
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "not_delegated_at": list(self.not_delegated_at), "fraction": self.fraction}


@dataclass(frozen=True)
class LitertExportReport:
    """What was written and how well it matched eager PyTorch: ``max_abs_diff`` per seeded input for fp32, the
    agreement figures on the image batch for the other precisions."""

    path: str
    precision: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_dtype: str
    ops: LitertOps
    file_size_bytes: int
    export_seconds: float  # conversion (and calibration) + writing; verification is not included
    verify_seconds: float
    verification: str
    torch_version: str
    litert_torch_version: str
    ai_edge_litert_version: str
    max_abs_diff: tuple[float, ...] = ()
    atol: float | None = None
    noise_floor: dict[int, tuple[float, float]] = field(default_factory=dict)
    num_images: int = 0
    image_source: str | None = None
    calibration_source: str | None = None
    num_calibration: int = 0
    top1_agreement: float | None = None
    mean_cosine: float | None = None
    min_cosine: float | None = None
    constant_output_cosine: float | None = None
    thresholds: dict[str, float] | None = None

    @property
    def summary(self) -> str:
        if self.precision == "fp32":
            floor = " (within float64 noise floor)" if self.noise_floor else ""
            head = f"max abs diff {max(self.max_abs_diff):.1e}{floor}"
        else:
            head = (f"top-1 agreement {100 * self.top1_agreement:.1f} %, cosine mean {self.mean_cosine:.4f} "
                    f"(min {self.min_cosine:.4f}; a constant output scores {self.constant_output_cosine:.4f})")
        return f"{head}; {self.ops.describe()}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(input_shape=list(self.input_shape), output_shape=list(self.output_shape),
                    max_abs_diff=list(self.max_abs_diff), ops=self.ops.to_dict(),
                    noise_floor={str(k): list(v) for k, v in self.noise_floor.items()}, summary=self.summary)
        return data


# ---------------------------------------------------------------------------------------------- exporting


@exporter
def export_litert(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size: tuple[int, int, int],
    *,
    metadata: Mapping[str, str] | None = None,
    cfg: LitertExportConfig = LitertExportConfig(),
    images: np.ndarray | None = None,
    image_source: str | None = None,
    calibration: np.ndarray | None = None,
    calibration_source: str | None = None,
    reference: Reference | None = None,
) -> LitertExportReport:
    """Convert ``model`` to a verified ``.tflite`` file at ``path`` for inputs of (cfg.batch_size, *input_size).

    ``images`` (N, C, H, W, preprocessed) are the verification batch of fp16 / int8, ``calibration`` the
    calibration set of ``int8``; ``reference`` maps a batch to the logits the file must follow (default: eager
    ``model``). ``metadata`` is stored in the file as the ``mzoo_metadata`` buffer (read it with
    :func:`litert_metadata`). Raises ``ExportError`` if the model cannot be converted, ``LitertVerificationError``
    if LiteRT cannot run the file or fp32 differs from eager PyTorch, ``AgreementError`` if a reduced-precision
    file fails its gate. An existing file is replaced only on success.
    """
    check_model(model)
    input_size = check_input_size(input_size)
    props = check_metadata(metadata)
    target = Path(path)
    check_target(target, "LiteRT")
    for what, batch in (("verification", images), ("calibration", calibration)):
        if batch is not None:
            _check_batch(batch, input_size, what)
    _converter()  # a missing extra is one line before any work
    with eval_mode(model), temporary_path(target, suffix=".tflite.tmp") as tmp:
        report = _export_to(model, target, tmp, input_size, props, cfg, images, image_source, calibration,
                            calibration_source, reference)
        publish(tmp, target)
    return report


def _export_to(model: nn.Module, target: Path, tmp: Path, input_size: tuple[int, int, int], props: dict[str, str],
               cfg: LitertExportConfig, images: np.ndarray | None, image_source: str | None,
               calibration: np.ndarray | None, calibration_source: str | None,
               reference: Reference | None) -> LitertExportReport:
    shape = (cfg.batch_size, *input_size)
    if cfg.precision == "int8" and calibration is None:
        calibration = random_images(cfg.num_calibration, input_size, seed=cfg.seed + 1)
        calibration_source = RANDOM_CALIBRATION_SOURCE
    start = time.perf_counter()
    example = torch.randn(*shape, generator=torch.Generator().manual_seed(cfg.seed))
    content = convert_to_tflite(model, example, cfg.precision, calibration)
    props.update({"mzoo.precision": cfg.precision, "mzoo.batch_size": str(cfg.batch_size),
                  "mzoo.torch_version": torch.__version__, "mzoo.litert_torch_version": _version("litert-torch")})
    tmp.write_bytes(with_metadata(content, props))
    export_seconds = time.perf_counter() - start
    start = time.perf_counter()
    try:
        loaded = load_litert(tmp, threads=cfg.threads, xnnpack=cfg.xnnpack)
    except LitertVerificationError as err:  # named as the file the user asked for, not the temporary one
        raise LitertVerificationError(str(err).replace(str(tmp), str(target))) from err
    if loaded.input_shape != shape:
        raise LitertVerificationError(f"LiteRT file input shape {loaded.input_shape} differs from {shape}")
    common = dict(path=str(target), precision=cfg.precision, input_shape=loaded.input_shape,
                  output_shape=loaded.output_shape, input_dtype=loaded.input_dtype, ops=loaded.ops,
                  torch_version=torch.__version__, litert_torch_version=_version("litert-torch"),
                  ai_edge_litert_version=_version("ai-edge-litert"))
    kernels = "XNNPACK" if cfg.xnnpack else "built-in kernels"
    if cfg.precision == "fp32":
        diffs, floor = _verify_fp32(model, loaded, shape, cfg)
        return LitertExportReport(
            **common, max_abs_diff=diffs, atol=cfg.atol, noise_floor=floor, file_size_bytes=tmp.stat().st_size,
            export_seconds=export_seconds, verify_seconds=time.perf_counter() - start,
            verification=(f"LiteRT {kernels} vs eager fp32, {cfg.verify_runs} seeded input"
                          f"{'s' if cfg.verify_runs != 1 else ''} at batch {cfg.batch_size}"))
    if images is None:
        images, image_source = random_images(cfg.num_images, input_size, seed=cfg.seed,
                                             purpose="verification"), RANDOM_VERIFICATION_SOURCE
    agreement, thresholds = _verify_agreement(model, loaded, images, cfg, target, reference)
    return LitertExportReport(
        **common, **asdict(agreement), image_source=image_source or "images passed as an array",
        calibration_source=calibration_source if cfg.precision == "int8" else None,
        num_calibration=len(calibration) if cfg.precision == "int8" else 0,
        thresholds=asdict(thresholds), file_size_bytes=tmp.stat().st_size, export_seconds=export_seconds,
        verify_seconds=time.perf_counter() - start,
        verification=f"LiteRT {cfg.precision} ({kernels}) vs eager PyTorch fp32 on {len(images)} images "
                     f"({image_source or 'images passed as an array'})")


def convert_to_tflite(model: nn.Module, example: torch.Tensor, precision: str = "fp32",
                      calibration: np.ndarray | None = None) -> bytes:
    """The ``.tflite`` bytes of ``model`` for exactly ``example``'s shape, through litert-torch's own paths
    (unverified: :func:`export_litert` verifies). ``calibration`` (N, C, H, W) is required for ``int8``."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not supported; choose one of {PRECISIONS}")
    litert_torch = _converter()
    name = type(model).__name__
    try:
        with eval_mode(model), torch.inference_mode(False), _quiet():
            if precision == "int8":
                if calibration is None or len(calibration) == 0:
                    raise InputError("int8 (full-integer) LiteRT export needs a calibration set")
                module, quant_config = _pt2e_static(model, example, calibration)
                edge = litert_torch.convert(module, (example,), quant_config=quant_config)
            else:
                edge = litert_torch.convert(model, (example,), **_recipe(precision))
            return bytes(edge.model_content())
    except InputError:
        raise
    except Exception as err:
        raise ExportError(f"litert-torch cannot convert {name} ({precision}): {one_line(err)}") from err


def _recipe(precision: str) -> dict[str, Any]:
    if precision == "fp32":
        return {}
    from litert_torch.generative.quantize import quant_recipes

    if precision == "fp16":
        return {"quant_config": quant_recipes.full_fp16_recipe()}
    return {"quant_config": quant_recipes.full_dynamic_recipe()}  # int8 weights, dynamic int8 activations


def _pt2e_static(model: nn.Module, example: torch.Tensor, calibration: np.ndarray) -> tuple[Any, Any]:
    """PT2E static quantisation (litert-torch's quantiser): observe ``calibration`` in batches of the example's
    size, then fold observers into quantise/dequantise pairs the converter turns into int8 kernels."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _clamp_fusing(PT2EQuantizer)().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
    move_exported_model_to_eval(prepared)
    batch = example.shape[0]
    data = np.asarray(calibration, dtype=np.float32)
    with torch.no_grad():
        for i in range(0, len(data) - batch + 1, batch):
            prepared(torch.from_numpy(np.ascontiguousarray(data[i:i + batch])))
    converted = convert_pt2e(prepared, fold_quantize=False)
    move_exported_model_to_eval(converted)
    return converted, QuantConfig(pt2e_quantizer=quantizer)


def _clamp_fusing(base: type) -> type:
    """litert-torch's PT2E quantiser, also fusing a conv with the clamp (ReLU6, hardtanh) that follows it.

    The stock quantiser fuses a conv only with ReLU: before a ReLU6 it quantises the conv's own output, over the
    pre-activation range, which in a trained MobileNet or EfficientNet-Lite spans about ±100 where ReLU6 keeps
    [0, 6]; that leaves a handful of int8 levels for what the next layer reads. Measured on the trained
    EfficientNet-Lite0 (64 CIFAR-10 photos at 224): mean cosine to PyTorch 0.54 with the stock quantiser. Here the
    conv's output is observed after the clamp, as LiteRT runs it (the clamp becomes the conv's fused activation),
    exactly as the stock quantiser already does for conv + ReLU.
    """
    from litert_torch.quantize.pt2e_quantizer_utils import (
        QuantizationAnnotation, _is_annotated, _mark_nodes_as_annotated, get_bias_qspec, get_input_act_qspec,
        get_output_act_qspec, get_weight_qspec)

    convs = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}
    clamps = {torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default, torch.ops.aten.clamp.default}

    class ClampFusing(base):  # type: ignore[misc, valid-type]
        def annotate(self, model: Any) -> Any:
            config = self.global_config
            if config is not None and config.input_activation is not None:
                for clamp in model.graph.nodes:
                    conv = clamp.args[0] if clamp.op == "call_function" and clamp.target in clamps else None
                    if conv is None or getattr(conv, "op", None) != "call_function" or conv.target not in convs \
                            or len(conv.users) != 1:
                        continue
                    partition = [clamp, conv, conv.args[1]]
                    qspecs = {conv.args[0]: get_input_act_qspec(config), conv.args[1]: get_weight_qspec(config)}
                    bias = conv.args[2] if len(conv.args) > 2 else None
                    if bias is not None and hasattr(bias, "op"):
                        qspecs[bias] = get_bias_qspec(config)
                        partition.append(bias)
                    if _is_annotated(partition):
                        continue
                    conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qspecs,
                                                                                  _annotated=True)
                    clamp.meta["quantization_annotation"] = QuantizationAnnotation(
                        output_qspec=get_output_act_qspec(config), _annotated=True)
                    _mark_nodes_as_annotated(partition)
            return super().annotate(model)

    return ClampFusing


def with_metadata(content: bytes, props: Mapping[str, str]) -> bytes:
    """``content`` with ``props`` (as JSON) in the model's ``mzoo_metadata`` buffer (replacing an older one)."""
    import json

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    for old in model.buffers or []:
        # The quantiser appends weights after the flatbuffer (offset/size); a repacked flatbuffer moves, so
        # they are taken back inside it.
        if old.offset and old.offset > 1:
            old.data = np.frombuffer(content[old.offset:old.offset + old.size], dtype=np.uint8)
            old.offset = old.size = 0
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(dict(props), sort_keys=True).encode(), dtype=np.uint8)
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) != METADATA_NAME] + [entry]
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


# -------------------------------------------------------------------------------------------- verification


def _verify_fp32(model: nn.Module, loaded: LitertProgram, shape: tuple[int, ...],
                 cfg: LitertExportConfig) -> tuple[tuple[float, ...], dict[int, tuple[float, float]]]:
    import copy

    generator = torch.Generator().manual_seed(cfg.seed)
    diffs: list[float] = []
    floor: dict[int, tuple[float, float]] = {}
    model64: nn.Module | None = None
    for index in range(cfg.verify_runs):
        x = torch.randn(*shape, generator=generator)
        expected = run_eager(model, x)
        got = loaded.run(x.numpy())
        if got.shape != expected.shape:
            raise _mismatch(cfg, index, math.inf, f"shape {got.shape} != eager shape {expected.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
        if not diff <= cfg.atol:  # `not <=` so that NaN fails too
            if not math.isfinite(diff) or cfg.noise_floor_factor == 0:
                raise _mismatch(cfg, index, diff)
            model64 = model64 or copy.deepcopy(model).double()
            lite_err, eager_err = float64_distances(model64, x, got, expected)
            if not within_noise_floor(lite_err, eager_err, cfg.atol, cfg.noise_floor_factor):
                raise _mismatch(cfg, index, diff, noise_floor_detail(diff, lite_err, eager_err, cfg.atol,
                                                                     cfg.noise_floor_factor))
            floor[index] = (lite_err, eager_err)
        diffs.append(diff)
    return tuple(diffs), floor


def _mismatch(cfg: LitertExportConfig, index: int, diff: float, detail: str = "") -> LitertVerificationError:
    what = detail or f"max abs diff {diff:.3g} exceeds atol {cfg.atol:.3g}"
    return LitertVerificationError(
        f"LiteRT fp32 output for verification input {index} (seed {cfg.seed}, batch {cfg.batch_size}) does not "
        f"match eager PyTorch: {what} (max abs diff {diff:.3g}, atol {cfg.atol:.3g})")


def _verify_agreement(model: nn.Module, loaded: LitertProgram, images: np.ndarray, cfg: LitertExportConfig,
                      target: Path, reference: Reference | None) -> tuple[Any, Any]:
    from export.onnx_precision import failed_threshold, measure_agreement

    images = np.asarray(images, dtype=np.float32)
    if reference is None:
        def reference(batch: np.ndarray) -> np.ndarray:
            return run_eager(model, torch.from_numpy(batch))
    actual = run_batched(loaded.run, images, cfg.batch_size)
    expected = run_batched(reference, images, cfg.batch_size)
    agreement = measure_agreement(expected.reshape(len(images), -1), actual.reshape(len(images), -1))
    thresholds = cfg.gate()
    failed = failed_threshold(agreement.top1_agreement, agreement.mean_cosine, agreement.min_cosine,
                              agreement.constant_output_cosine, thresholds)
    if failed is not None:
        detail = (f"top-1 agreement {agreement.top1_agreement:.4f}, cosine mean {agreement.mean_cosine:.6f} min "
                  f"{agreement.min_cosine:.6f}, a constant output would score {agreement.constant_output_cosine:.4f}")
        raise AgreementError(f"LiteRT {cfg.precision} {str(target)!r}", *failed, detail=detail)
    return agreement, thresholds


def _check_batch(batch: np.ndarray, input_size: tuple[int, int, int], what: str) -> None:
    shape = np.shape(batch)
    if len(shape) != 4 or tuple(shape[1:]) != input_size or shape[0] < 1:
        raise InputError(f"{what} images have shape {shape}, expected (N, {', '.join(map(str, input_size))})")
    if not np.all(np.isfinite(batch)):
        raise InputError(f"{what} images contain NaN or infinite values")


# ------------------------------------------------------------------------------------------------ reading


@dataclass
class LitertProgram:
    """A ``.tflite`` file in LiteRT's interpreter, tensors allocated; ``run`` takes and returns float32 (an int8
    file's input is quantised and its output dequantised with the file's own scales)."""

    path: str
    interpreter: Any
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_dtype: str
    ops: LitertOps

    def run(self, x: np.ndarray) -> np.ndarray:
        it = self.interpreter
        (inp,), (out,) = it.get_input_details(), it.get_output_details()
        data = np.asarray(x, dtype=np.float32)
        if data.shape != self.input_shape:
            raise InputError(f"{self.path!r} takes input {self.input_shape}, got {data.shape}")
        try:
            it.set_tensor(inp["index"], quantize_input(data, inp))
            it.invoke()
            return _dequantize(it.get_tensor(out["index"]), out)
        except Exception as err:
            raise LitertVerificationError(f"LiteRT failed to run {self.path!r}: {one_line(err)}") from err


def quantize_input(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """Float input ``x`` as the input tensor described by ``detail`` (an interpreter's input details) takes it:
    unchanged for float32, quantised with the file's scale and zero point for an int8 file."""
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def load_litert(path: str | os.PathLike[str], threads: int = 1, xnnpack: bool = True) -> LitertProgram:
    """Load a ``.tflite`` file into LiteRT's interpreter (``xnnpack``: with its default XNNPACK delegate).

    Raises ``LitertVerificationError`` with a one-line reason naming ``path`` for a missing, non-regular or
    non-LiteRT file, one the interpreter rejects, or one that does not take exactly one input and one output.
    """
    file = Path(path)
    if not file.is_file():
        what = "does not exist" if not file.exists() else "is not a regular file"
        raise LitertVerificationError(f"LiteRT file {str(file)!r} {what}")
    with file.open("rb") as handle:
        head = handle.read(8)
    if head[4:8] != _TFLITE_IDENTIFIER:
        raise LitertVerificationError(f"{str(file)!r} is not a LiteRT model: no 'TFL3' identifier at byte 4 "
                                      f"(found {head[4:8]!r})")
    Interpreter, OpResolverType = _interpreter_api()
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        it = Interpreter(model_path=str(file), num_threads=threads, experimental_op_resolver_type=resolver)
        it.allocate_tensors()
    except Exception as err:
        raise LitertVerificationError(f"LiteRT cannot load {str(file)!r}: {one_line(err)}") from err
    inputs, outputs = it.get_input_details(), it.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise LitertVerificationError(f"{str(file)!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
                                      "expected one image tensor in and one out")
    return LitertProgram(str(file), it, tuple(int(d) for d in inputs[0]["shape"]),
                         tuple(int(d) for d in outputs[0]["shape"]), np.dtype(inputs[0]["dtype"]).name,
                         ops_of(it, xnnpack))


def ops_of(interpreter: Any, xnnpack: bool = True) -> LitertOps:
    """The delegation breakdown of a loaded interpreter. A ``DELEGATE`` node stands for the original nodes that
    lie between its inputs and its outputs: those are found by walking back from its outputs through the
    original nodes' producers, stopping at its inputs."""
    details = interpreter._get_ops_details()
    original = [d for d in details if d["op_name"] != _DELEGATE]
    delegates = [d for d in details if d["op_name"] == _DELEGATE]
    producer = {int(t): d["index"] for d in original for t in d["outputs"]}
    by_index = {d["index"]: d for d in original}
    delegated: set[int] = set()
    for node in delegates:
        stop = {int(t) for t in node["inputs"]}
        pending = [int(t) for t in node["outputs"]]
        while pending:
            tensor = pending.pop()
            index = producer.get(tensor)
            if tensor in stop or index is None or index in delegated:
                continue
            delegated.add(index)
            pending.extend(int(t) for t in by_index[index]["inputs"] if int(t) >= 0)
    ops = Counter(d["op_name"] for d in original)
    left = Counter(d["op_name"] for d in original if d["index"] not in delegated)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()} if left else {}
    where = tuple(f"{d['op_name']} @ {_module_path(names.get(int(d['outputs'][0]), ''))}" for d in original
                  if d["index"] not in delegated and len(d["outputs"]))[:_MAX_WHERE]
    return LitertOps(ops=dict(sorted(ops.items())), delegated_ops=len(delegated), total_ops=len(original),
                     partitions=len(delegates), not_delegated=dict(sorted(left.items())),
                     layout_ops={k: v for k, v in sorted(ops.items()) if k in _LAYOUT_OPS},
                     delegate="XNNPACK" if xnnpack else "none", not_delegated_at=where)


def _module_path(tensor_name: str) -> str:
    """``a.B/c.D_blocks/c.D_0/e.F_conv2;...`` (litert-torch's name: the module stack, type_attribute per level)
    -> ``blocks.0.conv2``; the raw name when it has no such stack."""
    stack = tensor_name.split(";")[0].split("/")[1:]
    attrs = [level.rsplit("_", 1)[1] for level in stack if "_" in level]
    return ".".join(attrs) or tensor_name.split(";")[0] or "?"


def litert_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``mzoo_metadata`` written by :func:`export_litert` (``{}`` for a file converted elsewhere)."""
    import json

    from ai_edge_litert import schema_py_generated as schema

    load_litert(path)  # the file checks and their one-line errors
    data = Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _text(entry.Name()) == METADATA_NAME:
            raw = bytes(model.Buffers(entry.Buffer()).DataAsNumpy())
            try:
                value = json.loads(raw)
            except ValueError as err:
                raise LitertVerificationError(f"{str(path)!r}: {METADATA_NAME!r} is not JSON") from err
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise LitertVerificationError(f"{str(path)!r}: {METADATA_NAME!r} is not a str -> str mapping")
            return value
    return {}


# ------------------------------------------------------------------------------------------ the library


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """litert-torch prints a progress line per conversion step and the quantiser a size summary, and the root
    logger warns that a PT2E module is "in training mode" (it is not: its observers were folded); none of it is
    actionable for a user of this exporter, whose report says what was made."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _converter() -> Any:
    # Importing litert-torch logs a torch deprecation warning (torchao's enum registration), not actionable here.
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        import litert_torch
    except ImportError as err:
        raise missing_extra("LiteRT export", "litert-torch and ai-edge-litert", err) from err
    finally:
        pytree_log.setLevel(level)
    return litert_torch


def _interpreter_api() -> tuple[Any, Any]:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as err:
        raise missing_extra("Running LiteRT files", "ai-edge-litert", err) from err
    return Interpreter, OpResolverType


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
