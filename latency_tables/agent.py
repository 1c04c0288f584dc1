"""The remote device agent: a small token-protected HTTP server (``mzoo agent``) that a user starts on the
machine to be measured (a phone under Termux, a Raspberry Pi, a Mac) so that :class:`latency_tables.devices.RemoteDevice`
can time artefacts there.

Owns the wire protocol (``GET /v1/info``; ``POST /v1/measure?runtime=ort|xnnpack`` with the artefact as the body
and the ``BenchConfig`` as JSON in the ``X-Mzoo-Bench-Config`` header, answered with ``LatencyResult`` JSON) and the
agent's defences: bearer-token auth compared in constant time, the upload size checked from Content-Length before
anything is read, socket and per-measurement timeouts, one measurement at a time with a bounded queue, uploads
checked for their format before a runtime sees them, artefacts stored under names the agent chooses in a private
temporary directory and deleted afterwards, and every measurement in a fresh subprocess so that a runtime that
aborts takes only that process down. Errors are JSON ``{"error": "..."}``; each request logs one line to stderr.
Only ONNX Runtime and ExecuTorch/XNNPACK are served (a Core ML runtime would need macOS and is not implemented).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hmac
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from common.errors import InputError, MzooError
from latency_tables.devices import API_PREFIX, ARTEFACT_SUFFIX, CONFIG_HEADER, RUNTIMES, TOKEN_ENV
from common.environment import current_environment
from export.errors import ExportError, one_line
from common.files import write_json_atomic
from latency_tables.measure import BenchConfig, LatencyResult

API_VERSION = 1
DEFAULT_PORT = 8765
STARTED_HEADER = "X-Mzoo-Measure-Started"  # wall-clock seconds (time.time) around the measuring subprocess
FINISHED_HEADER = "X-Mzoo-Measure-Finished"
_LABEL = re.compile(r"[A-Za-z0-9_.@:+=,-]{1,200}")
_PTE_MAGIC_OFFSET = 4
_MIN_PTE_BYTES = 32
_STDERR_TAIL_LINES = 3
# A refused upload is discarded for at most this long / this much so that the client can read the refusal.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 64 * 2**20
# The measuring subprocess imports the runtime before timing: seconds for ONNX Runtime, much more for ExecuTorch.
_CHILD_COMMAND = "import sys; from latency_tables.agent import _child_main; sys.exit(_child_main(sys.argv[1:]))"


MAX_UPLOAD_MB = 4096  # larger than any mobile model; the body is written to disk before it is measured


@dataclass(frozen=True)
class AgentConfig:
    """How the agent listens and what it accepts. ``port`` 0 picks a free port (tests)."""

    token: str
    host: str = "127.0.0.1"  # this machine only; listening on a network is the user's explicit choice (--host)
    port: int = DEFAULT_PORT
    max_upload_bytes: int = 256 * 2**20
    read_timeout_s: float = 30.0  # per socket operation while a request is read or a response written
    measure_timeout_s: float = 600.0  # one measuring subprocess, from start to its result
    queue_timeout_s: float = 600.0  # how long a request waits for the measurement in progress
    max_queue: int = 8  # requests waiting for the measurement lock; more are refused with 503 at once

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token.strip():
            raise InputError(f"the agent needs a non-empty token (--token or ${TOKEN_ENV}); refusing to start")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InputError(f"agent port must be in 0..65535, got {self.port!r}")
        if not isinstance(self.max_upload_bytes, int) or self.max_upload_bytes < 1:
            raise InputError(f"max_upload_bytes must be a positive int, got {self.max_upload_bytes!r}")
        for name in ("read_timeout_s", "measure_timeout_s", "queue_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"agent {name} must be a finite number > 0, got {value!r}")
        if not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise InputError(f"agent max_queue must be an int >= 0, got {self.max_queue!r}")


class AgentError(MzooError):
    """A request the agent refuses or could not serve: the HTTP status and a one-line message for the client."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def available_runtimes() -> dict[str, dict[str, str | None]]:
    """The runtimes this machine can serve (without importing them: ExecuTorch takes seconds to import)."""
    found: dict[str, dict[str, str | None]] = {}
    for short, package, distribution in (("ort", "onnxruntime", "onnxruntime"), ("xnnpack", "executorch", "executorch")):
        if importlib.util.find_spec(package) is not None:
            found[short] = {"runtime": RUNTIMES[short], "version": _version(distribution)}
    return found


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


