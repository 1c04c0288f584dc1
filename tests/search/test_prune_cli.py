"""``mzoo prune dagger`` through its add_commands with a real argparse parser: pretrain → gates → prune → fine-tune on a
tiny image folder, the result exported by ``mzoo export --spec`` through ONNX, reuse of the pretrained weights, and
one-line errors for bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from export.pipeline import resolve_spec
from search.prune_cli import add_commands
from tests.search.ddp_worker import make_image_folder
from mzoo.cli import main as mzoo
from zoo.mobilenetv2 import FULL_WIDTH, mobilenetv2_width_spec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mzoo")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(*argv: str) -> int:
    args = _parser().parse_args(["prune", "dagger", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("prune_cli"), classes=3, per_class=5, size=8, split="train")


TINY = ("--subset", "4", "--val-per-class", "1", "--batch-size", "4", "--epochs", "1", "--dagger-epochs", "1",
        "--pretrain-epochs", "1", "--no-progress")


def test_dagger_end_to_end_and_reuse_of_the_pretrained_weights(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    assert _run("--model", "mobilenetv2_cifar", "--macs", "25%", "--data", str(folder), *TINY, "-o", str(out)) == 0
    report = json.loads((out / "report.json").read_text())
    full = zoo.count(mobilenetv2_width_spec(FULL_WIDTH, "cifar", num_classes=3), 32).macs  # the data has 3 classes
    assert report["budget"]["full_macs"] == full
    assert 0.25 * full * 0.97 <= report["macs"] <= 0.25 * full
    assert report["method"] == "dagger" and report["budget"]["target_macs"] == int(0.25 * full)
    spec = zoo.spec_from_json((out / "spec.json").read_text())
    assert spec == mobilenetv2_width_spec(report["width_list"], "cifar", num_classes=3)
    assert zoo.count(spec, 32).macs == report["macs"]
    # What `mzoo export --spec DIR/spec.json --checkpoint DIR/weights.pth` builds: the spec with the weights, strictly.
    resolved = resolve_spec(out / "spec.json", out / "weights.pth")
    assert resolved.input_size == (3, 32, 32) and not resolved.random_init
    reference = zoo.build_model(spec).eval()
    reference.load_state_dict(torch.load(out / "weights.pth", weights_only=True), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(resolved.model(x), reference(x), rtol=0, atol=0)
    # The result is a zoo model under its default name, with the fine-tuned weights (registered in a fresh
    # interpreter: the registry is process-wide and other tests list it).
    assert report["name"] == "mobilenetv2_cifar_dagger_25"
    code = f"""
import torch, zoo
from zoo.searched import register_searched
name = register_searched({str(out)!r})
model = zoo.create_model(name, pretrained=True).eval()
reference = zoo.build_model(zoo.spec_from_json(open({str(out / "spec.json")!r}).read())).eval()
reference.load_state_dict(torch.load({str(out / "weights.pth")!r}, weights_only=True), strict=True)
x = torch.randn(2, 3, 32, 32)
with torch.no_grad():
    assert torch.equal(model(x), reference(x))
print(name)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["mobilenetv2_cifar_dagger_25"]
    # The pretrained weights are reusable: the L1 baseline from them, no pretraining this time.
    assert (out / "pretrained.pth").is_file()
    again = tmp_path / "l1"
    assert _run("--model", "mobilenetv2_cifar", "--macs", "25%", "--data", str(folder), "--scores", "l1",
                "--checkpoint", str(out / "pretrained.pth"), *TINY, "-o", str(again)) == 0
    assert not (again / "pretrained.pth").exists()
    assert json.loads((again / "report.json").read_text())["scores"] == "l1"
    assert json.loads((again / "report.json").read_text())["name"] == "mobilenetv2_cifar_l1_25"


@pytest.mark.slow
def test_result_exports_through_onnx(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    assert _run("--model", "mobilenetv2_cifar", "--macs", "10%", "--data", str(folder), "--scores", "uniform",
                *TINY, "-o", str(out)) == 0
    onnx_dir = tmp_path / "onnx"
    assert mzoo(["export", "--spec", str(out / "spec.json"), "--checkpoint", str(out / "weights.pth"),
                 "--format", "onnx", "-o", str(onnx_dir)]) == 0
    exported = json.loads((onnx_dir / "spec.onnx.json").read_text())
    assert max(exported["max_abs_diff"].values()) <= 1e-4


def test_wrong_checkpoint_is_refused(folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "resnet.pth"
    torch.save(zoo.build_model(zoo.get_arch_spec("hgcnet_0_5x_cifar")).state_dict(), bad)
    with pytest.raises(ValueError, match="does not fit mobilenetv2_cifar"):
        _run("--model", "mobilenetv2_cifar", "--macs", "50%", "--data", str(folder), "--checkpoint", str(bad),
             *TINY, "-o", str(tmp_path / "x"))


@pytest.mark.parametrize("argv, message", [
    (("--model", "vgg16", "--macs", "50%"), "unknown --model 'vgg16'"),
    (("--model", "resnet50", "--macs", "150%"), "MACs target '150%'"),
    (("--model", "hgcnet_cifar", "--macs", "half"), "--macs must be a percentage"),
    (("--model", "mobilenetv2_cifar", "--macs", "50%", "--checkpoint", "/nonexistent.pth"), "does not exist"),
    (("--model", "mobilenetv2_cifar", "--macs", "50%", "--epochs", "0"), "--epochs must be >= 1"),
    (("--model", "mobilenetv2_cifar", "--macs", "50%", "--name", "My-Net"), "--name 'My-Net' must be lowercase"),
])
def test_bad_input_is_a_value_error(folder: Path, tmp_path: Path, argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _run(*argv, "--data", str(folder), "--subset", "4", "--val-per-class", "1", "--no-progress",
             "-o", str(tmp_path / "x"))
