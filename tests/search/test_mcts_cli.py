"""``mzoo search mcts`` through its add_commands with a real argparse parser: training + search on a tiny image
folder (outputs rebuild as zoo models), the oracle mode, windows, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from search.mcts_cli import add_commands, parse_count
from search.nasbench import default_path
from tests.search.cli_runner import search_runner
from tests.search.ddp_worker import make_image_folder


_search = search_runner(add_commands)


def _run(*argv: str) -> int:
    return _search("mcts", *argv)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("mcts_cli"), classes=3, per_class=8, size=8, split="train")


TINY = ("--epochs", "2", "--batch-size", "4", "--subset", "6", "--val-per-class", "2", "--count", "2", "--input-size", "16",
        "--bn-batches", "1", "--no-progress")


def test_train_and_search_writes_a_rebuildable_result(folder: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    # Latency from the shipped nbmacro table, named: without --device a search uses this machine's own tables.
    windows = ("--macs-max", "80M", "--latency-max", "5.0", "--device", "amd-epyc-f23m1-ort-t1")
    assert _run("--space", "nbmacro", "--data", str(folder), *windows, *TINY, "-o", str(out)) == 0
    report = json.loads((out / "report.json").read_text())
    search = json.loads((out / "search.json").read_text())
    assert report["method"] == "mct-nas" and report["schedule"] == {"steps": 8, "warmup_iters": 4, "mct_start_iter": 5}
    assert report["train_images"] == 18 and report["val_images"] == 6
    assert 1 <= len(search["candidates"]) <= 2
    latency = "latency@amd-epyc-f23m1-ort-t1"
    assert all(c["macs"] <= 80e6 and c["window_costs"][latency] <= 5.0 for c in search["candidates"])
    best = search["candidates"][0]
    assert report["latency_ms"] == best["window_costs"][latency] and report["device"] == "amd-epyc-f23m1-ort-t1"
    assert report["arch"] == best["arch"] and report["score"] == best["top1"]
    spec = zoo.spec_from_json((out / "spec.json").read_text())
    assert spec == zoo.nbmacro.nbmacro_spec("".join(map(str, best["arch"]))).replace(num_classes=3)
    model = zoo.build_model(spec)
    model.load_state_dict(torch.load(out / "weights.pth", weights_only=True), strict=True)
    assert "best" in capsys.readouterr().out
    assert report["name"] == "nbmacro_mctnas"
    # Registered in a fresh interpreter: the registry is process-wide and other tests list it.
    code = (f"import zoo\nfrom zoo.searched import register_searched\nname = register_searched({str(out)!r})\n"
            "print(name, zoo.create_model(name, pretrained=True).pretrained_cfg['paper_ids'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["nbmacro_mctnas", "arXiv:2103.11922"]
    # --resume on a finished run: no further training, the same tree, the same result.
    assert _run("--space", "nbmacro", "--data", str(folder), *windows, *TINY, "--resume", "-o", str(out)) == 0
    assert json.loads((out / "search.json").read_text()) == search


@pytest.mark.skipif(not default_path().is_file(), reason=f"NAS-Bench-Macro file not found at {default_path()}")
def test_oracle_mode_respects_the_windows(tmp_path: Path) -> None:
    out = tmp_path / "oracle"
    assert _run("--oracle", "--budget", "30", "--macs-max", "50M", "--no-progress", "-o", str(out)) == 0
    report = json.loads((out / "report.json").read_text())
    trace = json.loads((out / "trace.json").read_text())
    assert len(trace["queries"]) == 30 and report["queries"] == 30
    assert report["macs"] <= 50e6
    assert report["arch"] == max(trace["queries"], key=lambda q: q[1])[0]
    assert [w["metric"] for w in report["windows"]] == ["macs"]
    assert zoo.spec_from_json((out / "spec.json").read_text()) == zoo.nbmacro.nbmacro_spec(report["arch"])


@pytest.mark.parametrize("argv, message", [
    (("--macs-max", "lots"), "--macs-max must be a count"),
    (("--oracle", "--space", "mctnas"), "only --space nbmacro"),
    (("--device", "amd-epyc-f23m1-ort-t1x"), "give a latency bound"),
    (("--latency-max", "-1"), "--latency-max must be a positive"),
    (("--epochs", "0"), "--epochs must be >= 1"),
    (("--data", "/nonexistent/images"), "no such directory"),
    (("--latency-max", "5", "--device", "no-such-device"), "no-such-device"),
    (("--macs-min", "90M", "--macs-max", "10M"), "window is empty"),
])
def test_bad_input_is_a_value_error(argv: tuple[str, ...], message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        _run(*argv, "--no-progress", "-o", str(tmp_path / "x"))


def test_parse_count() -> None:
    assert parse_count("300M", "x") == 3e8 and parse_count("1.5G", "x") == 1.5e9 and parse_count("12", "x") == 12
    with pytest.raises(ValueError, match="--macs-min"):
        parse_count("3 apples", "--macs-min")
