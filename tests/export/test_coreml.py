"""Core ML export: config, exact image normalisation, the package and its structural check, failures that
leave nothing behind, quiet output, the numerical gates (fed a stand-in predictor on Linux, Core ML on macOS)
and two small zoo models.

Core ML cannot run on Linux (no ``libcoremlpython``): the numerical test against real Core ML predictions is
macOS-only; everything else runs here.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import export.coreml as coreml_export
from export.coreml import (
    CoremlAdapter,
    CoremlExportConfig,
    CoremlExportReport,
    compare_with_eager,
    eager_input,
    export_coreml,
    image_normalization,
    program_ops,
    verify_coreml_package,
)
from export.errors import AgreementError, CoremlVerificationError, ExportError

if importlib.util.find_spec("coremltools") is None:
    pytest.skip("coremltools is not installed", allow_module_level=True)

SIZE = (3, 16, 16)
CLASSES = 5
LABELS = ("cat", "dog", "ship", "frog", "car")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR = ((0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))
ON_MAC = sys.platform == "darwin"
REPO = Path(__file__).resolve().parents[2]


def coremltools() -> Any:
    """coremltools, imported on first use through the exporter's quiet import (not at collection)."""
    return coreml_export._import_coremltools([])


def tiny_model() -> nn.Module:
    """Conv-BN-hardswish-pool-linear with non-trivial BN statistics (hardswish is a MobileNetV3 staple)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, CLASSES),
    )
    bn = model[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward is broken\nsecond line")


class Erfinv(nn.Module):
    """``erfinv`` has no coremltools converter (coremltools 9)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.special.erfinv(0.5 * torch.tanh(x)).mean((2, 3)))


