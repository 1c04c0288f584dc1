"""The remote device agent: a small token-protected HTTP server (``mzoo agent``) that a user starts on the
machine to be measured (a phone under Termux, a Raspberry Pi, a Mac) so that :class:`latency_tables.devices.RemoteDevice`
can time artefacts there.

Owns the wire protocol (``GET /v1/info``; ``POST /v1/measure?runtime=ort|xnnpack|litert`` with the artefact as the body
and the ``BenchConfig`` as JSON in the ``X-Mzoo-Bench-Config`` header, answered with ``LatencyResult`` JSON) and the
agent's defences, each a limit of :class:`AgentConfig` with its ``mzoo agent`` option: bearer-token auth compared in
constant time; at most ``max_connections`` open connections (more get 503 at once); a whole-request deadline for
the headers and another for headers plus body, on top of a per-read silence timeout; the upload size checked from
Content-Length before anything is read; admission to the bounded measurement queue before the body is read (a
full queue is a 503, never a buffered upload); bodies streamed to disk, never held while queued; uploads checked
for their format, one at a time and in a directory of their own, before a runtime sees them; one measurement at a
time, each in a fresh subprocess with an address-space cap and a timeout, so that a runtime that aborts or runs
out of memory takes only that process down; a request whose client disconnects is cancelled, its subprocess
killed. Artefacts are stored under names the agent chooses in a private temporary directory that is deleted after
each request and when the agent stops (Ctrl-C or SIGTERM). Errors are JSON ``{"error": "..."}``; each request logs
one line to stderr, with secrets in a query string redacted. ONNX Runtime, ExecuTorch/XNNPACK and LiteRT/XNNPACK
(ai-edge-litert, e.g. on an Android phone under Termux) are served; ncnn is not (its artefact is two files), and a
Core ML runtime would need macOS and is not implemented.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hmac
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from latency_tables.agent_config import AgentConfig, agent_config_from_args
from latency_tables.devices import API_PREFIX, ARTEFACT_SUFFIX, CONFIG_HEADER, RUNTIMES
from common.environment import current_environment
from export.errors import one_line
from common.files import write_json_atomic
from latency_tables.agent_checks import AgentError, _check_artefact
from latency_tables.agent_child import _CHILD_COMMAND, _read_answer, memory_cap_enforced
from latency_tables.measure import CHILD_THREAD_ENV, BenchConfig, LatencyResult, child_env

API_VERSION = 1
STARTED_HEADER = "X-Mzoo-Measure-Started"  # wall-clock seconds (time.time) around the measuring subprocess
FINISHED_HEADER = "X-Mzoo-Measure-Finished"
_LABEL = re.compile(r"[A-Za-z0-9_.@:+=,-]{1,200}")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,20}")  # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
_QUERY = re.compile(r"\?[^\s\"]*")
_LOGGED_PARAMETERS = frozenset({"runtime", "label"})  # any other query value may be a secret: it is never logged
_MAX_CONFIG_CHARS = 4096  # a BenchConfig is a flat object of a dozen fields
# A refused upload is discarded for at most this long / this much so that the client can read the refusal.
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 64 * 2**20
_CHUNK_BYTES = 1 << 20  # an upload is streamed to disk in pieces of this size
_POLL_SECONDS = 0.1  # how often a queued or measuring request checks that its client is still connected
_CLOSE_WAIT_SECONDS = 2.0  # how long close() waits for the connections it cut to end before deleting files
# The measuring subprocess imports the runtime before timing: seconds for ONNX Runtime, much more for ExecuTorch.


class _Cancelled(ConnectionAbortedError):
    """A queued or running measurement abandoned because its client left or the agent is stopping."""


def available_runtimes() -> dict[str, dict[str, str | None]]:
    """The runtimes this machine can serve (without importing them: ExecuTorch takes seconds to import)."""
    found: dict[str, dict[str, str | None]] = {}
    for short, package, distribution in (("ort", "onnxruntime", "onnxruntime"), ("xnnpack", "executorch", "executorch"),
                                         ("litert", "ai_edge_litert", "ai-edge-litert")):
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

    Use as a context manager, or call ``close()``: it stops serving, cancels what is queued or measured, and deletes
    the private upload directory.
    """

    daemon_threads = True
    block_on_close = False  # close() cancels and waits for connections itself, for a bounded time
    request_queue_size = 64  # the listen backlog; beyond max_connections a connection is accepted and refused

    def __init__(self, config: AgentConfig) -> None:
        super().__init__((config.host, config.port), _Handler)
        self.config = config
        self.workdir = Path(tempfile.mkdtemp(prefix="mzoo-agent-"))  # mode 0700: private to this user
        self._measure_lock = threading.Lock()
        self._check_lock = threading.Lock()  # one upload at a time is loaded into memory to be checked
        self._state = threading.Condition()  # guards the counters and sets below
        self._admitted = 0
        self._connections: set[socket.socket] = set()
        self._children: set[subprocess.Popen[bytes]] = set()
        self._closing = threading.Event()
        self._serving: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{port}"

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def start(self) -> AgentServer:
        """Serve in a background thread (tests, embedding); ``run_agent`` serves in the foreground instead."""
        self._serving = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": _POLL_SECONDS},
                                         name="mzoo-agent", daemon=True)
        self._serving.start()
        return self

    def close(self) -> None:
        """Stop accepting, kill running measurements, cut open connections, and delete the upload directory."""
        self._closing.set()
        if self._serving is not None:
            self.shutdown()
            self._serving.join()
            self._serving = None
        self.server_close()  # no new connections
        with self._state:
            for child in self._children:
                child.kill()
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once
            self._state.wait_for(lambda: not self._connections, timeout=_CLOSE_WAIT_SECONDS)
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
            "max_queue": self.config.max_queue,
            "child_memory_mb": self.config.child_memory_mb,
        }

    def activity(self) -> dict[str, Any]:
        """What the agent holds now: open connections, admitted measurement requests, whether one is measured."""
        with self._state:
            return {"connections": len(self._connections), "admitted": self._admitted,
                    "measuring": self._measure_lock.locked(), "children": len(self._children)}

    # --------------------------------------------------------------------------------------- connections

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread for this connection, or answer 503 and close it when ``max_connections`` are open."""
        with self._state:
            refused = len(self._connections) >= self.config.max_connections or self.closing
            if not refused:
                self._connections.add(request)
        if refused:
            _refuse_connection(request, self.config.max_connections, self.closing)
            sys.stderr.write(f"mzoo-agent {client_address[0]} refused: {self.config.max_connections} connections "
                             "are open (--max-connections)\n")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: Any) -> None:
        with self._state:
            self._connections.discard(request)
            self._state.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not a traceback: a connection that failed outside a request's own error handling."""
        err = sys.exc_info()[1]
        sys.stderr.write(f"mzoo-agent {client_address[0]} connection ended: "
                         f"{one_line(err) if err is not None else 'unknown error'}\n")

    # ------------------------------------------------------------------------------------------- queueing

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Admit one measurement request before its body is read; ``AgentError`` 503 when one is measured and
        ``max_queue`` more are already admitted (uploading, checked or waiting)."""
        with self._state:
            if self._admitted > self.config.max_queue:
                raise AgentError(HTTPStatus.SERVICE_UNAVAILABLE,
                                 f"agent busy: {self._admitted} measurement requests are in progress or queued "
                                 f"(this agent queues {self.config.max_queue} behind the one it measures: "
                                 "--max-queue); retry later")
            self._admitted += 1
        try:
            yield
        finally:
            with self._state:
                self._admitted -= 1

    @contextlib.contextmanager
    def measurement_slot(self, cancelled: Callable[[], str | None] = lambda: None) -> Iterator[None]:
        """Hold the one measurement slot; ``AgentError`` 503 when the wait exceeds ``queue_timeout_s``, and
        ``_Cancelled`` as soon as ``cancelled()`` gives a reason (checked every ``_POLL_SECONDS``)."""
        deadline = time.monotonic() + self.config.queue_timeout_s
        while not self._measure_lock.acquire(timeout=max(0.0, min(_POLL_SECONDS, deadline - time.monotonic()))):
            reason = cancelled()
            if reason:
                raise _Cancelled(f"{reason} while queued")
            if time.monotonic() >= deadline:
                raise AgentError(HTTPStatus.SERVICE_UNAVAILABLE, f"agent busy: waited {self.config.queue_timeout_s:g}"
                                                                 " s for the measurement in progress (--queue-timeout)")
        try:
            yield
        finally:
            self._measure_lock.release()

    @contextlib.contextmanager
    def upload_directory(self) -> Iterator[Path]:
        """A new empty directory of its own for one upload and its subprocess's files, deleted afterwards."""
        path = self.workdir / uuid.uuid4().hex
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def check_artefact(self, runtime: str, path: Path) -> None:
        """``_check_artefact``, one upload at a time (an ONNX check holds the whole file in memory)."""
        with self._check_lock:
            _check_artefact(runtime, path)

    def measure(self, runtime: str, artefact: Path, cfg: BenchConfig,
                cancelled: Callable[[], str | None]) -> LatencyResult:
        """Time ``artefact`` in a fresh, memory-capped subprocess; ``_Cancelled`` (the subprocess killed) as soon as
        ``cancelled()`` gives a reason; a crash, a timeout or an exhausted cap become an ``AgentError``."""
        request = artefact.with_name("request.json")
        answer = artefact.with_name("answer.json")
        stderr_path = artefact.with_name("stderr.txt")
        write_json_atomic(request, {"runtime": runtime, "artefact": str(artefact), "config": dataclasses.asdict(cfg),
                                    "memory_mb": self.config.child_memory_mb})
        timeout_s = self.config.measure_timeout_s
        extra_env = CHILD_THREAD_ENV if runtime == "xnnpack" else {}
        with stderr_path.open("wb") as stderr, self._child([sys.executable, "-c", _CHILD_COMMAND, str(request),
                                                             str(answer)], stderr, extra_env) as child:
            deadline = time.monotonic() + timeout_s
            while child.poll() is None and time.monotonic() < deadline and not cancelled():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=_POLL_SECONDS)
            reason = cancelled()  # also when close() killed the child
            if reason:
                raise _Cancelled(f"{reason}; the measurement was stopped")
            if child.poll() is None:
                raise AgentError(HTTPStatus.GATEWAY_TIMEOUT, f"measurement did not finish within {timeout_s:g} s "
                                                             "and was stopped (--measure-timeout)")
        return _read_answer(answer, stderr_path, child.returncode, self.config.child_memory_mb)

    @contextlib.contextmanager
    def _child(self, command: list[str], stderr: Any,
               extra_env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
        env = child_env(extra_env)
        with self._state:  # under the lock: close() either sees this child or has set `closing` before it starts
            if self.closing:
                raise _Cancelled("the agent is shutting down")
            # Its own session: Ctrl-C in the agent's terminal reaches the agent, which stops the child itself.
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                     env=env, start_new_session=True)
            self._children.add(child)
        try:
            yield child
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            with self._state:
                self._children.discard(child)


