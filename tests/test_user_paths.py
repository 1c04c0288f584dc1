"""What a user runs does what it says: weights that belong to a model reach its artefacts, and bad input is refused
before any work, leaving nothing behind.

Search results are registered in fresh interpreters (the `mzoo` a user runs), since registering changes the
process's registry, which other tests enumerate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import zoo
from tests.zoo.test_searched import make_result
from mzoo.cli import main
from zoo.pretrained import sha256_of

ROOT = Path(__file__).resolve().parents[1]


def mzoo(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mzoo", *argv], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


def test_a_searched_model_exports_with_its_own_weights(tmp_path: Path) -> None:
    result = make_result(tmp_path / "found", name="nbmacro_exported_1", seed=11)
    done = mzoo("--searched", str(result), "export", "nbmacro_exported_1", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    onnx_path = tmp_path / "out" / "nbmacro_exported_1.onnx"
    report = json.loads(onnx_path.with_name(onnx_path.name + ".json").read_text())
    weights = result / "weights.pth"
    assert report["weights"] == {"file": str(weights.resolve()), "sha256": sha256_of(weights)}
    # The artefact computes the searched network with those weights, not a random init of its spec.
    reference = zoo.build_model(zoo.spec_from_json((result / "spec.json").read_text())).eval()
    reference.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = ort.InferenceSession(str(onnx_path)).run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        expected = reference(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_a_corrupt_searched_weights_file_is_refused_by_export(tmp_path: Path) -> None:
    result = make_result(tmp_path / "found", name="nbmacro_exported_2")
    (result / "weights.pth").write_bytes(b"not a checkpoint")
    done = mzoo("--searched", str(result), "export", "nbmacro_exported_2", "-o", str(tmp_path / "out"))
    assert done.returncode == 2 and "weights.pth" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_two_searched_directories_with_one_name_are_refused(tmp_path: Path) -> None:
    make_result(tmp_path / "a", name="nbmacro_twice")
    make_result(tmp_path / "b", name="nbmacro_twice", seed=4)
    done = mzoo("--searched", str(tmp_path / "a"), "--searched", str(tmp_path / "b"), "info", "nbmacro_twice")
    assert done.returncode == 2 and "nbmacro_twice" in done.stderr and "already registered" in done.stderr, done.stderr
    assert str(tmp_path / "a") in done.stderr and str(tmp_path / "b") in done.stderr
    # The same directory twice (flag and $MZOO_SEARCHED, say) is one registration, not a clash.
    again = mzoo("--searched", str(tmp_path / "a"), "--searched", str(tmp_path / "a"), "info", "nbmacro_twice")
    assert again.returncode == 0, again.stderr


def test_export_all_refuses_a_checkpoint_it_would_ignore(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    torch.save(zoo.create_model("nbmacro_00000000").state_dict(), weights)
    code = main(["export", "--all", "nbmacro_*", "--checkpoint", str(weights), "-o", str(tmp_path / "out")])
    assert code == 2 and "--checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_calibration_set_is_refused_before_any_export(capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    code = main(["export", "nbmacro_00000000", "--format", "onnx,onnx-int8", "--calibration",
                 str(tmp_path / "missing.zip"), "-o", str(out)])
    assert code == 2 and "--calibration" in capsys.readouterr().err
    assert not out.exists()


def test_calibration_images_past_the_limits_are_refused_before_any_export(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image limits are checked on the files a calibration would read, from their declared sizes, before the
    fp32 export starts (a zip bomb costs a second, not the export first)."""
    import zipfile

    from PIL import Image

    calibration = tmp_path / "calib.zip"
    noise = np.random.default_rng(0)
    with zipfile.ZipFile(calibration, "w") as archive:
        for label in ("cat", "dog"):
            for i in range(70):
                path = tmp_path / "img.png"
                Image.fromarray(noise.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
                archive.write(path, f"{label}/{i}.png")
    # Above every shared CIFAR-10 JPEG (verification reads those), below every 64x64 noise PNG (~12 KB).
    monkeypatch.setenv("MZOO_MAX_IMAGE_BYTES", "8000")
    out = tmp_path / "new" / "out"
    code = main(["export", "nbmacro_00000000", "--format", "onnx,onnx-int8", "--calibration", str(calibration),
                 "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--calibration" in err and "8,000 per image file" in err, err
    assert not out.exists()


def test_a_failed_export_leaves_no_empty_output_directory(tmp_path: Path) -> None:
    from export.errors import ExportError
    from export.formats import export_formats
    from export.pipeline import ResolvedModel

    class Pair(torch.nn.Module):  # two outputs: every exporter refuses it
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    resolved = ResolvedModel("pair", "spec", Pair(), (3, 8, 8), (0.5,) * 3, (0.5,) * 3, None)
    out = tmp_path / "fresh"
    with pytest.raises(ExportError):
        export_formats(resolved, out, "onnx")
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(ExportError):
        export_formats(resolved, kept, "onnx")
    assert kept.is_dir()  # a directory the user made is theirs to keep


# ------------------------------------------------------------------ latency tables: never another machine's silently

SHIPPED = ROOT / "latency_tables" / "amd-epyc-f23m1-ort-t1"


def _tables_root(tmp_path: Path, device: str, *, cpu_model: str | None = None) -> Path:
    """A tables root holding the shipped nbmacro table under ``device`` (optionally claiming another CPU)."""
    data = json.loads((SHIPPED / "nbmacro.json").read_text())
    data["device"] = device
    if cpu_model is not None:
        data["environment"] = dict(data["environment"], cpu_model=cpu_model)
    root = tmp_path / "tables"
    (root / device).mkdir(parents=True)
    (root / device / "nbmacro.json").write_text(json.dumps(data))
    return root


def test_a_latency_window_without_device_uses_this_machines_tables_only(capsys: pytest.CaptureFixture[str],
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from latency_tables.choose import this_machine

    monkeypatch.setenv("MZOO_LATENCY_TABLES", str(_tables_root(tmp_path / "other", "other-cpu-ort-t1")))
    argv = ["search", "mcts", "--oracle", "--budget", "5", "--latency-max", "50", "--no-progress"]
    assert main([*argv, "-o", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert f"this machine ({this_machine()}) has no latency table for space 'nbmacro'" in err
    assert "mzoo lut build --space nbmacro" in err and " min " in err and "other-cpu-ort-t1" in err
    assert not (tmp_path / "refused" / "trace.json").exists()
    # With a table under this machine's own name, the same command runs on it.
    monkeypatch.setenv("MZOO_LATENCY_TABLES", str(_tables_root(tmp_path / "mine", this_machine())))
    assert main([*argv, "-o", str(tmp_path / "ran")]) == 0
    report = json.loads((tmp_path / "ran" / "report.json").read_text())
    assert [w["device"] for w in report["windows"] if w["metric"] == "latency"] == [this_machine()]


def test_predict_without_device_refuses_when_this_machine_has_no_tables(capsys: pytest.CaptureFixture[str],
                                                                        tmp_path: Path) -> None:
    root = _tables_root(tmp_path, "other-cpu-ort-t1")
    assert main(["predict", "nbmacro_00000000", "--root", str(root)]) == 2
    assert "has no latency tables" in capsys.readouterr().err
    assert main(["predict", "nbmacro_00000000", "--root", str(root), "--device", "other-cpu-ort-t1"]) == 0


def test_a_named_device_measured_on_other_hardware_is_used_with_a_warning(capsys: pytest.CaptureFixture[str],
                                                                          tmp_path: Path) -> None:
    root = _tables_root(tmp_path, "some-cpu-ort-t1", cpu_model="A CPU this machine is not 9000")
    assert main(["predict", "nbmacro_00000000", "--root", str(root), "--device", "some-cpu-ort-t1"]) == 0
    out = capsys.readouterr()
    assert "on some-cpu-ort-t1:" in out.out
    assert "mzoo: warning:" in out.err and "other hardware than this machine" in out.err


@pytest.mark.parametrize("side", ["0", "-3", "100000"])
def test_predict_bounds_the_input_size(capsys: pytest.CaptureFixture[str], side: str) -> None:
    assert main(["predict", "nbmacro_00000000", "--device", "amd-epyc-f23m1-ort-t1", "--input-size", side]) == 2
    assert "--input-size must be an image side between 1 and 4096" in capsys.readouterr().err


def test_a_width_search_checks_its_tables_and_budget_before_training(capsys: pytest.CaptureFixture[str],
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from search.engine import Trainer
    from tests.search.ddp_worker import make_image_folder

    def no_training(self: object) -> None:
        raise AssertionError("the supernet trained before the budget was checked")

    monkeypatch.setattr(Trainer, "fit", no_training)
    images = tmp_path / "images"
    make_image_folder(images, classes=2, per_class=6, size=32, split="train")
    make_image_folder(images, classes=2, per_class=2, size=32, split="val", seed=1)
    common = ["search", "width", "--model", "mobilenetv2_cifar", "--data", str(images), "--no-progress"]
    # The shipped mobilenetv2_width table holds the ImageNet layout's keys, not the CIFAR layout's.
    assert main([*common, "--latency", "1ms", "--device", "amd-epyc-f23m1-ort-t1", "-o", str(tmp_path / "a")]) == 2
    assert "lacks op keys" in capsys.readouterr().err
    assert main([*common, "--macs", "1000", "-o", str(tmp_path / "b")]) == 2
    assert "no network of the mobilenetv2_cifar width space meets the budget" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ guards and messages


@pytest.mark.parametrize("argv, message", [
    (["--threads", "1000"], "--threads must be between 1 and this machine's"),
    (["--batch", "100000"], "--batch must be between 1 and 256"),
    (["--batch", "0"], "--batch must be between 1 and 256"),
])
def test_bench_bounds_threads_and_batch_before_measuring(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          argv: list[str], message: str) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"unused: the bounds are checked before the file is read")
    assert main(["bench", str(path), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-5", "nan", "100000"])
def test_agent_refuses_upload_limits_it_cannot_honour(capsys: pytest.CaptureFixture[str], value: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MZOO_AGENT_TOKEN", "t" * 16)
    assert main(["agent", "--port", "0", "--max-upload-mb", value]) == 2
    assert "--max-upload-mb must be more than 0" in capsys.readouterr().err


def test_agent_listens_on_this_machine_only_by_default() -> None:
    import argparse

    from latency_tables.agent_config import AgentConfig, add_agent_arguments, agent_config_from_args

    parser = argparse.ArgumentParser()
    add_agent_arguments(parser)
    assert agent_config_from_args(parser.parse_args(["--token", "secret"])).host == "127.0.0.1"
    assert AgentConfig(token="secret").host == "127.0.0.1"
    assert agent_config_from_args(parser.parse_args(["--token", "s", "--host", "0.0.0.0"])).host == "0.0.0.0"


def test_cli_errors_name_flags_not_keyword_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from mzoo.cli import CLI_ADVICE, cli_message

    sources = "".join(p.read_text() for pkg in ("zoo", "export", "latency_tables", "search")
                      for p in (ROOT / pkg).rglob("*.py") if p.name != "cli.py")
    stale = [phrase for phrase in CLI_ADVICE if phrase not in sources]
    assert not stale, f"CLI_ADVICE translates advice no library message gives any more: {stale}"
    for phrase in ("pass checkpoint_path=", "see zoo.list_models()", "pass interpolate=True", "restart=True"):
        assert phrase not in cli_message(f"x; {phrase} y")
    assert main(["info", "no_such_model_xyz"]) == 2
    err = capsys.readouterr().err
    assert "mzoo list" in err and "zoo.list_models" not in err


def test_a_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["export"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith("mzoo: error:") and "--output" in err and "mzoo export --help" in err


@pytest.mark.parametrize("content", [b"garbage, not a checkpoint", b"PK\x03\x04 truncated zip"])
def test_a_corrupt_weights_file_is_named_without_torchs_unsafe_advice(capsys: pytest.CaptureFixture[str],
                                                                      tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    for argv in (["export", "nbmacro_00000000", "--checkpoint", str(bad), "-o", str(tmp_path / "a")],
                 ["export", "mobilenetv2_050", "--checkpoint", str(bad), "-o", str(tmp_path / "b")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and "weights_only" not in err and err.count("\n") == 1, err


def test_lut_validate_checks_its_output_paths_before_measuring(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import latency_tables.cli as lut_cli

    def measured(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured before checking --plot")

    monkeypatch.setattr(lut_cli, "run_validation", measured)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder is needed")
    for flag in ("--plot", "--json"):
        assert main(["lut", "validate", "--space", "nbmacro", flag, str(blocker / "x.out")]) == 2
        assert flag in capsys.readouterr().err


# ------------------------------------------------------------------------------------- one rule for rerunning


def test_rerunning_a_search_resumes_and_other_settings_are_refused_by_name(capsys: pytest.CaptureFixture[str],
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["search", "mcts", "--oracle", "--budget", "5", "--macs-max", "50M", "--no-progress", "-o", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == "search mcts" and record["settings"]["budget"] == 5
    assert main(argv) == 0  # the same command: resumes (no --resume needed)
    capsys.readouterr()
    assert main([*argv[:4], "7", *argv[5:]]) == 2
    err = capsys.readouterr().err
    assert "other settings (budget 5 -> 7)" in err and err.count("\n") == 1
    assert json.loads((out / "run.json").read_text()) == record  # the refused run changed nothing


def test_a_width_search_rerun_with_other_flags_is_refused_before_training(capsys: pytest.CaptureFixture[str],
                                                                          tmp_path: Path) -> None:
    from search.rundir import claim

    out = tmp_path / "width"
    claim(out, "search width", {"model": "mobilenetv2", "width_multiplier": 0.25})
    (out / "supernet.ckpt").write_bytes(b"a started run")
    argv = ["search", "width", "--model", "mobilenetv2", "--macs", "40%", "--width-multiplier", "0.5",
            "--no-progress", "-o", str(out)]
    assert main(argv) == 2
    assert "width_multiplier 0.25 -> 0.5" in capsys.readouterr().err


def test_a_run_refused_before_its_first_checkpoint_does_not_hold_its_directory(tmp_path: Path) -> None:
    from search.rundir import RunDirectoryError, claim

    out = tmp_path / "run"
    assert claim(out, "search mcts", {"budget": 5}) is False  # e.g. then refused: no table for --device
    assert claim(out, "search mcts", {"budget": 7}) is False  # fixed flags: a new run, not "other settings"
    (out / "supernet.pth").write_bytes(b"checkpoint")
    assert claim(out, "search mcts", {"budget": 7}) is True
    with pytest.raises(RunDirectoryError, match="budget 7 -> 5"):
        claim(out, "search mcts", {"budget": 5})
    with pytest.raises(RunDirectoryError, match="`search mcts` run, not `prune dagger`"):
        claim(out, "prune dagger", {"budget": 7})


def test_a_users_checkpoint_is_not_held_to_the_shipped_files_hash(tmp_path: Path) -> None:
    # nbmacro_00000000 ships pinned weights; the pin describes that file, not a checkpoint the user passes.
    assert zoo.get_pretrained_cfg("nbmacro_00000000").sha256
    torch.manual_seed(5)
    mine = zoo.build_model(zoo.get_arch_spec("nbmacro_00000000"))
    path = tmp_path / "mine.pth"
    torch.save(mine.state_dict(), path)
    loaded = zoo.create_model("nbmacro_00000000", checkpoint_path=path)
    assert all(torch.equal(v, mine.state_dict()[k]) for k, v in loaded.state_dict().items())
    from export.pipeline import resolve_model

    assert resolve_model("nbmacro_00000000", checkpoint_path=path).weights == {
        "file": str(path.resolve()), "sha256": sha256_of(path)}
    # A sha256 the caller gives for that file still pins it.
    with pytest.raises(zoo.WeightsHashError):
        zoo.create_model("nbmacro_00000000", checkpoint_path=path,
                         pretrained_cfg_overlay={"file": str(path), "sha256": "0" * 64})


def test_sigterm_during_an_export_leaves_no_scratch_directory(tmp_path: Path) -> None:
    """SIGTERM unwinds the command like Ctrl-C: the export's scratch directory is removed, the exit status says so."""
    import signal
    import time

    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch_parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mzoo", "export", "nbmacro_00000000", "--format", "onnx,pte",
                             "-o", str(tmp_path / "out")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith("mzoo-export-") for p in scratch_parent.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the export ended before its scratch existed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "terminated by SIGTERM" in err
    assert not [p.name for p in scratch_parent.iterdir() if p.name.startswith("mzoo-export-")]