class AgentServer(ThreadingHTTPServer):
    """The agent: a threading HTTP server whose measurements run one at a time in subprocesses.

    Use as a context manager, or call ``close()``: it stops serving and deletes the private upload directory.
    """

    daemon_threads = True

    def __init__(self, config: AgentConfig) -> None:
        super().__init__((config.host, config.port), _Handler)
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="mzoo-agent-"))  # mode 0700: private to this user
        self._measure_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._waiting = 0
        self._serving: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{port}"

    def start(self) -> AgentServer:
        """Serve in a background thread (tests, embedding); ``run_agent`` serves in the foreground instead."""
        self._serving = threading.Thread(target=self.serve_forever, name="mzoo-agent", daemon=True)
        self._serving.start()
        return self

    def close(self) -> None:
        if self._serving is not None:
            self.shutdown()
            self._serving.join()
            self._serving = None
        self.server_close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> AgentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        env = current_environment()
        return {
            "api_version": API_VERSION,
            "fingerprint": env.fingerprint,
            "environment": env.to_dict(),
            "runtimes": available_runtimes(),
            "max_upload_bytes": self.config.max_upload_bytes,
            "measure_timeout_s": self.config.measure_timeout_s,
        }

    @contextlib.contextmanager
    def measurement_slot(self) -> Iterator[None]:
        """Hold the one measurement slot; ``AgentError`` 503 when the queue is full or the wait times out."""
        with self._queue_lock:
            if self._waiting >= self.config.max_queue and self._measure_lock.locked():
                raise AgentError(HTTPStatus.SERVICE_UNAVAILABLE,
                                 f"agent busy: {self._waiting} requests already wait for the measurement in progress")
            self._waiting += 1
        try:
            acquired = self._measure_lock.acquire(timeout=self.config.queue_timeout_s)
        finally:
            with self._queue_lock:
                self._waiting -= 1
        if not acquired:
            raise AgentError(HTTPStatus.SERVICE_UNAVAILABLE,
                             f"agent busy: waited {self.config.queue_timeout_s:g} s for the measurement in progress")
        try:
            yield
        finally:
            self._measure_lock.release()


