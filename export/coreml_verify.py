"""Core ML verification: owns reading an ML Program back and checking it against what was asked for.

Owns walking a program's ops (coremltools' in-memory MIL program of a fresh conversion, or the protobuf spec of a
saved package) into ``CoremlProgram``, the structural check ``verify_coreml_package`` (program type, I/O
names/shapes/types, class labels, every MIL op registered and available at the target, the requested compute
precision actually applied, metadata stored) and its ``CoremlStructure`` result, and the numerical gate
``compare_with_eager`` that compares Core ML predictions (possible only on macOS) with eager PyTorch on seeded
inputs. coremltools is imported inside the functions that need it, never when this module is imported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from export.coreml_config import (
    CLASSIFIER_LABEL_OUTPUT,
    OPSET_NAMES,
    TARGETS,
    CoremlExportConfig,
    ImageNormalization,
    Precision,
    output_dtype,
)
from export.errors import AgreementError, CoremlVerificationError
from export.parity import check_input_size

# In an fp16 program only the casts and the ImageType scale/bias (a mul and an add on the raw input, before
# the converter's cast to fp16) may compute in fp32.
_EXEMPT_FROM_FP16 = frozenset({"cast"})
_INPUT_PREPROCESSING = frozenset({"mul", "add"})
# Arguments that hold learned tensors. Scalar parameters (e.g. an activation's alpha) may stay fp32 from
# iOS17 on, where such ops accept fp32 parameters next to fp16 data.
_ELEMENTWISE = frozenset({"x", "y"})
_WEIGHT_ARGS: dict[str, frozenset[str]] = {
    "conv": frozenset({"weight", "bias"}),
    "conv_transpose": frozenset({"weight", "bias"}),
    "linear": frozenset({"weight", "bias"}),
    "matmul": _ELEMENTWISE,
    "batch_norm": frozenset({"mean", "variance", "gamma", "beta"}),
    "instance_norm": frozenset({"gamma", "beta"}),
    "layer_norm": frozenset({"gamma", "beta"}),
    "add": _ELEMENTWISE,
    "sub": _ELEMENTWISE,
    "mul": _ELEMENTWISE,
    "real_div": _ELEMENTWISE,
}


# ------------------------------------------------------------------------------------------------ program


@dataclass(frozen=True)
class CoremlOp:
    """One MIL operation as the verifier sees it: type, (argument, value name) read, (name, dtype) written."""

    type: str
    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]

    @property
    def reads(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.inputs)


@dataclass(frozen=True)
class CoremlProgram:
    """The ops of every function (nested blocks flattened) of an ML Program and where they were read from."""

    opsets: dict[str, str]
    inputs: dict[str, str]
    ops: tuple[CoremlOp, ...]
    walked: Literal["MIL program", "spec"]
    class_labels: tuple[str, ...] | None = None  # the classes of a classify op, if there is one

    def histogram(self, include_const: bool = True) -> dict[str, int]:
        counts = Counter(op.type for op in self.ops if include_const or op.type != "const")
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class CoremlStructure:
    """What the structural check found in a saved package."""

    spec_version: int
    opset: str
    inputs: tuple[dict[str, Any], ...]
    outputs: tuple[dict[str, Any], ...]
    op_histogram: dict[str, int]
    num_ops: int
    num_compute_ops: int
    compute_dtypes: dict[str, int]
    const_dtypes: dict[str, int]
    class_labels: tuple[str, ...] | None
    walked: str  # "spec" (the saved protobuf) or "MIL program" (coremltools' in-memory program)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"], data["outputs"] = list(self.inputs), list(self.outputs)
        data["class_labels"] = list(self.class_labels) if self.class_labels is not None else None
        return data


# ------------------------------------------------------------------------------------------- verification


def program_ops(mlmodel: Any) -> CoremlProgram:
    """Every op of an ML Program: from ``mlmodel._mil_program`` (private; set on freshly converted models),
    falling back to the protobuf program of ``mlmodel.get_spec()`` (what a reloaded package has)."""
    mil = getattr(mlmodel, "_mil_program", None)
    if mil is not None and hasattr(mil, "functions"):
        return _walk_mil(mil)
    spec = mlmodel.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise CoremlVerificationError(f"model is a {spec.WhichOneof('Type')!r}, not an mlProgram")
    return _walk_spec(spec.mlProgram)


def _walk_mil(program: Any) -> CoremlProgram:
    opsets: dict[str, str] = {}
    inputs: dict[str, str] = {}
    ops: list[CoremlOp] = []
    labels: list[tuple[str, ...]] = []

    def walk(block_ops: Sequence[Any]) -> None:
        for op in block_ops:
            if op.op_type == "classify":
                labels.append(tuple(str(c) for c in op.inputs["classes"].val))
            read = []
            for arg, value in op.inputs.items():
                for var in value if isinstance(value, (list, tuple)) else (value,):
                    if getattr(var, "name", None):
                        read.append((arg, var.name))
            written = tuple((v.name, _mil_dtype(v)) for v in op.outputs)
            ops.append(CoremlOp(op.op_type, tuple(read), written))
            for block in getattr(op, "blocks", ()):
                walk(block.operations)

    for fname, fn in program.functions.items():
        opsets[fname] = OPSET_NAMES.get(int(fn.opset_version), str(fn.opset_version)) if fn.opset_version else "?"
        inputs.update({name: _mil_dtype(var) for name, var in fn.inputs.items()})
        walk(fn.operations)
    return CoremlProgram(opsets, inputs, tuple(ops), "MIL program", labels[0] if labels else None)


def _mil_dtype(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    try:
        return str(types.builtin_to_string(var.dtype))
    except Exception:  # list/dict/state values have no scalar element type
        return "other"


def _walk_spec(program: Any) -> CoremlProgram:
    from coremltools.proto import MIL_pb2

    opsets: dict[str, str] = {}
    inputs: dict[str, str] = {}
    ops: list[CoremlOp] = []
    labels: list[tuple[str, ...]] = []

    def walk(block: Any) -> None:
        for op in block.operations:
            if op.type == "classify":
                labels.append(_spec_labels(op))
            read = tuple((key, a.name) for key, arg in op.inputs.items() for a in arg.arguments if a.name)
            written = tuple((o.name, _spec_dtype(o.type, MIL_pb2)) for o in op.outputs)
            ops.append(CoremlOp(op.type, read, written))
            for inner in op.blocks:
                walk(inner)

    for fname, fn in program.functions.items():
        opsets[fname] = fn.opset
        inputs.update({i.name: _spec_dtype(i.type, MIL_pb2) for i in fn.inputs})
        walk(fn.block_specializations[fn.opset])
    return CoremlProgram(opsets, inputs, tuple(ops), "spec", labels[0] if labels else None)


def _spec_labels(classify: Any) -> tuple[str, ...]:
    # The classes are an inline list value (no producing const op in the protobuf).
    values = []
    for arg in classify.inputs["classes"].arguments:
        for item in arg.value.immediateValue.list.values:
            values.extend(item.immediateValue.tensor.strings.values)
    return tuple(values)


_SPEC_DTYPES = {"FLOAT16": "fp16", "FLOAT32": "fp32", "FLOAT64": "fp64", "STRING": "string", "BOOL": "bool"}


def _spec_dtype(value_type: Any, mil_pb2: Any) -> str:
    if value_type.WhichOneof("type") != "tensorType":
        return "other"
    name = mil_pb2.DataType.Name(value_type.tensorType.dataType)
    return _SPEC_DTYPES.get(name, name.lower())


def verify_coreml_package(
    mlmodel: Any,
    input_size: tuple[int, int, int],
    *,
    cfg: CoremlExportConfig = CoremlExportConfig(),
    num_classes: int | None = None,
    metadata: Mapping[str, str] | None = None,
    converted: Any = None,
) -> CoremlStructure:
    """Check a (reloaded) ML Program against what ``cfg`` asked for; ``CoremlVerificationError`` lists misses.

    Checks: an mlProgram at a spec version the target can load; the target's opset; input name and image
    size/RGB (or tensor shape/float32); output names, shape and dtype, or the classifier outputs and labels;
    every op a registered core op available at the target's opset; fp16 compute (every op past the input's
    fp16 cast computes in fp16 and weights are fp16) or fp32 (no fp16 tensor anywhere); ``metadata`` stored.
    ``converted`` (the in-memory model coremltools returned) must contain the same non-const ops.
    """
    input_size = check_input_size(input_size)
    spec = mlmodel.get_spec()
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        raise CoremlVerificationError(f"Core ML model is a {kind!r}, not an mlProgram")
    program = program_ops(mlmodel)
    problems: list[str] = []
    if spec.specificationVersion > cfg.spec_version:
        problems.append(
            f"specification version {spec.specificationVersion} is newer than {cfg.minimum_deployment_target} "
            f"({cfg.spec_version})"
        )
    expected_opset = OPSET_NAMES[cfg.spec_version]
    for fname, opset in program.opsets.items():
        if opset != expected_opset:
            problems.append(f"function {fname!r} uses opset {opset}, expected {expected_opset}")
    inputs = _check_inputs(spec, input_size, cfg, problems)
    outputs = _check_outputs(spec, num_classes, cfg, problems)
    labels = _check_labels(program, cfg, problems)
    problems += _availability_problems(program, cfg)
    problems += _precision_problems(program, cfg.precision)
    if metadata is not None:
        stored = dict(spec.description.metadata.userDefined)
        wrong = sorted(k for k, v in metadata.items() if stored.get(k) != v)
        if wrong:
            problems.append(f"metadata not stored as written: {wrong}")
    if converted is not None:
        before = program_ops(converted).histogram(include_const=False)
        after = program.histogram(include_const=False)
        if before != after:
            problems.append(f"saved program's ops {after} differ from the converted program's {before}")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... ({len(problems) - 6} more)" if len(problems) > 6 else "")
        raise CoremlVerificationError(f"Core ML package fails the structural check: {shown}")
    compute = [op for op in program.ops if op.type != "const"]
    return CoremlStructure(
        spec_version=int(spec.specificationVersion),
        opset=expected_opset,
        inputs=inputs,
        outputs=outputs,
        op_histogram=program.histogram(),
        num_ops=len(program.ops),
        num_compute_ops=len(compute),
        compute_dtypes=dict(Counter(dt for op in compute for _, dt in op.outputs)),
        const_dtypes=dict(Counter(dt for op in program.ops if op.type == "const" for _, dt in op.outputs)),
        class_labels=labels,
        walked=program.walked,
    )


def _feature(feature: Any) -> dict[str, Any]:
    from coremltools.proto import FeatureTypes_pb2 as ft

    kind = feature.type.WhichOneof("Type")
    desc: dict[str, Any] = {"name": feature.name, "kind": kind}
    if kind == "imageType":
        image = feature.type.imageType
        desc.update(kind="image", width=int(image.width), height=int(image.height),
                    color=ft.ImageFeatureType.ColorSpace.Name(image.colorSpace))
    elif kind == "multiArrayType":
        array = feature.type.multiArrayType
        desc.update(kind="tensor", shape=[int(d) for d in array.shape],
                    dtype=ft.ArrayFeatureType.ArrayDataType.Name(array.dataType))
    elif kind == "stringType":
        desc.update(kind="string")
    elif kind == "dictionaryType":
        desc.update(kind="dictionary", key=feature.type.dictionaryType.WhichOneof("KeyType"))
    return desc


def _check_inputs(
    spec: Any, input_size: tuple[int, int, int], cfg: CoremlExportConfig, problems: list[str]
) -> tuple[dict[str, Any], ...]:
    found = tuple(_feature(f) for f in spec.description.input)
    c, h, w = input_size
    if cfg.image_input:
        expected = {"name": cfg.input_name, "kind": "image", "width": w, "height": h, "color": "RGB"}
    else:
        expected = {"name": cfg.input_name, "kind": "tensor", "shape": [1, c, h, w], "dtype": "FLOAT32"}
    if list(found) != [expected]:
        problems.append(f"inputs are {list(found)}, expected [{expected}]")
    return found


def _check_outputs(
    spec: Any, num_classes: int | None, cfg: CoremlExportConfig, problems: list[str]
) -> tuple[dict[str, Any], ...]:
    found = tuple(_feature(f) for f in spec.description.output)
    if cfg.class_labels is not None:
        expected: list[dict[str, Any]] = [
            {"name": CLASSIFIER_LABEL_OUTPUT, "kind": "string"},
            {"name": cfg.probabilities_output, "kind": "dictionary", "key": "stringKeyType"},
        ]
        if sorted(found, key=lambda d: d["name"]) != sorted(expected, key=lambda d: d["name"]):
            problems.append(f"classifier outputs are {list(found)}, expected {expected}")
        names = (spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName)
        if names != (CLASSIFIER_LABEL_OUTPUT, cfg.probabilities_output):
            problems.append(f"classifier feature names are {names}")
        return found
    dtype = "FLOAT16" if output_dtype(cfg) is np.float16 else "FLOAT32"
    ok = len(found) == 1 and found[0]["name"] == cfg.output_name and found[0]["kind"] == "tensor"
    ok = ok and found[0].get("dtype") == dtype
    if ok and num_classes is not None:
        ok = found[0]["shape"] == [1, num_classes]
    if not ok:
        shape = [1, num_classes] if num_classes is not None else "[1, num_classes]"
        problems.append(
            f"outputs are {list(found)}, expected one {dtype} tensor {cfg.output_name!r} of shape {shape}"
        )
    return found


def _check_labels(
    program: CoremlProgram, cfg: CoremlExportConfig, problems: list[str]
) -> tuple[str, ...] | None:
    classify = [op for op in program.ops if op.type == "classify"]
    if cfg.class_labels is None:
        if classify:
            problems.append("program has a classify op but no class_labels were asked for")
        return None
    if len(classify) != 1:
        problems.append(f"expected one classify op, found {len(classify)}")
    if program.class_labels != cfg.class_labels:
        problems.append(f"class labels are {program.class_labels}, expected {cfg.class_labels}")
    return program.class_labels


def _availability_problems(program: CoremlProgram, cfg: CoremlExportConfig) -> list[str]:
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    problems = []
    for op_type in program.histogram():
        versions = SSAOpRegistry.core_ops.get(op_type)
        if not versions:
            problems.append(f"op {op_type!r} is not a registered Core ML op")
        elif not any(int(v) == cfg.spec_version for v in versions):
            since = min(int(v) for v in versions)
            names = [n for n, v in TARGETS.items() if v == since and n.startswith("iOS")]
            problems.append(
                f"op {op_type!r} is not available at {cfg.minimum_deployment_target} "
                f"(needs {names[0] if names else f'spec version {since}'})"
            )
    return problems


def _precision_problems(program: CoremlProgram, precision: Precision) -> list[str]:
    if precision == "fp32":
        fp16 = [op for op in program.ops if any(dt == "fp16" for _, dt in op.outputs)]
        fp16_inputs = [n for n, dt in program.inputs.items() if dt == "fp16"]
        if fp16 or fp16_inputs:
            example = f"{fp16[0].type} -> {fp16[0].outputs[0][0]!r}" if fp16 else f"input {fp16_inputs[0]!r}"
            return [f"fp32 requested but {len(fp16) + len(fp16_inputs)} tensors are fp16 (e.g. {example})"]
        return []
    const_dtype = {name: dt for op in program.ops if op.type == "const" for name, dt in op.outputs}
    # Values computed from the raw input only (the ImageType scale/bias) precede the cast to fp16 and may
    # stay fp32, as may the casts themselves (to fp16 after the input, back to fp32 before a classifier).
    raw = set(program.inputs)
    fp32_compute: list[CoremlOp] = []
    fp32_weights: list[str] = []
    for op in program.ops:
        if op.type == "const" or op.type in _EXEMPT_FROM_FP16:
            continue
        read = [n for n in op.reads if n not in const_dtype]
        if op.type in _INPUT_PREPROCESSING and read and all(n in raw for n in read):
            raw.update(name for name, _ in op.outputs)
            continue
        if any(dt == "fp32" for _, dt in op.outputs):
            fp32_compute.append(op)
        weights = _WEIGHT_ARGS.get(op.type, frozenset())
        fp32_weights += [n for arg, n in op.inputs if arg in weights and const_dtype.get(n) == "fp32"]
    problems = []
    if fp32_compute:
        counts = dict(Counter(op.type for op in fp32_compute))
        problems.append(f"fp16 requested but {len(fp32_compute)} ops compute in fp32: {counts}")
    if fp32_weights:
        problems.append(f"fp16 requested but {len(fp32_weights)} weights are fp32 (e.g. {fp32_weights[0]!r})")
    if "fp16" not in const_dtype.values():
        problems.append("fp16 requested but no weight is stored as fp16")
    return problems


# ------------------------------------------------------------------------------ numerical (macOS only)


def seeded_samples(
    input_size: tuple[int, int, int], cfg: CoremlExportConfig
) -> list[np.ndarray]:
    """Verification inputs: uint8 HxWx3 images (image input) or float32 (1, C, H, W) tensors, seeded."""
    rng = np.random.default_rng(cfg.seed)
    c, h, w = input_size
    if cfg.image_input:
        return [rng.integers(0, 256, size=(h, w, c), dtype=np.uint8) for _ in range(cfg.numerical_samples)]
    return [rng.standard_normal((1, c, h, w)).astype(np.float32) for _ in range(cfg.numerical_samples)]


def eager_input(sample: np.ndarray, norm: ImageNormalization, image_input: bool) -> torch.Tensor:
    """What the PyTorch model sees for ``sample``: ``(pixel / 255 - mean) / std`` for images."""
    if not image_input:
        return torch.from_numpy(sample)
    pixels = torch.from_numpy(sample.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (pixels / 255.0 - mean) / std


def compare_with_eager(
    predict: Callable[[np.ndarray], Mapping[str, Any]],
    model: nn.Module,
    input_size: tuple[int, int, int],
    norm: ImageNormalization,
    cfg: CoremlExportConfig,
) -> dict[str, float]:
    """Run ``predict`` (a Core ML prediction) and eager ``model`` on the seeded samples and gate the result.

    fp32: max abs diff <= ``cfg.fp32_atol`` (``CoremlVerificationError``). fp16: top-1 agreement >=
    ``cfg.fp16_min_top1_agreement`` and the lowest per-sample cosine similarity >= ``cfg.fp16_min_cosine``
    (``AgreementError``). Classifiers are compared on probabilities, and the predicted label must be the arg-max.
    """
    got, expected = [], []
    for sample in seeded_samples(input_size, cfg):
        with torch.inference_mode():
            ref = model(eager_input(sample, norm, cfg.image_input)).double()
        if cfg.class_labels is not None:
            ref = ref.softmax(-1)
        out = predict(sample)
        got.append(_prediction_vector(out, cfg))
        expected.append(ref.reshape(-1).numpy())
    actual, reference = np.stack(got), np.stack(expected)
    if actual.shape != reference.shape:
        raise CoremlVerificationError(f"Core ML output shape {actual.shape[1:]} != eager {reference.shape[1:]}")
    max_abs = float(np.max(np.abs(actual - reference), initial=0.0))
    if cfg.precision == "fp32":
        if not max_abs <= cfg.fp32_atol:  # `not <=` so that NaN fails too
            raise CoremlVerificationError(
                f"Core ML fp32 output differs from eager PyTorch: max abs diff {max_abs:.3g} "
                f"exceeds {cfg.fp32_atol:.3g}"
            )
        return {"max_abs_diff": max_abs}
    top1 = float(np.mean(actual.argmax(1) == reference.argmax(1)))
    norms = np.linalg.norm(actual, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = np.sum(actual * reference, axis=1) / np.where(norms > 0, norms, 1.0)
    min_cosine = float(np.min(np.where(np.isfinite(cosine), cosine, -1.0)))
    if not top1 >= cfg.fp16_min_top1_agreement:
        raise AgreementError("Core ML fp16", "top-1 agreement", top1, cfg.fp16_min_top1_agreement,
                             detail=f"{len(actual)} seeded inputs, min cosine {min_cosine:.5f}")
    if not min_cosine >= cfg.fp16_min_cosine:
        raise AgreementError("Core ML fp16", "min cosine similarity", min_cosine, cfg.fp16_min_cosine,
                             detail=f"{len(actual)} seeded inputs, top-1 agreement {100 * top1:.1f} %")
    return {"top1_agreement": top1, "min_cosine": min_cosine, "max_abs_diff": max_abs}


def _prediction_vector(out: Mapping[str, Any], cfg: CoremlExportConfig) -> np.ndarray:
    if cfg.class_labels is None:
        if cfg.output_name not in out:
            raise CoremlVerificationError(f"Core ML prediction has outputs {sorted(out)}, not {cfg.output_name!r}")
        return np.asarray(out[cfg.output_name], dtype=np.float64).reshape(-1)
    probs = out.get(cfg.probabilities_output)
    if not isinstance(probs, Mapping) or set(probs) != set(cfg.class_labels):
        raise CoremlVerificationError(f"Core ML {cfg.probabilities_output!r} is not a dict over the class labels")
    vector = np.array([probs[label] for label in cfg.class_labels], dtype=np.float64)
    if out.get(CLASSIFIER_LABEL_OUTPUT) != cfg.class_labels[int(vector.argmax())]:
        raise CoremlVerificationError(
            f"Core ML {CLASSIFIER_LABEL_OUTPUT!r} {out.get(CLASSIFIER_LABEL_OUTPUT)!r} "
            "is not its most probable label"
        )
    return vector
