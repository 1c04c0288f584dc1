"""The device agent's limits on 127.0.0.1 (issue #20): memory cap of the measuring child, admission before the body
is read, whole-request deadlines, the connection cap, cancelling abandoned work, configurable queue and client
retries, hostile headers, redacted logs, and a clean SIGTERM. Every test is bounded in time (socket timeouts,
short limits set through the new options) and in memory (tiny models; the big one is stopped by the cap)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from onnx import TensorProto, helper
from torch import nn

from latency_tables.agent import AgentServer, start_agent
from latency_tables.agent_config import add_agent_arguments, agent_config_from_args
from latency_tables.devices import CONFIG_HEADER, RemoteDevice, export_onnx_fast
from latency_tables.measure import BenchConfig

TOKEN = "s3cret-token"
FAST = dataclasses.asdict(BenchConfig(runs=5, warmup_runs=1, warmup_min_seconds=0, min_seconds=0, max_seconds=1.0))
ROOT = Path(__file__).resolve().parents[2]
# Linux lists a process's children in /proc (CONFIG_PROC_CHILDREN): how the tests see that a child was killed.
NO_PROC_CHILDREN = not Path(f"/proc/self/task/{os.getpid()}/children").exists()


@pytest.fixture(scope="module")
def conv_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("limits") / "conv.onnx"
    return export_onnx_fast(nn.Conv2d(8, 8, 3, padding=1), (1, 8, 8, 8), path).read_bytes()


def port_of(server: AgentServer) -> int:
    return server.server_address[1]


def request_bytes(body: bytes = b"", *, length: str | None = None, query: str = "runtime=ort",
                  extra: str = "", method: str = "POST", path: str = "/v1/measure") -> bytes:
    head = f"{method} {path}?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{extra}"
    if method == "POST":
        head += f"Content-Length: {len(body) if length is None else length}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


def answer_of(sock: socket.socket) -> tuple[int, dict]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read() or b"{}")


def exchange(server: AgentServer, data: bytes, timeout: float = 10.0) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=timeout) as sock:
        sock.sendall(data)
        return answer_of(sock)


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def child_pids(pid: int) -> set[int]:
    """Direct children of process ``pid`` (Linux /proc; every thread's list)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ----------------------------------------------------------------------------------------- memory cap


def constant_of_shape_model(elements: int) -> bytes:
    """A 200-byte model that asks for ``elements`` float32s when it runs (ORT folds or runs ConstantOfShape)."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [elements])
    nodes = [helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("ConstantOfShape", ["s"], ["big"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["r"], keepdims=0),
             helper.make_node("Add", ["x", "r"], ["y"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")
def test_measuring_child_is_memory_capped() -> None:
    # 1 GiB asked for, 256 MiB allowed on top of the loaded runtime: the allocation fails in the child, which answers.
    with start_agent(TOKEN, child_memory_mb=256, measure_timeout_s=120.0) as server:
        status, data = exchange(server, request_bytes(constant_of_shape_model(2**28),
                                                      extra=f"{CONFIG_HEADER}: {json.dumps(FAST)}\r\n"), timeout=120)
        assert status == 507, data
        assert "256 MiB" in data["error"] and "--child-memory-mb" in data["error"]
        assert server.info()["child_memory_mb"] == 256
        assert list(server.workdir.iterdir()) == []


# --------------------------------------------------------------------- admission before the body is read


def test_full_queue_is_refused_before_the_body_is_read(conv_bytes: bytes) -> None:
    with start_agent(TOKEN, max_queue=2, read_timeout_s=5.0, header_timeout_s=5.0, upload_timeout_s=10.0) as server, \
            server.admission(), server.measurement_slot():  # this test holds the measurement in progress
        queued = [socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) for _ in range(2)]
        try:
            for sock in queued:
                sock.sendall(request_bytes(conv_bytes, extra=f"{CONFIG_HEADER}: {json.dumps(FAST)}\r\n"))
            assert wait_until(lambda: server.activity()["admitted"] == 3, 5), server.activity()
            # Queue full: refused at once, without waiting for (or buffering) the 10 MB it announces.
            start = time.monotonic()
            status, data = exchange(server, request_bytes(length=str(10 * 2**20)))
            assert (status, time.monotonic() - start < 3) == (503, True), data
            assert "--max-queue" in data["error"]
            queued_files = [p for p in server.workdir.rglob("model.onnx")]
            assert [p.stat().st_size for p in queued_files] == [len(conv_bytes)] * 2  # on disk while queued
        finally:
            for sock in queued:
                sock.close()
        # Clients that leave the queue are dropped at once; their uploads are deleted.
        assert wait_until(lambda: server.activity()["admitted"] == 1, 3), server.activity()
        assert wait_until(lambda: list(server.workdir.iterdir()) == [], 3)


# ------------------------------------------------------------------------------------- slow clients


def test_header_deadline_is_per_request_not_per_read() -> None:
    with start_agent(TOKEN, header_timeout_s=1.0, read_timeout_s=5.0) as server, \
            socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as sock:
        start = time.monotonic()
        closed_after = None
        for byte in b"GET /v1/info HTTP/1.1\r\nX-Slow: " + b"a" * 100:  # one byte every 0.2 s: never finishes
            try:
                sock.sendall(bytes([byte]))
                sock.settimeout(0.2)
                if sock.recv(1 << 16) == b"":
                    closed_after = time.monotonic() - start
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - start
                break
            if time.monotonic() - start > 8:
                break
        assert closed_after is not None and closed_after < 3.0, closed_after


def test_upload_deadline_covers_headers_and_body() -> None:
    with start_agent(TOKEN, header_timeout_s=1.0, upload_timeout_s=1.5, read_timeout_s=5.0) as server, \
            socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(request_bytes(length="1000"))
        for _ in range(40):  # a byte every 0.2 s: each renews the silence timeout, none the deadline
            sock.sendall(b"x")
            sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                if sock.recv(1, socket.MSG_PEEK):
                    break
        sock.settimeout(5)
        status, data = answer_of(sock)
        assert status == 408 and "--upload-timeout" in data["error"], data
        assert time.monotonic() - start < 4


def test_connection_cap_bounds_threads_and_answers_503() -> None:
    with start_agent(TOKEN, max_connections=2, header_timeout_s=5.0) as server:
        threads_before = threading.active_count()
        held = [socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) for _ in range(2)]
        try:
            assert wait_until(lambda: server.activity()["connections"] == 2, 3)
            refused = 0
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as sock:
                    status, data = answer_of(sock)
                    refused += status == 503 and "--max-connections" in data["error"]
            assert refused == 20
            assert threading.active_count() - threads_before <= 2
        finally:
            for sock in held:
                sock.close()
        assert wait_until(lambda: server.activity()["connections"] == 0, 3)
        assert exchange(server, request_bytes(method="GET", path="/v1/info", query=""))[0] == 200


# ----------------------------------------------------------------------------- abandoned measurements


@pytest.mark.skipif(NO_PROC_CHILDREN, reason="needs /proc/PID/task/TID/children")
def test_measurement_of_a_vanished_client_is_cancelled(conv_bytes: bytes) -> None:
    slow = {**FAST, "cooldown_seconds": 30.0}  # holds the child for > 30 s unless it is stopped
    with start_agent(TOKEN, measure_timeout_s=60.0) as server:
        sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=10)
        try:
            sock.sendall(request_bytes(conv_bytes, extra=f"{CONFIG_HEADER}: {json.dumps(slow)}\r\n"))
            assert wait_until(lambda: server.activity()["children"] == 1, 30), server.activity()
            children = child_pids(os.getpid())
        finally:
            sock.close()  # the client gives up
        start = time.monotonic()
        assert wait_until(lambda: server.activity() == {"connections": 0, "admitted": 0, "measuring": False,
                                                         "children": 0}, 5), server.activity()
        assert time.monotonic() - start < 3
        assert not any(alive(pid) for pid in children - child_pids(os.getpid()))
        assert list(server.workdir.iterdir()) == []


# ------------------------------------------------------------------------------- queue option, retries


def test_agent_limit_options_and_their_bounds() -> None:
    parser = argparse.ArgumentParser()
    add_agent_arguments(parser)
    config = agent_config_from_args(parser.parse_args(["--token", "t"]))
    assert (config.max_queue, config.max_connections, config.child_memory_mb) == (8, 32, 2048)
    assert (config.header_timeout_s, config.upload_timeout_s, config.read_timeout_s) == (10.0, 300.0, 30.0)
    config = agent_config_from_args(parser.parse_args(["--token", "t", "--max-queue", "0", "--max-connections", "3",
                                                       "--child-memory-mb", "512", "--header-timeout", "2",
                                                       "--upload-timeout", "60"]))
    assert (config.max_queue, config.max_connections, config.child_memory_mb) == (0, 3, 512)
    assert (config.header_timeout_s, config.upload_timeout_s) == (2.0, 60.0)
    for argv, flag in [(["--max-queue", "-1"], "--max-queue"), (["--max-connections", "0"], "--max-connections"),
                       (["--child-memory-mb", "10"], "--child-memory-mb"), (["--header-timeout", "0"], "--header-timeout"),
                       (["--upload-timeout", "nan"], "--upload-timeout"), (["--read-timeout", "1e9"], "--read-timeout"),
                       (["--header-timeout", "20", "--upload-timeout", "5"], "--upload-timeout")]:
        with pytest.raises(ValueError, match=flag) as caught:
            agent_config_from_args(parser.parse_args(["--token", "t", *argv]))
        assert "\n" not in str(caught.value)


def test_client_retries_a_busy_agent(capsys: pytest.CaptureFixture[str]) -> None:
    with start_agent(TOKEN, max_connections=1, header_timeout_s=5.0) as server:
        held = socket.create_connection(("127.0.0.1", port_of(server)), timeout=5)
        assert wait_until(lambda: server.activity()["connections"] == 1, 3)
        threading.Timer(0.5, held.close).start()
        info = RemoteDevice(server.url, TOKEN, backoff_s=0.2, max_backoff_s=0.5, retries=10).info()
    assert info["max_queue"] == 8
    err = capsys.readouterr().err
    assert "retrying GET /v1/info" in err and "busy (503)" in err and "--max-connections" in err


# --------------------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("value", ["²", "1_000", "+5", "0x10", "-1"])
def test_content_length_must_be_ascii_digits(value: str) -> None:
    with start_agent(TOKEN) as server:
        status, data = exchange(server, request_bytes(b"", length=value))
        assert status == 400 and "Content-Length" in data["error"], data


def test_duplicate_content_length_is_refused() -> None:
    with start_agent(TOKEN) as server:
        status, data = exchange(server, request_bytes(b"abcd", extra="Content-Length: 4\r\n"))
        assert status == 400 and "Content-Length" in data["error"], data


def test_deeply_nested_bench_config_is_400(conv_bytes: bytes) -> None:
    with start_agent(TOKEN) as server:
        for deep in ("[" * 20000 + "]" * 20000, "[" * 2000 + "]" * 2000):
            status, data = exchange(server, request_bytes(conv_bytes, extra=f"{CONFIG_HEADER}: {deep}\r\n"))
            assert status == 400 and CONFIG_HEADER in data["error"], data


def external_data_model(location: str) -> bytes:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_external_data_answers_do_not_reveal_which_files_exist(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "exists.bin").write_bytes(b"\0" * 4)
    monkeypatch.chdir(tmp_path)  # the agent's working directory
    with start_agent(TOKEN) as server:
        answers = {location: exchange(server, request_bytes(external_data_model(location)))
                   for location in ("exists.bin", "missing.bin", "../missing.bin", str(tmp_path / "exists.bin"))}
    assert len({json.dumps(a, sort_keys=True) for a in answers.values()}) == 1, answers
    assert next(iter(answers.values()))[0] == 400


def test_a_token_in_the_query_string_is_not_logged(capsys: pytest.CaptureFixture[str]) -> None:
    with start_agent(TOKEN) as server:
        for query in (f"token={TOKEN}", "runtime=ort&access_token=abcdef&label=x"):
            conn = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=10)
            conn.request("GET", f"/v1/info?{query}")
            assert conn.getresponse().status == 401
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=10)
        conn.request("GET", f"/v1/{TOKEN}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert conn.getresponse().status == 404
        conn.close()
    err = capsys.readouterr().err
    assert TOKEN not in err and "abcdef" not in err
    assert "token=[redacted]" in err and "runtime=ort" in err and "label=x" in err


# ------------------------------------------------------------------------------------------- SIGTERM


@pytest.mark.skipif(NO_PROC_CHILDREN, reason="needs /proc/PID/task/TID/children")
def test_sigterm_stops_the_measurement_and_deletes_the_upload_directory(tmp_path: Path, conv_bytes: bytes) -> None:
    env = {**os.environ, "MZOO_AGENT_TOKEN": TOKEN, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    agent = subprocess.Popen([sys.executable, "-m", "mzoo", "agent", "--port", "0", "--measure-timeout", "60"],
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=tmp_path, text=True)
    sock = None
    try:
        url = next(line for line in iter_lines(agent, 60) if "serving http://" in line).split()[3]
        port = int(url.rsplit(":", 1)[1])
        assert len(list(tmp_path.glob("mzoo-agent-*"))) == 1
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow = {**FAST, "cooldown_seconds": 30.0}
        sock.sendall(request_bytes(conv_bytes, extra=f"{CONFIG_HEADER}: {json.dumps(slow)}\r\n"))
        assert wait_until(lambda: bool(child_pids(agent.pid)), 30), "no measuring child started"
        children = child_pids(agent.pid)
        start = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
        assert time.monotonic() - start < 3
        assert list(tmp_path.glob("mzoo-agent-*")) == []
        assert wait_until(lambda: not any(alive(pid) for pid in children), 2)
    finally:
        if sock is not None:
            sock.close()
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def iter_lines(process: subprocess.Popen[str], seconds: float) -> Iterator[str]:
    """Lines of ``process``'s stderr, for at most ``seconds`` (a reader thread: a pipe read cannot time out)."""
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        lines.extend(process.stderr)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    deadline, seen = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        while seen < len(lines):
            seen += 1
            yield lines[seen - 1]
        if done.is_set() and seen == len(lines):
            return
        time.sleep(0.05)
    raise TimeoutError(f"no expected line within {seconds} s; got {lines}")
