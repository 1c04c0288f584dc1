"""The device agent on 127.0.0.1: auth, limits, hostile uploads, queueing, timeouts, and RemoteDevice against it."""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping

import pytest
from torch import nn

from latency_tables.agent import FINISHED_HEADER, STARTED_HEADER, AgentConfig, AgentServer, agent_config_from_args, start_agent
from latency_tables.devices import CONFIG_HEADER, DeviceError, RemoteDevice, export_onnx_fast
from latency_tables.measure import BenchConfig

TOKEN = "s3cret-token"
FAST = BenchConfig(runs=5, warmup_runs=1, warmup_min_seconds=0, min_seconds=0, max_seconds=1.0)
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentServer]:
    with start_agent(TOKEN, max_upload_bytes=LIMIT, read_timeout_s=1.0, measure_timeout_s=120.0) as server:
        yield server


@pytest.fixture(scope="module")
def conv_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("agent") / "conv.onnx"
    return export_onnx_fast(nn.Conv2d(8, 8, 3, padding=1), (1, 8, 8, 8), path).read_bytes()


def post(server: AgentServer, body: bytes, *, runtime: str = "ort", token: str = TOKEN, label: str = "",
         config: Mapping[str, object] | str | None = None, headers: Mapping[str, str] | None = None,
         path: str = "/v1/measure") -> tuple[int, dict, Mapping[str, str]]:
    """A raw POST; returns (status, JSON body, headers)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    query = urllib.parse.urlencode({"runtime": runtime, **({"label": label} if label else {})})
    all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
    if config is not None:
        all_headers[CONFIG_HEADER] = config if isinstance(config, str) else json.dumps(config)
    conn.request("POST", f"{path}?{query}", body=body, headers=all_headers)
    response = conn.getresponse()
    data = json.loads(response.read())
    conn.close()
    return response.status, data, dict(response.getheaders())


FAST_JSON = dataclasses.asdict(FAST)


# ------------------------------------------------------------------------------------------- happy path


def test_remote_device_happy_path(agent: AgentServer) -> None:
    device = RemoteDevice(agent.url, TOKEN)
    info = device.describe()
    assert info.environment.to_dict() == agent.info()["environment"]
    assert info.fingerprint == info.environment.fingerprint and info.runtime == "onnxruntime-cpu"
    assert device.name == info.name and info.name.endswith("-ort-t1")
    result = device.measure(nn.Linear(16, 10), (1, 16), FAST, label="fc")
    assert result.model == "fc" and result.input_shape == (1, 16) and result.runtime == "onnxruntime-cpu"
    assert result.environment == info.environment and result.n >= FAST.runs
    assert list(agent.workdir.iterdir()) == [], "uploads and answers must be deleted"


def test_remote_device_errors_are_clear(agent: AgentServer) -> None:
    with pytest.raises(DeviceError, match="401"):
        RemoteDevice(agent.url, "wrong-token").describe()
    with pytest.raises(DeviceError, match="413"):  # ~300 KB of weights > the 64 KiB limit
        RemoteDevice(agent.url, TOKEN).measure(nn.Conv2d(64, 128, 3), (1, 64, 8, 8), FAST)
    with pytest.raises(DeviceError, match="connection refused"):  # retried elsewhere (test_devices.py)
        RemoteDevice("http://127.0.0.1:1", TOKEN, retries=0).describe()
    with pytest.raises(DeviceError, match="exceeds this machine"):
        RemoteDevice(agent.url, TOKEN, threads=4096).measure(nn.Linear(4, 2), (1, 4), FAST)


# ---------------------------------------------------------------------------------- refusals (no child)


def test_wrong_or_missing_token_is_401(agent: AgentServer, conv_bytes: bytes) -> None:
    assert post(agent, conv_bytes, token="nope")[0] == 401
    conn = http.client.HTTPConnection("127.0.0.1", agent.server_address[1], timeout=10)
    conn.request("GET", "/v1/info")
    response = conn.getresponse()
    assert response.status == 401 and "token" in json.loads(response.read())["error"]


def test_oversize_upload_is_413_before_reading(agent: AgentServer) -> None:
    status, data, _ = post(agent, b"\0" * (LIMIT + 1))
    assert status == 413 and str(LIMIT) in data["error"]


def test_missing_length_is_411(agent: AgentServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.server_address[1], timeout=10)
    conn.putrequest("POST", "/v1/measure?runtime=ort")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]


@pytest.mark.parametrize("runtime, body, kwargs, status, message", [
    ("ort", b"\x08\x07garbage" * 50, {}, 400, "not a valid ONNX"),
    ("ort", "TRUNCATED", {}, 400, "not a valid ONNX"),
    ("xnnpack", b"PK\x03\x04" + b"\0" * 60, {}, 415, "not an ExecuTorch program"),
    ("xnnpack", b"\0" * 4 + b"ET12eh00" + b"\0" * 8 + (10**6).to_bytes(8, "little") + b"\0" * 16, {}, 400,
     "truncated"),
    ("tflite", "CONV", {}, 400, "unknown runtime"),
    ("ort", "CONV", {"config": "{not json"}, 400, CONFIG_HEADER),
    ("ort", "CONV", {"config": {"runs": 0}}, 400, "BenchConfig.runs"),
    ("ort", "CONV", {"config": {"hack": 1}}, 400, "hack"),
    ("ort", "CONV", {"config": {**FAST_JSON, "max_seconds": 1e4}}, 400, "stops a measurement"),
    ("ort", "CONV", {"label": "../../etc/passwd"}, 400, "label"),
    ("ort", "CONV", {"path": "/v1/other"}, 404, "no endpoint"),
])
def test_hostile_requests_are_refused_and_the_agent_keeps_serving(
        agent: AgentServer, conv_bytes: bytes, runtime: str, body: bytes | str, kwargs: dict, status: int,
        message: str) -> None:
    data = {"CONV": conv_bytes, "TRUNCATED": conv_bytes[: len(conv_bytes) // 2]}.get(body, body) \
        if isinstance(body, str) else body
    got, answer, _ = post(agent, data, runtime=runtime, **kwargs)
    assert (got, message in answer["error"]) == (status, True), answer
    assert info_of(agent)["api_version"] == 1


def info_of(server: AgentServer) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", "/v1/info", headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    assert response.status == 200
    return json.loads(response.read())


def test_stalled_upload_times_out_with_408(agent: AgentServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.server_address[1], timeout=10)
    conn.putrequest("POST", "/v1/measure?runtime=ort")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", "1000")
    conn.endheaders(b"only ten b")
    start = time.perf_counter()
    response = conn.getresponse()
    assert response.status == 408 and time.perf_counter() - start < 5


def test_agent_refuses_an_empty_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="token"):
        AgentConfig(token="  ")
    import argparse

    from latency_tables.agent_config import add_agent_arguments

    parser = argparse.ArgumentParser()
    add_agent_arguments(parser)
    monkeypatch.delenv("MZOO_AGENT_TOKEN", raising=False)
    with pytest.raises(ValueError, match="token"):
        agent_config_from_args(parser.parse_args([]))
    monkeypatch.setenv("MZOO_AGENT_TOKEN", "env-token")
    assert agent_config_from_args(parser.parse_args(["--port", "0"])).token == "env-token"


# ---------------------------------------------------------------------------------------- measurements


def test_garbage_then_good_request(agent: AgentServer, conv_bytes: bytes) -> None:
    assert post(agent, b"\xff" * 1000, config=FAST_JSON)[0] == 400
    status, data, _ = post(agent, conv_bytes, config=FAST_JSON, label="conv@8")
    assert status == 200 and data["model"] == "conv@8" and data["input_shape"] == [1, 8, 8, 8]


def test_concurrent_requests_are_serialised(agent: AgentServer, conv_bytes: bytes) -> None:
    answers: list[tuple[int, dict, Mapping[str, str]]] = []
    threads = [threading.Thread(target=lambda: answers.append(post(agent, conv_bytes, config=FAST_JSON)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [a[0] for a in answers] == [200, 200]
    (s1, f1), (s2, f2) = sorted((float(h[STARTED_HEADER]), float(h[FINISHED_HEADER])) for _, _, h in answers)
    assert s1 < f1 <= s2 < f2, "the two measurements overlapped in time"


def test_queue_timeout_is_503(conv_bytes: bytes) -> None:
    with start_agent(TOKEN, queue_timeout_s=0.3, measure_timeout_s=60.0) as server:
        slow = {**FAST_JSON, "cooldown_seconds": 2.0}  # holds the measurement slot for > 2 s
        first: list[int] = []
        thread = threading.Thread(target=lambda: first.append(post(server, conv_bytes, config=slow)[0]))
        thread.start()
        time.sleep(0.5)
        status, data, _ = post(server, conv_bytes, config=FAST_JSON)
        thread.join(60)
    assert status == 503 and "busy" in data["error"]
    assert first == [200]


def test_measurement_timeout_is_504_and_the_child_is_stopped(conv_bytes: bytes) -> None:
    # Starting Python and importing ONNX Runtime and torch alone takes longer than 0.3 s.
    with start_agent(TOKEN, measure_timeout_s=0.3) as server:
        cfg = {**FAST_JSON, "max_seconds": 0.1}
        status, data, _ = post(server, conv_bytes, config=cfg)
        assert status == 504 and "0.3 s" in data["error"]
        assert list(server.workdir.iterdir()) == []


def test_xnnpack_via_the_agent(agent: AgentServer) -> None:
    device = RemoteDevice(agent.url, TOKEN, runtime="xnnpack")
    assert device.describe().runtime == "executorch-xnnpack"
    result = device.measure(nn.Linear(16, 10), (1, 16), FAST)
    assert result.runtime == "executorch-xnnpack" and result.input_shape == (1, 16) and result.model == "Linear"
    assert result.environment.fingerprint == agent.info()["fingerprint"]


def test_litert_via_the_agent_and_what_is_not_a_tflite_file_is_refused(agent: AgentServer, conv_bytes: bytes) -> None:
    pytest.importorskip("litert_torch", reason="the android extra is not installed")
    device = RemoteDevice(agent.url, TOKEN, runtime="litert")
    assert device.describe().runtime == "litert-xnnpack" and device.name.endswith("-litert-t1")
    result = device.measure(nn.Linear(16, 10), (1, 16), FAST, label="fc")
    assert result.runtime == "litert-xnnpack" and result.input_shape == (1, 16) and result.model == "fc"
    assert result.environment.fingerprint == agent.info()["fingerprint"] and result.n >= FAST.runs
    status, data, _ = post(agent, conv_bytes, runtime="litert", config=FAST_JSON)  # an ONNX file, named LiteRT
    assert status == 415 and "not a LiteRT model" in data["error"]
    status, data, _ = post(agent, b"\x10\x00\x00\x00TFL3" + b"\x00" * 8, runtime="litert", config=FAST_JSON)
    assert status == 400 and "truncated LiteRT model" in data["error"]
    assert list(agent.workdir.iterdir()) == []