def _refuse_connection(request: socket.socket, limit: int, closing: bool) -> None:
    """Answer 503 on a connection the agent will not serve, without blocking the accepting thread."""
    message = "agent is shutting down" if closing else f"agent busy: {limit} connections are open (--max-connections)"
    payload = (json.dumps({"error": message}) + "\n").encode()
    head = (f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}"
            "\r\nConnection: close\r\n\r\n").encode()
    with contextlib.suppress(OSError):
        request.setblocking(False)
        request.send(head + payload)
        with contextlib.suppress(BlockingIOError):
            request.recv(1 << 16)  # what already arrived: unread bytes at close would reset the connection


def start_agent(token: str, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> AgentServer:
    """Start an agent serving in a background thread (``port`` 0: a free port; read ``.url``). Close it after."""
    return AgentServer(AgentConfig(token=token, host=host, port=port, **options)).start()


# ---------------------------------------------------------------------------------------------- handler


class _DeadlineReader(io.RawIOBase):
    """The client socket as a raw stream whose every read waits at most ``wait()`` seconds: the handler's whole-
    request deadline (or its silence timeout, if sooner) rather than a timeout that each arriving byte renews."""

    def __init__(self, connection: socket.socket, wait: Callable[[], tuple[float, str]]) -> None:
        super().__init__()
        self._connection = connection
        self._wait = wait

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        seconds, why = self._wait()
        self._connection.settimeout(seconds)
        try:
            return self._connection.recv_into(buffer)
        except TimeoutError:
            raise TimeoutError(why) from None


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = f"mzoo-agent/{API_VERSION}"

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain socket file; reads go through the deadline instead
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self._next_read), 1 << 16)

    def handle_one_request(self) -> None:
        # Each request on a connection gets its own deadlines, counted from when the agent starts waiting for it.
        self._started = time.perf_counter()
        self._request_started = time.monotonic()
        self._deadline = self._request_started + self.server.config.header_timeout_s
        self._deadline_flag = "--header-timeout"
        super().handle_one_request()

    def _next_read(self) -> tuple[float, str]:
        """(seconds the next socket read may wait, why it timed out if it does)."""
        if self.server.closing:
            raise _Cancelled("the agent is shutting down")
        remaining = self._deadline - time.monotonic()
        limit = self._deadline - self._request_started
        overdue = f"the request was not received within {limit:g} s ({self._deadline_flag})"
        if remaining <= 0:
            raise TimeoutError(overdue)
        silence = self.server.config.read_timeout_s
        if remaining <= silence:
            return remaining, overdue
        return silence, f"the client sent nothing for {silence:g} s (--read-timeout)"

    def flush_headers(self) -> None:
        self.connection.settimeout(self.server.config.read_timeout_s)  # a response is written at a client's pace
        super().flush_headers()

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
        except TimeoutError as err:
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may be gone as well as stalled
                self._send_json(HTTPStatus.REQUEST_TIMEOUT, {"error": str(err) or "request timed out"})
                self._linger()  # a trickling client may still be sending
        except _Cancelled as err:
            self.close_connection = True  # the client is gone, or the agent stops: nothing is sent
            self.log_message('"%s" cancelled: %s', self.requestline, err)
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
        self._deadline = self._request_started + self.server.config.upload_timeout_s
        self._deadline_flag = "--upload-timeout"
        try:
            runtime, label, cfg = self._parse_request(parts.query)
        except AgentError:
            self._drain(length)  # a well-sized body is read so that the client can read the answer
            raise
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.server.admission())
            except AgentError:
                self.close_connection = True  # refused before the body is read: it is discarded, never buffered
                raise
            directory = stack.enter_context(self.server.upload_directory())
            path = directory / f"model{ARTEFACT_SUFFIX[runtime]}"
            self._receive_body(length, path)
            try:
                self.server.check_artefact(runtime, path)
            except AgentError as err:  # messages never show where the agent keeps uploads
                raise AgentError(err.status, str(err).replace(str(directory), "<upload>")) from None
            with self.server.measurement_slot(self._cancel_reason):
                started = time.time()
                result = self.server.measure(runtime, path, cfg, self._cancel_reason)
                finished = time.time()
        result = dataclasses.replace(result, model=label or f"upload{ARTEFACT_SUFFIX[runtime]}")
        self._send_json(HTTPStatus.OK, result.to_dict(),
                        {STARTED_HEADER: f"{started:.6f}", FINISHED_HEADER: f"{finished:.6f}"})

    def _cancel_reason(self) -> str | None:
        """Why a queued or running measurement should stop now, or None: the agent stops, or the client left
        (its end of the connection reads as closed: an HTTP client sends nothing more while it waits)."""
        if self.server.closing:
            return "the agent is shutting down"
        try:
            self.connection.settimeout(0.0)
            gone = self.connection.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            gone = False  # nothing to read: still connected
        except OSError:
            gone = True  # reset
        return "the client disconnected" if gone else None

    # ------------------------------------------------------------------------------------------- checks

    def _authorize(self) -> None:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server.config.token}"
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
            self.close_connection = True  # the body of an unauthenticated client is never read
            raise AgentError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")

    def _content_length(self) -> int:
        values = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            raise AgentError(HTTPStatus.BAD_REQUEST, "Transfer-Encoding is not supported; send Content-Length")
        if not values:
            self.close_connection = True
            raise AgentError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if len(values) > 1 or not _CONTENT_LENGTH.fullmatch(values[0].strip()):
            self.close_connection = True
            raise AgentError(HTTPStatus.BAD_REQUEST, f"Content-Length {', '.join(values)[:40]!r} is not a byte count")
        length = int(values[0])
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
        if len(text) > _MAX_CONFIG_CHARS:
            raise AgentError(HTTPStatus.BAD_REQUEST, f"bad {CONFIG_HEADER}: {len(text)} characters, more than the "
                                                     f"{_MAX_CONFIG_CHARS} a BenchConfig needs")
        try:
            cfg = BenchConfig.from_dict(json.loads(text))
        except RecursionError:  # e.g. [[[[...]]]]: a BenchConfig is a flat object
            raise AgentError(HTTPStatus.BAD_REQUEST, f"bad {CONFIG_HEADER}: JSON nested too deeply") from None
        except (ValueError, TypeError, AttributeError) as err:  # JSONDecodeError is a ValueError
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

    def _receive_body(self, length: int, path: Path) -> None:
        """Stream the body to ``path`` (a new file): an upload is never held in memory while it arrives or waits."""
        remaining = length
        with path.open("xb") as file:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, _CHUNK_BYTES))
                if not chunk:
                    self.close_connection = True
                    raise AgentError(HTTPStatus.BAD_REQUEST, f"upload ended after {length - remaining} of {length} "
                                                             "bytes")
                file.write(chunk)
                remaining -= len(chunk)

    def _drain(self, length: int) -> None:
        with contextlib.suppress(OSError, TimeoutError):
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
        sys.stderr.write(f"mzoo-agent {self.address_string()} {redact(format % args, self.server.config.token)}\n")


