"""The mzoo command line: outputs a user reads, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import zoo
from zoo.deploy import fusable_blocks
from mzoo.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_model_with_counts(capsys) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in zoo.list_models():
        assert name in out
    info = zoo.model_info("hgcnet_1x")
    assert zoo.format_count(info["macs"]) in out


def test_list_pattern_and_no_match(capsys) -> None:
    code, out, _ = run(capsys, "list", "*_cifar")
    assert code == 0 and "hgcnet_1x_cifar" in out and "hgcnet_1x " not in out
    code, _, err = run(capsys, "list", "resnet*")
    assert code == 2 and "no model matches" in err


def test_info_json_matches_model_info(capsys) -> None:
    code, out, _ = run(capsys, "info", "hgcnet_0_5x", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["macs"] == zoo.model_info("hgcnet_0_5x")["macs"]
    assert zoo.ArchSpec.from_dict(data["arch_spec"]) == zoo.get_arch_spec("hgcnet_0_5x")


def test_info_ops_lists_walker_ops(capsys) -> None:
    code, out, _ = run(capsys, "info", "hgcnet_0_5x_cifar", "--ops")
    assert code == 0
    for op in zoo.iter_ops(zoo.get_arch_spec("hgcnet_0_5x_cifar"), 32):
        assert op.key in out


@pytest.mark.parametrize("argv, message", [
    (("info", "hgcnet_1"), "did you mean hgcnet_1x"),
    (("export", "nonet", "-o", "x"), "unknown model 'nonet'"),
    (("bench", "/nonexistent/model.onnx"), "does not exist"),
    (("export", "hgcnet_0_5x_cifar", "-o", "{tmp}", "--format", "tflite"), "unknown export format 'tflite'"),
    (("export", "hgcnet_0_5x_cifar", "-o", "{tmp}", "--opset", "11"), "opset"),
    (("export", "hgcnet_0_5x_cifar", "-o", "{tmp}", "--checkpoint", "/nonexistent.pth"), "not found"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path: Path, argv: tuple[str, ...], message: str) -> None:
    code, _, err = run(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_checkpoint_for_a_timm_model_is_one_line(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    code, _, err = run(capsys, "export", "mobilenetv2_050", "-o", str(tmp_path), "--checkpoint", str(bad))
    assert code == 2 and err.startswith("mzoo: error:") and err.count("\n") == 1
    assert not list(tmp_path.glob("*.onnx*"))


def test_corrupt_onnx_is_one_line(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage-not-a-model" * 10)
    code, _, err = run(capsys, "bench", str(bad))
    assert code == 2 and "bad.onnx" in err and err.count("\n") == 1


def test_export_then_bench(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "export", "hgcnet_0_5x_cifar", "--format", "onnx", "-o", str(tmp_path))
    assert code == 0 and "verified" in out
    path = tmp_path / "hgcnet_0_5x_cifar.onnx"
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["model_name"] == "hgcnet_0_5x_cifar"
    assert zoo.ArchSpec.from_json(meta["arch_spec"]) == zoo.get_arch_spec("hgcnet_0_5x_cifar")
    report = json.loads((tmp_path / "hgcnet_0_5x_cifar.onnx.json").read_text())
    assert max(report["max_abs_diff"].values()) <= 1e-4
    code, out, _ = run(capsys, "bench", str(path), "--runs", "5", "--json")
    assert code == 0 and json.loads(out)["input_shape"] == [1, 3, 32, 32]


def test_console_script_errors_without_traceback() -> None:
    proc = subprocess.run([str(Path(sys.executable).with_name("mzoo")), "info", "no_such_model"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mzoo: error: unknown model") and "Traceback" not in proc.stderr


def test_demo_runs_end_to_end(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "demo", "--models", "hgcnet_0_5x_cifar,mobilenetv2_050", "-o", str(tmp_path))
    assert code == 0
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"hgcnet_0_5x_cifar", "mobilenetv2_050"} <= set(rows)
    assert zoo.format_count(zoo.model_info("hgcnet_0_5x_cifar")["macs"]) in rows["hgcnet_0_5x_cifar"]
    assert "| timm |" in rows["mobilenetv2_050"]
    assert (tmp_path / "hgcnet_0_5x_cifar.onnx").is_file() and (tmp_path / "mobilenetv2_050.onnx").is_file()
    # the flagship is also shown deployed (default --deploy auto; all where this machine's tables cannot plan it)
    deployed = [label for label in rows if label.startswith("hgcnet_0_5x_cifar deployed (")]
    assert len(deployed) == 1, rows.keys()
    mode, fused, total = re.fullmatch(r"hgcnet_0_5x_cifar deployed \((auto|all): (\d+)/(\d+) fused\)",
                                      deployed[0]).groups()
    spec = zoo.get_arch_spec("hgcnet_0_5x_cifar")
    assert int(total) == len(fusable_blocks(spec)) and 1 <= int(fused) <= int(total)
    if mode == "all":
        assert int(fused) == int(total) and "no auto plan (" in out
    cells = [c.strip() for c in rows[deployed[0]].split("|")[1:-1]]
    assert cells[3] != zoo.format_count(zoo.model_info("hgcnet_0_5x_cifar")["macs"])  # fused MACs differ
    assert float(cells[4]) <= 1e-4  # ONNX max abs diff against the training-time network
    assert (tmp_path / "deployed" / "hgcnet_0_5x_cifar.onnx").is_file()
    assert f"{deployed[0]} vs mobilenetv2_050:" in out


def test_demo_deploy_none_shows_only_the_trained_network(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "demo", "--models", "hgcnet_0_5x_cifar", "--deploy", "none", "-o", str(tmp_path))
    assert code == 0 and "deployed (" not in out and not (tmp_path / "deployed").exists()


@pytest.mark.parametrize(("flag", "value", "named"), [("--deploy", "fused", "--deploy"),
                                                      ("--models", "hgcnet_1x,no_such_net", "no_such_net")])
def test_demo_refuses_bad_flags_before_any_work(capsys, tmp_path: Path, flag: str, value: str, named: str) -> None:
    code, _, err = run(capsys, "demo", flag, value, "-o", str(tmp_path / "out"))
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
