"""ONNX export that always verifies: export, check, simplify, run in ONNX Runtime, compare with eager PyTorch, publish.

Owns turning an ``nn.Module`` into a single self-contained ``.onnx`` file with a dynamic batch dimension,
``mzoo.*`` metadata and inferred shapes, simplified by onnxslim (in memory; the simplified graph is kept only
if it still passes the checker and strict shape inference with the same inputs, outputs, opset and metadata,
and an onnxslim failure is recorded in the report rather than failing the export), and reading such files
back (``load_onnx``, ``onnx_metadata``). A file only appears at the requested path once the ONNX checker
passed and ONNX Runtime, running the very graph that is published, matched eager PyTorch within
``OnnxExportConfig.atol`` at every verification batch size; on any failure nothing is left behind.

One documented escape: a network whose own fp32 forward is not reproducible to ``atol`` (deep random-init
cell networks drift ~1e-4 from a float64 run of the same weights) cannot be held to ``atol`` against fp32
eager. When the plain check fails, the same input is run in float64 eager, and the export passes only if
ONNX Runtime is within ``atol`` of that exact reference or no further from it than
``noise_floor_factor`` × PyTorch fp32's own distance; the report records both distances.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
import onnxslim
import torch
from torch import nn

from common.errors import InputError
from export.errors import ExportError, OnnxLoadError, OnnxVerificationError, exporter, one_line
from common.files import check_target, publish, temporary_path
from export.parity import (check_input_size, check_metadata, check_model, eval_mode, float64_distances, noise_floor_detail,
                            run_eager, within_noise_floor)

SUPPORTED_OPSETS = (17, 18)
# The batch size of the traced example input. Verification must use other sizes, or a graph whose batch
# was silently specialised to this value would pass.
EXAMPLE_BATCH = 2
BATCH_DIM_NAME = "batch"
# torch's dynamo exporter (via onnxscript's torchlib) emits opset 18 natively; older opsets are converted.
_NATIVE_DYNAMO_OPSET = 18
# Reductions whose `axes` moved from attribute to input in opset 18; the other ones gained no new attribute.
_REDUCE_OPS_AXES_INPUT_IN_18 = frozenset(
    {
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSumSquare",
    }
)

Exporter = Literal["dynamo", "torchscript"]
ShapeDim = int | str


@dataclass(frozen=True)
class OnnxExportConfig:
    """How to export and how strictly to verify.

    ``verify_batch_sizes`` must include a size other than the example batch (2) so that the dynamic batch
    dimension is actually exercised. ``fallback_to_torchscript`` allows the legacy TorchScript exporter when
    the dynamo exporter fails and this torch still ships it. ``simplify`` runs onnxslim on the checked graph.
    """

    opset: int = 18
    atol: float = 1e-4
    verify_batch_sizes: tuple[int, ...] = (1, 3)
    seed: int = 0
    input_name: str = "input"
    output_name: str = "logits"
    fallback_to_torchscript: bool = True
    noise_floor_factor: float = 2.0
    simplify: bool = True

    def __post_init__(self) -> None:
        if self.opset not in SUPPORTED_OPSETS:
            raise InputError(f"opset {self.opset!r} is not supported; choose one of {SUPPORTED_OPSETS}")
        if not (math.isfinite(self.atol) and self.atol > 0):
            raise InputError(f"atol must be a positive finite number, got {self.atol!r}")
        _check_verify_batch_sizes(self.verify_batch_sizes)
        if not (math.isfinite(self.noise_floor_factor) and self.noise_floor_factor >= 0):
            raise InputError(f"noise_floor_factor must be a finite number >= 0, got {self.noise_floor_factor!r}")
        if not self.input_name or not self.output_name or self.input_name == self.output_name:
            raise InputError(
                f"input_name {self.input_name!r} and output_name {self.output_name!r} must be non-empty and differ"
            )


def _check_verify_batch_sizes(sizes: tuple[int, ...]) -> None:
    if not sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in sizes):
        raise InputError(f"verify_batch_sizes must be a non-empty tuple of positive ints, got {sizes!r}")
    if all(b == EXAMPLE_BATCH for b in sizes):
        raise InputError(
            f"verify_batch_sizes {sizes!r} only repeats the export example batch {EXAMPLE_BATCH}; "
            "include another size so the dynamic batch dimension is tested"
        )


@dataclass(frozen=True)
class OnnxExportReport:
    """What was written and how well it matched eager PyTorch. Batch dimensions appear as ``"batch"``.

    ``num_nodes_exported`` counts the exporter's (checked) graph, ``num_nodes`` the published one; they differ
    by what onnxslim removed. ``simplification`` says what happened: ``"onnxslim <version>"``, ``"disabled"``,
    or why the exported graph was kept.
    """

    path: str
    exporter: Exporter
    opset: int
    input_shape: tuple[ShapeDim, ...]
    output_shape: tuple[ShapeDim, ...]
    max_abs_diff: dict[int, float]
    atol: float
    num_nodes_exported: int
    num_nodes: int
    simplified: bool
    simplification: str
    # Batch sizes that passed through the float64 noise-floor rule: (ORT vs fp64, eager fp32 vs fp64).
    noise_floor: dict[int, tuple[float, float]]
    file_size_bytes: int
    export_seconds: float
    torch_version: str
    onnx_version: str
    onnxruntime_version: str
    verification: str

    @property
    def summary(self) -> str:
        """The headline parity figure: the largest ORT-vs-eager difference over the verification batches."""
        text = f"max abs diff {max(self.max_abs_diff.values(), default=math.nan):.1e}"
        if self.noise_floor:
            text += f" (float64 noise-floor rule at batch {', '.join(map(str, sorted(self.noise_floor)))})"
        return text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["output_shape"] = list(self.output_shape)
        data["summary"] = self.summary
        return data


@exporter
def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size: tuple[int, int, int],
    *,
    metadata: Mapping[str, str] | None = None,
    cfg: OnnxExportConfig = OnnxExportConfig(),
) -> OnnxExportReport:
    """Export ``model`` to a verified ONNX file at ``path`` with a dynamic batch dimension.

    ``input_size`` is (channels, height, width). Raises ``ExportError`` if the model cannot be exported or the
    directory cannot be written, and ``OnnxVerificationError`` if ONNX Runtime disagrees with eager PyTorch.
    An existing file at ``path`` is replaced only on success.
    """
    check_model(model)
    input_size = check_input_size(input_size)
    props = _metadata_props(metadata, cfg)
    target = Path(path)
    check_target(target, "ONNX")

    with eval_mode(model), temporary_path(target, suffix=".onnx.tmp") as tmp:
        return _export_to(model, target, tmp, input_size, props, cfg)


def _export_to(
    model: nn.Module,
    target: Path,
    tmp: Path,
    input_size: tuple[int, int, int],
    props: dict[str, str],
    cfg: OnnxExportConfig,
) -> OnnxExportReport:
    start = time.perf_counter()
    proto, exporter = _export_proto(model, input_size, tmp, cfg)
    exported = _finalize(proto, props, exporter)
    final, simplification = _simplify(exported) if cfg.simplify else (exported, "disabled")
    export_seconds = time.perf_counter() - start
    # Weights stay inside the one file: these models are far below protobuf's 2 GiB limit.
    onnx.save_model(final, str(tmp), save_as_external_data=False)
    saved = load_onnx(tmp)  # checks the bytes on disk, not just the in-memory proto
    diffs, noise_floor = _verify(model, tmp, input_size, cfg)
    report = OnnxExportReport(
        path=str(target),
        exporter=exporter,
        opset=_default_opset(saved),
        input_shape=_value_shape(saved.graph.input[0]),
        output_shape=_value_shape(saved.graph.output[0]),
        max_abs_diff=diffs,
        atol=cfg.atol,
        num_nodes_exported=len(exported.graph.node),
        num_nodes=len(saved.graph.node),
        simplified=final is not exported,
        simplification=simplification,
        noise_floor=noise_floor,
        file_size_bytes=tmp.stat().st_size,
        export_seconds=export_seconds,
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        onnxruntime_version=ort.__version__,
        verification=f"ORT (CPU, basic optimisations) vs eager fp32 on seeded random inputs at batch "
                     f"{' and '.join(map(str, cfg.verify_batch_sizes))}, atol {cfg.atol:g}",
    )
    publish(tmp, target)
    return report


def _metadata_props(metadata: Mapping[str, str] | None, cfg: OnnxExportConfig) -> dict[str, str]:
    props = check_metadata(metadata)
    props["mzoo.opset"] = str(cfg.opset)
    props["mzoo.torch_version"] = torch.__version__
    return props


# ---------------------------------------------------------------------------------------------- exporting


def _export_proto(
    model: nn.Module, input_size: tuple[int, int, int], scratch: Path, cfg: OnnxExportConfig
) -> tuple[onnx.ModelProto, Exporter]:
    example = torch.randn(EXAMPLE_BATCH, *input_size, generator=torch.Generator().manual_seed(cfg.seed))
    try:
        return _export_dynamo(model, example, cfg), "dynamo"
    except Exception as err:
        dynamo_error = err
    reason = one_line(dynamo_error)
    if cfg.fallback_to_torchscript and _torchscript_exporter_available():
        try:
            return _export_torchscript(model, example, scratch, cfg), "torchscript"
        except Exception as ts_err:
            reason += f" (torchscript fallback also failed: {one_line(ts_err)})"
    raise ExportError(f"failed to export {type(model).__name__} to ONNX: {reason}") from dynamo_error


def _export_dynamo(model: nn.Module, example: torch.Tensor, cfg: OnnxExportConfig) -> onnx.ModelProto:
    batch = torch.export.Dim(BATCH_DIM_NAME, min=1)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        # Asking torch for opset 17 silently yields opset 18 when its converter fails, so export at the
        # native opset and convert explicitly after the optimiser has folded the axes constants.
        opset_version=_NATIVE_DYNAMO_OPSET,
        input_names=[cfg.input_name],
        output_names=[cfg.output_name],
        dynamic_shapes=({0: batch},),
        optimize=True,
        verbose=False,
    )
    if program is None:
        raise ExportError(f"torch.onnx.export returned no program for {type(model).__name__}")
    proto = program.model_proto
    if cfg.opset != _NATIVE_DYNAMO_OPSET:
        proto = _convert_opset(proto, cfg.opset)
    return proto


def _convert_opset(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    converted = onnx.version_converter.convert_version(proto, opset)
    if _default_opset(converted) != opset:
        raise ExportError(f"could not convert the ONNX graph from opset {_default_opset(proto)} to {opset}")
    _drop_noop_with_empty_axes(converted)
    return converted


def _drop_noop_with_empty_axes(proto: onnx.ModelProto) -> None:
    # onnx's 18->17 adapter moves `axes` back to an attribute but keeps `noop_with_empty_axes`, which those
    # reductions only gained in opset 18, so the checker rejects the node. Its default (0) changes nothing.
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _REDUCE_OPS_AXES_INPUT_IN_18:
            continue
        for attr in list(node.attribute):
            if attr.name != "noop_with_empty_axes":
                continue
            if attr.i != 0:
                raise ExportError(f"node {node.name!r} ({node.op_type}) needs opset 18 (noop_with_empty_axes=1)")
            node.attribute.remove(attr)


def _torchscript_exporter_available() -> bool:
    # The legacy exporter is deprecated; once torch drops it, `dynamic_axes` leaves the signature too.
    return "dynamic_axes" in inspect.signature(torch.onnx.export).parameters


def _export_torchscript(
    model: nn.Module, example: torch.Tensor, scratch: Path, cfg: OnnxExportConfig
) -> onnx.ModelProto:
    batch_axis = {0: BATCH_DIM_NAME}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(scratch),
            dynamo=False,
            opset_version=cfg.opset,
            input_names=[cfg.input_name],
            output_names=[cfg.output_name],
            dynamic_axes={cfg.input_name: batch_axis, cfg.output_name: batch_axis},
            do_constant_folding=True,
        )
    # A TracerWarning means the trace baked in a value-dependent branch or shape: the graph may be wrong for
    # other inputs even if it matches on the verification inputs, so it is not accepted.
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    if tracer:
        raise ExportError(f"tracing is unreliable for this model: {tracer[0].message}")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return onnx.load_model(str(scratch))


def _finalize(proto: onnx.ModelProto, props: Mapping[str, str], exporter: Exporter) -> onnx.ModelProto:
    """Attach metadata, check the graph and store inferred shapes, as the file will be published."""
    _strip_debug_metadata(proto.graph)
    del proto.metadata_props[:]
    for key, value in {**props, "mzoo.exporter": exporter}.items():
        proto.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(proto, full_check=True)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"exported ONNX graph fails the ONNX checker: {one_line(err)}") from err


def _simplify(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """onnxslim's version of a finalised graph, or ``proto`` itself and why it was kept.

    The simplified graph must keep the interface the exporter promised (input/output names, the symbolic
    batch dimension, the opset) and the metadata, and must pass the same checks as the exported one.
    """
    try:
        slim = onnxslim.slim(copy.deepcopy(proto))  # the copy: onnxslim edits the model it is given
    except Exception as err:  # onnxslim is an optional improvement; its bugs must not fail an export
        return proto, f"kept the exported graph: onnxslim failed: {one_line(err)}"
    if not isinstance(slim, onnx.ModelProto):
        return proto, "kept the exported graph: onnxslim returned no model"
    interface = [(v.name, _value_shape(v)) for v in (*proto.graph.input, *proto.graph.output)]
    slim_interface = [(v.name, _value_shape(v)) for v in (*slim.graph.input, *slim.graph.output)]
    if slim_interface != interface:
        return proto, f"kept the exported graph: onnxslim changed its inputs/outputs to {slim_interface}"
    if _default_opset(slim) != _default_opset(proto):
        return proto, f"kept the exported graph: onnxslim changed the opset to {_default_opset(slim)}"
    del slim.metadata_props[:]
    slim.metadata_props.extend(proto.metadata_props)
    try:
        onnx.checker.check_model(slim, full_check=True)
        slim = onnx.shape_inference.infer_shapes(slim, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        return proto, f"kept the exported graph: onnxslim's graph fails the ONNX checker: {one_line(err)}"
    return slim, f"onnxslim {onnxslim.__version__}"


def _strip_debug_metadata(graph: onnx.GraphProto) -> None:
    # The dynamo exporter annotates every node and value with FX names and Python stack traces (local file
    # paths); dropping them makes the artefact smaller and byte-identical across machines.
    for item in (*graph.node, *graph.value_info, *graph.input, *graph.output, *graph.initializer):
        del item.metadata_props[:]
    for node in graph.node:
        for attr in node.attribute:
            for subgraph in (attr.g, *attr.graphs) if attr.HasField("g") else attr.graphs:
                _strip_debug_metadata(subgraph)


# -------------------------------------------------------------------------------------------- verification


def _verify(
    model: nn.Module, path: Path, input_size: tuple[int, int, int], cfg: OnnxExportConfig
) -> tuple[dict[int, float], dict[int, tuple[float, float]]]:
    session = _verification_session(path)
    generator = torch.Generator().manual_seed(cfg.seed)
    diffs: dict[int, float] = {}
    noise_floor: dict[int, tuple[float, float]] = {}
    model64: nn.Module | None = None
    for batch_size in cfg.verify_batch_sizes:
        x = torch.randn(batch_size, *input_size, generator=generator)
        expected = run_eager(model, x)
        try:
            actual = _run_ort(session, cfg.input_name, x.numpy())
        except Exception as err:  # e.g. a batch dimension that was specialised to the example batch
            detail = f"ONNX Runtime failed: {one_line(err)}"
            raise OnnxVerificationError(cfg.output_name, batch_size, math.nan, cfg.atol, detail=detail) from err
        try:
            diffs[batch_size] = _compare(actual, expected, batch_size, cfg)
        except OnnxVerificationError as err:
            if not math.isfinite(err.max_abs_diff) or cfg.noise_floor_factor == 0:
                raise
            if model64 is None:
                model64 = copy.deepcopy(model).double()
            noise_floor[batch_size] = _check_noise_floor(model64, x, actual[cfg.output_name], expected, err, cfg)
            diffs[batch_size] = err.max_abs_diff
    return diffs, noise_floor


def _check_noise_floor(model64: nn.Module, x: torch.Tensor, got: np.ndarray, expected: np.ndarray,
                       err: OnnxVerificationError, cfg: OnnxExportConfig) -> tuple[float, float]:
    """(ORT vs float64 eager, fp32 eager vs float64 eager); re-raises ``err`` unless ORT is within the floor."""
    ort_err, eager_err = float64_distances(model64, x, got, expected)
    if within_noise_floor(ort_err, eager_err, cfg.atol, cfg.noise_floor_factor):
        return ort_err, eager_err
    raise OnnxVerificationError(
        err.output_name, err.batch_size, err.max_abs_diff, cfg.atol,
        detail=noise_floor_detail(err.max_abs_diff, ort_err, eager_err, cfg.atol, cfg.noise_floor_factor),
    ) from None


def _verification_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Basic only: extended/all fusions change float rounding and would blur what the exporter itself did.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ExportError(f"ONNX Runtime cannot load the exported graph: {one_line(err)}") from err


def _run_ort(session: ort.InferenceSession, input_name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {input_name: x})))


def _compare(
    actual: Mapping[str, np.ndarray], expected: np.ndarray, batch_size: int, cfg: OnnxExportConfig
) -> float:
    name = cfg.output_name
    if set(actual) != {name}:
        raise OnnxVerificationError(
            name, batch_size, math.nan, cfg.atol, detail=f"ONNX outputs are {sorted(actual)}, expected [{name!r}]"
        )
    got = actual[name]
    if got.shape != expected.shape:
        raise OnnxVerificationError(
            name, batch_size, math.inf, cfg.atol, detail=f"shape {got.shape} != eager shape {expected.shape}"
        )
    diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
    # `not <=` so that NaN (from NaN/inf outputs on either side) fails too.
    if not diff <= cfg.atol:
        raise OnnxVerificationError(name, batch_size, diff, cfg.atol)
    return diff


# ------------------------------------------------------------------------------------------------ reading


def load_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load and check an ONNX file; raises ``OnnxLoadError`` with a one-line reason naming ``path``."""
    file = Path(path)
    if not file.exists():
        raise OnnxLoadError(f"ONNX file {str(file)!r} does not exist")
    if not file.is_file():
        raise OnnxLoadError(f"ONNX path {str(file)!r} is not a regular file")
    try:
        proto = onnx.load_model(str(file))
    except Exception as err:  # protobuf DecodeError, external-data OSError, ... all mean "not loadable"
        raise OnnxLoadError(f"{str(file)!r} is not a readable ONNX model: {one_line(err)}") from err
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise OnnxLoadError(f"{str(file)!r} fails the ONNX checker: {one_line(err)}") from err
    return proto


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The model-level ``metadata_props`` of an ONNX file as a dict."""
    return {prop.key: prop.value for prop in load_onnx(path).metadata_props}


def _default_opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ExportError("ONNX model imports no default-domain opset")


def _value_shape(value: onnx.ValueInfoProto) -> tuple[ShapeDim, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
