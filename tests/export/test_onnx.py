"""Verified ONNX export: files, metadata, dynamic batch, simplification, verification failures, atomicity, loading."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import onnxslim
import pytest
import timm
import torch
from torch import nn

import export.onnx as onnx_export
from export.errors import ExportError, OnnxLoadError, OnnxVerificationError
from export.onnx import EXAMPLE_BATCH, OnnxExportConfig, OnnxExportReport, export_onnx, load_onnx, onnx_metadata

TINY_SIZE = (3, 16, 16)
TINY_CLASSES = 5
MNV2_SIZE = (3, 64, 64)
METADATA = {
    "model_name": "tiny",
    "arch_spec": json.dumps({"schema_version": 1, "blocks": [[8, 3]]}),
    "mean": "0.485,0.456,0.406",
    "std": "0.229,0.224,0.225",
    "input_size": "3,16,16",
}


def tiny_model() -> nn.Module:
    """Conv-BN-ReLU-pool-linear with non-trivial BN statistics, so BN folding is actually exercised."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, TINY_CLASSES),
    )
    bn = model[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


class Branchy(nn.Module):
    """Data-dependent Python control flow: neither torch.export nor an honest trace can capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def eager(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def run_ort(path: str | Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {"input": x})
    return out


def seeded_input(batch: int, size: tuple[int, int, int], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *size)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, OnnxExportReport]:
    model = tiny_model()
    path = tmp_path_factory.mktemp("tiny") / "nested" / "tiny.onnx"  # parent does not exist yet
    return model, path, export_onnx(model, path, TINY_SIZE, metadata=METADATA)


# ------------------------------------------------------------------------------------------ happy path


def test_export_writes_one_checked_file(tiny_export: tuple[nn.Module, Path, OnnxExportReport]) -> None:
    _, path, report = tiny_export
    assert report.path == str(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.onnx"]  # no temp or external-data files
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert report.file_size_bytes == path.stat().st_size
    assert report.num_nodes == len(proto.graph.node)
    assert {i.domain: i.version for i in proto.opset_import}[""] == report.opset == 18
    assert report.exporter == "dynamo"
    assert len(proto.graph.initializer) > 0 and all(not t.external_data for t in proto.graph.initializer)


def test_saved_model_carries_inferred_shapes(tiny_export: tuple[nn.Module, Path, OnnxExportReport]) -> None:
    _, path, report = tiny_export
    proto = onnx.load(str(path))
    assert len(proto.graph.value_info) > 0
    assert report.input_shape == ("batch", *TINY_SIZE)
    assert report.output_shape == ("batch", TINY_CLASSES)


def test_metadata_round_trips(tiny_export: tuple[nn.Module, Path, OnnxExportReport]) -> None:
    _, path, _ = tiny_export
    meta = onnx_metadata(path)
    assert {k: meta[k] for k in METADATA} == METADATA
    assert json.loads(meta["arch_spec"]) == json.loads(METADATA["arch_spec"])
    assert meta["mzoo.opset"] == "18"
    assert meta["mzoo.torch_version"] == torch.__version__


def test_report_is_json_and_within_atol(tiny_export: tuple[nn.Module, Path, OnnxExportReport]) -> None:
    _, _, report = tiny_export
    cfg = OnnxExportConfig()
    assert set(report.max_abs_diff) == set(cfg.verify_batch_sizes)
    assert all(0.0 <= d <= report.atol for d in report.max_abs_diff.values())
    assert report.atol == cfg.atol
    data = json.loads(json.dumps(report.to_dict()))
    assert data["input_shape"] == ["batch", *TINY_SIZE]
    assert data["onnxruntime_version"] == ort.__version__


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch_matches_eager_in_ort(
    tiny_export: tuple[nn.Module, Path, OnnxExportReport], batch: int
) -> None:
    model, path, _ = tiny_export
    x = seeded_input(batch, TINY_SIZE)
    got = run_ort(path, x)
    assert got.shape == (batch, TINY_CLASSES)
    np.testing.assert_allclose(got, eager(model, x), rtol=0, atol=1e-4)


@pytest.mark.slow  # ~15 s on 2 cores: the dynamo exporter's decomposition pass dominates
def test_mobilenetv2_050_exports_with_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_050", num_classes=10, pretrained=False).eval()
    path = tmp_path / "mobilenetv2_050.onnx"
    report = export_onnx(model, path, MNV2_SIZE, metadata={"model_name": "mobilenetv2_050"})
    assert max(report.max_abs_diff.values()) <= report.atol
    assert report.output_shape == ("batch", 10)
    assert not any(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = seeded_input(batch, MNV2_SIZE)
        (got,) = session.run(["logits"], {"input": x})
        np.testing.assert_allclose(got, eager(model, x), rtol=0, atol=1e-4)


def test_opset_17_file_is_opset_17(tmp_path: Path) -> None:
    model = tiny_model()
    report = export_onnx(model, tmp_path / "t.onnx", TINY_SIZE, cfg=OnnxExportConfig(opset=17))
    proto = load_onnx(tmp_path / "t.onnx")
    assert {i.domain: i.version for i in proto.opset_import}[""] == report.opset == 17
    assert onnx_metadata(tmp_path / "t.onnx")["mzoo.opset"] == "17"
    x = seeded_input(4, TINY_SIZE)
    np.testing.assert_allclose(run_ort(tmp_path / "t.onnx", x), eager(model, x), rtol=0, atol=1e-4)


def test_torchscript_fallback_when_dynamo_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dynamo(*args: object, **kwargs: object) -> onnx.ModelProto:
        raise RuntimeError("dynamo unavailable")

    monkeypatch.setattr(onnx_export, "_export_dynamo", no_dynamo)
    model = tiny_model().train()
    report = export_onnx(model, tmp_path / "t.onnx", TINY_SIZE)
    assert report.exporter == "torchscript"
    assert onnx_metadata(tmp_path / "t.onnx")["mzoo.exporter"] == "torchscript"
    assert model.training, "export must restore the caller's train/eval mode"
    x = seeded_input(5, TINY_SIZE)
    np.testing.assert_allclose(run_ort(tmp_path / "t.onnx", x), eager(model.eval(), x), rtol=0, atol=1e-4)

    with pytest.raises(ExportError, match="dynamo unavailable"):
        export_onnx(model, tmp_path / "u.onnx", TINY_SIZE, cfg=OnnxExportConfig(fallback_to_torchscript=False))
    assert not (tmp_path / "u.onnx").exists()


def test_report_names_its_check_and_headline(tiny_export: tuple[nn.Module, Path, OnnxExportReport]) -> None:
    _, _, report = tiny_export
    assert "batch 1 and 3" in report.verification and "atol 0.0001" in report.verification
    assert report.summary == f"max abs diff {max(report.max_abs_diff.values()):.1e}"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["summary"] == report.summary and data["verification"] == report.verification


# ------------------------------------------------------------------------------------------ simplification


class Reshaping(nn.Module):
    """A reshape of (batch, 8) to (batch, 8) that the dynamo optimiser keeps and onnxslim removes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, TINY_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(y.reshape(y.shape[0], -1))


def op_types(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.fixture(scope="module")
def slim_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, OnnxExportReport]:
    model = Reshaping().eval()
    path = tmp_path_factory.mktemp("slim") / "reshaping.onnx"
    return model, path, export_onnx(model, path, TINY_SIZE, metadata=METADATA)


def test_onnxslim_removes_nodes_and_keeps_metadata_and_dynamic_batch(
    slim_export: tuple[nn.Module, Path, OnnxExportReport]
) -> None:
    model, path, report = slim_export
    assert report.simplified and report.simplification == f"onnxslim {onnxslim.__version__}"
    assert report.num_nodes_exported == report.num_nodes + 1 == len(op_types(path)) + 1
    assert "Reshape" not in op_types(path)
    meta = onnx_metadata(path)
    assert {k: meta[k] for k in METADATA} == METADATA
    assert meta["mzoo.exporter"] == "dynamo" and meta["mzoo.opset"] == "18"
    proto = load_onnx(path)
    for value in (proto.graph.input[0], proto.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert report.input_shape == ("batch", *TINY_SIZE) and report.output_shape == ("batch", TINY_CLASSES)
    x = seeded_input(5, TINY_SIZE)
    np.testing.assert_allclose(run_ort(path, x), eager(model, x), rtol=0, atol=1e-4)


def test_simplify_can_be_switched_off(tmp_path: Path) -> None:
    report = export_onnx(Reshaping().eval(), tmp_path / "m.onnx", TINY_SIZE, cfg=OnnxExportConfig(simplify=False))
    assert (report.simplified, report.simplification) == (False, "disabled")
    assert report.num_nodes_exported == report.num_nodes == len(op_types(tmp_path / "m.onnx"))
    assert "Reshape" in op_types(tmp_path / "m.onnx")


def test_onnxslim_failure_keeps_the_exported_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_slim(model: onnx.ModelProto, *args: object, **kwargs: object) -> onnx.ModelProto:
        raise RuntimeError("slim exploded")

    monkeypatch.setattr(onnx_export.onnxslim, "slim", broken_slim)
    path = tmp_path / "m.onnx"
    report = export_onnx(Reshaping().eval(), path, TINY_SIZE, metadata=METADATA)
    assert not report.simplified
    assert report.simplification == "kept the exported graph: onnxslim failed: RuntimeError: slim exploded"
    assert report.num_nodes == report.num_nodes_exported and "Reshape" in op_types(path)
    assert max(report.max_abs_diff.values()) <= report.atol
    assert {k: onnx_metadata(path)[k] for k in METADATA} == METADATA


def _static_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = EXAMPLE_BATCH
    return model


def _dangling_input(model: onnx.ModelProto) -> onnx.ModelProto:
    model.graph.node[-1].input[0] = "no_such_tensor"
    return model


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (_static_batch, "onnxslim changed its inputs/outputs"),
        (_dangling_input, "onnxslim's graph fails the ONNX checker"),
        (lambda model: None, "onnxslim returned no model"),
    ],
)
def test_onnxslim_graph_that_breaks_the_contract_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mangle: Any, reason: str
) -> None:
    real_slim = onnxslim.slim
    monkeypatch.setattr(onnx_export.onnxslim, "slim", lambda model: mangle(real_slim(model)))
    path = tmp_path / "m.onnx"
    report = export_onnx(Reshaping().eval(), path, TINY_SIZE)
    assert not report.simplified and reason in report.simplification
    assert "Reshape" in op_types(path)
    assert load_onnx(path).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_verification_runs_on_the_simplified_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A simplifier bug that keeps the graph valid but changes its numbers must be caught, not published.
    def off_by_one(model: onnx.ModelProto) -> onnx.ModelProto:
        slim = onnxslim.slim(model)
        gemm = next(n for n in slim.graph.node if n.op_type == "Gemm")
        bias = next(t for t in slim.graph.initializer if t.name == gemm.input[2])
        bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + np.float32(1), bias.name))
        return slim

    monkeypatch.setattr(onnx_export, "_simplify", lambda proto: (off_by_one(proto), "onnxslim (mangled)"))
    with pytest.raises(OnnxVerificationError) as info:
        export_onnx(Reshaping().eval(), tmp_path / "m.onnx", TINY_SIZE)
    assert info.value.max_abs_diff == pytest.approx(1.0, rel=1e-3)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("pre_existing", [False, True])
