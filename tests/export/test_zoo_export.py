"""Every zoo model exports to ONNX and verifies against eager PyTorch (≤1e-4 max abs diff, two batch sizes)."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from export.pipeline import export_model, resolve_model


@pytest.mark.parametrize("name", zoo.list_models())
def test_zoo_model_exports_and_verifies(name: str, tmp_path: Path) -> None:
    report = export_model(resolve_model(name), tmp_path)
    assert Path(report.path).is_file()
    assert len(report.max_abs_diff) == 2
    assert all(d <= 1e-4 for d in report.max_abs_diff.values()), report.max_abs_diff
    assert (tmp_path / f"{name}.onnx.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.onnx", f"{name}.onnx.json"]
