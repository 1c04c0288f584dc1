"""Latency measurement: statistics, protocol limits, thread handling, result round trips and the environment."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from common.environment import Environment, _cpu_id, _version, current_environment
from export.errors import OnnxLoadError
from latency_tables.measure import (BenchConfig, LatencyResult, is_stable, make_result, measure_onnx, measure_torch,
                            pinned_cpus, summarize, time_runs)

FAST = BenchConfig(runs=5, warmup_runs=1, warmup_min_seconds=0, min_seconds=0)


def write_conv_model(path: Path, shape: list[int | str]) -> Path:
    """A hand-built Conv -> GlobalAveragePool -> Flatten graph (no exporter involved) with input ``shape``."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["conv"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], 4])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_conv_model(tmp_path_factory.mktemp("lat") / "conv.onnx", ["batch", 3, 16, 16])


class ThreadProbe(nn.Module):
    """Records the intra-op thread count torch uses while it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.seen_threads: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_threads.add(torch.get_num_threads())
        return self.conv(x)


class Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.fixture
def two_threads() -> Iterator[int]:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------ statistics


def test_summarize_known_samples() -> None:
    stats = summarize([float(v) for v in range(10, 0, -1)])  # order must not matter
    assert stats == pytest.approx(
        {"median_ms": 5.5, "mean_ms": 5.5, "std_ms": 8.25**0.5, "min_ms": 1.0, "p10_ms": 1.9, "p90_ms": 9.1}
    )
    assert summarize([3.0]) == {k: (0.0 if k == "std_ms" else 3.0) for k in stats}


@pytest.mark.parametrize("samples", [[], [1.0, float("nan")], [[1.0, 2.0]]])
def test_summarize_rejects_bad_samples(samples: list) -> None:
    with pytest.raises(ValueError, match="samples_ms"):
        summarize(samples)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"threads": 0}, "threads"),
        ({"runs": 0}, "runs"),
        ({"batch_size": 0}, "batch_size"),
        ({"warmup_runs": -1}, "warmup_runs"),
        ({"min_seconds": -1.0}, "min_seconds"),
        ({"min_seconds": 5.0, "max_seconds": 1.0}, "max_seconds"),
    ],
)
def test_bench_config_validation_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=rf"BenchConfig\.{field}"):
        BenchConfig(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- onnxruntime


def test_measure_onnx_sane_stats(conv_onnx: Path) -> None:
    result = measure_onnx(conv_onnx, FAST)
    assert result.runtime == "onnxruntime-cpu"
    assert result.model == str(conv_onnx)
    assert result.input_shape == (1, 3, 16, 16)
    assert result.threads == 1
    assert result.n >= FAST.runs
    assert 0 < result.min_ms <= result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.min_ms <= result.mean_ms and result.std_ms >= 0
    assert result.first_run_ms > 0 and result.session_create_ms > 0
    assert result.environment.logical_cores == os.cpu_count()
    assert result.environment.onnxruntime is not None
    assert result.timestamp.endswith("+00:00")


def test_measure_onnx_respects_batch_size(conv_onnx: Path) -> None:
    cfg = BenchConfig(runs=3, warmup_runs=0, warmup_min_seconds=0, min_seconds=0, batch_size=4)
    result = measure_onnx(conv_onnx, cfg)
    assert result.input_shape == (4, 3, 16, 16)
    assert result.config.batch_size == 4


def test_measure_onnx_min_seconds_extends_runs(conv_onnx: Path) -> None:
    cfg = BenchConfig(runs=1, warmup_runs=0, warmup_min_seconds=0, min_seconds=0.2)
    start = time.perf_counter()
    result = measure_onnx(conv_onnx, cfg)
    assert time.perf_counter() - start >= 0.2
    assert result.n > 1


def test_measure_onnx_max_seconds_caps_runs(conv_onnx: Path) -> None:
    cfg = BenchConfig(runs=10**9, warmup_runs=0, warmup_min_seconds=0, min_seconds=0, max_seconds=0.2)
    start = time.perf_counter()
    result = measure_onnx(conv_onnx, cfg)
    assert time.perf_counter() - start < 5.0
    assert 1 <= result.n < 10**9


def test_measure_onnx_rejects_non_batch_dynamic_dims(tmp_path: Path) -> None:
    path = write_conv_model(tmp_path / "dyn.onnx", ["batch", 3, "height", 16])
    with pytest.raises(ValueError, match="axis 2"):
        measure_onnx(path, FAST)


def test_measure_onnx_clear_errors_for_bad_files(tmp_path: Path) -> None:
    with pytest.raises(OnnxLoadError, match="missing.onnx"):
        measure_onnx(tmp_path / "missing.onnx", FAST)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(OnnxLoadError, match="corrupt.onnx"):
        measure_onnx(corrupt, FAST)


# ------------------------------------------------------------------------------------------------ torch


def test_measure_torch_uses_and_restores_threads(two_threads: int) -> None:
    model = ThreadProbe().train()
    cfg = BenchConfig(threads=1, runs=3, warmup_runs=1, warmup_min_seconds=0, min_seconds=0, batch_size=2)
    result = measure_torch(model, (3, 8, 8), cfg)
    assert model.seen_threads == {1}
    assert torch.get_num_threads() == two_threads
    assert model.training, "measure_torch must restore the caller's train/eval mode"
    assert result.runtime == "torch-eager"
    assert result.model == "ThreadProbe"
    assert result.input_shape == (2, 3, 8, 8)
    assert result.n >= 3 and result.session_create_ms == 0.0
    assert result.p10_ms <= result.median_ms <= result.p90_ms


def test_measure_torch_restores_threads_on_error(two_threads: int) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        measure_torch(Exploding(), (3, 8, 8), FAST)
    assert torch.get_num_threads() == two_threads


def test_measure_torch_label(two_threads: int) -> None:
    assert measure_torch(ThreadProbe(), (3, 8, 8), FAST, label="probe@8").model == "probe@8"


# ------------------------------------------------------------------------------------- result records


def test_latency_result_json_round_trip(conv_onnx: Path) -> None:
    result = measure_onnx(conv_onnx, FAST)
    text = result.to_json()
    assert json.loads(text)["environment"]["cpu_model"] == result.environment.cpu_model
    restored = LatencyResult.from_json(text)
    assert restored == result
    assert isinstance(restored.input_shape, tuple) and isinstance(restored.environment, Environment)
    assert restored.to_json() == text


def test_latency_result_from_dict_names_missing_fields(conv_onnx: Path) -> None:
    data = measure_onnx(conv_onnx, FAST).to_dict()
    del data["median_ms"]
    with pytest.raises(ValueError, match="median_ms"):
        LatencyResult.from_dict(data)


def test_current_environment() -> None:
    env = current_environment()
    assert env.cpu_model
    assert env.logical_cores == os.cpu_count()
    assert env.machine == platform.machine()
    assert env.python == platform.python_version()
    assert env.torch == importlib.metadata.version("torch")
    assert env.numpy == importlib.metadata.version("numpy")
    assert Environment.from_dict(json.loads(json.dumps(env.to_dict()))) == env
    assert _version("surely-not-an-installed-distribution") is None


# ------------------------------------------------------------------------------- stop rule (fake clock)


class FakeTimer:
    """A clock in ns that only the fake run moves: each run lasts the next of ``durations_ms``."""

    def __init__(self, durations_ms: Iterator[float]) -> None:
        self.now_ns = 0
        self.runs = 0
        self.durations_ms = durations_ms
        self.slept: list[float] = []

    def clock(self) -> int:
        return self.now_ns

    def run(self) -> None:
        self.runs += 1
        self.now_ns += int(next(self.durations_ms) * 1e6)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _constant(ms: float) -> Iterator[float]:
    while True:
        yield ms


def _drifting(start_ms: float = 1.0, step_ms: float = 0.1) -> Iterator[float]:
    value = start_ms
    while True:
        yield value
        value += step_ms


PROTOCOL = BenchConfig(runs=10, warmup_runs=2, warmup_min_seconds=0, min_seconds=0, max_seconds=1e6,
                       stable_rel_tol=0.01, max_runs=400)


def test_stop_rule_constant_timings_stop_at_runs() -> None:
    timer = FakeTimer(_constant(2.0))
    first, samples = time_runs(timer.run, PROTOCOL, clock=timer.clock, sleep=timer.sleep)
    assert first == 2.0 and samples == [2.0] * PROTOCOL.runs
    assert timer.runs == PROTOCOL.warmup_runs + PROTOCOL.runs
    assert is_stable(samples, PROTOCOL.stable_rel_tol)


def test_stop_rule_drifting_timings_run_to_max_runs_and_are_unstable() -> None:
    timer = FakeTimer(_drifting())
    _, samples = time_runs(timer.run, PROTOCOL, clock=timer.clock, sleep=timer.sleep)
    assert len(samples) == PROTOCOL.max_runs
    assert not is_stable(samples, PROTOCOL.stable_rel_tol)
    result = make_result("fake", "drift", (1,), samples, 1.0, 0.0, PROTOCOL)
    assert result.stable is False and result.n == PROTOCOL.max_runs


def test_stop_rule_stops_once_the_median_settles() -> None:
    # 30 drifting timed samples, then constant: the median of all and of the first 80 % converge.
    durations = iter([5.0, 5.0] + [1.0 + 0.5 * i for i in range(30)] + [3.0] * 10_000)
    timer = FakeTimer(durations)
    _, samples = time_runs(timer.run, PROTOCOL, clock=timer.clock, sleep=timer.sleep)
    assert 30 < len(samples) < PROTOCOL.max_runs
    assert is_stable(samples, PROTOCOL.stable_rel_tol)
    assert not is_stable(samples[:-5], PROTOCOL.stable_rel_tol), "it should have stopped at the first stable point"
    assert make_result("fake", "settle", (1,), samples, 1.0, 0.0, PROTOCOL).stable is True


def test_stop_rule_is_capped_by_max_seconds() -> None:
    cfg = BenchConfig(runs=5, warmup_runs=0, warmup_min_seconds=0, min_seconds=0, max_seconds=10.0)
    timer = FakeTimer(_drifting(start_ms=1000.0, step_ms=100.0))  # each run ~1 s of fake time, never stable
    _, samples = time_runs(timer.run, cfg, clock=timer.clock, sleep=timer.sleep)
    assert 5 <= len(samples) <= 10
    assert sum(samples) >= 10_000.0 - samples[-1]


@pytest.mark.parametrize("tol", [None, 0])
def test_stop_rule_disabled_keeps_the_old_protocol(tol: float | None) -> None:
    cfg = dataclasses.replace(PROTOCOL, stable_rel_tol=tol)
    timer = FakeTimer(_drifting())
    _, samples = time_runs(timer.run, cfg, clock=timer.clock, sleep=timer.sleep)
    assert len(samples) == cfg.runs
    assert make_result("fake", "old", (1,), samples, 1.0, 0.0, cfg).stable is True


def test_is_stable_needs_enough_samples() -> None:
    assert not is_stable([1.0] * 4, 0.01)
    assert is_stable([1.0] * 5, 0.01)
    assert is_stable([1.0, 9.0], None)


def test_cooldown_sleeps_before_each_model() -> None:
    cfg = dataclasses.replace(PROTOCOL, cooldown_seconds=1.5, stable_rel_tol=None)
    timer = FakeTimer(_constant(1.0))
    time_runs(timer.run, cfg, clock=timer.clock, sleep=timer.sleep)
    time_runs(timer.run, cfg, clock=timer.clock, sleep=timer.sleep)
    assert timer.slept == [1.5, 1.5]
    start = time.perf_counter()
    measure_torch(nn.Identity(), (1, 2, 2), dataclasses.replace(FAST, cooldown_seconds=0.3))
    assert time.perf_counter() - start >= 0.3


# ----------------------------------------------------------------------------------------- new fields


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"stable_rel_tol": -0.1}, "stable_rel_tol"),
        ({"stable_rel_tol": 1.5}, "stable_rel_tol"),
        ({"max_runs": 10}, "max_runs"),  # fewer than runs (50)
        ({"cpus": ()}, "cpus"),
        ({"cpus": (0, 0)}, "cpus"),
        ({"cpus": (-1,)}, "cpus"),
        ({"cooldown_seconds": -1.0}, "cooldown_seconds"),
        ({"cooldown_seconds": float("inf")}, "cooldown_seconds"),
    ],
)
def test_bench_config_validates_new_fields(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=rf"BenchConfig\.{field}"):
        BenchConfig(**kwargs)  # type: ignore[arg-type]


def test_bench_config_from_dict_normalises_and_rejects_unknown_keys() -> None:
    cfg = BenchConfig(cpus=(0,), max_runs=100)
    restored = BenchConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert restored == cfg and restored.cpus == (0,)
    with pytest.raises(ValueError, match="bogus"):
        BenchConfig.from_dict({"bogus": 1})


def test_latency_result_reads_records_written_before_the_stop_rule(conv_onnx: Path) -> None:
    data = measure_onnx(conv_onnx, FAST).to_dict()
    for key in ("stable_rel_tol", "max_runs", "cpus", "cooldown_seconds"):
        del data["config"][key]
    del data["stable"]
    del data["environment"]["executorch"]
    old = LatencyResult.from_dict(data)
    assert old.stable is True and old.config.cpus is None and old.environment.executorch is None


# ------------------------------------------------------------------------------------------- affinity


needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity control")


@needs_affinity
def test_pinned_cpus_pins_every_thread_and_restores() -> None:
    before = os.sched_getaffinity(0)
    cpu = min(before)
    seen: dict[str, set[int]] = {}
    ready, release = threading.Event(), threading.Event()

    def worker() -> None:  # a thread that exists before pinning, like a runtime's pool thread
        ready.set()
        release.wait(5)
        seen["worker"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait(5)
    with pinned_cpus((cpu,)):
        seen["main"] = os.sched_getaffinity(0)
        release.set()
        thread.join(5)
    assert seen == {"main": {cpu}, "worker": {cpu}}
    assert os.sched_getaffinity(0) == before


@needs_affinity
def test_time_runs_pins_during_measurement_and_restores() -> None:
    before = os.sched_getaffinity(0)
    cpu = max(before)
    masks: list[set[int]] = []
    cfg = dataclasses.replace(FAST, cpus=(cpu,))
    time_runs(lambda: masks.append(os.sched_getaffinity(0)), cfg)
    assert masks and all(mask == {cpu} for mask in masks)
    assert os.sched_getaffinity(0) == before


@needs_affinity
def test_pinning_to_missing_cpus_names_them(conv_onnx: Path) -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(ValueError, match=r"4096"):
        measure_onnx(conv_onnx, dataclasses.replace(FAST, cpus=(4096,)))
    assert os.sched_getaffinity(0) == before


# ---------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_and_tracks_what_matters() -> None:
    env = current_environment()
    assert re.fullmatch(r"[0-9a-f]{12}", env.fingerprint)
    assert current_environment().fingerprint == env.fingerprint
    assert Environment.from_dict(json.loads(json.dumps(env.to_dict()))).fingerprint == env.fingerprint
    for field, value in [("onnxruntime", "0.0.1"), ("cpu_model", "Other CPU"), ("logical_cores", 512),
                         ("os", "Plan9"), ("executorch", None if env.executorch else "9.9"),
                         ("cpu_id", "GenuineIntel family 6 model 85 stepping 7")]:
        assert dataclasses.replace(env, **{field: value}).fingerprint != env.fingerprint, field


def test_records_without_a_cpu_id_keep_their_fingerprint() -> None:
    # A record written before cpu_id existed must hash as it did then (tables store the fingerprint they were built on).
    old = {"cpu_model": "AMD EPYC", "logical_cores": 2, "machine": "x86_64",
           "os": "Linux-6.18.44-fc-v595-x86_64-with-glibc2.36", "python": "3.11.7", "torch": "2.14.1",
           "onnx": "1.23.2", "onnxruntime": "1.31.1", "numpy": "2.4.6", "executorch": "1.5.1", "coremltools": "9.0"}
    assert Environment.from_dict(old).fingerprint == "1f98e0260358"  # as stored in tables of 2026-11-22
    assert Environment.from_dict({**old, "cpu_id": "x"}).fingerprint != "1f98e0260358"


X86_CPUINFO = """processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 1\nmodel name\t: AMD EPYC
stepping\t: 2\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 1\nstepping\t: 2\n"""
BIG_LITTLE_CPUINFO = "\n\n".join(
    f"processor\t: {i}\nBogoMIPS\t: 38.40\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\n"
    f"CPU part\t: {part}\nCPU revision\t: 0" for i, part in enumerate(["0xd05"] * 4 + ["0xd0d"] * 4)
) + "\n\nHardware\t: Qualcomm Technologies, Inc SM8150\n"


@pytest.mark.parametrize("text, cpu_id", [
    (X86_CPUINFO, "AuthenticAMD family 23 model 1 stepping 2"),
    (BIG_LITTLE_CPUINFO, "ARM 0x41:0xd05+0x41:0xd0d"),
    ("processor\t: 0\nmodel name\t: Something\n", None),
])
def test_cpu_id_from_cpuinfo(text: str, cpu_id: str | None) -> None:
    assert _cpu_id(text) == cpu_id


def test_measure_onnx_pools_the_samples_of_every_fresh_session(conv_onnx: Path, monkeypatch) -> None:
    created = []
    real = ort.InferenceSession

    def counting(*args, **kwargs):
        created.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counting)
    cfg = dataclasses.replace(FAST, runs=4, min_seconds=0.0, stable_rel_tol=None, max_runs=4, sessions=3)
    result = measure_onnx(conv_onnx, cfg)
    assert len(created) == 3 and result.n == 12
    with pytest.raises(ValueError, match="sessions"):
        BenchConfig(sessions=0)
