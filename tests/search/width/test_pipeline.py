"""`mzoo search width` as a user runs it: a tiny search end to end on images the test makes, resumed, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from search.width.pipeline import WidthSearchConfig, make_space, parse_latency, parse_macs
from tests.search.ddp_worker import make_image_folder
from mzoo.cli import main

TINY = ["--width-multiplier", "0.25", "--per-class", "12", "--epochs", "1", "--batch-size", "8", "--population", "4",
        "--generations", "2", "--finetune-epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    make_image_folder(root, classes=4, per_class=14, size=32, split="train")
    make_image_folder(root, classes=4, per_class=4, size=32, split="val", seed=1)
    return root


def test_a_search_writes_a_network_within_budget_that_rebuilds_with_its_weights(images: Path, tmp_path: Path,
                                                                                capsys) -> None:
    out = tmp_path / "run"
    argv = ["search", "width", "--model", "mobilenetv2", "--macs", "40%", "--data", str(images),
            "--input-size", "32", "-o", str(out), "--json", *TINY]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    # The supernet is MobileNetV2 at a quarter of its widths: 40 % of that network's MACs.
    space = make_space(WidthSearchConfig(model="mobilenetv2", data=str(images), input_size=32, max_macs=1,
                                         width_multiplier=0.25), num_classes=4)
    full = zoo.count(*space.to_spec(tuple(max(c) for c in space.choices()))).macs
    assert full < 0.1 * zoo.count(zoo.get_arch_spec("bcnet_mobilenetv2_100").replace(num_classes=4), 32).macs
    assert report["config"]["max_macs"] == int(0.4 * full)
    spec = zoo.spec_from_json((out / "spec.json").read_text())
    assert report["macs"] == zoo.count(spec, 32).macs <= 0.4 * full
    assert report["name"] == f"mobilenetv2_0p25x_bcnet_{report['config']['max_macs'] / 1e6:.3g}m".replace(".", "p")
    assert spec.num_classes == 4 and report["classes"] == ["c0", "c1", "c2", "c3"]
    assert 0 <= report["inherited_top1"] <= 100 and 0 <= report["finetuned_top1"] <= 100
    model = zoo.build_model(spec)
    model.load_state_dict(torch.load(out / "weights.pth"))  # strict: the saved weights are the spec's
    # Rerunning the same command resumes from the checkpoints and the search state: nothing changes.
    spec_text, weights = (out / "spec.json").read_text(), torch.load(out / "weights.pth")
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert (out / "spec.json").read_text() == spec_text
    assert all(torch.equal(v, weights[k]) for k, v in torch.load(out / "weights.pth").items())
    assert ((again["arch"], again["score"], again["inherited_top1"], again["finetuned_top1"])
            == (report["arch"], report["score"], report["inherited_top1"], report["finetuned_top1"]))


@pytest.mark.parametrize("method", ["unilateral", "cafenet"])
def test_the_baseline_and_cafenet_run_through_the_same_command(images: Path, tmp_path: Path, capsys,
                                                               method: str) -> None:
    argv = ["search", "width", "--model", "mobilenetv2", "--method", method, "--macs", "50%", "--data",
            str(images), "--granularity", "coarse", "--finetune-epochs", "0", "-o", str(tmp_path), "--json", *TINY[:-3],
            "--no-progress"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == method and "finetuned_top1" not in report
    if method == "unilateral":
        assert report["placement"] == {"kind": "side", "side": "left", "scores": {"left": report["score"]}}


@pytest.mark.parametrize("argv, message", [
    (["--model", "mobilenetv2"], "give a budget"),
    (["--model", "mobilenetv2", "--latency", "5ms"], "--latency needs --device"),
    (["--model", "mobilenetv2", "--macs", "lots"], "--macs 'lots'"),
    (["--model", "mobilenetv2", "--macs", "150%"], "--macs '150%' is more than the full network"),
    (["--model", "mobilenetv2", "--macs", "10M", "--name", "My-Net"], "name 'My-Net' must be lowercase"),
    (["--model", "mobilenetv2", "--latency", "fast", "--device", "x"], "--latency 'fast'"),
    (["--model", "mobilenetv2", "--macs", "10M", "--data", "/no/such/dir"], "/no/such/dir"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["search", "width", *argv, "-o", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("mzoo: error:") and err.count("\n") == 1


def test_budgets_parse_and_name_the_result() -> None:
    assert parse_macs("200M") == 200_000_000 and parse_macs("1.5g") == 1_500_000_000
    assert parse_macs("50%", full_macs=300) == 150 and parse_latency("5ms") == 5.0 and parse_latency("0.002s") == 2.0
    with pytest.raises(ValueError, match="50%"):
        parse_macs("50%")  # a share needs the full network's MACs
    config = WidthSearchConfig(model="efficientnet_b0", max_macs=200_000_000, max_latency_ms=2.5, device="d")
    assert config.model_name() == "efficientnet_b0_bcnet_200m_2p5ms"
    with pytest.raises(ValueError, match="unknown width-search model 'vgg'"):
        WidthSearchConfig(model="vgg", max_macs=1)
