"""ncnn export via pnnx: a zoo model verified against eager PyTorch in the ncnn binding, published as one package
directory; a wrong conversion, a failing converter and a missing extra leave nothing behind."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("ncnn", reason="the android extra is not installed")
pytest.importorskip("pnnx", reason="the android extra is not installed")

import zoo  # noqa: E402
from export.errors import ExportError, NcnnVerificationError  # noqa: E402
from export.ncnn import (BIN_FILE, METADATA_FILE, PARAM_FILE, export_ncnn, input_shape_of, load_ncnn,  # noqa: E402
                         ncnn_metadata)

SMALL = "nbmacro_11111111"


def test_zoo_model_matches_eager_in_ncnn(tmp_path: Path) -> None:
    model = zoo.create_model(SMALL).eval()
    target = tmp_path / f"{SMALL}.ncnn"
    report = export_ncnn(model, target, (3, 32, 32), metadata={"model_name": SMALL})
    assert max(report.max_abs_diff) <= 1e-4 and len(report.max_abs_diff) == 3
    assert report.output_shape == (1, 10) and report.layers["Convolution"] >= 1
    assert sorted(p.name for p in target.iterdir()) == sorted([PARAM_FILE, BIN_FILE, METADATA_FILE])
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary directory left
    assert ncnn_metadata(target)["model_name"] == SMALL and input_shape_of(target) == (1, 3, 32, 32)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        expected = model(x).numpy().reshape(-1)
    np.testing.assert_allclose(load_ncnn(target).run(x.numpy()), expected, atol=1e-4)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def test_a_package_that_differs_from_eager_is_refused_and_not_written(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import export.ncnn as ncnn_export

    convert = ncnn_export.convert_to_ncnn

    def wrong(model: nn.Module, example: torch.Tensor, param: Path, weights: Path) -> None:
        other = copy.deepcopy(model)
        with torch.no_grad():
            other[-1].bias.add_(1e-2)
        convert(other, example, param, weights)

    monkeypatch.setattr(ncnn_export, "convert_to_ncnn", wrong)
    with pytest.raises(NcnnVerificationError, match=r"does not match eager PyTorch.*max abs diff 0\.01"):
        export_ncnn(_tiny(), tmp_path / "t.ncnn", (3, 8, 8))
    assert not any(tmp_path.iterdir())


def test_a_failing_converter_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pnnx

    monkeypatch.setattr(pnnx, "EXEC_PATH", "/bin/false")
    with pytest.raises(ExportError, match=r"pnnx cannot convert Sequential to ncnn \(exit code 1\)") as info:
        export_ncnn(_tiny(), tmp_path / "t.ncnn", (3, 8, 8))
    assert "\n" not in str(info.value) and not any(tmp_path.iterdir())


def test_reading_a_missing_or_foreign_package_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(NcnnVerificationError, match="does not exist"):
        load_ncnn(tmp_path / "none.ncnn")
    package = tmp_path / "bad.ncnn"
    package.mkdir()
    (package / PARAM_FILE).write_text("not ncnn\n")
    with pytest.raises(NcnnVerificationError, match="lacks model.ncnn.bin"):
        load_ncnn(package)
    (package / BIN_FILE).write_bytes(b"\0" * 16)
    with pytest.raises(NcnnVerificationError, match="not an ncnn param file"):
        load_ncnn(package)


def test_a_missing_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pnnx", None)
    with pytest.raises(ExportError, match=r"ncnn export needs pnnx and ncnn.*pip install -e '\.\[android\]'"):
        export_ncnn(_tiny(), tmp_path / "t.ncnn", (3, 8, 8))
    assert not any(tmp_path.iterdir())


@pytest.mark.slow  # one LiteRT conversion of a zoo model (~15-30 s on a busy 2-core machine)
def test_batch_export_matrix_shows_both_android_formats(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch", reason="the android extra is not installed")
    from export.formats import export_all
    from export.pipeline import resolve_model

    matrix = export_all(["nbmacro_00000000"], tmp_path, "ncnn,litert", resolve=resolve_model)
    assert matrix.formats == ("litert", "ncnn") and [c.status for c in matrix.cells] == ["ok", "ok"]
    md = (tmp_path / "compatibility.md").read_text()
    assert "% XNNPACK (1 partition)" in md and " layers · " in md
    assert (tmp_path / "nbmacro_00000000.ncnn" / "model.ncnn.param").is_file()
    assert (tmp_path / "nbmacro_00000000.tflite.json").is_file() and (tmp_path / "nbmacro_00000000.ncnn.json").is_file()


class TwoPaths(nn.Module):
    """A grouped convolution written as HGC writes it: channel halves through their own convs, concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 4, 1), nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x.chunk(2, dim=1)
        return torch.cat([self.a(left), self.b(right)], dim=1).mean((2, 3))


def test_inspection_counts_the_plumbing_grouped_convs_become(tmp_path: Path) -> None:
    from export.inspection import inspect_artefact

    torch.manual_seed(0)
    export_ncnn(TwoPaths().eval(), tmp_path / "g.ncnn", (4, 6, 6))
    report = inspect_artefact(tmp_path / "g.ncnn")
    assert report.format == "ncnn" and report.delegated_ops is None and report.ops["Convolution"] == 2
    assert report.layout_ops.get("Slice") == 1 and report.layout_ops.get("Concat") == 1
    assert "Slice x1" in report.to_text()
