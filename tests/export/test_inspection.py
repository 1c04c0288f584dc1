"""`mzoo inspect` on ONNX and ExecuTorch files: ops by type, what the runtime or its delegate runs and leaves, the
blocks ops map back to, each op's measured share of latency (ONNX Runtime's profiler, ExecuTorch's ETDump), and the
one-line errors for a missing or foreign file. Timings are never asserted, only what the report promises about
them: shares that sum to one, and the op a model is built to spend its time in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from common.errors import InputError
from export.inspection import Inspection, block_of, inspect_artefact

SIZE = (3, 32, 32)


class Dominated(nn.Module):
    """A small stem, a cumulative sum (which XNNPACK cannot run) and one large conv that holds ~99 % of the MACs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.big = nn.Conv2d(32, 96, 5, padding=2)
        self.head = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cumsum(torch.relu(self.stem(x)), 1)
        return self.head(torch.relu(self.big(x)).mean((2, 3), keepdim=True).flatten(1))


def dominated() -> nn.Module:
    torch.manual_seed(0)
    return Dominated().eval()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.onnx import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "d.onnx"
    export_onnx(dominated(), path, SIZE)
    return path


@pytest.fixture(scope="module")
def pte_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.executorch import export_pte

    path = tmp_path_factory.mktemp("pte") / "d.pte"
    report = export_pte(dominated(), path, SIZE)
    path.with_name(path.name + ".json").write_text(json.dumps(report.to_dict()))  # as `mzoo export` writes it
    return path


def test_block_of_cuts_a_module_path_after_its_first_indices() -> None:
    assert block_of("blocks.0.1.conv_pw") == "blocks.0.1"
    assert block_of("features.3.conv.0") == "features.3"
    assert block_of("stem.conv") == "stem"
    assert block_of("") == "?"


def test_onnx_inspection_names_the_ops_their_blocks_and_what_ort_rewrote(onnx_file: Path) -> None:
    report = inspect_artefact(onnx_file)
    assert report.format == "onnx" and report.profile is None
    assert report.ops["CumSum"] == 1 and report.ops["Conv"] == 2 and report.total_ops == sum(report.ops.values())
    assert {"stem", "big", "head"} <= set(report.ops_by_block)
    # The conv reads big.weight; the Relu, ReduceMean and Reshape after it read no weights and inherit its module.
    assert report.ops_by_block["big"] == 4 and report.layout_ops == {"Reshape": 1}
    assert report.providers == {"CPUExecutionProvider": sum(report.runtime_ops.values())}
    assert report.runtime_changes.get("Relu", 0) < 0  # ORT fuses each Relu into the conv before it
    text = report.to_text()
    assert "CumSum x1" in text and "CPUExecutionProvider" in text and "big x4" in text


def test_ort_profile_shares_sum_to_one_and_name_the_conv_that_dominates(onnx_file: Path) -> None:
    profile = inspect_artefact(onnx_file, profile_runs=10).profile
    assert profile is not None and profile.runs == 10 and profile.threads == 1
    assert sum(op.share for op in profile.ops) == pytest.approx(1.0)
    assert profile.ops == tuple(sorted(profile.ops, key=lambda op: -op.share))
    top = profile.ops[0]
    assert top.op_type == "Conv" and top.block == "big" and top.where == "CPUExecutionProvider"
    assert profile.share_by("block")["big"] > 0.5
    assert any(op.op_type == "CumSum" for op in profile.ops)
    assert 0 < profile.op_ms <= profile.run_ms


def test_pte_inspection_names_the_op_left_to_portable_kernels(pte_file: Path) -> None:
    report = inspect_artefact(pte_file)
    assert report.format == "pte" and report.runtime == "executorch-xnnpack"
    assert report.not_delegated == {"aten::cumsum.out": 1}
    assert report.partitions == 2 and report.ops["XNNConv2d"] == 2 and report.ops["XNNFullyConnected"] == 1
    assert report.delegated_ops == report.total_ops - sum(report.not_delegated.values())
    assert "aten::cumsum.out @ between XNNPACK partitions 1 and 2" in report.not_delegated_at
    assert report.layout_ops.get("XNNStaticTranspose", 0) >= 1  # NCHW <-> NHWC around the delegate
    text = report.to_text()
    assert "in 2 partitions" in text and "at export (edge aten ops, d.pte.json)" in text
    assert "aten.cumsum.default x1" in text  # the export-time breakdown, read from the report beside the file


def test_etdump_profile_times_the_portable_op_and_the_conv_that_dominates(pte_file: Path) -> None:
    report = inspect_artefact(pte_file, profile_runs=10)
    profile = report.profile
    assert profile is not None, report.notes
    assert sum(op.share for op in profile.ops) == pytest.approx(1.0)
    portable = [op for op in profile.ops if op.where == "portable"]
    assert [op.op_type for op in portable] == ["aten::cumsum.out"]
    top = profile.ops[0]
    assert top.op_type.startswith("Convolution") and top.where == "XNNPACK partition 2"
    assert "not delegated (" in report.to_text()


def test_mzoo_inspect_profile_json(onnx_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mzoo.cli import main

    assert main(["inspect", "--profile", "--runs", "3", "--json", str(onnx_file)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "onnx" and data["profile"]["runs"] == 3
    assert sum(data["profile"]["by_type"].values()) == pytest.approx(1.0)
    assert main(["inspect", "--profile", "--runs", "0", str(onnx_file)]) == 2
    assert "--runs" in capsys.readouterr().err


@pytest.mark.parametrize("name, content", [("gone.onnx", None), ("gone.pte", None), ("junk.onnx", b"not onnx"),
                                           ("junk.pte", b"\x00" * 64), ("model.txt", b"text")])
def test_a_missing_or_foreign_file_is_one_line_naming_it(tmp_path: Path, name: str, content: bytes | None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from mzoo.cli import main

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=f"cannot inspect '{path}'"):
        inspect_artefact(path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and err.count("\n") == 1


def test_litert_profile_says_why_it_is_not_measured(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch", reason="the android extra is not installed")
    from export.litert import export_litert

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    export_litert(model, tmp_path / "t.tflite", (3, 8, 8))
    report: Inspection = inspect_artefact(tmp_path / "t.tflite", profile_runs=3)
    assert report.profile is None
    assert any("per-op latency is not measured" in note and "no op profiler" in note for note in report.notes)