def redact(line: str, token: str) -> str:
    """``line`` with the token and every query value other than ``runtime`` and ``label`` replaced by ``[redacted]``:
    a client that puts its token in the URL must not leave it in the agent's log."""
    def query(match: re.Match[str]) -> str:
        pairs = [pair.partition("=") for pair in match.group(0)[1:].split("&")]
        return "?" + "&".join(name + eq + (value if name in _LOGGED_PARAMETERS or not eq else "[redacted]")
                              for name, eq, value in pairs)

    line = _QUERY.sub(query, line)
    return line.replace(token, "[redacted]") if len(token) >= 4 else line


def _single(params: dict[str, list[str]], name: str, default: str) -> str:
    values = params.get(name, [default])
    if len(values) != 1:
        raise AgentError(HTTPStatus.BAD_REQUEST, f"query parameter {name!r} given {len(values)} times")
    return values[0]


class _Stopped(BaseException):
    """SIGTERM: leave ``serve_forever`` like Ctrl-C does (a BaseException, so no request handler swallows it)."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


def run_agent(args: argparse.Namespace) -> int:
    """Serve in the foreground until Ctrl-C or SIGTERM, then cancel running measurements and delete the upload
    directory; returns the exit status. Raises ``InputError`` for bad options (before binding) and ``OSError`` when
    the address cannot be bound."""
    server = AgentServer(agent_config_from_args(args))
    if server.config.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"mzoo agent: listening on {server.config.host}: any machine that can reach it and knows the token "
              "can run measurements here", file=sys.stderr, flush=True)
    if not memory_cap_enforced():
        print("mzoo agent: this platform does not enforce --child-memory-mb (RLIMIT_AS): a measurement may use "
              "all of this machine's memory", file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)  # before saying it serves: it may be stopped at once
    runtimes = ", ".join(sorted(available_runtimes())) or "none"
    print(f"mzoo agent: serving {server.url} (port {server.server_address[1]}; runtimes: {runtimes}); "
          f"Ctrl-C or SIGTERM stops", file=sys.stderr, flush=True)
    terminated = False
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    except _Stopped:
        terminated = True
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short and leave the upload directory behind.
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            server.close()
        finally:
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, previous)
    print("mzoo agent: stopped", file=sys.stderr, flush=True)
    if terminated:
        # SIGTERM asks this process to end, and nothing is left to clean up: skip the interpreter's finalization,
        # which takes seconds with torch and the runtimes loaded (a service manager waits for it).
        sys.stdout.flush()
        os._exit(0)
    return 0
