"""LiteRT (.tflite) export: fp32 verified against eager PyTorch, fp16 / int8-dynamic / int8 held to the agreement
gates, the delegation breakdown, and the errors (a wrong file, a failed gate, a missing extra) leave nothing behind."""

from __future__ import annotations

import json

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch", reason="the android extra is not installed")

from export.errors import AgreementError, ExportError, LitertVerificationError  # noqa: E402
from export.litert import LitertExportConfig, export_litert, litert_metadata, load_litert  # noqa: E402
from export.onnx_precision import INT8_THRESHOLDS  # noqa: E402

SIZE = (3, 16, 16)


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Hardswish(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def seeded_images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *SIZE)).astype(np.float32)


def test_fp32_matches_eager_runs_on_xnnpack_and_keeps_metadata(tmp_path: Path) -> None:
    target = tmp_path / "tiny.tflite"
    report = export_litert(tiny(), target, SIZE, metadata={"model_name": "tiny"})
    assert report.precision == "fp32" and len(report.max_abs_diff) == 3
    assert max(report.max_abs_diff) <= 1e-4 and report.input_shape == (1, *SIZE)
    assert report.ops.partitions == 1 and report.ops.fraction == 1.0 and not report.ops.not_delegated
    assert report.ops.layout_ops.get("TRANSPOSE", 0) >= 1  # NCHW input into channels-last kernels
    assert litert_metadata(target)["model_name"] == "tiny"
    assert litert_metadata(target)["mzoo.precision"] == "fp32"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.tflite"]  # no temporary file left
    # The published file runs as the report says, independently of the exporter's interpreter.
    x = torch.randn(1, *SIZE, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        expected = tiny()(x).numpy()
    np.testing.assert_allclose(load_litert(target).run(x.numpy()), expected, atol=1e-4)


def test_a_file_that_differs_from_eager_is_refused_and_not_written(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import export.litert as litert

    convert = litert.convert_to_tflite

    def wrong(model: nn.Module, example: torch.Tensor, precision: str = "fp32", calibration=None) -> bytes:
        other = copy.deepcopy(model)
        with torch.no_grad():
            other[-1].bias.add_(1e-2)  # a converter that shifts the logits by 1e-2
        return convert(other, example, precision, calibration)

    monkeypatch.setattr(litert, "convert_to_tflite", wrong)
    target = tmp_path / "tiny.tflite"
    with pytest.raises(LitertVerificationError, match=r"does not match eager PyTorch.*max abs diff 0\.01"):
        export_litert(tiny(), target, SIZE)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("precision", ["fp16", "int8-dynamic", "int8"])
def test_reduced_precisions_pass_their_gate_on_the_given_images(tmp_path: Path, precision: str) -> None:
    images, calibration = seeded_images(32, 1), seeded_images(64, 2)
    cfg = LitertExportConfig(precision=precision, thresholds=INT8_THRESHOLDS)
    report = export_litert(tiny(), tmp_path / "t.tflite", SIZE, cfg=cfg, images=images, image_source="seeded",
                           calibration=calibration, calibration_source="seeded calibration")
    assert report.num_images == 32 and report.image_source == "seeded"
    assert report.top1_agreement >= 0.8 and report.mean_cosine >= 0.99, report.summary
    assert report.thresholds["mean_cosine"] == INT8_THRESHOLDS.mean_cosine
    assert report.input_dtype == ("int8" if precision == "int8" else "float32")
    if precision == "int8":
        assert report.num_calibration == 64 and report.calibration_source == "seeded calibration"
    assert litert_metadata(tmp_path / "t.tflite")["mzoo.precision"] == precision


def test_full_integer_int8_quantises_a_conv_after_its_relu6_not_before(tmp_path: Path) -> None:
    """Trained ReLU6 networks (MobileNetV2, EfficientNet-Lite) have pre-activations of about ±100 that ReLU6 cuts
    to [0, 6]. Quantising the conv's output before the clamp leaves ~4 int8 levels for what the next layer
    reads (mean cosine 0.85 on this model with litert-torch's stock quantiser, above 0.9999 fused); observed after the clamp, as
    LiteRT fuses it, int8 follows fp32 closely."""
    from export.litert import convert_to_tflite, load_litert

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
                          nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():  # a wide pre-activation range, ReLU6 keeping a small part of it
        for bn in (model[1], model[4]):
            bn.weight.fill_(100.0)
            bn.bias.uniform_(-2.0, 2.0)
    model.eval()
    images, calibration = seeded_images(16, 1), seeded_images(64, 2)
    content = convert_to_tflite(model, torch.from_numpy(images[:1]), "int8", calibration)
    (tmp_path / "m.tflite").write_bytes(content)
    program = load_litert(tmp_path / "m.tflite")
    got = np.concatenate([program.run(images[i:i + 1]) for i in range(len(images))])
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.mean() >= 0.99, cosine.mean()


def test_a_variant_that_does_not_follow_the_reference_fails_its_gate(tmp_path: Path) -> None:
    def negated(batch: np.ndarray) -> np.ndarray:  # a reference the file cannot agree with
        with torch.inference_mode():
            return -tiny()(torch.from_numpy(batch)).numpy()

    cfg = LitertExportConfig(precision="int8-dynamic", thresholds=INT8_THRESHOLDS)
    with pytest.raises(AgreementError, match="LiteRT int8-dynamic .*cosine"):
        export_litert(tiny(), tmp_path / "t.tflite", SIZE, cfg=cfg, images=seeded_images(16, 3), reference=negated)
    assert not any(tmp_path.iterdir())


class CumSum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


class WithCumsum(nn.Module):
    """XNNPACK has no cumulative sum: LiteRT runs it with its own kernel between two delegate partitions."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.fc = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), CumSum()), nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


def test_report_names_an_op_xnnpack_does_not_take_and_where_it_is(tmp_path: Path) -> None:
    torch.manual_seed(0)
    report = export_litert(WithCumsum().eval(), tmp_path / "c.tflite", (3, 8, 8))
    assert report.ops.not_delegated == {"CUMSUM": 1}
    assert report.ops.not_delegated_at == ("CUMSUM @ body.1",)  # the module it came from
    assert report.ops.partitions == 2 and report.ops.delegated_ops == report.ops.total_ops - 1
    assert "not delegated: CUMSUM x1" in report.summary
    # Without the delegate nothing is delegated, and the file still matches eager PyTorch.
    torch.manual_seed(0)
    plain = export_litert(WithCumsum().eval(), tmp_path / "p.tflite", (3, 8, 8),
                          cfg=LitertExportConfig(xnnpack=False))
    assert plain.ops.partitions == 0 and plain.ops.fraction == 0.0 and max(plain.max_abs_diff) <= 1e-4


def test_images_of_the_wrong_shape_are_refused_before_converting(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import export.litert as litert

    monkeypatch.setattr(litert, "convert_to_tflite", lambda *a, **k: pytest.fail("converted before checking"))
    cfg = LitertExportConfig(precision="int8")
    with pytest.raises(ValueError, match=r"calibration images have shape \(4, 3, 8, 8\), expected \(N, 3, 16, 16\)"):
        export_litert(tiny(), tmp_path / "t.tflite", SIZE, cfg=cfg, calibration=np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="verification images contain NaN"):
        export_litert(tiny(), tmp_path / "t.tflite", SIZE, cfg=cfg, images=np.full((2, *SIZE), np.nan, np.float32))
    assert not any(tmp_path.iterdir())


def test_reading_a_missing_or_foreign_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LitertVerificationError, match="does not exist"):
        load_litert(tmp_path / "none.tflite")
    onnx_like = tmp_path / "model.tflite"
    onnx_like.write_bytes(b"\x08\x07\x12\x04onnx" + b"\0" * 32)
    with pytest.raises(LitertVerificationError, match="not a LiteRT model: no 'TFL3'"):
        load_litert(onnx_like)


def test_a_missing_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import litert_torch now raises ImportError
    with pytest.raises(ExportError, match=r"pip install -e '\.\[android\]'") as info:
        export_litert(tiny(), tmp_path / "t.tflite", SIZE)
    assert "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())


def test_inspection_of_a_file_on_disk_names_the_op_off_the_fast_path(tmp_path: Path) -> None:
    from export.inspection import inspect_artefact

    torch.manual_seed(0)
    export_litert(WithCumsum().eval(), tmp_path / "c.tflite", (3, 8, 8))
    report = inspect_artefact(tmp_path / "c.tflite")
    assert report.format == "litert" and report.partitions == 2 and report.not_delegated == {"CUMSUM": 1}
    text = report.to_text()
    assert "in 2 partitions" in text and "CUMSUM @ body.1" in text and "TRANSPOSE" in text
    with pytest.raises(ValueError, match="cannot inspect .*model.onnx"):
        inspect_artefact(tmp_path / "model.onnx")


def test_mzoo_inspect_prints_the_report_and_refuses_other_files_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mzoo.cli import main

    torch.manual_seed(0)
    export_litert(WithCumsum().eval(), tmp_path / "c.tflite", (3, 8, 8))
    assert main(["inspect", str(tmp_path / "c.tflite")]) == 0
    out = capsys.readouterr().out
    assert "in 2 partitions" in out and "CUMSUM @ body.1" in out
    assert main(["inspect", "--json", str(tmp_path / "c.tflite")]) == 0
    assert json.loads(capsys.readouterr().out)["not_delegated"] == {"CUMSUM": 1}
    (tmp_path / "model.onnx").write_bytes(b"")
    assert main(["inspect", str(tmp_path / "model.onnx")]) == 2
    err = capsys.readouterr().err
    assert "cannot inspect" in err and err.count("\n") == 1
