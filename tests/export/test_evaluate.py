"""`mzoo eval`: accuracy of a model and of each exported artefact in its own runtime (export/evaluate.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from common.errors import ImageDataError, InputError
from common.images import default_image_source, list_images, load_images, select_images
from export import evaluate as ev
from export.errors import AgreementError
from export.executorch import PteExportConfig
from export.formats import ExportOptions, artefact_path, export_formats
from export.onnx_precision import INT8_THRESHOLDS_TRAINED, Int8Config, quantize_int8
from export.pipeline import resolve_model
from mzoo.cli import main
from zoo.convert import CIFAR10_CLASSES, imagenet_to_cifar10

TRAINED = "nbmacro_00000100"  # CIFAR-10, 68 % top-1 on the test split
NEEDS_IMAGES = pytest.mark.skipif(default_image_source() is None,
                                  reason="CIFAR-10 JPEGs not found (set MZOO_SHARED_DATA to the shared data folder)")


@pytest.fixture(scope="module")
def trained():
    return resolve_model(TRAINED)


@pytest.fixture(scope="module")
def small_set(trained) -> ev.EvalSet:
    return ev.open_eval_set(ev.data_source("cifar10"), trained, ev.EvalConfig(limit=200))


# ------------------------------------------------------------------------------------------------ labels


def test_direct_mapping_scores_top1_and_top5() -> None:
    mapping = ev.label_mapping(3, ("a", "b", "c"))
    logits = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    labels = np.array([0, 1, 1])
    assert mapping.hits(logits, labels, 1).tolist() == [True, False, False]
    assert mapping.hits(logits, labels, 2).tolist() == [True, True, True]
    assert mapping.hits(logits, labels, 5).all()  # k larger than the outputs: every output counts
    assert not mapping.mapped


def test_imagenet_on_cifar10_is_mapped_and_an_unmapped_top_class_is_wrong() -> None:
    mapping = ev.label_mapping(1000, CIFAR10_CLASSES)
    assert mapping.mapped and "mapped" in mapping.description
    table = imagenet_to_cifar10()
    cat = next(i for i, c in enumerate(table) if c == "cat")
    unmapped = next(i for i, c in enumerate(table) if c is None)
    logits = np.zeros((2, 1000))
    logits[0, cat] = 2.0
    logits[1, unmapped], logits[1, cat] = 2.0, 1.0
    labels = np.array([CIFAR10_CLASSES.index("cat")] * 2)
    assert mapping.hits(logits, labels, 1).tolist() == [True, False]
    assert mapping.hits(logits, labels, 5).tolist() == [True, True]


def test_paired_standard_error_counts_only_discordant_images() -> None:
    ref = np.array([True, True, False, False] * 25)
    assert ev.paired_se(ref, ref) == 0.0
    other = ref.copy()
    other[:8] = ~other[:8]  # 4 right -> wrong and 4 wrong -> right: no drop, but an uncertain one
    assert ev.paired_se(ref, other) == pytest.approx(100 * np.sqrt(8) / 100)
    other[:8] = False  # 4 right -> wrong only: a drop of 4 points, variance (4 - 16/100) / 100²
    assert ev.paired_se(ref, other) == pytest.approx(100 * np.sqrt(4 - 16 / 100) / 100)


def test_outputs_that_fit_no_mapping_are_refused() -> None:
    with pytest.raises(InputError, match="10 outputs but the data has 3 classes"):
        ev.label_mapping(10, ("a", "b", "c"))
    with pytest.raises(InputError, match="1000 outputs but the data has 10 classes"):
        ev.label_mapping(1000, tuple("abcdefghij"))


# ------------------------------------------------------------------------------------------------ the data


@NEEDS_IMAGES
def test_eval_set_batches_are_load_images_exactly(trained, small_set: ev.EvalSet) -> None:
    source = default_image_source()
    assert small_set.split == "test" and len(small_set) == 200 and small_set.total == 10000
    assert small_set.classes == CIFAR10_CLASSES
    assert np.bincount(small_set.labels).tolist() == [20] * 10  # class-balanced
    first = next(small_set.batches(30))
    expected = load_images(source, trained.input_size, trained.mean, trained.std, count=30, split="test",
                           crop_pct=1.0, interpolation="bilinear")
    np.testing.assert_array_equal(first, expected)
    chosen = select_images(list_images(source, "test"), 30, seed=0)
    assert [f.name for f in small_set.files[:30]] == [f.name for f in chosen]


@NEEDS_IMAGES
def test_eval_set_errors_name_the_flag(trained, tmp_path: Path) -> None:
    with pytest.raises(ImageDataError, match="--limit 20000.*only 10000"):
        ev.open_eval_set(ev.data_source("cifar10"), trained, ev.EvalConfig(limit=20000))
    with pytest.raises(ImageDataError, match="--data .*does not exist"):
        ev.data_source(tmp_path / "nowhere")
    with pytest.raises(InputError, match="--limit"):
        ev.EvalConfig(limit=0)
    with pytest.raises(InputError, match="--crop-pct"):
        ev.EvalConfig(crop_pct=1.5)


# ------------------------------------------------------------------------------------------------ evaluating


@NEEDS_IMAGES
def test_trained_model_and_its_formats_on_real_images(trained, small_set: ev.EvalSet, tmp_path: Path) -> None:
    # A .pte of batch 3 on 200 images: the last chunk is padded, and its outputs must still match PyTorch.
    options = ExportOptions(calibration=ev.default_calibration(), pte=PteExportConfig(batch_size=3))
    report = ev.evaluate(trained, small_set, "onnx,onnx-int8,coreml,pte", options=options, out_dir=tmp_path)
    ref = report.reference
    assert ref.top1 > 0.5 and ref.top5 > 0.9  # chance is 10 % / 50 %
    assert ref.agreement == 1.0 and ref.top1_drop == 0.0
    assert [r.format for r in report.rows] == ["pytorch", "onnx", "onnx-int8", "coreml", "pte"]
    for fmt in ("onnx", "pte"):
        row = report.row(fmt)
        assert row.status == "ok" and row.agreement == 1.0 and abs(row.top1_drop) < 1e-9, row
        assert row.top1_drop_se == 0.0  # no image scored differently
    int8 = report.row("onnx-int8")
    # Exported into -o with the trained gate enforced (measured on this model: it passes) and kept there.
    assert int8.status == "ok" and int8.gate == "passed (enforced)" and Path(int8.path).is_file()
    assert int8.agreement >= 0.9 and abs(int8.top1_drop) <= 3.0
    assert report.row("coreml").status == "needs macOS"
    assert report.mapping == "direct" and "200 of its 10000" in report.data
    text = report.to_markdown()
    assert "needs macOS" in text and "| pte |" in text
    json.dumps(report.to_dict())


@NEEDS_IMAGES
def test_android_formats_run_in_their_runtimes_and_are_read_back_as_artefacts(trained, small_set: ev.EvalSet,
                                                                               tmp_path: Path) -> None:
    """LiteRT (XNNPACK) and ncnn files are scored like every other format, and given back as artefacts their
    format is read from the file (the .tflite's precision metadata, the .ncnn package)."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("ncnn")
    report = ev.evaluate(trained, small_set, "litert,litert-int8-dynamic,ncnn", out_dir=tmp_path)
    assert [r.format for r in report.rows] == ["pytorch", "litert", "litert-int8-dynamic", "ncnn"]
    for fmt in ("litert", "ncnn"):
        row = report.row(fmt)
        assert row.status == "ok" and row.agreement == 1.0 and abs(row.top1_drop) < 1e-9, row
    dynamic = report.row("litert-int8-dynamic")
    assert dynamic.status == "ok" and dynamic.agreement >= 0.9 and "LiteRT" in dynamic.runtime
    assert dynamic.gate == "passed (enforced)"  # exported into -o: the gate held, as mzoo export would hold it
    # Without -o the LiteRT gates are measured, not enforced, as ONNX's: the verdict is shown and the file scored.
    measured = ev.evaluate(trained, small_set, "litert-fp16").row("litert-fp16")
    assert measured.status == "ok" and measured.gate == "passed", measured
    given = [Path(report.row(f).path) for f in ("litert-int8-dynamic", "ncnn")]
    assert [ev.artefact_format(p) for p in given] == ["litert-int8-dynamic", "ncnn"]
    again = ev.evaluate(trained, small_set, (), artefacts=given)
    assert [again.row(str(p)).agreement for p in given] == [dynamic.agreement, 1.0]


@NEEDS_IMAGES
def test_a_broken_artefact_shows_its_drop(trained, small_set: ev.EvalSet, tmp_path: Path) -> None:
    export_formats(trained, tmp_path, "onnx")
    path = artefact_path(tmp_path, TRAINED, "onnx")
    proto = onnx.load(str(path))
    for init in proto.graph.initializer:  # roll the classifier's rows: every class is read as its neighbour
        array = onnx.numpy_helper.to_array(init)
        if array.ndim == 2 and array.shape[0] == 10:
            init.CopyFrom(onnx.numpy_helper.from_array(np.roll(array, 1, axis=0), init.name))
        elif array.ndim == 1 and array.shape == (10,):
            init.CopyFrom(onnx.numpy_helper.from_array(np.roll(array, 1), init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    report = ev.evaluate(trained, small_set, (), artefacts=[broken])
    row = report.row(str(broken))
    assert row.status == "ok" and row.format == "onnx"
    assert row.top1_drop > 30 and row.agreement < 0.2, row
    assert 0 < row.top1_drop_se < 5


@NEEDS_IMAGES
def test_artefact_of_other_weights_or_model_is_refused(trained, small_set: ev.EvalSet, tmp_path: Path) -> None:
    other = resolve_model("nbmacro_00000000")
    export_formats(other, tmp_path, "onnx")
    with pytest.raises(InputError, match="exported from model 'nbmacro_00000000', not 'nbmacro_00000100'"):
        ev.evaluate(trained, small_set, (), artefacts=[artefact_path(tmp_path, "nbmacro_00000000", "onnx")])
    random_init = resolve_model("nbmacro_11111111")
    export_formats(random_init, tmp_path, "onnx")
    with pytest.raises(InputError, match="random init"):
        ev.check_artefact_matches(artefact_path(tmp_path, "nbmacro_11111111", "onnx"), "onnx", random_init)


@NEEDS_IMAGES
def test_measured_int8_gate_passes_the_trained_model_and_refuses_bad_calibration(trained, tmp_path: Path) -> None:
    export_formats(trained, tmp_path, "onnx")
    fp32 = artefact_path(tmp_path, TRAINED, "onnx")
    source = default_image_source()

    def images(split: str, count: int) -> np.ndarray:
        return load_images(source, trained.input_size, trained.mean, trained.std, count=count, split=split,
                           crop_pct=1.0)

    verify, calibration = images("test", 64), images("train", 128)

    def reference(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return trained.model(torch.from_numpy(x)).numpy()

    cfg = Int8Config(thresholds=INT8_THRESHOLDS_TRAINED)
    quantize_int8(fp32, tmp_path / "ok.int8.onnx", images=verify, calibration=calibration, reference=reference,
                  cfg=cfg)
    mean = np.asarray(trained.mean, np.float32)[:, None, None]
    std = np.asarray(trained.std, np.float32)[:, None, None]
    with pytest.raises(AgreementError):
        quantize_int8(fp32, tmp_path / "bad.int8.onnx", images=verify, reference=reference, cfg=cfg,
                      calibration=(calibration * std + mean) * 255)


# ------------------------------------------------------------------------------------------------ the command


@NEEDS_IMAGES
def test_cli_eval_prints_json_and_writes_markdown(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    table = tmp_path / "eval.md"
    code = main(["eval", TRAINED, "--formats", "onnx,onnx-fp16,coreml", "--limit", "50", "--json",
                 "--markdown", str(table)])
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads(out)
    rows = {r["format"]: r for r in data["rows"]}
    assert set(rows) == {"pytorch", "onnx", "onnx-fp16", "coreml"} and data["num_images"] == 50
    assert rows["onnx-fp16"]["gate"] == "passed" and rows["onnx-fp16"]["agreement"] >= 0.98
    assert rows["coreml"]["status"] == "needs macOS"
    assert "| onnx-fp16 |" in table.read_text()


@NEEDS_IMAGES
@pytest.mark.parametrize("argv, flag", [
    (["--limit", "0"], "--limit"),
    (["--limit", "20000"], "--limit"),
    (["--formats", "onnx,tflite"], "tflite"),
    (["--data", "/nowhere/at/all"], "--data"),
    (["--seed", "-1"], "--seed"),
    (["--crop-pct", "0"], "--crop-pct"),
    (["--threads", "-2"], "--threads"),
])
def test_cli_bad_arguments_fail_fast_in_one_line(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["eval", TRAINED, *argv, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("mzoo: error:") == 1 and flag in err and "Traceback" not in err, err
    assert not list(out.glob("*.onnx"))  # refused before any export


@NEEDS_IMAGES
def test_cli_refuses_conflicting_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32)).save(folder / "cat" / "0.jpg")
    cases = [
        (["eval", TRAINED, "--data", str(folder), "--calibration", str(folder)], "--calibration"),
        (["eval", TRAINED, "--data", str(folder), "--formats", "onnx"], "10 outputs but the data has 1 classes"),
        (["eval", str(tmp_path / "missing.onnx")], "does not exist"),
        (["eval", TRAINED, "--markdown", str(tmp_path)], "--markdown"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("mzoo: error:") == 1 and needle in err, (argv, err)


@pytest.mark.slow
@NEEDS_IMAGES
def test_lite0_mapped_on_cifar10() -> None:
    resolved = resolve_model("mz_tf_efficientnet_lite0")
    eval_set = ev.open_eval_set(ev.data_source("cifar10"), resolved, ev.EvalConfig(limit=100))
    report = ev.evaluate(resolved, eval_set, "onnx,pte")
    assert report.mapping == "imagenet->cifar10" and "mapped top-1" in report.to_markdown()
    assert report.reference.top1 > 0.12  # bench/lite_mapped_cifar.py: ~22 % on 1000 images, chance <= 10 %
    assert report.row("onnx").agreement == 1.0