def test_verification_failure_raises_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pre_existing: bool
) -> None:
    real_run_ort = onnx_export._run_ort

    def perturbed(*args: object, **kwargs: object) -> dict[str, np.ndarray]:
        return {name: out + np.float32(1e-2) for name, out in real_run_ort(*args, **kwargs).items()}

    monkeypatch.setattr(onnx_export, "_run_ort", perturbed)
    path = tmp_path / "model.onnx"
    if pre_existing:
        path.write_bytes(b"previous artefact")
    cfg = OnnxExportConfig(verify_batch_sizes=(3, 1), atol=1e-3)
    with pytest.raises(OnnxVerificationError) as info:
        export_onnx(tiny_model(), path, TINY_SIZE, cfg=cfg)
    err = info.value
    assert (err.output_name, err.batch_size, err.atol) == ("logits", 3, 1e-3)
    assert err.max_abs_diff == pytest.approx(1e-2, rel=1e-3)
    for part in ("'logits'", "batch size 3", "0.01", "0.001"):
        assert part in str(err)
    assert isinstance(err, ExportError)
    copy = pickle.loads(pickle.dumps(err))  # errors cross process boundaries under pytest-xdist/multiprocessing
    assert (copy.output_name, copy.batch_size, copy.max_abs_diff, str(copy)) == (
        err.output_name, err.batch_size, err.max_abs_diff, str(err))
    expected = ["model.onnx"] if pre_existing else []
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    if pre_existing:
        assert path.read_bytes() == b"previous artefact"


