"""Core ML export: owns turning an ``nn.Module`` into a verified ML Program ``.mlpackage`` with coremltools.

The model is traced (or ``torch.export``-ed), converted with ``convert_to="mlprogram"`` at a chosen precision
and deployment target, given an RGB ``ImageType`` input whose scale/bias carry the model's mean/std (see
:func:`export.coreml_config.image_normalization`), tagged with ``mzoo.*`` metadata, saved to a temporary package
and reloaded. Verification is honest about where it runs: the structural check of :mod:`export.coreml_verify`
always runs; a numerical comparison with eager PyTorch needs the Core ML framework, which exists only on macOS,
so on Linux it is reported as not run. Only a package that passed is renamed into place; on any failure nothing
is left behind. Also owns the report, and the quiet, lazy boundary around every coremltools call (its import
included: importing this module imports no coremltools). Re-exports the public names of
:mod:`export.coreml_config` and :mod:`export.coreml_verify`, so callers need only ``export.coreml``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.errors import InputError
from export.coreml_config import (
    CLASSIFIER_LABEL_OUTPUT,
    FP16_MIN_COSINE,
    FP16_MIN_TOP1_AGREEMENT,
    FP32_ATOL,
    NUMERICAL_SAMPLES,
    OPSET_NAMES,
    TARGETS,
    CoremlAdapter,
    CoremlExportConfig,
    ImageNormalization,
    Precision,
    Source,
    image_normalization,
    output_dtype,
)
from export.coreml_verify import (
    CoremlOp,
    CoremlProgram,
    CoremlStructure,
    compare_with_eager,
    eager_input,
    program_ops,
    seeded_samples,
    verify_coreml_package,
)
from export.errors import CoremlVerificationError, ExportError, exporter, one_line
from common.files import check_target, publish, temporary_path
from export.parity import check_input_size, check_metadata, check_model, eval_mode

__all__ = [
    "CLASSIFIER_LABEL_OUTPUT",
    "FP16_MIN_COSINE",
    "FP16_MIN_TOP1_AGREEMENT",
    "FP32_ATOL",
    "NUMERICAL_SAMPLES",
    "OPSET_NAMES",
    "PACKAGE_SUFFIX",
    "TARGETS",
    "VERIFICATION_NUMERICAL",
    "CoremlAdapter",
    "CoremlExportConfig",
    "CoremlExportReport",
    "CoremlOp",
    "CoremlProgram",
    "CoremlStructure",
    "ImageNormalization",
    "Precision",
    "Source",
    "can_run_coreml",
    "compare_with_eager",
    "eager_input",
    "export_coreml",
    "image_normalization",
    "program_ops",
    "seeded_samples",
    "structural_verification_label",
    "verify_coreml_package",
]

PACKAGE_SUFFIX = ".mlpackage"
VERIFICATION_NUMERICAL = "structural + numerical (macOS)"

# Known noise, silenced only inside the coremltools calls (import, convert, save, load):
_NOISE = (
    "Failed to load _ML",  # libcoremlpython (prediction) is macOS-only; conversion does not need it
    "has not been tested with coremltools",  # torch newer than coremltools' tested version
    "scikit-learn version",  # coremltools disables its sklearn converter; unused here
    # torch.jit.trace is deprecated in torch, yet it is the conversion path coremltools recommends
    "is deprecated. Please switch to `torch.compile` or `torch.export`",
    "is an Enum subclass and is now natively supported",  # torch pytree, emitted while coremltools imports
    "_TORCH_OPS_REGISTRY.__contains__ is deprecated",  # coremltools calling its own deprecated API
    "read_text is deprecated. Use files() instead",  # executorch (imported by coremltools), legacy
    "open_text is deprecated. Use files() instead",  # importlib.resources calls, at import time
)
_PROGRESS_BARS = ("Converting PyTorch Frontend", "Running MIL", "Translating MIL")
_QUIET_LOGGERS = ("torch.utils._pytree",)


# ------------------------------------------------------------------------------------------------ report


@dataclass(frozen=True)
class CoremlExportReport:
    """What was written, what was checked, and (on macOS) how well Core ML matched eager PyTorch."""

    path: str
    precision: Precision
    minimum_deployment_target: str
    source: Source
    structure: CoremlStructure
    package_bytes: int
    export_seconds: float
    verification: str
    normalization: ImageNormalization | None
    # On macOS: fp32 {"max_abs_diff"}, fp16 {"top1_agreement", "min_cosine", "max_abs_diff"}; None elsewhere.
    numerical: dict[str, float] | None
    thresholds: dict[str, float]
    converter_messages: tuple[str, ...]
    system: str  # platform.system() where the export ran: decides whether Core ML could run
    coremltools_version: str
    torch_version: str

    @property
    def inputs(self) -> tuple[dict[str, Any], ...]:
        return self.structure.inputs

    @property
    def outputs(self) -> tuple[dict[str, Any], ...]:
        return self.structure.outputs

    @property
    def op_histogram(self) -> dict[str, int]:
        return self.structure.op_histogram

    @property
    def num_ops(self) -> int:
        return self.structure.num_ops

    @property
    def summary(self) -> str:
        s = self.structure
        head = (
            f"structural: {s.num_ops} ops ({s.num_compute_ops} non-const), all available at "
            f"{self.minimum_deployment_target}, {self.precision} applied"
        )
        n = self.numerical
        if n is None:
            return f"{head}; numerical: not run ({self.system or 'unknown OS'})"
        if self.precision == "fp32":
            return f"{head}; numerical: max abs diff {n['max_abs_diff']:.2g}"
        return (
            f"{head}; numerical: top-1 agreement {100 * n['top1_agreement']:.1f} %, "
            f"min cosine {n['min_cosine']:.6f}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "precision": self.precision,
            "minimum_deployment_target": self.minimum_deployment_target,
            "source": self.source,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "op_histogram": dict(self.op_histogram),
            "num_ops": self.num_ops,
            "structure": self.structure.to_dict(),
            "package_bytes": self.package_bytes,
            "export_seconds": self.export_seconds,
            "verification": self.verification,
            "normalization": self.normalization.to_dict() if self.normalization else None,
            "numerical": dict(self.numerical) if self.numerical is not None else None,
            "thresholds": dict(self.thresholds),
            "converter_messages": list(self.converter_messages),
            "system": self.system,
            "coremltools_version": self.coremltools_version,
            "torch_version": self.torch_version,
            "summary": self.summary,
        }


def structural_verification_label(system: str | None = None) -> str:
    """The ``verification`` phrase for a platform where Core ML cannot run."""
    system = system or platform.system() or "this OS"
    return f"structural ({system}: Core ML cannot run here)"


def can_run_coreml() -> bool:
    """Whether Core ML predictions are possible here (the framework ships only with macOS)."""
    return platform.system() == "Darwin"


# ---------------------------------------------------------------------------------------------- exporting


@exporter
def export_coreml(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size: tuple[int, int, int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    metadata: Mapping[str, str] | None = None,
    cfg: CoremlExportConfig = CoremlExportConfig(),
) -> CoremlExportReport:
    """Convert ``model`` to a verified ML Program package at ``path`` (a directory ending in ``.mlpackage``).

    ``input_size`` is (channels, height, width); the Core ML input has batch 1. ``mean``/``std`` are the
    model's normalisation for pixels scaled to 0..1; with ``cfg.image_input`` they are baked into the image
    input (see :func:`image_normalization`), otherwise only recorded in the metadata. Raises ``ExportError`` if the
    model cannot be traced or converted or the directory cannot be written, ``CoremlVerificationError`` if the
    package fails the structural check (or, on macOS, the fp32 comparison), and ``AgreementError`` if an fp16
    package disagrees with eager PyTorch on macOS. An existing package at ``path`` is replaced only on success.
    """
    check_model(model)
    input_size = check_input_size(input_size)
    norm = image_normalization(mean, std)
    if len(norm.mean) != input_size[0]:
        raise InputError(
            f"mean/std have {len(norm.mean)} channels but input_size {input_size} has {input_size[0]}"
        )
    if cfg.image_input and input_size[0] != 3:
        raise InputError(
            f"an RGB image input needs 3 channels, input_size is {input_size}; use image_input=False"
        )
    user_meta = _check_metadata(metadata)
    target = Path(path)
    if target.suffix != PACKAGE_SUFFIX:
        raise ExportError(f"Core ML output path {str(target)!r} must end in {PACKAGE_SUFFIX!r}")
    check_target(target, "Core ML", is_package=True)

    with eval_mode(model), temporary_path(target, suffix=PACKAGE_SUFFIX, directory=True) as tmp:
        return _export_to(model, target, tmp, input_size, norm, user_meta, cfg)


def _export_to(
    model: nn.Module,
    target: Path,
    tmp: Path,
    input_size: tuple[int, int, int],
    norm: ImageNormalization,
    user_meta: dict[str, str],
    cfg: CoremlExportConfig,
) -> CoremlExportReport:
    adapter = CoremlAdapter(
        model,
        channel_multiplier=norm.channel_multiplier if cfg.image_input else None,
        softmax=cfg.class_labels is not None,
    ).eval()
    num_classes = _num_outputs(adapter, input_size, cfg)
    messages: list[str] = []
    ct = _import_coremltools(messages)
    start = time.perf_counter()
    program = _capture(adapter, input_size, cfg, messages)
    mlmodel = _convert(ct, program, input_size, norm, cfg, messages, type(model).__name__)
    meta = _package_metadata(user_meta, input_size, norm, cfg)
    _describe(mlmodel, meta, input_size, norm, cfg)
    with _quiet(messages):
        try:
            mlmodel.save(str(tmp))
        except Exception as err:
            raise ExportError(f"cannot save the Core ML package to {str(target)!r}: {one_line(err)}") from err
    export_seconds = time.perf_counter() - start

    try:
        with _quiet(messages):
            reloaded = ct.models.MLModel(str(tmp), skip_model_load=True)
    except Exception as err:
        raise CoremlVerificationError(f"the saved Core ML package cannot be read back: {one_line(err)}") from err
    structure = verify_coreml_package(
        reloaded, input_size, cfg=cfg, num_classes=num_classes, metadata=meta, converted=mlmodel
    )
    numerical = None
    verification = structural_verification_label()
    if can_run_coreml():
        numerical = _verify_numerical(ct, tmp, model, input_size, norm, cfg, messages)
        verification = VERIFICATION_NUMERICAL
    report = CoremlExportReport(
        path=str(target),
        precision=cfg.precision,
        minimum_deployment_target=cfg.minimum_deployment_target,
        source=cfg.source,
        structure=structure,
        package_bytes=_tree_size(tmp),
        export_seconds=export_seconds,
        verification=verification,
        normalization=norm if cfg.image_input else None,
        numerical=numerical,
        thresholds=_thresholds(cfg),
        converter_messages=tuple(messages),
        system=platform.system(),
        coremltools_version=str(ct.__version__),
        torch_version=torch.__version__,
    )
    publish(tmp, target)
    return report


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return check_metadata(metadata, ("mzoo.", "com.github.apple."), "the exporter or coremltools")


def _thresholds(cfg: CoremlExportConfig) -> dict[str, float]:
    if cfg.precision == "fp32":
        return {"max_abs_diff": cfg.fp32_atol}
    return {"top1_agreement": cfg.fp16_min_top1_agreement, "min_cosine": cfg.fp16_min_cosine}


def _num_outputs(adapter: CoremlAdapter, input_size: tuple[int, int, int], cfg: CoremlExportConfig) -> int:
    """Run the adapter once in eager mode: the model must give one (1, num_classes) tensor."""
    x = torch.zeros(1, *input_size)
    try:
        with torch.inference_mode():
            out = adapter(x)
    except Exception as err:
        raise ExportError(f"{type(adapter.model).__name__} fails in eager PyTorch: {one_line(err)}") from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ExportError(f"{type(adapter.model).__name__} must return one (1, num_classes) tensor, got {got}")
    num_classes = int(out.shape[1])
    if cfg.class_labels is not None and len(cfg.class_labels) != num_classes:
        raise InputError(
            f"class_labels has {len(cfg.class_labels)} labels but {type(adapter.model).__name__} "
            f"outputs {num_classes} classes"
        )
    return num_classes


def _capture(
    adapter: CoremlAdapter, input_size: tuple[int, int, int], cfg: CoremlExportConfig, messages: list[str]
) -> Any:
    """A TorchScript trace or a decomposed ExportedProgram of ``adapter``; ``ExportError`` on failure."""
    example = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(cfg.seed))
    name = type(adapter.model).__name__
    tracer_warnings: list[str] = []
    try:
        with _quiet(messages, tracer_warnings):
            if cfg.source == "trace":
                return_value: Any = torch.jit.trace(adapter, example, check_trace=False)
            else:
                return_value = torch.export.export(adapter, (example,)).run_decompositions({})
    except Exception as err:
        raise ExportError(f"failed to {cfg.source} {name} for Core ML: {one_line(err)}") from err
    # A TracerWarning means the trace baked in a value-dependent branch or shape: the graph may be wrong
    # for other inputs even if it converts, so it is not accepted (as in the ONNX exporter).
    if tracer_warnings:
        raise ExportError(f"tracing {name} for Core ML is unreliable: {tracer_warnings[0]}")
    return return_value


def _convert(
    ct: Any,
    program: Any,
    input_size: tuple[int, int, int],
    norm: ImageNormalization,
    cfg: CoremlExportConfig,
    messages: list[str],
    name: str,
) -> Any:
    shape = (1, *input_size)
    if cfg.image_input:
        inputs = [
            ct.ImageType(
                name=cfg.input_name, shape=shape, scale=norm.scale, bias=list(norm.bias),
                color_layout=ct.colorlayout.RGB,
            )
        ]
    else:
        inputs = [ct.TensorType(name=cfg.input_name, shape=shape, dtype=np.float32)]
    classifier = None
    if cfg.class_labels is not None:
        classifier = ct.ClassifierConfig(list(cfg.class_labels), predicted_feature_name=CLASSIFIER_LABEL_OUTPUT)
        outputs = [ct.TensorType(name=cfg.output_name)]
    else:
        outputs = [ct.TensorType(name=cfg.output_name, dtype=output_dtype(cfg))]
    precision = ct.precision.FLOAT16 if cfg.precision == "fp16" else ct.precision.FLOAT32
    try:
        with _quiet(messages):
            return ct.convert(
                program,
                source="pytorch",
                inputs=inputs,
                outputs=outputs,
                classifier_config=classifier,
                convert_to="mlprogram",
                compute_precision=precision,
                minimum_deployment_target=getattr(ct.target, cfg.minimum_deployment_target),
                # Loading compiles through the Core ML framework (macOS only); the numerical check loads the
                # saved package itself, so the in-memory model is never loaded.
                skip_model_load=True,
            )
    except Exception as err:
        raise ExportError(f"coremltools failed to convert {name}: {one_line(err)}") from err


def _package_metadata(
    user_meta: Mapping[str, str],
    input_size: tuple[int, int, int],
    norm: ImageNormalization,
    cfg: CoremlExportConfig,
) -> dict[str, str]:
    meta = dict(user_meta)
    meta.update(
        {
            "mzoo.input_size": json.dumps(list(input_size)),
            "mzoo.mean": json.dumps(list(norm.mean)),
            "mzoo.std": json.dumps(list(norm.std)),
            "mzoo.precision": cfg.precision,
            "mzoo.minimum_deployment_target": cfg.minimum_deployment_target,
            "mzoo.source": cfg.source,
            "mzoo.input_kind": "image" if cfg.image_input else "tensor",
            "mzoo.torch_version": torch.__version__,
        }
    )
    if cfg.image_input:
        meta["mzoo.image_scale"] = repr(norm.scale)
        meta["mzoo.image_bias"] = json.dumps(list(norm.bias))
        meta["mzoo.channel_multiplier"] = json.dumps(list(norm.channel_multiplier or ()))
    return meta


def _describe(
    mlmodel: Any,
    meta: Mapping[str, str],
    input_size: tuple[int, int, int],
    norm: ImageNormalization,
    cfg: CoremlExportConfig,
) -> None:
    c, h, w = input_size
    name = meta.get("model_name", "model")
    kind = "classifier" if cfg.class_labels is not None else "network"
    mlmodel.short_description = (
        f"{name}: {kind} for {c}x{h}x{w} inputs, {cfg.precision}, {cfg.minimum_deployment_target} (Mobile Zoo)"
    )
    for key, value in meta.items():
        mlmodel.user_defined_metadata[key] = value
    stats = f"mean {list(norm.mean)}, std {list(norm.std)}"
    if cfg.image_input:
        mlmodel.input_description[cfg.input_name] = f"RGB image {w}x{h}, 0..255; normalised inside ({stats})"
    else:
        mlmodel.input_description[cfg.input_name] = f"float32 (1, {c}, {h}, {w}), already normalised ({stats})"
    if cfg.class_labels is not None:
        mlmodel.output_description[CLASSIFIER_LABEL_OUTPUT] = "most probable class label"
        mlmodel.output_description[cfg.probabilities_output] = "softmax probability of each class label"
    else:
        mlmodel.output_description[cfg.output_name] = "class logits, shape (1, num_classes)"


def _tree_size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


# --------------------------------------------------------------------------------------- quiet coremltools


class _NoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_noise(record.getMessage())


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _is_noise(message: str) -> bool:
    return any(pattern in message for pattern in _NOISE)


@contextlib.contextmanager
def _quiet(messages: list[str], tracer_warnings: list[str] | None = None) -> Iterator[None]:
    """Silence coremltools' known noise for one call; re-emit anything else after it, and record it.

    Progress bars (tqdm writes to ``sys.stderr``) and known log lines / warnings are dropped. Other log
    records and warnings are re-emitted once the call is over and appended to ``messages``. TracerWarnings
    go to ``tracer_warnings`` when given (the caller decides), else are treated like other warnings.
    """
    ct_logger = logging.getLogger("coremltools")
    collector = _Collector()
    noise_filter = _NoiseFilter()
    quiet_loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    stderr = io.StringIO()
    old_propagate = ct_logger.propagate
    caught: list[warnings.WarningMessage] = []
    ct_logger.addHandler(collector)
    ct_logger.propagate = False  # otherwise logging's last-resort handler prints to stderr
    for lg in quiet_loggers:
        lg.addFilter(noise_filter)
    try:
        with warnings.catch_warnings(record=True) as recorded, contextlib.redirect_stderr(stderr):
            caught = recorded
            # The caller's filters stay in force (ResourceWarnings stay hidden); TracerWarnings must not be
            # swallowed by the once-per-location registry, since they decide whether a trace is accepted.
            warnings.simplefilter("always", torch.jit.TracerWarning)
            yield
    finally:
        ct_logger.removeHandler(collector)
        ct_logger.propagate = old_propagate
        for lg in quiet_loggers:
            lg.removeFilter(noise_filter)
        _replay(collector.records, caught, stderr.getvalue(), messages, tracer_warnings)


def _replay(
    records: list[logging.LogRecord],
    caught: list[warnings.WarningMessage],
    stderr_text: str,
    messages: list[str],
    tracer_warnings: list[str] | None,
) -> None:
    for record in records:
        if not _is_noise(record.getMessage()):
            messages.append(f"{record.levelname.lower()}: {record.getMessage()}")
            logging.getLogger(record.name).handle(record)
    for w in caught:
        text = str(w.message)
        if tracer_warnings is not None and issubclass(w.category, torch.jit.TracerWarning):
            tracer_warnings.append(text.splitlines()[0] if text else w.category.__name__)
        elif not _is_noise(text):
            messages.append(f"{w.category.__name__}: {text}")
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for line in stderr_text.replace("\r", "\n").splitlines():
        if line.strip() and not line.lstrip().startswith(_PROGRESS_BARS):
            messages.append(line.strip())
            print(line, file=sys.stderr)


def _import_coremltools(messages: list[str]) -> Any:
    """Import coremltools lazily (slow, noisy): nothing happens when this module is imported."""
    try:
        with _quiet(messages):
            import coremltools
    except ImportError as err:
        raise ExportError(f"coremltools is not installed: {one_line(err)}") from err
    return coremltools


# ------------------------------------------------------------------------------ numerical (macOS only)


def _verify_numerical(
    ct: Any,
    package: Path,
    model: nn.Module,
    input_size: tuple[int, int, int],
    norm: ImageNormalization,
    cfg: CoremlExportConfig,
    messages: list[str],
) -> dict[str, float]:
    """Predict with Core ML on seeded inputs and compare with eager PyTorch (macOS only).

    fp32 runs on the CPU only: the GPU and Neural Engine compute in reduced precision whatever the program
    says. fp16 runs on all compute units, as an app would by default; its thresholds are meant to survive that.
    """
    units = ct.ComputeUnit.CPU_ONLY if cfg.precision == "fp32" else ct.ComputeUnit.ALL
    try:
        with _quiet(messages):
            loaded = ct.models.MLModel(str(package), compute_units=units)
    except Exception as err:
        raise CoremlVerificationError(f"Core ML cannot load the package: {one_line(err)}") from err

    def predict(sample: np.ndarray) -> dict[str, Any]:
        if cfg.image_input:
            from PIL import Image

            feed: Any = Image.fromarray(sample)  # uint8 HxWx3 reads as RGB
        else:
            feed = sample
        try:
            return loaded.predict({cfg.input_name: feed})
        except Exception as err:
            raise CoremlVerificationError(f"Core ML prediction failed: {one_line(err)}") from err

    return compare_with_eager(predict, model, input_size, norm, cfg)