def start_agent(token: str, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> AgentServer:
    """Start an agent serving in a background thread (``port`` 0: a free port; read ``.url``). Close it after."""
    return AgentServer(AgentConfig(token=token, host=host, port=port, **options)).start()


# ---------------------------------------------------------------------------------------------- handler


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = f"mzoo-agent/{API_VERSION}"

    def setup(self) -> None:
        super().setup()
        # Every blocking read and write on this connection gives up after this long (slow or stalled clients).
        self.connection.settimeout(self.server.config.read_timeout_s)
        self._started = time.perf_counter()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._serve(self._post)

    def _serve(self, handler: Any) -> None:
        try:
            handler()
        except AgentError as err:
            self._send_json(err.status, {"error": str(err)})
            if self.close_connection:
                self._linger()
        except TimeoutError:
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may be gone as well as stalled
                self._send_json(HTTPStatus.REQUEST_TIMEOUT, {"error": "the request was not received within "
                                                             f"{self.server.config.read_timeout_s:g} s"})
        except ConnectionError:
            self.close_connection = True  # the client is gone; nothing can be sent
            self.log_message('"%s" dropped: client disconnected', self.requestline)
        except Exception as err:  # the agent must keep serving whatever one request did
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"agent error: {one_line(err)}"})

    # ----------------------------------------------------------------------------------------- endpoints

    def _get(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        self._authorize()
        if path != f"{API_PREFIX}/info":
            raise AgentError(HTTPStatus.NOT_FOUND, f"no endpoint GET {path}")
        self._send_json(HTTPStatus.OK, self.server.info())

    def _post(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        self._authorize()
        if parts.path != f"{API_PREFIX}/measure":
            raise AgentError(HTTPStatus.NOT_FOUND, f"no endpoint POST {parts.path}")
        length = self._content_length()
        try:
            runtime, label, cfg = self._parse_request(parts.query)
        except AgentError:
            self._drain(length)  # a well-sized body is read so that the client can read the answer
            raise
        body = self._read_body(length)
        suffix = ARTEFACT_SUFFIX[runtime]
        _check_artefact(runtime, body)
        path = self.server.workdir / f"{uuid.uuid4().hex}{suffix}"
        try:
            path.write_bytes(body)
            del body
            with self.server.measurement_slot():
                started = time.time()
                result = _measure_in_subprocess(runtime, path, cfg, self.server.config.measure_timeout_s)
                finished = time.time()
        finally:
            for leftover in self.server.workdir.glob(f"{path.stem}*"):
                leftover.unlink(missing_ok=True)
        result = dataclasses.replace(result, model=label or f"upload{suffix}")
        self._send_json(HTTPStatus.OK, result.to_dict(),
                        {STARTED_HEADER: f"{started:.6f}", FINISHED_HEADER: f"{finished:.6f}"})

    # ------------------------------------------------------------------------------------------- checks

    def _authorize(self) -> None:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server.config.token}"
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
            self.close_connection = True  # the body of an unauthenticated client is never read
            raise AgentError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")

    def _content_length(self) -> int:
        value = self.headers.get("Content-Length")
        if value is None:
            self.close_connection = True
            raise AgentError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if not value.isdigit():
            self.close_connection = True
            raise AgentError(HTTPStatus.BAD_REQUEST, f"Content-Length {value[:40]!r} is not a byte count")
        length = int(value)
        if length > self.server.config.max_upload_bytes:
            self.close_connection = True  # checked before reading: the oversized body is never read
            raise AgentError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"upload of {length} bytes exceeds this agent's limit of "
                             f"{self.server.config.max_upload_bytes} bytes")
        if length == 0:
            raise AgentError(HTTPStatus.BAD_REQUEST, "empty upload: the artefact is the request body")
        return length

    def _parse_request(self, query: str) -> tuple[str, str, BenchConfig]:
        try:
            params = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=bool(query),
                                           max_num_fields=8)
        except ValueError as err:
            raise AgentError(HTTPStatus.BAD_REQUEST, f"malformed query string: {err}") from None
        unknown = set(params) - {"runtime", "label"}
        if unknown:
            raise AgentError(HTTPStatus.BAD_REQUEST, f"unknown query parameters {sorted(unknown)}")
        runtime = _single(params, "runtime", "ort")
        if runtime not in RUNTIMES:
            raise AgentError(HTTPStatus.BAD_REQUEST, f"unknown runtime {runtime[:40]!r}; choose one of {sorted(RUNTIMES)}")
        available = available_runtimes()
        if runtime not in available:
            raise AgentError(HTTPStatus.BAD_REQUEST, f"runtime {runtime!r} is not installed on this agent "
                                                     f"(it has: {', '.join(sorted(available)) or 'none'})")
        label = _single(params, "label", "")
        if label and (not _LABEL.fullmatch(label) or ".." in label):
            raise AgentError(HTTPStatus.BAD_REQUEST, "label must be 1-200 characters of [A-Za-z0-9_.@:+=,-] "
                                                     "without '..' (it names the result, never a file)")
        return runtime, label, self._bench_config()

    def _bench_config(self) -> BenchConfig:
        text = self.headers.get(CONFIG_HEADER)
        if text is None:
            return BenchConfig()
        try:
            cfg = BenchConfig.from_dict(json.loads(text))
        except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
            raise AgentError(HTTPStatus.BAD_REQUEST, f"bad {CONFIG_HEADER}: {one_line(err)}") from None
        cores = os.cpu_count() or 1
        if cfg.threads > cores:
            raise AgentError(HTTPStatus.BAD_REQUEST, f"BenchConfig.threads {cfg.threads} exceeds this machine's "
                                                     f"{cores} logical cores")
        budget = cfg.cooldown_seconds + 2 * cfg.max_seconds
        if budget > self.server.config.measure_timeout_s:
            raise AgentError(HTTPStatus.BAD_REQUEST,
                             f"BenchConfig may take {budget:g} s (cool-down + 2 x max_seconds) but this agent stops "
                             f"a measurement after {self.server.config.measure_timeout_s:g} s")
        return cfg

    def _read_body(self, length: int) -> bytes:
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise AgentError(HTTPStatus.BAD_REQUEST, f"upload ended after {len(body)} of {length} bytes")
        return body

    def _drain(self, length: int) -> None:
        with contextlib.suppress(OSError):
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)

    # ------------------------------------------------------------------------------------------ answers

    def _send_json(self, status: HTTPStatus, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = (json.dumps(data, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _linger(self) -> None:
        """Let a refused client read its answer: closing a socket with unread upload bytes sends a TCP reset, which
        can destroy the response before the client reads it. The rest of the body is discarded, briefly."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_LINGER_SECONDS)
            deadline, discarded = time.monotonic() + _LINGER_SECONDS, 0
            while time.monotonic() < deadline and discarded < _LINGER_BYTES:
                chunk = self.connection.recv(1 << 16)
                if not chunk:
                    break
                discarded += len(chunk)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        elapsed = time.perf_counter() - getattr(self, "_started", time.perf_counter())
        self.log_message('"%s" %s %.2fs', self.requestline, int(code) if isinstance(code, int) else code, elapsed)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        sys.stderr.write(f"mzoo-agent {self.address_string()} {format % args}\n")


def _single(params: dict[str, list[str]], name: str, default: str) -> str:
    values = params.get(name, [default])
    if len(values) != 1:
        raise AgentError(HTTPStatus.BAD_REQUEST, f"query parameter {name!r} given {len(values)} times")
    return values[0]


def _check_artefact(runtime: str, body: bytes) -> None:
    """Refuse what is not an artefact of ``runtime`` before any runtime parses it: 415 for the wrong kind of
    file, 400 for a broken one. ONNX files must carry their weights inside (external data could name any path)."""
    if runtime == "xnnpack":
        ident = body[_PTE_MAGIC_OFFSET:_PTE_MAGIC_OFFSET + 4]
        if not (ident[:2] == b"ET" and ident[2:].isdigit()):
            raise AgentError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                             f"upload is not an ExecuTorch program: no 'ET..' identifier at byte 4 (found {ident!r})")
        if len(body) < _MIN_PTE_BYTES:
            raise AgentError(HTTPStatus.BAD_REQUEST, f"upload is a truncated ExecuTorch program ({len(body)} bytes)")
        _check_pte_sizes(body)
        return
    _check_onnx(body)


def _check_pte_sizes(body: bytes) -> None:
    header = body[8:40]
    if header[:4] != b"eh00":
        return
    program_size = int.from_bytes(header[8:16], "little")
    segment_base = int.from_bytes(header[16:24], "little")
    segment_size = int.from_bytes(header[24:32], "little")
    expected = max(program_size, segment_base + segment_size if segment_base else 0)
    if len(body) < expected:
        raise AgentError(HTTPStatus.BAD_REQUEST,
                         f"upload is a truncated ExecuTorch program: its header promises {expected} bytes, got {len(body)}")


def _check_onnx(body: bytes) -> None:
    import onnx

    try:
        model = onnx.load_model_from_string(body)
        onnx.checker.check_model(model)
    except Exception as err:
        raise AgentError(HTTPStatus.BAD_REQUEST, f"upload is not a valid ONNX model: {one_line(err)}") from None
    if not model.graph.node:
        raise AgentError(HTTPStatus.BAD_REQUEST, "upload is not a valid ONNX model: its graph has no nodes")
    if any(t.data_location == onnx.TensorProto.EXTERNAL or t.external_data for t in _onnx_tensors(model.graph)):
        raise AgentError(HTTPStatus.BAD_REQUEST, "upload refers to external tensor data; send a self-contained "
                                                 "ONNX file (weights inside)")


def _onnx_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    yield from (sparse.values for sparse in graph.sparse_initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _onnx_tensors(attr.g)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub)


# ------------------------------------------------------------------------------------- measuring process


def _measure_in_subprocess(runtime: str, artefact: Path, cfg: BenchConfig, timeout_s: float) -> LatencyResult:
    """Time ``artefact`` in a fresh Python process; a crash or a hang there becomes an ``AgentError``."""
    request = artefact.with_name(f"{artefact.stem}.request.json")
    answer = artefact.with_name(f"{artefact.stem}.answer.json")
    write_json_atomic(request, {"runtime": runtime, "artefact": str(artefact), "config": dataclasses.asdict(cfg)})
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD_COMMAND, str(request), str(answer)],
                              capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise AgentError(HTTPStatus.GATEWAY_TIMEOUT,
                         f"measurement did not finish within {timeout_s:g} s and was stopped") from None
    try:
        data = json.loads(answer.read_text())
    except (OSError, ValueError):
        tail = " | ".join(line.strip() for line in done.stderr.splitlines()[-_STDERR_TAIL_LINES:] if line.strip())
        raise AgentError(HTTPStatus.INTERNAL_SERVER_ERROR,
                         f"the measuring process exited with code {done.returncode} without a result "
                         f"({tail or 'no output'})") from None
    if "error" in data:
        raise AgentError(HTTPStatus(int(data.get("status", 500))), str(data["error"]))
    return LatencyResult.from_dict(data["result"])


def _child_main(argv: Sequence[str]) -> int:
    """Entry point of the measuring process: read the request, time the artefact, write the answer."""
    request_path, answer_path = argv
    request = json.loads(Path(request_path).read_text())
    try:
        result = _measure_here(request["runtime"], request["artefact"], BenchConfig.from_dict(request["config"]))
        answer: dict[str, Any] = {"result": result.to_dict()}
    except ExportError as err:  # the runtime refused the artefact
        answer = {"error": str(err), "status": int(HTTPStatus.UNPROCESSABLE_ENTITY)}
    except ValueError as err:  # the config does not fit this machine (e.g. pinned CPUs it lacks)
        answer = {"error": str(err), "status": int(HTTPStatus.BAD_REQUEST)}
    write_json_atomic(Path(answer_path), answer)
    return 0


def _measure_here(runtime: str, artefact: str, cfg: BenchConfig) -> LatencyResult:
    if runtime == "ort":
        from latency_tables.measure import measure_onnx

        return measure_onnx(artefact, cfg)
    # This process is already fresh, so time the program here rather than through measure_pte's own subprocess.
    from latency_tables.measure_pte import measure_pte_in_process as measure_pte_here

    return measure_pte_here(artefact, cfg)


# --------------------------------------------------------------------------------------------------- CLI


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mzoo agent``."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; give 0.0.0.0 or an "
                             "interface's address to serve phones or other machines on the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--token", default=None,
                        help=f"bearer token clients must send (default: ${TOKEN_ENV}; prefer the variable, "
                             "a command-line token is visible to other users in `ps`)")
    parser.add_argument("--max-upload-mb", type=float, default=256.0,
                        help=f"largest accepted artefact, MiB (default 256, at most {MAX_UPLOAD_MB})")
    parser.add_argument("--measure-timeout", type=float, default=600.0, help="seconds one measurement may take")
    parser.add_argument("--queue-timeout", type=float, default=600.0,
                        help="seconds a request waits for the measurement in progress before 503")
    parser.add_argument("--read-timeout", type=float, default=30.0, help="socket timeout while talking to a client")


def agent_config_from_args(args: argparse.Namespace) -> AgentConfig:
    """The ``AgentConfig`` of parsed ``mzoo agent`` options; ``ValueError`` for an empty token or bad values."""
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if not (math.isfinite(args.max_upload_mb) and 0 < args.max_upload_mb <= MAX_UPLOAD_MB):
        raise InputError(f"--max-upload-mb must be more than 0 and at most {MAX_UPLOAD_MB} (an upload is held on "
                         f"disk while it is measured), got {args.max_upload_mb:g}")
    return AgentConfig(token=token, host=args.host, port=args.port,
                       max_upload_bytes=max(1, int(args.max_upload_mb * 2**20)),
                       measure_timeout_s=args.measure_timeout, queue_timeout_s=args.queue_timeout,
                       read_timeout_s=args.read_timeout)


def run_agent(args: argparse.Namespace) -> int:
    """Serve in the foreground until Ctrl-C; returns the exit status. Raises ``ValueError`` for bad options and
    ``OSError`` when the address cannot be bound."""
    server = AgentServer(agent_config_from_args(args))
    if server.config.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"mzoo agent: listening on {server.config.host}: any machine that can reach it and knows the token "
              "can run measurements here", file=sys.stderr, flush=True)
    runtimes = ", ".join(sorted(available_runtimes())) or "none"
    print(f"mzoo agent: serving {server.url} (port {server.server_address[1]}; runtimes: {runtimes}); "
          f"Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
