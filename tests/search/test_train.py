"""``mzoo train`` and search.train: the uint8 tensor cache, one-line errors before any work, a tiny run end to end
(result files that ``--searched`` and ``pretrained=True`` load, with the recorded test top-1), exact resumption,
refused settings, ``list_models(pretrained=True)`` and the shipped NAS-Bench-Macro weights."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from export.errors import CalibrationDataError
from search import train as train_mod
from search.data import (ImageFolder, SeededDataset, balanced_subset, cifar_eval_transform, cifar_train_transform,
                         mix_seed)
from common.errors import InputError
from search.train import CACHE_FORMAT, TensorImages, TrainJob, image_cache, score_top1
from tests.search.ddp_worker import make_image_folder
from mzoo.cli import main as mzoo
from zoo.nbmacro import TRAINED_SHA256, nbmacro_spec
from zoo.pretrained import sha256_of, weight_candidates
from zoo.searched import register_searched

TINY = ("--epochs", "2", "--batch-size", "8", "--eval-batch-size", "7", "--input-size", "8", "--no-progress")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes of 8x8 images: 8 a class to train on, 4 to test on."""
    root = tmp_path_factory.mktemp("train_data")
    make_image_folder(root, classes=3, per_class=8, size=8, split="train")
    make_image_folder(root, classes=3, per_class=4, size=8, split="test", seed=1)
    return root


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train_spec") / "tiny.json"
    path.write_text(dataclasses.replace(nbmacro_spec("00000000"), num_classes=3).to_json())
    return path


def _train(out: Path, folder: Path, spec_file: Path, *extra: str) -> int:
    return mzoo(["train", "--spec", str(spec_file), "--data", str(folder), "-o", str(out), "--cache",
                 str(out.parent / "cache"), *TINY, *extra])


# --- the tensor cache ---------------------------------------------------------------------------------------


