"""Verified ExecuTorch export: .pte files, XNNPACK delegation, static shapes, verification failures, atomicity,
loading errors and latency measurement in a process with a fixed thread pool."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import export.executorch as et_export
from export.errors import ExecutorchVerificationError, ExportError
from export.executorch import (
    PORTABLE_RUNTIME,
    XNNPACK_RUNTIME,
    PteExportConfig,
    PteExportReport,
    export_pte,
    load_pte,
    pte_metadata,
)
from latency_tables.measure import BenchConfig, LatencyResult, child_env
from latency_tables.measure_pte import measure_pte
from export.pipeline import resolve_model

TINY_SIZE = (3, 16, 16)
TINY_CLASSES = 5
METADATA = {"model_name": "tiny", "arch_spec": json.dumps({"schema_version": 1, "blocks": [[8, 3]]})}
PORTABLE = PteExportConfig(backend="portable")


def tiny_model() -> nn.Module:
    """Conv-BN-ReLU-pool-linear with non-trivial BN statistics, so BN folding into the conv is exercised."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, TINY_CLASSES),
    )
    bn = model[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


class SplitNet(nn.Module):
    """A channel split (as in the HGC and shuffle blocks) that XNNPACK leaves to the portable kernels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(4, 4, 3, padding=1)
        self.right = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(8, TINY_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(torch.relu(self.stem(x)), [4, 4], dim=1)
        y = torch.cat([self.left(a), self.right(b)], dim=1)
        return self.head(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))


class Branchy(nn.Module):
    """Data-dependent Python control flow: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class Cancelling(nn.Module):
    """fp32 loses ~1e-3 here ((v + 1e4) - 1e4), so eager fp32 itself is ~5e-4 from exact arithmetic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.flatten(x, 1)[:, :TINY_CLASSES] * 3.3 + 1e4) - 1e4


def exact_cancelling(x: torch.Tensor) -> torch.Tensor:
    v = torch.flatten(x, 1)[:, :TINY_CLASSES].double()
    return ((v * 3.3 + 1e4) - 1e4).float()


def eager(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model(x).numpy()


def seeded_input(batch: int, size: tuple[int, int, int] = TINY_SIZE, seed: int = 7) -> torch.Tensor:
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def xnn_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, PteExportReport]:
    model = tiny_model()
    path = tmp_path_factory.mktemp("xnn") / "nested" / "tiny.pte"  # parent does not exist yet
    return model, path, export_pte(model, path, TINY_SIZE, metadata=METADATA)


@pytest.fixture(scope="module")
def portable_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, PteExportReport]:
    model = tiny_model()
    path = tmp_path_factory.mktemp("portable") / "tiny.pte"
    return model, path, export_pte(model, path, TINY_SIZE, cfg=PORTABLE)


@pytest.fixture
def reuse_tiny_program(monkeypatch: pytest.MonkeyPatch,
                       portable_export: tuple[nn.Module, Path, PteExportReport]) -> nn.Module:
    """Skip lowering: every export writes the tiny portable program. Returns the model it was lowered from.

    Verification is still real: the written file is loaded and run by the runtime and compared with eager.
    """
    model, source, report = portable_export
    monkeypatch.setattr(et_export, "lower_program", lambda *args: (source.read_bytes(), report.delegation))
    return model


# ------------------------------------------------------------------------------------------ happy path


def test_xnnpack_export_writes_one_verified_file(xnn_export: tuple[nn.Module, Path, PteExportReport]) -> None:
    _, path, report = xnn_export
    assert report.path == str(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.pte"]  # no temp file left beside it
    assert report.file_size_bytes == path.stat().st_size > 0
    assert path.read_bytes()[4:8] == b"ET12"
    assert report.backend == "xnnpack"
    assert report.input_shape == (1, *TINY_SIZE)
    assert report.output_shape == (1, TINY_CLASSES)
    assert len(report.max_abs_diff) == PteExportConfig().verify_runs
    assert all(0.0 <= d <= report.atol == 1e-4 for d in report.max_abs_diff)
    assert report.noise_floor == {}
    assert report.export_seconds > 0 and report.verify_seconds > 0
    assert "XNNPACK" in report.verification and "batch 1" in report.verification


def test_tiny_model_is_fully_delegated(xnn_export: tuple[nn.Module, Path, PteExportReport]) -> None:
    _, _, report = xnn_export
    delegation = report.delegation
    assert delegation.portable_ops == {}
    assert delegation.delegated_ops == delegation.total_ops >= 4  # conv (+ folded BN), relu, mean, linear
    assert delegation.fraction == 1.0
    assert delegation.delegate_blobs == 1
    assert report.summary.startswith("max abs diff ")
    assert f"100.0 % of {delegation.total_ops} ops delegated to XNNPACK in 1 blob" in report.summary


def test_report_is_json(xnn_export: tuple[nn.Module, Path, PteExportReport]) -> None:
    _, _, report = xnn_export
    data = json.loads(json.dumps(report.to_dict()))
    assert data["input_shape"] == [1, *TINY_SIZE]
    assert data["delegation"]["fraction"] == 1.0
    assert data["summary"] == report.summary
    assert data["executorch_version"] == et_export._executorch_version() != "unknown"


def test_program_matches_eager_on_a_new_input(xnn_export: tuple[nn.Module, Path, PteExportReport]) -> None:
    model, path, _ = xnn_export
    loaded = load_pte(path)
    assert loaded.xnnpack and loaded.runtime == XNNPACK_RUNTIME
    x = seeded_input(1)
    (got,) = loaded.run(x)
    np.testing.assert_allclose(got.numpy(), eager(model, x), rtol=0, atol=1e-4)


_RUN_WITHOUT_COMPILER = """
import json, sys
import numpy as np, torch
from export.executorch import load_pte, runtime_without_compiler
runtime_without_compiler()
(y,) = load_pte(sys.argv[1]).run(torch.from_numpy(np.load(sys.argv[2])))
np.save(sys.argv[3], y.numpy())
print(json.dumps(sorted(m for m in sys.modules if m.startswith("executorch.exir"))))
"""
_MEASURING_CHILD = """
import json, sys
from latency_tables.measure_pte import _child_main
_child_main(json.dumps({"path": sys.argv[1], "config": {"warmup_runs": 1, "warmup_min_seconds": 0.0, "runs": 2,
                                                      "min_seconds": 0.0, "stable_rel_tol": None}}))
print(json.dumps(sorted(m for m in sys.modules if m.startswith("executorch.exir"))))
"""


@pytest.mark.parametrize("script", [_RUN_WITHOUT_COMPILER, _MEASURING_CHILD], ids=["runtime", "measuring-child"])
def test_a_process_that_only_runs_programs_never_imports_the_compiler(
        xnn_export: tuple[nn.Module, Path, PteExportReport], tmp_path: Path, script: str) -> None:
    """Each op of an XNNPACK latency table is timed in a fresh process, and importing ExecuTorch's compiler
    (``executorch.exir``, which the runtime's ``portable_lib`` pulls in for a warning class) was 4 of that process's
    9 s. After ``runtime_without_compiler`` the same program loads and runs, with the same outputs, without it."""
    model, path, _ = xnn_export
    x = seeded_input(1, seed=11)
    np.save(tmp_path / "x.npy", x.numpy())
    done = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []
    if script is _RUN_WITHOUT_COMPILER:
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), eager(model, x), rtol=0, atol=1e-4)
    else:
        answer = json.loads(done.stdout.splitlines()[-2].split(" ", 1)[1])
        assert answer["n"] == 2 and answer["min_ms"] > 0


def test_metadata_round_trips(xnn_export: tuple[nn.Module, Path, PteExportReport]) -> None:
    _, path, _ = xnn_export
    meta = pte_metadata(path)
    assert {k: meta[k] for k in METADATA} == METADATA
    assert meta["mzoo.backend"] == "xnnpack"
    assert meta["mzoo.batch_size"] == "1"
    assert (meta["mzoo.input_name"], meta["mzoo.output_name"]) == ("input", "logits")
    assert meta["mzoo.torch_version"] == torch.__version__


def test_portable_backend_has_no_delegate(portable_export: tuple[nn.Module, Path, PteExportReport]) -> None:
    model, path, report = portable_export
    delegation = report.delegation
    assert (delegation.delegated_ops, delegation.delegate_blobs, delegation.fraction) == (0, 0, 0.0)
    assert delegation.portable_ops["aten.convolution.default"] == 1
    assert sum(delegation.portable_ops.values()) == delegation.total_ops
    assert "portable kernels only" in report.summary
    loaded = load_pte(path)
    assert not loaded.xnnpack and loaded.runtime == PORTABLE_RUNTIME
    x = seeded_input(1)
    np.testing.assert_allclose(loaded.run(x)[0].numpy(), eager(model, x), rtol=0, atol=1e-4)
    assert pte_metadata(path)["mzoo.backend"] == "portable"


def test_channel_split_is_left_to_portable_kernels(tmp_path: Path) -> None:
    model = SplitNet().eval()
    report = export_pte(model, tmp_path / "split.pte", TINY_SIZE)
    delegation = report.delegation
    assert delegation.portable_ops == {"aten.split_with_sizes_copy.default": 1}
    assert delegation.total_ops == delegation.delegated_ops + 1
    assert 0.5 < delegation.fraction < 1.0
    assert delegation.delegate_blobs == 2  # the split cuts the graph in two XNNPACK partitions
    assert f"{100 * delegation.fraction:.1f} % of {delegation.total_ops} ops" in report.summary
    x = seeded_input(1)
    np.testing.assert_allclose(load_pte(report.path).run(x)[0].numpy(), eager(model, x), rtol=0, atol=1e-4)


@pytest.mark.slow  # lowering a zoo network takes 1-3 minutes on 2 cores
@pytest.mark.parametrize("name", ["nbmacro_11111111", "bcnet_mobilenetv2_cifar_28m"])
def test_cifar_zoo_model_is_fully_delegated_and_matches_eager(tmp_path: Path, name: str) -> None:
    resolved = resolve_model(name)
    report = export_pte(resolved.model, tmp_path / f"{name}.pte", resolved.input_size, metadata={"model_name": name})
    assert report.output_shape == (1, 10)
    assert max(report.max_abs_diff) <= report.atol and report.noise_floor == {}
    assert report.delegation.fraction == 1.0 and report.delegation.delegate_blobs == 1
    x = seeded_input(1, resolved.input_size)
    np.testing.assert_allclose(load_pte(report.path).run(x)[0].numpy(), eager(resolved.model, x), rtol=0, atol=1e-4)


def test_batch_size_is_static(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model = tiny_model()
    cfg = PteExportConfig(backend="portable", batch_size=2)
    report = export_pte(model, tmp_path / "b2.pte", TINY_SIZE, cfg=cfg)
    assert report.input_shape == (2, *TINY_SIZE) and report.output_shape == (2, TINY_CLASSES)
    assert "batch 2" in report.verification
    loaded = load_pte(report.path)
    x = seeded_input(2)
    np.testing.assert_allclose(loaded.run(x)[0].numpy(), eager(model, x), rtol=0, atol=1e-4)
    capfd.readouterr()
    with pytest.raises(ExecutorchVerificationError, match=r"input \(1, 3, 16, 16\)") as info:
        loaded.run(seeded_input(1))
    # The runtime's own explanation ends up in the message, not on the terminal.
    assert "static tensor" in str(info.value)
    assert "static tensor" not in capfd.readouterr().err


def test_export_restores_training_mode(tmp_path: Path, reuse_tiny_program: nn.Module) -> None:
    model = tiny_model().train()
    export_pte(model, tmp_path / "t.pte", TINY_SIZE, cfg=PORTABLE)
    assert model.training


# -------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("pre_existing", [False, True])
def test_mismatch_raises_and_leaves_no_file(tmp_path: Path, reuse_tiny_program: nn.Module, pre_existing: bool) -> None:
    # The program of the original model, verified against a model whose logits are shifted by 0.01.
    shifted = copy.deepcopy(reuse_tiny_program)
    with torch.no_grad():
        shifted[-1].bias += 0.01
    path = tmp_path / "model.pte"
    if pre_existing:
        path.write_bytes(b"previous artefact")
    with pytest.raises(ExecutorchVerificationError) as info:
        export_pte(shifted, path, TINY_SIZE, cfg=PteExportConfig(backend="portable", atol=1e-3))
    message = str(info.value)
    for part in ("'logits'", "verification input 0", "max abs diff 0.01", "atol 0.001", "against a float64 run"):
        assert part in message
    assert "\n" not in message
    assert isinstance(info.value, ExportError)
    assert str(pickle.loads(pickle.dumps(info.value))) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == (["model.pte"] if pre_existing else [])
    if pre_existing:
        assert path.read_bytes() == b"previous artefact"


def test_nan_output_fails_verification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      reuse_tiny_program: nn.Module) -> None:
    # NaN compares false with everything; a naive `diff > atol` check would let it through.
    monkeypatch.setattr(et_export.PteProgram, "run", lambda self, x: [torch.full((1, TINY_CLASSES), torch.nan)])
    with pytest.raises(ExecutorchVerificationError, match="max abs diff nan"):
        export_pte(tiny_model(), tmp_path / "m.pte", TINY_SIZE, cfg=PORTABLE)
    assert list(tmp_path.iterdir()) == []


def test_wrong_output_shape_fails_verification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              reuse_tiny_program: nn.Module) -> None:
    monkeypatch.setattr(et_export.PteProgram, "run", lambda self, x: [torch.zeros(1, TINY_CLASSES + 1)])
    with pytest.raises(ExecutorchVerificationError, match=r"shape \(1, 6\) != eager shape \(1, 5\)"):
        export_pte(tiny_model(), tmp_path / "m.pte", TINY_SIZE, cfg=PORTABLE)
    assert list(tmp_path.iterdir()) == []


def test_unexportable_model_raises_export_error_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="torch.export failed for Branchy") as info:
        export_pte(Branchy(), tmp_path / "b.pte", (3, 8, 8), cfg=PORTABLE)
    assert not isinstance(info.value, ExecutorchVerificationError)
    assert info.value.__cause__ is not None
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_lowering_failure_raises_export_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_lowering(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no XNNPACK kernel for aten.foo\nsecond line")

    monkeypatch.setattr(et_export, "_lowering_api", lambda backend: (failing_lowering, []))
    with pytest.raises(ExportError, match=r"lowering Sequential to ExecuTorch \(XNNPACK\) failed: "
                                          r"RuntimeError: no XNNPACK kernel for aten.foo$"):
        export_pte(tiny_model(), tmp_path / "m.pte", TINY_SIZE)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_removes_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> None:
        assert len(list(tmp_path.iterdir())) == 1, "the temp file should exist while exporting"
        raise KeyboardInterrupt

    monkeypatch.setattr(et_export, "lower_program", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_pte(tiny_model(), tmp_path / "m.pte", TINY_SIZE)
    assert list(tmp_path.iterdir()) == []


def test_noise_floor_accepts_a_program_closer_to_exact_than_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  reuse_tiny_program: nn.Module) -> None:
    monkeypatch.setattr(et_export.PteProgram, "run", lambda self, x: [exact_cancelling(x)])
    report = export_pte(Cancelling(), tmp_path / "m.pte", TINY_SIZE, cfg=PORTABLE)
    assert sorted(report.noise_floor) == [0, 1, 2]
    for index, (et_err, eager_err) in report.noise_floor.items():
        assert report.max_abs_diff[index] > report.atol  # the plain check failed ...
        assert et_err < 1e-5 < 1e-4 < eager_err  # ... and the program was the more exact of the two
    assert "(within float64 noise floor)" in report.summary


def test_noise_floor_refuses_a_program_farther_from_exact_than_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     reuse_tiny_program: nn.Module) -> None:
    monkeypatch.setattr(et_export.PteProgram, "run", lambda self, x: [exact_cancelling(x) + 0.01])
    with pytest.raises(ExecutorchVerificationError, match="against a float64 run"):
        export_pte(Cancelling(), tmp_path / "m.pte", TINY_SIZE, cfg=PORTABLE)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(et_export.PteProgram, "run", lambda self, x: [exact_cancelling(x)])
    with pytest.raises(ExecutorchVerificationError, match="exceeds atol"):  # the rule can be switched off
        export_pte(Cancelling(), tmp_path / "m.pte", TINY_SIZE,
                   cfg=PteExportConfig(backend="portable", noise_floor_factor=0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backend": "coreml"}, "backend 'coreml'"),
        ({"batch_size": 0}, "batch_size"),
        ({"verify_runs": 0}, "verify_runs"),
        ({"atol": 0.0}, "atol"),
        ({"atol": float("nan")}, "atol"),
        ({"noise_floor_factor": -1.0}, "noise_floor_factor"),
        ({"input_name": "x", "output_name": "x"}, "must be non-empty and differ"),
    ],
)
def test_invalid_config_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PteExportConfig(**kwargs)  # type: ignore[arg-type]


def test_invalid_arguments_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="input_size"):
        export_pte(tiny_model(), tmp_path / "m.pte", (16, 16))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mzoo.backend"):
        export_pte(tiny_model(), tmp_path / "m.pte", TINY_SIZE, metadata={"mzoo.backend": "x"})
    with pytest.raises(TypeError, match="mean"):
        export_pte(tiny_model(), tmp_path / "m.pte", TINY_SIZE, metadata={"mean": 0.5})  # type: ignore[dict-item]
    with pytest.raises(ExportError, match="is a directory"):
        export_pte(tiny_model(), tmp_path, TINY_SIZE)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------- loading


def test_load_pte_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ExecutorchVerificationError, match="does not exist"):
        load_pte(tmp_path / "missing.pte")
    with pytest.raises(ExecutorchVerificationError, match="not a regular file"):
        load_pte(tmp_path)


@pytest.mark.parametrize(
    "content, match",
    [
        (np.random.default_rng(0).bytes(4096), "no 'ET..' file identifier"),  # would abort the runtime
        (b"", "only 0 bytes"),
        (b"ir_version: 8\nproducer_name: 'not a program'\n", "no 'ET..' file identifier"),
    ],
)
def test_load_pte_rejects_non_programs(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.pte"
    path.write_bytes(content)
    with pytest.raises(ExecutorchVerificationError, match=match) as info:
        load_pte(path)
    assert "bad.pte" in str(info.value) and "\n" not in str(info.value)


def test_load_pte_truncated_file(portable_export: tuple[nn.Module, Path, PteExportReport], tmp_path: Path) -> None:
    _, source, _ = portable_export
    data = source.read_bytes()
    path = tmp_path / "truncated.pte"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExecutorchVerificationError, match=r"truncated.pte' is truncated: its header promises"):
        load_pte(path)


def test_load_pte_corrupt_program(portable_export: tuple[nn.Module, Path, PteExportReport], tmp_path: Path) -> None:
    _, source, _ = portable_export
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(1)
    flatbuffer_end = int.from_bytes(data[16:24], "little")
    for i in rng.integers(40, flatbuffer_end, 64):  # header intact, program table scrambled
        data[i] = int(rng.integers(0, 256))
    path = tmp_path / "corrupt.pte"
    path.write_bytes(bytes(data))
    with pytest.raises(ExecutorchVerificationError, match="cannot load .*corrupt.pte.*Failed to load program") as info:
        load_pte(path)
    assert "\n" not in str(info.value)


# -------------------------------------------------------------------------------------------- latency


def test_measure_pte_uses_the_latency_protocol(xnn_export: tuple[nn.Module, Path, PteExportReport]) -> None:
    _, path, _ = xnn_export
    # The stability rule is off, so the count is the protocol's exactly (with it on, an unsettled median on a busy
    # machine legitimately takes more runs; tests/export/test_latency.py drives that rule with a fake clock).
    cfg = BenchConfig(threads=1, warmup_runs=3, warmup_min_seconds=0.0, runs=7, min_seconds=0.0, max_seconds=5.0,
                      stable_rel_tol=None)
    result = measure_pte(path, cfg)
    assert result.runtime == XNNPACK_RUNTIME
    assert (result.model, result.input_shape, result.threads, result.config) == (str(path), (1, *TINY_SIZE), 1, cfg)
    assert result.n == 7
    assert 0 < result.min_ms <= result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.session_create_ms > 0 and result.first_run_ms > 0
    assert LatencyResult.from_json(result.to_json()) == result


def test_measure_pte_rejects_other_batch_and_bad_files(xnn_export: tuple[nn.Module, Path, PteExportReport],
                                                        tmp_path: Path) -> None:
    _, path, _ = xnn_export
    with pytest.raises(ValueError, match=r"exported for batch 1 \(static shape .*batch_size is 4"):
        measure_pte(path, BenchConfig(batch_size=4))
    with pytest.raises(ExecutorchVerificationError, match="does not exist"):
        measure_pte(tmp_path / "missing.pte")


def test_measure_pte_child_runs_one_openmp_thread(xnn_export: tuple[nn.Module, Path, PteExportReport],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned to one CPU, the measuring child shared it with torch's other OpenMP thread and every run waited out
    4 ms scheduler slices: a 0.19 ms conv measured 4-12 ms (half of an XNNPACK table). The child must start with
    OMP_NUM_THREADS=1 whatever the parent has; XNNPACK's own pool is set from BenchConfig.threads."""
    import subprocess

    import latency_tables.measure_pte as mp

    _, path, _ = xnn_export
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    seen: dict[str, str] = {}
    real_run = subprocess.run

    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.update(kwargs["env"])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(mp.subprocess, "run", run)
    cfg = BenchConfig(threads=1, warmup_runs=1, warmup_min_seconds=0.0, runs=2, min_seconds=0.0, max_seconds=5.0,
                      stable_rel_tol=None, cpus=(max(os.sched_getaffinity(0)),))
    assert measure_pte(path, cfg).n == 2
    assert seen["OMP_NUM_THREADS"] == "1"
