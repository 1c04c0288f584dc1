"""LiteRT/XNNPACK and ncnn as measurement backends (``--device litert`` / ``--device ncnn``): device names, a
measurement with the protocol of ``BenchConfig`` on tiny modules, and the batch and artefact checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch", reason="the android extra is not installed")
pytest.importorskip("ncnn", reason="the android extra is not installed")

from common.errors import InputError  # noqa: E402
from export.errors import LitertVerificationError, NcnnVerificationError  # noqa: E402
from latency_tables.devices import (LitertDevice, NcnnDevice, export_litert_fast, export_ncnn_fast,  # noqa: E402
                                    get_device, local_device_name)
from latency_tables.measure import BenchConfig  # noqa: E402
from latency_tables.measure_android import measure_litert, measure_ncnn  # noqa: E402

FAST = BenchConfig(runs=5, warmup_runs=1, warmup_min_seconds=0, min_seconds=0, max_seconds=2.0)
TINY = [
    pytest.param(lambda: nn.Conv2d(8, 8, 3, padding=1), (1, 8, 8, 8), id="conv"),
    pytest.param(lambda: nn.Linear(16, 10), (1, 16), id="linear"),
]


def test_devices_are_named_and_chosen_like_the_others() -> None:
    litert, ncnn = get_device("litert", threads=2), get_device("ncnn")
    assert isinstance(litert, LitertDevice) and litert.runtime == "litert-xnnpack" and litert.name.endswith("-litert-t2")
    assert isinstance(ncnn, NcnnDevice) and ncnn.runtime == "ncnn-cpu" and ncnn.name.endswith("-ncnn-t1")
    assert local_device_name("litert", 1, "AMD EPYC 7763 64-Core Processor") == "amd-epyc-7763-litert-t1"
    info = litert.describe()
    assert info.runtime == "litert-xnnpack" and info.runtime_version  # ai-edge-litert's version
    with pytest.raises(InputError, match="unknown device 'tflite'.*'litert', 'ncnn'"):
        get_device("tflite")


@pytest.mark.parametrize("device", [LitertDevice, NcnnDevice], ids=["litert", "ncnn"])
@pytest.mark.parametrize("make, shape", TINY)
def test_device_measures_tiny_modules(device, make, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    result = device().measure(make(), shape, FAST, label="tiny")
    assert result.runtime == device.runtime and result.model == "tiny" and result.input_shape == shape
    assert result.threads == 1 and result.n >= 5 and 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert result.session_create_ms > 0 and result.config.runs == 5


def test_measurement_checks_the_batch_and_the_file(tmp_path: Path) -> None:
    tflite = export_litert_fast(nn.Linear(4, 2).eval(), (1, 4), tmp_path / "m.tflite")
    with pytest.raises(InputError, match="batch 1.*batch_size is 2"):
        measure_litert(tflite, BenchConfig(**{**FAST.__dict__, "batch_size": 2}))
    package = export_ncnn_fast(nn.Linear(4, 2).eval(), (1, 4), tmp_path / "m.ncnn")
    assert measure_ncnn(package, FAST).input_shape == (1, 4)
    (tmp_path / "bad.tflite").write_bytes(b"nope" * 8)
    with pytest.raises(LitertVerificationError, match="no 'TFL3'"):
        measure_litert(tmp_path / "bad.tflite", FAST)
    with pytest.raises(NcnnVerificationError, match="does not exist"):
        measure_ncnn(tmp_path / "none.ncnn", FAST)


@pytest.mark.slow  # 21 op modules converted by pnnx and timed, plus two calibration networks (~1-2 min on 2 cores)
def test_lut_build_makes_an_ncnn_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from mzoo.cli import main

    argv = ["lut", "build", "--device", "ncnn", "--space", "nbmacro", "--quick", "--calibration", "2",
            "--root", str(tmp_path)]
    assert main(argv) == 0
    (table,) = tmp_path.glob("*-ncnn-t1/nbmacro.json")
    data = json.loads(table.read_text())
    assert data["runtime"] == "ncnn-cpu" and data["threads"] == 1 and len(data["entries"]) == 21
    assert "21 op entries" in capsys.readouterr().out