def test_static_batch_graph_fails_verification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def static_batch_exporter(model: nn.Module, example: torch.Tensor, cfg: OnnxExportConfig) -> onnx.ModelProto:
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=18, input_names=["input"], output_names=["logits"],
            verbose=False,
        )
        return program.model_proto

    monkeypatch.setattr(onnx_export, "_export_dynamo", static_batch_exporter)
    with pytest.raises(OnnxVerificationError, match="ONNX Runtime failed") as info:
        export_onnx(tiny_model(), tmp_path / "m.onnx", TINY_SIZE)
    assert info.value.batch_size == 1
    assert list(tmp_path.iterdir()) == []


def test_nan_output_fails_verification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # NaN compares false with everything; a naive `diff > atol` check would let it through.
    def nan_ort(*args: object, **kwargs: object) -> dict[str, np.ndarray]:
        return {"logits": np.full((1, TINY_CLASSES), np.nan, dtype=np.float32)}

    monkeypatch.setattr(onnx_export, "_run_ort", nan_ort)
    with pytest.raises(OnnxVerificationError) as info:
        export_onnx(tiny_model(), tmp_path / "m.onnx", TINY_SIZE, cfg=OnnxExportConfig(verify_batch_sizes=(1,)))
    assert np.isnan(info.value.max_abs_diff)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_raises_export_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ExportError, match="a_file"):
        export_onnx(tiny_model(), blocker / "sub" / "m.onnx", TINY_SIZE)
    assert blocker.read_text() == "not a directory"