class Branchy(nn.Module):
    """Data-dependent control flow: a trace records one branch and warns."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def export_tiny(path: Path, cfg: CoremlExportConfig = CoremlExportConfig(), **kwargs: Any) -> CoremlExportReport:
    mean, std = IMAGENET
    return export_coreml(tiny_model(), path, SIZE, mean=mean, std=std, cfg=cfg, **kwargs)


def reload(path: str | Path) -> Any:
    return coremltools().models.MLModel(str(path), skip_model_load=True)


def main_ops(mlmodel: Any) -> list[Any]:
    fn = mlmodel.get_spec().mlProgram.functions["main"]
    return list(fn.block_specializations[fn.opset].operations)


def const_floats(ops: list[Any], name: str) -> list[float]:
    (op,) = [op for op in ops if op.type == "const" and op.outputs[0].name == name]
    return list(op.attributes["val"].immediateValue.tensor.floats.values)


@pytest.fixture(scope="module")
def fp16_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CoremlExportReport]:
    path = tmp_path_factory.mktemp("fp16") / "tiny.mlpackage"
    report = export_tiny(path, metadata={"model_name": "tiny", "arch_spec": '{"schema_version": 1}'})
    return path, report


@pytest.fixture(scope="module")
def fp32_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CoremlExportReport]:
    path = tmp_path_factory.mktemp("fp32") / "tiny_cls.mlpackage"
    cfg = CoremlExportConfig(
        precision="fp32", minimum_deployment_target="iOS15", source="export", image_input=False,
        class_labels=LABELS, input_name="input",
    )
    return path, export_tiny(path, cfg)


# ------------------------------------------------------------------------------------------------ config


def test_config_defaults() -> None:
    cfg = CoremlExportConfig()
    assert (cfg.precision, cfg.minimum_deployment_target, cfg.source, cfg.image_input) == (
        "fp16", "iOS16", "trace", True)
    assert cfg.spec_version == 7
    assert CoremlExportConfig(minimum_deployment_target="macOS15").spec_version == 9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"minimum_deployment_target": "iOS14"}, r"'iOS14'.*iOS15, iOS16, iOS17, iOS18, macOS12, macOS13"),
        ({"minimum_deployment_target": "ios16"}, "'ios16' is not supported"),
        ({"precision": "int8"}, "precision 'int8'"),
        ({"source": "onnx"}, "source 'onnx'"),
        ({"class_labels": ["a", "b"]}, "tuple"),
        ({"class_labels": ("a", "b", "a")}, r"repeated: \['a'\]"),
        ({"class_labels": ("a", "")}, "non-empty"),
        ({"input_name": "x", "output_name": "x"}, "must be non-empty, differ"),
        ({"output_name": "classLabel"}, "classLabel"),
        ({"fp16_min_cosine": 1.5}, "fp16_min_cosine"),
        ({"fp32_atol": float("nan")}, "fp32_atol"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CoremlExportConfig(**kwargs)


# --------------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("mean, std", [IMAGENET, CIFAR, ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
def test_image_normalization_is_exact(mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    norm = image_normalization(mean, std)
    pixels = np.arange(256, dtype=np.float64)[:, None]  # every pixel value x every channel
    core_ml = norm.scale * pixels + np.array(norm.bias)  # what ImageType computes: one scalar scale
    multiplier = np.array(norm.channel_multiplier or (1.0,) * 3)
    exact = (pixels / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(core_ml * multiplier, exact, rtol=1e-13, atol=1e-13)
    if len(set(std)) == 1:
        assert norm.channel_multiplier is None
        np.testing.assert_allclose(core_ml, exact, rtol=1e-13, atol=1e-13)
    else:
        # Without the multiply the ImageType alone is measurably wrong: the reason the adapter exists.
        assert np.max(np.abs(core_ml - exact)) > 1e-2
        assert all(0.9 < m < 1.1 for m in norm.channel_multiplier)  # s = mean std keeps it near 1


def test_adapter_on_core_ml_preprocessing_equals_model_on_normalised_pixels() -> None:
    mean, std = IMAGENET
    norm = image_normalization(mean, std)
    model = tiny_model().double()
    adapter = CoremlAdapter(model, norm.channel_multiplier).double()
    # The buffer was built in float32; restore the exact float64 factors for an exact comparison.
    adapter.channel_multiplier.copy_(torch.tensor(norm.channel_multiplier, dtype=torch.float64).view(1, 3, 1, 1))
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, *SIZE[1:])).astype(np.float64))
    bias = torch.tensor(norm.bias, dtype=torch.float64).view(1, 3, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.inference_mode():
        via_core_ml = adapter(norm.scale * pixels + bias)
        reference = model((pixels / 255.0 - mean_t) / std_t)
    torch.testing.assert_close(via_core_ml, reference, rtol=1e-12, atol=1e-12)


def test_image_normalization_rejects_bad_stats() -> None:
    with pytest.raises(ValueError, match="equal length"):
        image_normalization((0.5, 0.5), (0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="positive"):
        image_normalization((0.5,) * 3, (0.2, 0.0, 0.2))


# ----------------------------------------------------------------------------------- fp16 image package


def test_fp16_image_package_is_published_and_described(fp16_image: tuple[Path, CoremlExportReport]) -> None:
    path, report = fp16_image
    assert report.path == str(path)
    assert path.is_dir() and (path / "Manifest.json").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp package left beside it
    assert report.package_bytes == sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert (report.precision, report.minimum_deployment_target, report.source) == ("fp16", "iOS16", "trace")
    assert report.inputs == ({"name": "image", "kind": "image", "width": 16, "height": 16, "color": "RGB"},)
    assert report.outputs == ({"name": "logits", "kind": "tensor", "shape": [1, CLASSES], "dtype": "FLOAT16"},)
    assert report.structure.spec_version == 7 and report.structure.opset == "CoreML6"
    assert report.structure.walked == "spec"  # the check read the saved package, not the in-memory program
    assert sum(report.op_histogram.values()) == report.num_ops
    assert {"conv", "linear", "cast", "sigmoid_hard"} <= set(report.op_histogram)
    assert report.export_seconds > 0


@pytest.mark.skipif(ON_MAC, reason="on macOS the numerical check runs too")
def test_linux_report_says_numerical_check_did_not_run(fp16_image: tuple[Path, CoremlExportReport]) -> None:
    _, report = fp16_image
    assert report.verification == "structural (Linux: Core ML cannot run here)"
    assert report.numerical is None
    assert report.summary.startswith("structural: ")
    assert "all available at iOS16, fp16 applied; numerical: not run (Linux)" in report.summary
    assert f"{report.num_ops} ops" in report.summary


def test_fp16_package_stores_fp16_weights_and_computes_in_fp16(fp16_image: tuple[Path, CoremlExportReport]) -> None:
    path, report = fp16_image
    ops = main_ops(reload(path))
    conv = next(op for op in ops if op.type == "conv")
    assert conv.outputs[0].type.tensorType.dataType == coremltools().proto.MIL_pb2.FLOAT16
    weight = next(op for op in ops if op.outputs[0].name == conv.inputs["weight"].arguments[0].name)
    assert weight.attributes["val"].type.tensorType.dataType == coremltools().proto.MIL_pb2.FLOAT16
    assert report.structure.const_dtypes.get("fp16", 0) > 0
    # Only the ImageType scale/bias (mul, add) run in fp32, before the cast to fp16.
    assert report.structure.compute_dtypes["fp32"] == 2


def test_image_scale_and_bias_in_package_match_report(fp16_image: tuple[Path, CoremlExportReport]) -> None:
    path, report = fp16_image
    norm = report.normalization
    assert norm == image_normalization(*IMAGENET)
    ops = main_ops(reload(path))
    scale_mul = next(op for op in ops if op.type == "mul" and op.inputs["x"].arguments[0].name == "image")
    bias_add = next(
        op for op in ops if op.type == "add" and op.inputs["x"].arguments[0].name == scale_mul.outputs[0].name
    )
    scale = const_floats(ops, scale_mul.inputs["y"].arguments[0].name)
    bias = const_floats(ops, bias_add.inputs["y"].arguments[0].name)
    np.testing.assert_allclose(scale, [norm.scale], rtol=1e-7)
    np.testing.assert_allclose(bias, norm.bias, rtol=1e-6)
    # The per-channel multiply follows the cast to fp16 (an fp16 constant near 1 per channel).
    biased = bias_add.outputs[0].name
    cast = next(op for op in ops if op.type == "cast" and op.inputs["x"].arguments[0].name == biased)
    assert any(op.type == "mul" and op.inputs["x"].arguments[0].name == cast.outputs[0].name for op in ops)


def test_metadata_is_stored(fp16_image: tuple[Path, CoremlExportReport]) -> None:
    path, _ = fp16_image
    model = reload(path)
    meta = model.user_defined_metadata
    assert meta["model_name"] == "tiny" and meta["arch_spec"] == '{"schema_version": 1}'
    assert json.loads(meta["mzoo.mean"]) == list(IMAGENET[0])
    assert json.loads(meta["mzoo.std"]) == list(IMAGENET[1])
    assert json.loads(meta["mzoo.input_size"]) == list(SIZE)
    assert (meta["mzoo.precision"], meta["mzoo.minimum_deployment_target"]) == ("fp16", "iOS16")
    assert float(meta["mzoo.image_scale"]) == image_normalization(*IMAGENET).scale
    assert model.short_description.startswith("tiny: network for 3x16x16 inputs, fp16, iOS16")
    assert "normalised inside" in model.input_description["image"]


def test_report_to_dict_is_json(fp16_image: tuple[Path, CoremlExportReport]) -> None:
    _, report = fp16_image
    data = json.loads(json.dumps(report.to_dict()))
    assert data["path"] == report.path and data["summary"] == report.summary
    assert data["op_histogram"] == report.op_histogram and data["num_ops"] == report.num_ops
    assert data["normalization"]["channel_multiplier"] == list(report.normalization.channel_multiplier)
    assert data["thresholds"] == {"top1_agreement": 0.9, "min_cosine": 0.99}
    assert not any("Failed to load" in m or "has not been tested" in m for m in data["converter_messages"])


# ------------------------------------------------------------------------------ fp32 tensor classifier


def test_fp32_tensor_classifier_package(fp32_classifier: tuple[Path, CoremlExportReport]) -> None:
    path, report = fp32_classifier
    assert report.inputs == ({"name": "input", "kind": "tensor", "shape": [1, 3, 16, 16], "dtype": "FLOAT32"},)
    assert [o["name"] for o in report.outputs] == ["classLabel", "classLabel_probs"]
    assert report.structure.class_labels == LABELS
    assert report.structure.spec_version == 6 and report.structure.opset == "CoreML5"
    assert "fp16" not in report.structure.compute_dtypes and "fp16" not in report.structure.const_dtypes
    assert {"classify", "softmax"} <= set(report.op_histogram)
    assert report.normalization is None  # tensor input: the app normalises
    assert reload(path).user_defined_metadata["mzoo.source"] == "export"


def test_program_walkers_agree(tmp_path: Path) -> None:
    """The MIL program of a fresh conversion and the protobuf of the saved package list the same ops."""
    cfg = CoremlExportConfig(class_labels=LABELS)
    adapter = CoremlAdapter(tiny_model(), image_normalization(*IMAGENET).channel_multiplier, softmax=True)
    messages: list[str] = []
    program = coreml_export._capture(adapter, SIZE, cfg, messages)
    norm = image_normalization(*IMAGENET)
    converted = coreml_export._convert(coremltools(), program, SIZE, norm, cfg, messages, "tiny")
    converted.save(str(tmp_path / "m.mlpackage"))
    mil, spec = program_ops(converted), program_ops(reload(tmp_path / "m.mlpackage"))
    assert (mil.walked, spec.walked) == ("MIL program", "spec")
    assert mil.histogram(include_const=False) == spec.histogram(include_const=False)
    assert mil.class_labels == spec.class_labels == LABELS
    assert mil.opsets == spec.opsets == {"main": "CoreML6"}


# ------------------------------------------------------------------------------- structural violations


def test_structure_check_rejects_precision_mismatch(
    fp16_image: tuple[Path, CoremlExportReport], fp32_classifier: tuple[Path, CoremlExportReport]
) -> None:
    with pytest.raises(CoremlVerificationError, match="fp32 requested but .* tensors are fp16"):
        verify_coreml_package(reload(fp16_image[0]), SIZE, cfg=CoremlExportConfig(precision="fp32"))
    cfg = CoremlExportConfig(
        precision="fp16", minimum_deployment_target="iOS15", image_input=False, class_labels=LABELS,
        input_name="input",
    )
    with pytest.raises(CoremlVerificationError, match=r"fp16 requested but \d+ ops compute in fp32"):
        verify_coreml_package(reload(fp32_classifier[0]), SIZE, cfg=cfg)


def test_structure_check_rejects_newer_target(fp16_image: tuple[Path, CoremlExportReport]) -> None:
    cfg = CoremlExportConfig(minimum_deployment_target="iOS15")
    with pytest.raises(CoremlVerificationError) as info:
        verify_coreml_package(reload(fp16_image[0]), SIZE, cfg=cfg)
    message = str(info.value)
    assert "specification version 7 is newer than iOS15" in message
    assert "uses opset CoreML6, expected CoreML5" in message
    assert "\n" not in message


def test_structure_check_rejects_op_unavailable_at_target(
    fp16_image: tuple[Path, CoremlExportReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    core_ops = SSAOpRegistry.core_ops
    # Pretend sigmoid_hard arrived in iOS17 and thresholded_relu was never registered.
    monkeypatch.setitem(core_ops, "sigmoid_hard", {v: c for v, c in core_ops["sigmoid_hard"].items() if v >= 8})
    monkeypatch.delitem(core_ops, "thresholded_relu")
    with pytest.raises(CoremlVerificationError) as info:
        verify_coreml_package(reload(fp16_image[0]), SIZE)
    assert "op 'sigmoid_hard' is not available at iOS16 (needs iOS17)" in str(info.value)
    assert "op 'thresholded_relu' is not a registered Core ML op" in str(info.value)


@pytest.mark.parametrize(
    "cfg_kwargs, check_kwargs, match",
    [
        ({"input_name": "pixels"}, {}, "inputs are .*'image'.*expected.*'pixels'"),
        ({"image_input": False}, {}, "expected .*'kind': 'tensor'"),
        ({}, {"num_classes": 10}, r"expected one FLOAT16 tensor 'logits' of shape \[1, 10\]"),
        ({"output_name": "scores"}, {}, "'scores'"),
        ({"class_labels": LABELS}, {}, "classifier outputs are"),
        ({}, {"metadata": {"model_name": "other"}}, r"metadata not stored as written: \['model_name'\]"),
    ],
)
def test_structure_check_names_what_differs(
    fp16_image: tuple[Path, CoremlExportReport],
    cfg_kwargs: dict[str, Any],
    check_kwargs: dict[str, Any],
    match: str,
) -> None:
    with pytest.raises(CoremlVerificationError, match=match):
        verify_coreml_package(reload(fp16_image[0]), SIZE, cfg=CoremlExportConfig(**cfg_kwargs), **check_kwargs)


def test_structure_check_rejects_wrong_labels(fp32_classifier: tuple[Path, CoremlExportReport]) -> None:
    cfg = CoremlExportConfig(
        precision="fp32", minimum_deployment_target="iOS15", image_input=False, input_name="input",
        class_labels=("cat", "dog", "ship", "frog", "truck"),
    )
    with pytest.raises(CoremlVerificationError, match="class labels are .*'car'.*expected .*'truck'"):
        verify_coreml_package(reload(fp32_classifier[0]), SIZE, cfg=cfg)


def test_structure_check_passes_on_what_was_asked(fp32_classifier: tuple[Path, CoremlExportReport]) -> None:
    path, report = fp32_classifier
    cfg = CoremlExportConfig(
        precision="fp32", minimum_deployment_target="iOS15", image_input=False, input_name="input",
        class_labels=LABELS,
    )
    assert verify_coreml_package(reload(path), SIZE, cfg=cfg, num_classes=CLASSES) == report.structure


# ------------------------------------------------------------------------------ failures leave nothing


def test_forward_that_raises_gives_one_line_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="Raises fails in eager PyTorch: RuntimeError: forward is broken") as info:
        export_coreml(Raises(), tmp_path / "r.mlpackage", SIZE, mean=IMAGENET[0], std=IMAGENET[1])
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unconvertible_op_gives_export_error_and_leaves_nothing(tmp_path: Path) -> None:
    match = "coremltools failed to convert Erfinv: .*erfinv' not implemented"
    with pytest.raises(ExportError, match=match) as info:
        export_coreml(Erfinv(), tmp_path / "e.mlpackage", SIZE, mean=IMAGENET[0], std=IMAGENET[1])
    assert not isinstance(info.value, CoremlVerificationError)
    assert info.value.__cause__ is not None
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_data_dependent_branch_is_refused_when_traced(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="tracing Branchy for Core ML is unreliable"):
        export_coreml(Branchy(), tmp_path / "b.mlpackage", SIZE, mean=IMAGENET[0], std=IMAGENET[1])
    assert list(tmp_path.iterdir()) == []


def test_structural_failure_leaves_nothing_and_keeps_old_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.mlpackage"
    target.mkdir()
    (target / "old.txt").write_text("previous export")
    # The verifier (not the converter) now expects another opset at iOS16.
    monkeypatch.setitem(coreml_export.OPSET_NAMES, 7, "CoreML99")
    with pytest.raises(CoremlVerificationError, match="uses opset CoreML6, expected CoreML99"):
        export_tiny(target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    monkeypatch.undo()
    export_tiny(target)  # success replaces the old package
    assert (target / "Manifest.json").is_file() and not (target / "old.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]


def test_interrupt_removes_temp_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        (temp,) = list(tmp_path.iterdir())
        assert temp.name.endswith(".mlpackage") and temp.is_dir(), "the temp package exists while converting"
        raise KeyboardInterrupt

    monkeypatch.setattr(coreml_export, "_convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_tiny(tmp_path / "m.mlpackage")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_raises_export_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ExportError, match="a_file"):
        export_tiny(blocker / "sub" / "m.mlpackage")
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize(
    "name, kwargs, error, match",
    [
        ("m.mlmodel", {}, ExportError, r"must end in '\.mlpackage'"),
        ("m.mlpackage", {"cfg": CoremlExportConfig(class_labels=("a", "b"))}, ValueError,
         "class_labels has 2 labels but Sequential outputs 5 classes"),
        ("m.mlpackage", {"metadata": {"mzoo.precision": "fp32"}}, ValueError, "'mzoo.precision' is reserved"),
        ("m.mlpackage", {"metadata": {"n": 3}}, TypeError, "str -> str"),
    ],
)
def test_bad_arguments_raise_and_leave_nothing(
    tmp_path: Path, name: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        export_tiny(tmp_path / name, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mean/std have 3 channels but input_size"):
        export_coreml(tiny_model(), tmp_path / "m.mlpackage", (1, 16, 16), mean=IMAGENET[0], std=IMAGENET[1])
    with pytest.raises(ValueError, match="RGB image input needs 3 channels"):
        export_coreml(tiny_model(), tmp_path / "m.mlpackage", (1, 16, 16), mean=(0.5,), std=(0.5,))
    file_target = tmp_path / "f.mlpackage"
    file_target.write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_tiny(file_target)
    assert [p.name for p in tmp_path.iterdir()] == ["f.mlpackage"]


# ------------------------------------------------------------------------------------------ quiet output


def test_quiet_drops_known_noise_and_replays_the_rest(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("coremltools")
    handlers, propagate = list(logger.handlers), logger.propagate
    messages: list[str] = []
    with caplog.at_level(logging.WARNING), coreml_export._quiet(messages):
        logger.warning("Failed to load _MLModelProxy: No module named 'coremltools.libcoremlpython'")
        logger.warning("Torch version 9.9 has not been tested with coremltools.")
        logger.warning("Output 'x' was renamed")  # not known noise: the user should see it
        print("Running MIL default pipeline:  50%|#####", file=sys.stderr)
        print("something else on stderr", file=sys.stderr)
        warnings.warn("`torch.jit.trace` is deprecated. Please switch to `torch.compile` or `torch.export`.",
                      FutureWarning)
        assert caplog.records == []  # held back while the call runs
    assert [r.getMessage() for r in caplog.records] == ["Output 'x' was renamed"]  # replayed afterwards
    err = capfd.readouterr().err
    assert "Running MIL" not in err and "deprecated" not in err
    assert "something else on stderr" in err
    assert messages == ["warning: Output 'x' was renamed", "something else on stderr"]
    assert logger.handlers == handlers and logger.propagate == propagate  # the scope leaves no trace


def test_export_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    export_tiny(tmp_path / "m.mlpackage")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.slow
def test_import_is_lazy_and_quiet() -> None:
    """Importing export.coreml imports no coremltools; importing it through the exporter prints nothing."""
    code = (
        "import sys, export.coreml as c\n"
        "assert 'coremltools' not in sys.modules, 'imported on module import'\n"
        "messages = []\n"
        "c._import_coremltools(messages)\n"
        "print('messages', messages)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "messages []"
    assert done.stderr == ""


# -------------------------------------------------------------------------------------- numerical gates


def core_ml_stand_in(model: nn.Module, cfg: CoremlExportConfig, noise: float = 0.0, permute: bool = False):
    """Emulates a Core ML prediction: ImageType scale/bias on the raw pixels, then the adapter's graph."""
    norm = image_normalization(*IMAGENET)
    adapter = CoremlAdapter(model, norm.channel_multiplier, softmax=cfg.class_labels is not None).eval()

    def predict(sample: np.ndarray) -> Mapping[str, Any]:
        pixels = torch.from_numpy(sample.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
        x = norm.scale * pixels + torch.tensor(norm.bias, dtype=torch.float32).view(1, 3, 1, 1)
        with torch.inference_mode():
            y = adapter(x).numpy().astype(np.float16 if cfg.precision == "fp16" else np.float32)
        y = y.astype(np.float64) + noise
        if permute:
            y = y[:, ::-1]
        if cfg.class_labels is None:
            return {cfg.output_name: y}
        probs = dict(zip(cfg.class_labels, y[0].tolist()))
        return {"classLabel": max(probs, key=probs.get), "classLabel_probs": probs}

    return predict


def test_fp32_gate_passes_emulated_core_ml_and_rejects_drift() -> None:
    model, cfg, norm = tiny_model(), CoremlExportConfig(precision="fp32"), image_normalization(*IMAGENET)
    result = compare_with_eager(core_ml_stand_in(model, cfg), model, SIZE, norm, cfg)
    assert result["max_abs_diff"] < 1e-5  # the baked-in normalisation reproduces eager PyTorch
    with pytest.raises(CoremlVerificationError, match="max abs diff 0.002 exceeds 0.001"):
        compare_with_eager(core_ml_stand_in(model, cfg, noise=2e-3), model, SIZE, norm, cfg)
    with pytest.raises(CoremlVerificationError, match="max abs diff nan"):
        compare_with_eager(core_ml_stand_in(model, cfg, noise=float("nan")), model, SIZE, norm, cfg)


def test_fp16_gate_uses_agreement_not_atol() -> None:
    model, cfg, norm = tiny_model(), CoremlExportConfig(), image_normalization(*IMAGENET)
    result = compare_with_eager(core_ml_stand_in(model, cfg, noise=0.01), model, SIZE, norm, cfg)
    assert result["top1_agreement"] == 1.0 and result["min_cosine"] > 0.99
    assert result["max_abs_diff"] > cfg.fp32_atol  # an fp32-style atol would have rejected it
    with pytest.raises(AgreementError, match="Core ML fp16: top-1 agreement"):
        compare_with_eager(core_ml_stand_in(model, cfg, permute=True), model, SIZE, norm, cfg)


def test_classifier_gate_compares_probabilities_and_label() -> None:
    model, norm = tiny_model(), image_normalization(*IMAGENET)
    cfg = CoremlExportConfig(precision="fp32", class_labels=LABELS)
    result = compare_with_eager(core_ml_stand_in(model, cfg), model, SIZE, norm, cfg)
    assert result["max_abs_diff"] < 1e-6
    good = core_ml_stand_in(model, cfg)

    def wrong_label(sample: np.ndarray) -> Mapping[str, Any]:
        return {**good(sample), "classLabel": "not-a-label"}

    with pytest.raises(CoremlVerificationError, match="'classLabel' 'not-a-label' is not its most probable label"):
        compare_with_eager(wrong_label, model, SIZE, norm, cfg)


class StandInMLModel:
    """A loaded Core ML model whose predictions come from :func:`core_ml_stand_in` (fed PIL images)."""

    def __init__(self, predict: Any) -> None:
        self._predict = predict

    def predict(self, feed: Mapping[str, Any]) -> Mapping[str, Any]:
        (image,) = feed.values()
        assert image.mode == "RGB" and image.size == SIZE[1:]
        return self._predict(np.asarray(image))


def patch_core_ml_loading(monkeypatch: pytest.MonkeyPatch, predict: Any) -> None:
    """Pretend to be on macOS: loading with compute units gives the stand-in; structural reloads stay real."""
    real = coremltools().models.MLModel

    def load(path: str, *args: Any, skip_model_load: bool = False, **kwargs: Any) -> Any:
        if skip_model_load:
            return real(path, *args, skip_model_load=True, **kwargs)
        assert Path(path).name.endswith(".mlpackage") and Path(path).is_dir()
        return StandInMLModel(predict)

    monkeypatch.setattr(coreml_export, "can_run_coreml", lambda: True)
    monkeypatch.setattr(coremltools().models, "MLModel", load)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_numerical_path_reports_macos_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    cfg = CoremlExportConfig(precision=precision)
    patch_core_ml_loading(monkeypatch, core_ml_stand_in(tiny_model(), cfg))
    report = export_tiny(tmp_path / "m.mlpackage", cfg)
    assert report.verification == "structural + numerical (macOS)"
    if precision == "fp32":
        assert report.numerical["max_abs_diff"] < 1e-5
        assert report.summary.endswith(f"numerical: max abs diff {report.numerical['max_abs_diff']:.2g}")
    else:
        assert report.numerical["top1_agreement"] == 1.0
        assert report.numerical["min_cosine"] > 0.999
        assert report.summary.endswith(
            f"numerical: top-1 agreement 100.0 %, min cosine {report.numerical['min_cosine']:.6f}")


def test_numerical_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = CoremlExportConfig(precision="fp32")
    patch_core_ml_loading(monkeypatch, core_ml_stand_in(tiny_model(), cfg, noise=0.5))
    with pytest.raises(CoremlVerificationError, match="max abs diff 0.5 exceeds 0.001"):
        export_tiny(tmp_path / "m.mlpackage", cfg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(ON_MAC, reason="checks what happens where Core ML cannot predict")
def test_prediction_failure_is_a_verification_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Forcing the macOS path on Linux: coremltools loads the package but cannot predict without the framework.
    monkeypatch.setattr(coreml_export, "can_run_coreml", lambda: True)
    with pytest.raises(CoremlVerificationError, match="Core ML (prediction failed|cannot load)"):
        export_tiny(tmp_path / "m.mlpackage")
    assert list(tmp_path.iterdir()) == []


def test_eager_input_is_the_normalised_image() -> None:
    norm = image_normalization(*IMAGENET)
    sample = np.full((16, 16, 3), 255, dtype=np.uint8)
    x = eager_input(sample, norm, image_input=True)
    assert x.shape == (1, 3, 16, 16)
    expected = [(1 - m) / s for m, s in zip(*IMAGENET)]
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(expected), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predictions need macOS (libcoremlpython)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_numerical_check_against_core_ml_on_macos(tmp_path: Path, precision: str) -> None:
    report = export_tiny(tmp_path / "m.mlpackage", CoremlExportConfig(precision=precision))
    assert report.verification == "structural + numerical (macOS)"
    assert report.numerical is not None
    if precision == "fp32":
        assert report.numerical["max_abs_diff"] <= 1e-3
    else:
        assert report.numerical["top1_agreement"] >= 0.9 and report.numerical["min_cosine"] >= 0.99


# ------------------------------------------------------------------------------------------- zoo models


@pytest.mark.slow
def test_zoo_hgcnet_cifar_fp16_image(tmp_path: Path) -> None:
    from export.pipeline import resolve_model

    resolved = resolve_model("hgcnet_0_5x_cifar")
    report = export_coreml(
        resolved.model, tmp_path / "hgc.mlpackage", resolved.input_size, mean=resolved.mean, std=resolved.std,
        metadata={"model_name": resolved.name},
    )
    assert report.inputs[0] == {"name": "image", "kind": "image", "width": 32, "height": 32, "color": "RGB"}
    assert report.outputs[0]["shape"] == [1, 10]
    # HGC's grouped 1x1 convs: many convs between splits and concats.
    assert report.op_histogram["conv"] > 100 and report.op_histogram["concat"] > 100
    assert report.structure.compute_dtypes.get("fp32", 0) == 2  # only the ImageType scale/bias
    assert report.normalization is not None and report.normalization.channel_multiplier is not None


def test_zoo_nbmacro_fp32_torch_export_classifier(tmp_path: Path) -> None:
    from export.pipeline import resolve_model

    resolved = resolve_model("nbmacro_11111111")
    labels = tuple(f"class_{i}" for i in range(10))
    cfg = CoremlExportConfig(
        precision="fp32", source="export", minimum_deployment_target="iOS17", class_labels=labels
    )
    report = export_coreml(
        resolved.model, tmp_path / "nb.mlpackage", resolved.input_size,
        mean=resolved.mean, std=resolved.std, cfg=cfg,
    )
    assert report.structure.class_labels == labels
    assert report.structure.opset == "CoreML7"
    assert "fp16" not in report.structure.compute_dtypes
    assert report.op_histogram["conv"] >= 16
