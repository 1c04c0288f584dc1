"""Devices: names, specs, the fast exporters, local ONNX Runtime / XNNPACK measurements of tiny modules, and the
remote device's retries against a stand-in agent on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from latency_tables.devices import (Device, DeviceError, DeviceInfo, OrtCpuDevice, RemoteDevice, XnnpackDevice, cpu_slug, export_onnx_fast,
                            get_device, local_device_name)
from common.environment import current_environment
from latency_tables.measure import BenchConfig, LatencyResult

FAST = BenchConfig(runs=5, warmup_runs=1, warmup_min_seconds=0, min_seconds=0, max_seconds=2.0)
TINY = [
    pytest.param(lambda: nn.Conv2d(8, 8, 3, padding=1), (1, 8, 8, 8), id="conv"),
    pytest.param(lambda: nn.Linear(16, 10), (1, 16), id="linear"),
]


ZEN1 = "AuthenticAMD family 23 model 1 stepping 2"


@pytest.mark.parametrize("model, cpu_id, slug", [
    ("AMD EPYC", None, "amd-epyc"),
    ("AMD EPYC", ZEN1, "amd-epyc-f23m1"),  # a hypervisor's masked name: the family/model tell generations apart
    ("AMD EPYC", "AuthenticAMD family 25 model 1 stepping 1", "amd-epyc-f25m1"),
    ("AMD EPYC 7763 64-Core Processor", ZEN1, "amd-epyc-7763"),  # a model number wins over the ids
    ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", None, "intel-xeon-8375c"),
    ("Apple M2 Pro", None, "apple-m2"),
    ("Qualcomm Technologies, Inc SM8150", "ARM 0x41:0xd05+0x41:0xd0d", "qualcomm-sm8150"),
    ("", None, "unknown-cpu"),
])
def test_cpu_slug(model: str, cpu_id: str | None, slug: str) -> None:
    assert cpu_slug(model, cpu_id) == slug


def test_local_device_name() -> None:
    env = current_environment()
    here = cpu_slug(env.cpu_model, env.cpu_id)
    assert local_device_name("ort", 1) == f"{here}-ort-t1"
    assert local_device_name("xnnpack", 4, "Apple M1") == "apple-m1-xnnpack-t4"
    assert re.fullmatch(r"[a-z0-9-]+", local_device_name("ort", 2))
    with pytest.raises(ValueError, match="'coreml'"):
        local_device_name("coreml", 1)
    with pytest.raises(ValueError, match="threads"):
        local_device_name("ort", 0)


def test_get_device_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    ort_dev = get_device("ort", threads=2)
    assert isinstance(ort_dev, OrtCpuDevice) and isinstance(ort_dev, Device)
    assert ort_dev.name.endswith("-ort-t2") and ort_dev.runtime == "onnxruntime-cpu"
    xnn = get_device("xnnpack")
    assert isinstance(xnn, XnnpackDevice) and xnn.runtime == "executorch-xnnpack"
    monkeypatch.setenv("MZOO_AGENT_TOKEN", "from-env")
    remote = get_device("http://10.0.0.2:8765/xnnpack", threads=4)
    assert isinstance(remote, RemoteDevice)  # not isinstance(.., Device): that reads .name, which asks the agent
    assert (remote.url, remote.short_runtime, remote.threads) == ("http://10.0.0.2:8765", "xnnpack", 4)
    assert "from-env" not in repr(remote)
    assert get_device("http://h:1", token="t").runtime == "onnxruntime-cpu"
    with pytest.raises(ValueError, match="'gpu'"):
        get_device("http://h:1/gpu", token="t")
    with pytest.raises(ValueError, match="'tflite'"):
        get_device("tflite")
    monkeypatch.delenv("MZOO_AGENT_TOKEN")
    with pytest.raises(ValueError, match="token"):
        get_device("http://h:1")


def test_device_info_round_trip() -> None:
    info = OrtCpuDevice().describe()
    assert info.fingerprint == current_environment().fingerprint
    assert info.runtime_version == current_environment().onnxruntime
    assert DeviceInfo.from_dict(info.to_dict()) == info


def test_export_onnx_fast_takes_the_torchscript_exporter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "Fast" is the TorchScript exporter (no dynamo tracing, no verification); a wall-clock bound would depend on
    # the CPU, so the test checks which exporter ran, and that its file is a loadable ONNX model.
    calls: list[bool] = []
    real_export = torch.onnx.export

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("dynamo")))
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", spy)
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()
    path = export_onnx_fast(model, (1, 8, 8, 8), tmp_path / "op.onnx")
    assert calls == [False]
    assert [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim] == [1, 8, 8, 8]


def _check_result(result: LatencyResult, shape: tuple[int, ...], runtime: str, label: str) -> None:
    assert result.runtime == runtime
    assert result.input_shape == shape
    assert result.model == label
    assert result.threads == 1 and result.config.threads == 1
    assert result.n >= FAST.runs and 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert result.environment.fingerprint == current_environment().fingerprint


@pytest.mark.parametrize("make, shape", TINY)
def test_ort_device_measures_tiny_modules(make, shape: tuple[int, ...]) -> None:
    cfg = BenchConfig(**{**FAST.__dict__, "threads": 2})  # the device's thread count wins
    result = OrtCpuDevice(threads=1).measure(make(), shape, cfg, label="tiny")
    _check_result(result, shape, "onnxruntime-cpu", "tiny")


def test_device_rejects_a_batch_other_than_the_protocol() -> None:
    with pytest.raises(ValueError, match="batch"):
        OrtCpuDevice().measure(nn.Linear(4, 2), (2, 4), FAST)
    with pytest.raises(ValueError, match="input_shape"):
        OrtCpuDevice().measure(nn.Linear(4, 2), (4,), FAST)


@pytest.mark.slow  # each ExecuTorch measurement imports ExecuTorch in a fresh process (~10-20 s on 2 cores)
@pytest.mark.parametrize("make, shape", TINY)
def test_xnnpack_device_measures_tiny_modules(make, shape: tuple[int, ...]) -> None:
    result = XnnpackDevice().measure(make(), shape, FAST)
    _check_result(result, shape, "executorch-xnnpack", type(make()).__name__)
    assert torch.get_num_threads() >= 1


# ------------------------------------------------------------------------------------- remote retries


class _FlakyAgent(ThreadingHTTPServer):
    """A stand-in agent on 127.0.0.1 that answers ``GET /v1/info`` with the given statuses, then 200."""

    daemon_threads = True

    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        self.statuses = statuses
        self.calls = 0


class _FlakyHandler(BaseHTTPRequestHandler):
    server: _FlakyAgent

    def do_GET(self) -> None:
        status = self.server.statuses[self.server.calls] if self.server.calls < len(self.server.statuses) else 200
        self.server.calls += 1
        payload = json.dumps({"error": "agent busy: the queue is full"} if status != 200 else {"ok": True}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def flaky_agent(statuses: list[int]) -> Iterator[_FlakyAgent]:
    server = _FlakyAgent(statuses)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_remote_device_retries_503_with_backoff(capsys: pytest.CaptureFixture[str]) -> None:
    with flaky_agent([503, 503]) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        start = time.monotonic()
        assert RemoteDevice(url, "t", retries=3, backoff_s=0.1, max_backoff_s=0.15).info() == {"ok": True}
        assert server.calls == 3 and 0.25 <= time.monotonic() - start < 5  # waited 0.1 s, then 0.15 s
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("busy (503)" in line and "retrying GET /v1/info" in line for line in err)
    assert "in 0.1 s (retry 1 of 3)" in err[0] and "in 0.15 s (retry 2 of 3)" in err[1]


def test_remote_device_gives_up_after_its_retries() -> None:
    with flaky_agent([503] * 10) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(DeviceError, match=r"busy \(503\).*gave up after 3 tries"):
            RemoteDevice(url, "t", retries=2, backoff_s=0.01).info()
        assert server.calls == 3
    with flaky_agent([401, 500]) as server:  # refusals that asking again cannot cure are not retried
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(DeviceError, match="401"):
            RemoteDevice(url, "t", backoff_s=0.01).info()
        assert server.calls == 1


def test_remote_device_retries_a_refused_connection(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(DeviceError, match="connection refused.*gave up after 3 tries"):
        RemoteDevice(f"http://127.0.0.1:{port}", "t", retries=2, backoff_s=0.01).info()
    assert capsys.readouterr().err.count("retrying GET /v1/info") == 2
    with pytest.raises(ValueError, match="retries"):
        RemoteDevice(f"http://127.0.0.1:{port}", "t", retries=-1)
    with pytest.raises(ValueError, match="backoff"):
        RemoteDevice(f"http://127.0.0.1:{port}", "t", backoff_s=5, max_backoff_s=1)