def test_untraceable_model_raises_export_error_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="failed to export Branchy to ONNX") as info:
        export_onnx(Branchy(), tmp_path / "b.onnx", (3, 8, 8))
    assert not isinstance(info.value, OnnxVerificationError)
    assert info.value.__cause__ is not None
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_removes_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        assert len(list(tmp_path.iterdir())) == 1, "the temp file should exist while exporting"
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "_export_proto", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(tiny_model(), tmp_path / "m.onnx", TINY_SIZE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"opset": 16}, "opset 16"),
        ({"opset": 19}, "opset 19"),
        ({"atol": 0.0}, "atol"),
        ({"verify_batch_sizes": (2,)}, "example batch"),
        ({"verify_batch_sizes": ()}, "verify_batch_sizes"),
        ({"verify_batch_sizes": (1, 0)}, "verify_batch_sizes"),
        ({"input_name": "x", "output_name": "x"}, "must be non-empty and differ"),
    ],
)
def test_invalid_config_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OnnxExportConfig(**kwargs)  # type: ignore[arg-type]


def test_invalid_arguments_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="input_size"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", (16, 16))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mzoo.opset"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", TINY_SIZE, metadata={"mzoo.opset": "9"})
    with pytest.raises(TypeError, match="mean"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", TINY_SIZE, metadata={"mean": 0.5})  # type: ignore[dict-item]
    with pytest.raises(ExportError, match="is a directory"):
        export_onnx(tiny_model(), tmp_path, TINY_SIZE)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------- loading


def test_load_onnx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OnnxLoadError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")
    with pytest.raises(OnnxLoadError, match="not a regular file"):
        load_onnx(tmp_path)


def test_load_onnx_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(OnnxLoadError, match="random.onnx") as info:
        load_onnx(path)
    assert "\n" not in str(info.value)


def test_load_onnx_truncated_file(tiny_export: tuple[nn.Module, Path, OnnxExportReport], tmp_path: Path) -> None:
    _, source, _ = tiny_export
    data = source.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxLoadError, match="truncated.onnx") as info:
        load_onnx(path)
    assert "\n" not in str(info.value)


def test_load_onnx_checker_failure(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(onnx.ModelProto().SerializeToString())  # valid protobuf, invalid model
    with pytest.raises(OnnxLoadError, match="fails the ONNX checker"):
        load_onnx(path)


class _Cancelling(nn.Module):
    """fp32 loses ~1e-3 here ((v + 1e4) - 1e4), so eager fp32 itself is ~5e-4 from exact arithmetic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.flatten(x, 1)[:, :TINY_CLASSES] * 3.3 + 1e4) - 1e4


def _exact_ort(session: object, input_name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    v = x.reshape(x.shape[0], -1)[:, :TINY_CLASSES].astype(np.float64)
    return {"logits": ((v * 3.3 + 1e4) - 1e4).astype(np.float32)}


def test_noise_floor_accepts_an_export_closer_to_exact_than_eager(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_export, "_run_ort", _exact_ort)
    report = export_onnx(_Cancelling(), tmp_path / "m.onnx", TINY_SIZE)
    assert sorted(report.noise_floor) == [1, 3]
    for batch, (ort_err, eager_err) in report.noise_floor.items():
        assert report.max_abs_diff[batch] > report.atol  # the plain check failed ...
        assert ort_err < 1e-5 < 1e-4 < eager_err  # ... and ONNX Runtime was the more exact of the two


def test_noise_floor_refuses_an_export_farther_from_exact_than_eager(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def off(session: object, input_name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"logits": _exact_ort(session, input_name, x)["logits"] + np.float32(0.01)}

    monkeypatch.setattr(onnx_export, "_run_ort", off)
    with pytest.raises(OnnxVerificationError, match="against a float64 run"):
        export_onnx(_Cancelling(), tmp_path / "m.onnx", TINY_SIZE)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(onnx_export, "_run_ort", _exact_ort)
    with pytest.raises(OnnxVerificationError):  # the rule can be switched off
        export_onnx(_Cancelling(), tmp_path / "m.onnx", TINY_SIZE, cfg=OnnxExportConfig(noise_floor_factor=0))