def test_cache_holds_the_decoded_pixels_and_is_read_back(folder: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cached = image_cache(folder, "train", cache_dir=tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and torch.load(files[0], weights_only=True)["format"] == CACHE_FORMAT
    plain = ImageFolder(folder, "train")
    assert cached.pixels.shape == (24, 8, 8, 3) and cached.targets == plain.targets
    assert cached.classes == plain.classes
    for i in (0, 13, 23):
        assert np.array_equal(cached.pixels[i], np.asarray(plain[i][0]))
    monkeypatch.setattr(train_mod, "_decode", lambda *a: pytest.fail("decoded again instead of reading the cache"))
    again = image_cache(folder, "train", cache_dir=tmp_path)
    assert np.array_equal(again.pixels, cached.pixels)


def test_cache_is_rebuilt_when_corrupt_or_the_source_changed(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "src", classes=2, per_class=3, size=8, split="train")
    first = image_cache(root, "train", cache_dir=tmp_path / "c")
    (path,) = (tmp_path / "c").glob("*.pt")
    path.write_bytes(b"not a cache")
    assert np.array_equal(image_cache(root, "train", cache_dir=tmp_path / "c").pixels, first.pixels)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "c0" / "999.png")
    grown = image_cache(root, "train", cache_dir=tmp_path / "c")
    assert len(grown) == 7 and np.array_equal(grown.pixels[3], np.zeros((8, 8, 3), np.uint8))


def test_cache_refuses_images_of_different_sizes(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "src", classes=2, per_class=2, size=8, split="train")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(root / "train" / "c1" / "odd.png")
    with pytest.raises(CalibrationDataError, match="odd.png"):
        image_cache(root, "train", cache_dir=tmp_path / "c")


def test_cached_items_and_subsets_equal_the_image_folders(folder: Path, tmp_path: Path) -> None:
    """Same key, same augmented tensor: training from the cache is training from the files."""
    plain = ImageFolder(folder, "train", cifar_train_transform())
    cached = image_cache(folder, "train", cache_dir=tmp_path).with_transform(cifar_train_transform())
    a, b = SeededDataset(plain), SeededDataset(cached)
    for index in (0, 5, 17):
        key = (index, mix_seed(3, 1, index))
        (x, y), (u, v) = a[key], b[key]
        assert torch.equal(x, u) and y == v
    assert len({tuple(b[(5, seed)][0].flatten().tolist()) for seed in range(8)}) > 1  # augmented, per seed
    sub_plain = balanced_subset(plain, 3, seed=0).with_transform(cifar_eval_transform())
    sub_cached = balanced_subset(cached, 3, seed=0).with_transform(cifar_eval_transform())
    assert sub_plain.targets == sub_cached.targets
    assert all(torch.equal(sub_plain[i][0], sub_cached[i][0]) for i in range(len(sub_plain)))


def test_tensor_images_check_their_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        TensorImages(np.zeros((2, 8, 8, 3), np.float32), [0, 1], ("a", "b"), Path("x"))
    with pytest.raises(ValueError, match="one label per image"):
        TensorImages(np.zeros((2, 8, 8, 3), np.uint8), [0], ("a", "b"), Path("x"))


# --- errors before work -------------------------------------------------------------------------------------


@pytest.fixture()
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading any image is a test failure: errors must come before the data."""
    monkeypatch.setattr(train_mod, "load_job_data", lambda *a, **k: pytest.fail("data read before the error"))


@pytest.mark.parametrize("argv, message", [
    (["nbmacro_0000000"], "unknown model 'nbmacro_0000000'; did you mean"),
    (["nbmacro_00000000", "--data", "/nowhere/imgs"], "--data '/nowhere/imgs': no such directory"),
    (["nbmacro_00000000", "--epochs", "0"], "--epochs must be at least 1"),
    (["--spec", "/nowhere/spec.json"], "spec file '/nowhere/spec.json' does not exist"),
    ([], "give exactly one of NAME"),
    (["nbmacro_00000000", "--name", "Bad-Name"], "--name 'Bad-Name' must be lowercase"),
    (["nbmacro_00000000", "--per-class", "0"], "per-class must be a positive integer"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, tmp_path: Path, no_data: None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert mzoo(["train", *argv, "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mzoo: error: ") and err.count("\n") == 1 and message in err, err


def test_unwritable_output_is_refused(tmp_path: Path, no_data: None, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert mzoo(["train", "nbmacro_00000000", "-o", str(blocker / "out"), "--no-progress"]) == 2
    assert "cannot create output directory" in capsys.readouterr().err


def test_wrong_image_size_names_the_option(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mzoo(["train", "nbmacro_00000000", "--data", str(folder), "-o", str(tmp_path / "o"), "--cache",
                 str(tmp_path / "c"), "--no-progress"]) == 2
    assert "are 8x8; the model is trained at 32x32 (pass --input-size 8" in capsys.readouterr().err


# --- a tiny run end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(folder: Path, spec_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train_run") / "run"
    assert _train(out, folder, spec_file, "--name", "tiny_trained_run") == 0
    return out


def test_run_writes_a_result_that_searched_and_pretrained_load(finished: Path, folder: Path) -> None:
    report = json.loads((finished / "report.json").read_text())
    assert report["name"] == "tiny_trained_run" and report["method"] == "train"
    assert report["input_size"] == [3, 8, 8] and report["classes"] == ["c0", "c1", "c2"]
    assert report["epochs"] == 2 and report["steps"] == 2 * (24 // 8)
    rows = [r for r in report["history"] if "eval_top1" in r]
    assert [round(r["epoch"]) for r in rows] == [1, 2]
    assert report["best_top1"] == max(r["eval_top1"] for r in rows) and report["final_top1"] == rows[-1]["eval_top1"]
    assert report["sha256"] == sha256_of(finished / "weights.pth")
    assert report["settings"]["train.lr"] == 0.1 and report["settings"]["train.batch_size"] == 8
    name = register_searched(finished)
    cfg = zoo.get_pretrained_cfg(name)
    assert cfg.sha256 == report["sha256"] and cfg.input_size == (3, 8, 8)
    model = zoo.create_model(name, pretrained=True).eval()
    test = ImageFolder(folder, "test", cifar_eval_transform(), classes=("c0", "c1", "c2"))
    assert score_top1(model, test, batch_size=7) == report["final_top1"]
    assert name in zoo.list_models(pretrained=True)


def test_searched_cli_reads_the_result(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = json.loads((finished / "report.json").read_text())
    code = mzoo(["--searched", str(finished), "info", report["name"]]) if not zoo.is_model(report["name"]) \
        else mzoo(["info", report["name"]])
    assert code == 0 and str((finished / "weights.pth").resolve()) in capsys.readouterr().out


def test_rerun_resumes_exactly_and_other_settings_are_refused(finished: Path, folder: Path, spec_file: Path,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from search.engine import Trainer

    out = tmp_path / "run"
    save = Trainer.save_checkpoint

    def save_then_stop(self: Trainer, path: os.PathLike[str]) -> None:
        save(self, path)
        raise KeyboardInterrupt  # interrupted right after the first epoch's checkpoint

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_stop)
    assert _train(out, folder, spec_file, "--name", "tiny_trained_run") == 130
    assert (out / "train.ckpt").is_file() and not (out / "weights.pth").exists()
    run = json.loads((out / "run.json").read_text())  # the one run record every long command keeps
    assert run["command"] == "train" and run["settings"]["train.lr"] == 0.1 and not (out / "train.json").exists()
    # A run started before run.json kept its settings in train.json: it is adopted and follows the same rule.
    (out / "train.json").write_text(json.dumps({"settings": run["settings"]}))
    (out / "run.json").unlink()
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    capsys.readouterr()
    assert _train(out, folder, spec_file, "--name", "tiny_trained_run", "--lr", "0.05", "--seed", "1") == 2
    err = capsys.readouterr().err
    assert "train.lr 0.1 -> 0.05" in err and "train.seed 0 -> 1" in err and err.count("\n") == 1
    assert json.loads((out / "run.json").read_text()) == run and not (out / "train.json").exists()
    steps: list[int] = []
    step = Trainer._train_step

    def counted(self: Trainer, *args: torch.Tensor) -> dict[str, float]:
        steps.append(self.step)
        return step(self, *args)

    monkeypatch.setattr(Trainer, "_train_step", counted)
    assert _train(out, folder, spec_file, "--name", "tiny_trained_run") == 0
    assert steps == [3, 4, 5]  # only the second epoch ran again
    ours = torch.load(out / "weights.pth", weights_only=True)
    reference = torch.load(finished / "weights.pth", weights_only=True)
    assert list(ours) == list(reference) and all(torch.equal(ours[k], reference[k]) for k in ours)
    history = json.loads((out / "report.json").read_text())["history"]
    assert history == json.loads((finished / "report.json").read_text())["history"]


# --- registry and shipped weights ---------------------------------------------------------------------------


def test_list_models_pretrained_lists_exactly_the_models_with_weights(finished: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns("train.*"))
    report = json.loads((copy / "report.json").read_text())
    (copy / "report.json").write_text(json.dumps({**report, "name": f"tiny_copy_{os.getpid()}_{tmp_path.name[-6:]}"
                                                  .lower().replace("-", "_")}))
    name = register_searched(copy)
    assert name in zoo.list_models(pretrained=True)
    (copy / "weights.pth").unlink()
    assert name not in zoo.list_models(pretrained=True) and name in zoo.list_models()
    with_weights = set(zoo.list_models(pretrained=True))
    for n in zoo.list_models():
        cfg = zoo.get_pretrained_cfg(n)
        present = bool(cfg.url) or any(p.is_file() for p in weight_candidates(cfg))  # own file or an installed one
        assert (n in with_weights) == present, n
    assert "hgcnet_1x" not in with_weights
    assert zoo.list_models("hgcnet_*", pretrained=True) == []


SHIPPED = tuple(f"nbmacro_{arch}" for arch in sorted(TRAINED_SHA256))  # every run shipped with its sha256


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_and_are_pinned(name: str) -> None:
    cfg = zoo.get_pretrained_cfg(name)
    if cfg.file is None:
        pytest.skip(f"{name}: weights not shipped yet")
    assert Path(cfg.file).is_file() and cfg.sha256 == sha256_of(Path(cfg.file))
    assert name in zoo.list_models(pretrained=True)
    model = zoo.create_model(name, pretrained=True).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    report = json.loads(Path(cfg.file).with_suffix(".json").read_text())
    assert report["sha256"] == cfg.sha256 and report["model"] == name


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_score_their_recorded_test_top1(name: str) -> None:
    """The full CIFAR-10 test set; within 0.05 points (5 images) so another CPU's rounding cannot fail it."""
    cfg = zoo.get_pretrained_cfg(name)
    if cfg.file is None:
        pytest.skip(f"{name}: weights not shipped yet")
    report = json.loads(Path(cfg.file).with_suffix(".json").read_text())
    from search.data import cifar10

    model = zoo.create_model(name, pretrained=True).eval()
    assert abs(score_top1(model, cifar10("test")) - report["final_top1"]) <= 0.05


def test_a_zoo_model_takes_the_datas_classes_and_a_refused_batch_leaves_no_settings(
        folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    common = ["train", "nbmacro_00000000", "--data", str(folder), "-o", str(out), "--cache", str(tmp_path / "c"),
              "--epochs", "1", "--input-size", "8", "--no-progress"]
    assert mzoo([*common, "--batch-size", "64"]) == 2
    assert "too few for one batch of 64" in capsys.readouterr().err
    assert not (out / "train.ckpt").exists()  # nothing started: the same -o takes a smaller batch
    assert mzoo([*common, "--batch-size", "8"]) == 0
    spec = zoo.spec_from_json((out / "spec.json").read_text())
    name = json.loads((out / "report.json").read_text())["name"]
    assert spec.num_classes == 3 and name.startswith("nbmacro_00000000_train_data")


def test_pytorch_init_gives_pytorchs_layer_defaults_and_is_a_recorded_setting(
        folder: Path, spec_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NAS-Bench-Macro's script sets no initialisation: --init pytorch starts from PyTorch's layer defaults
    (Kaiming-uniform, a = √5: every conv weight within 1/√fan_in), not the zoo's fan-out normal init."""
    from search import train as train_module

    convs: list[tuple[str, tuple[int, ...], int]] = []  # (name, weight shape, groups) of the last model
    start: list[dict[str, torch.Tensor]] = []  # the weights the trainer was given, before any step
    original = train_module.Trainer.__init__

    def capture(self: object, model: torch.nn.Module, *args: object, **kwargs: object) -> None:
        start.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        convs[:] = [(n, tuple(m.weight.shape), m.groups) for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Conv2d)]
        original(self, model, *args, **kwargs)

    monkeypatch.setattr(train_module.Trainer, "__init__", capture)
    for init in ("zoo", "pytorch"):
        out = tmp_path / init
        assert _train(out, folder, spec_file, "--epochs", "1", *(["--init", init] if init == "pytorch" else [])) == 0
        run = json.loads((out / "run.json").read_text())
        assert run["settings"].get("init") == (None if init == "zoo" else "pytorch")  # the default is left out
    zoo_init, pytorch_init = start
    assert convs
    for name, shape, _ in convs:
        fan_in = shape[1] * shape[2] * shape[3]
        assert pytorch_init[f"{name}.weight"].abs().max() <= 1 / fan_in ** 0.5 + 1e-7
        assert not torch.equal(pytorch_init[f"{name}.weight"], zoo_init[f"{name}.weight"])
    assert any(zoo_init[f"{n}.weight"].abs().max() > 1 / (s[1] * s[2] * s[3]) ** 0.5 for n, s, _ in convs)
    with pytest.raises(SystemExit):
        mzoo(["train", "--spec", str(spec_file), "--data", str(folder), "-o", str(tmp_path / "x"), "--init", "he"])
    with pytest.raises(InputError, match="--init"):
        TrainJob(spec_file=str(spec_file), init="he")
