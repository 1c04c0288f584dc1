"""Every format of one model, the whole-zoo batch export and its compatibility matrix, spec + weights export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import zoo
from export.errors import ExportError, UnsupportedFormatError
from export.formats import (FORMATS, KNOWN_UNSUPPORTED, ExportOptions, artefact_path, export_all, export_formats,
                            parse_formats)
from common.images import RandomImagesWarning, default_image_source
from export.pipeline import resolve_model, resolve_spec
from mzoo.cli import main

SMALL = "nbmacro_11111111"
NEEDS_IMAGES = pytest.mark.skipif(default_image_source() is None,
                                  reason="CIFAR-10 JPEGs not found (set MZOO_SHARED_DATA to the shared data folder)")


def test_parse_formats_orders_dedupes_and_names_unknown() -> None:
    assert parse_formats("pte, onnx,pte") == ("onnx", "pte")
    assert parse_formats(["coreml", "onnx-int8"]) == ("onnx-int8", "coreml")
    with pytest.raises(UnsupportedFormatError, match="unknown export format 'tflite'.*onnx-fp16"):
        parse_formats("onnx,tflite")
    with pytest.raises(UnsupportedFormatError, match="no export format"):
        parse_formats(" , ")


@NEEDS_IMAGES
def test_one_model_every_format_verified_with_reports(tmp_path: Path) -> None:
    with pytest.warns(RandomImagesWarning, match="NO REAL IMAGES"):  # int8 without a calibration set
        cells = export_formats(resolve_model(SMALL), tmp_path, tuple(FORMATS))
    assert [c.format for c in cells] == list(FORMATS)
    for cell in cells:
        assert cell.status == "ok", cell
        path = artefact_path(tmp_path, SMALL, cell.format)
        assert cell.path == str(path) and path.exists()
        report = json.loads(path.with_name(path.name + ".json").read_text())
        assert report["path"] == str(path)
        assert cell.summary and cell.verification
    by = {c.format: c.report for c in cells}
    assert max(by["onnx"]["max_abs_diff"].values()) <= 1e-4
    # fp16 / int8 were made from the fp32 file and checked on real images, not on random ones.
    for fmt in ("onnx-fp16", "onnx-int8"):
        assert "cifar10" in json.dumps(by[fmt]), by[fmt]
    assert "random" in json.dumps(by["onnx-int8"])  # no calibration set given: said in the report
    # Nothing but artefacts and their reports is left in the output directory (no temp files).
    expected = {f"{SMALL}{s}" for s in FORMATS.values()} | {f"{SMALL}{s}.json" for s in FORMATS.values()}
    assert {p.name for p in tmp_path.iterdir()} == expected


@NEEDS_IMAGES
def test_variants_without_plain_onnx_do_not_leave_the_fp32_file(tmp_path: Path) -> None:
    cells = export_formats(resolve_model(SMALL), tmp_path, "onnx-fp16")
    assert cells[0].status == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{SMALL}.fp16.onnx", f"{SMALL}.fp16.onnx.json"]


def test_fp16_without_any_real_images_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MZOO_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ExportError, match="--images"):
        export_formats(resolve_model(SMALL), tmp_path / "out", "onnx-fp16")
    assert not (tmp_path / "out").exists()  # refused before the output directory was made


def test_batch_export_writes_matrix_and_keeps_going(tmp_path: Path) -> None:
    def resolve(name: str):
        if name == "broken_model":
            raise RuntimeError("weights exploded")
        return resolve_model(name)

    seen = []
    matrix = export_all(["nbmacro_00000000", "broken_model", SMALL], tmp_path, "pte,onnx", resolve=resolve,
                        on_cell=seen.append)
    assert matrix.formats == ("onnx", "pte") and len(seen) == 6
    assert matrix.models == ["nbmacro_00000000", "broken_model", SMALL]
    assert [c.status for c in matrix.cells if c.model != "broken_model"] == ["ok"] * 4
    broken = [c for c in matrix.cells if c.model == "broken_model"]
    assert [c.status for c in broken] == ["failed", "failed"] and "weights exploded" in broken[0].error
    md = (tmp_path / "compatibility.md").read_text()
    data = json.loads((tmp_path / "compatibility.json").read_text())
    assert "| nbmacro_00000000 | ok · Δ " in md and "% XNNPACK" in md and "**failed**: cannot build the model" in md
    assert [c["status"] for c in data["cells"]] == [c.status for c in matrix.cells]
    assert data["environment"]["onnxruntime"] == ort.__version__


def test_batch_export_records_an_exporter_failure_and_continues(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import export.formats as formats

    def fail(session, path):
        raise ExportError(f"simulated converter failure for {path.name}")

    monkeypatch.setitem(formats._EXPORTERS, "pte", fail)
    matrix = export_all([SMALL], tmp_path, "onnx,pte", resolve=resolve_model)
    assert [c.status for c in matrix.cells] == ["ok", "failed"]
    assert "simulated converter failure" in matrix.cells[1].error
    assert not artefact_path(tmp_path, SMALL, "pte").exists()


def test_known_unsupported_pairs_are_documented_and_really_fail() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for (pattern, fmt), reason in KNOWN_UNSUPPORTED.items():
        assert pattern in readme and fmt in FORMATS and reason


def test_unwritable_output_directory_is_an_export_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        target = blocker / "sub"  # a directory cannot be created under a file, even as root
    else:
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
    with pytest.raises(ExportError, match="output directory"):
        export_formats(resolve_model(SMALL), target, "onnx")


def test_spec_plus_weights_exports_those_weights(tmp_path: Path) -> None:
    model = zoo.create_model(SMALL).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    spec_file, weights = tmp_path / "searched.json", tmp_path / "w.pth"
    spec_file.write_text(model.arch_spec.to_json())
    torch.save(model.state_dict(), weights)
    resolved = resolve_spec(spec_file, weights)
    assert resolved.name == "searched" and resolved.input_size == (3, 32, 32)
    (cell,) = export_formats(resolved, tmp_path / "out", "onnx")
    x = torch.randn(3, 3, 32, 32)
    got = ort.InferenceSession(cell.path, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)


def test_cli_batch_export_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["export", "--all", "nbmacro_0000000*", "--format", "onnx,pte", "-o", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 0 and "1 models x 2 formats: 2 ok, 0 failed" in out
    assert (tmp_path / "compatibility.md").is_file() and (tmp_path / "nbmacro_00000000.pte").is_file()
    for argv, message in [
        (["export", SMALL, "--format", "onnx,tflite", "-o", str(tmp_path)], "unknown export format 'tflite'"),
        (["export", "--all", "--spec", "x.json", "--format", "onnx", "-o", str(tmp_path)], "exactly one of"),
        (["export", "--spec", str(tmp_path / "none.json"), "-o", str(tmp_path)], "cannot read spec file"),
        (["export", "--all", "nothing_*", "-o", str(tmp_path)], "no model matches"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("mzoo: error:") and message in err and err.count("\n") == 1, err


def test_cli_corrupt_spec_and_weights_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad_spec = tmp_path / "bad.json"
    bad_spec.write_text('{"schema_version": 3, "blocks": "nope"}')
    assert main(["export", "--spec", str(bad_spec), "-o", str(tmp_path)]) == 2
    assert "not a valid architecture spec" in capsys.readouterr().err
    spec = tmp_path / "ok.json"
    spec.write_text(zoo.get_arch_spec(SMALL).to_json())
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not a checkpoint")
    assert main(["export", "--spec", str(spec), "--checkpoint", str(weights), "-o", str(tmp_path / "o")]) == 2
    assert "cannot read weights file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "onnx"])  # onnx: tests/export/test_zoo_export.py
@pytest.mark.parametrize("name", zoo.list_models())
def test_every_zoo_model_exports_to_every_format(name: str, fmt: str, tmp_path: Path) -> None:
    if default_image_source() is None and fmt.startswith("onnx-"):
        pytest.skip("CIFAR-10 JPEGs not found")
    # int8 is calibrated on real images, as the committed matrix is: calibrated on random noise, int8 of e.g.
    # bcnet_resnet50_2g rightly fails its gate (gain over a constant output -0.15).
    options = ExportOptions(calibration=str(default_image_source()) if default_image_source() else None)
    cells = export_formats(resolve_model(name), tmp_path, fmt, options, keep_going=True)
    assert cells[0].status in ("ok", "unsupported"), cells[0].error


@NEEDS_IMAGES
def test_trained_weights_get_deployment_thresholds(tmp_path: Path) -> None:
    from export.onnx_precision import FP16_THRESHOLDS, FP16_THRESHOLDS_TRAINED

    resolved = resolve_model(SMALL)  # BatchNorm calibrated: saved, it stands in for trained weights
    spec_file, weights = tmp_path / "net.json", tmp_path / "w.pth"
    spec_file.write_text(resolved.model.arch_spec.to_json())
    torch.save(resolved.model.state_dict(), weights)
    random_init = export_formats(resolved, tmp_path / "a", "onnx-fp16")[0]
    loaded = resolve_spec(spec_file, weights)
    assert not loaded.random_init and resolved.random_init
    trained = export_formats(loaded, tmp_path / "b", "onnx-fp16")[0]
    assert random_init.report["thresholds"]["top1_agreement"] == FP16_THRESHOLDS.top1_agreement
    assert trained.report["thresholds"]["top1_agreement"] == FP16_THRESHOLDS_TRAINED.top1_agreement
    assert trained.report["thresholds"]["mean_cosine"] == FP16_THRESHOLDS_TRAINED.mean_cosine


@NEEDS_IMAGES
def test_cli_corrupt_calibration_image_is_named_and_nothing_written(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "calib"
    (folder / "cat").mkdir(parents=True)
    for i in range(128):  # exactly the calibration count: every file is read
        Image.new("RGB", (32, 32), (i, 2 * i % 256, 3 * i % 256)).save(folder / "cat" / f"{i:03d}.jpg")
    (folder / "cat" / "050.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    out = tmp_path / "out"
    code = main(["export", SMALL, "--format", "onnx-int8", "--calibration", str(folder), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "050.jpg" in err and err.count("mzoo: error:") == 1, err
    assert not list(out.glob("*.int8.onnx*"))


def test_a_random_init_model_is_the_same_network_on_every_export() -> None:
    """An export of a model without weights is reproducible (the compatibility matrix, a bug report): the random
    init is seeded, and the caller's global RNG is left as it was."""
    from export.pipeline import resolve_model

    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = resolve_model("hgcnet_0_5x_cifar")
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(7)  # a different global state must not change the network
    second = resolve_model("hgcnet_0_5x_cifar")
    assert first.weights_file is None
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
