"""Where latency is measured: the ``Device`` protocol and its backends (ONNX Runtime CPU and ExecuTorch/XNNPACK
on this machine, either of them on a remote machine through the device agent of :mod:`latency_tables.agent`, and
LiteRT/XNNPACK and ncnn on this machine only).

Owns turning one ``nn.Module`` plus its input shape into a ``LatencyResult``: a fast, unverified export (the
TorchScript ONNX exporter takes milliseconds where the verified dynamo path takes seconds, which matters for
tables of thousands of ops), a measurement in a fresh runtime session with the protocol of ``BenchConfig``, and
the ``DeviceInfo`` (name, runtime and version, environment fingerprint) that latency tables are filed under.
Device names are slugs of the CPU model, the runtime and the thread count (``"amd-epyc-7763-ort-t1"``; ``"amd-epyc-f23m1-ort-t1"`` when a hypervisor hides the model number). Nothing is
exported, measured or contacted in a constructor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from common.errors import InputError
from common.environment import Environment, current_environment
from common.files import scratch_directory
from export.errors import ExportError, one_line
from latency_tables.agent_config import TOKEN_ENV  # the agent's option, read by its clients
from latency_tables.measure import ONNX_RUNTIME, BenchConfig, LatencyResult, measure_onnx
from export.parity import eval_mode

XNNPACK_RUNTIME = "executorch-xnnpack"  # same value as export.executorch.XNNPACK_RUNTIME (not imported: slow)
# Short runtime names used in device specs, device names, agent URLs and the agent's API.
# The agent serves these (LiteRT: a .tflite upload, timed in ai-edge-litert's interpreter with its XNNPACK delegate).
RUNTIMES: Mapping[str, str] = {"ort": ONNX_RUNTIME, "xnnpack": XNNPACK_RUNTIME, "litert": "litert-xnnpack"}
ARTEFACT_SUFFIX: Mapping[str, str] = {"ort": ".onnx", "xnnpack": ".pte", "litert": ".tflite"}
# ncnn is measured on this machine only: its artefact is a package of two files, which the agent's one-file upload
# does not carry. LiteRT's and ncnn's converters and runtimes come from the android extra (measure_android).
LOCAL_RUNTIMES: Mapping[str, str] = {**RUNTIMES, "ncnn": "ncnn-cpu"}
CONFIG_HEADER = "X-Mzoo-Bench-Config"
API_PREFIX = "/v1"
# The TorchScript exporter's opset 17 loads in every ONNX Runtime since 1.14, so old device installs work too.
_ONNX_OPSET = 17
_DEFAULT_REMOTE_TIMEOUT_S = 900.0
# A busy agent (503: its queue or its connections are full) or one that is restarting (connection refused or
# reset) is asked again after 1, 2, 4, ... s, at most 30 s apart, 8 times: about two minutes in all.
_DEFAULT_RETRIES = 8
_DEFAULT_BACKOFF_S = 1.0
_DEFAULT_MAX_BACKOFF_S = 30.0
# Words that name no CPU family: trademarks, vendors' legal suffixes, "CPU", "Processor", core counts.
_X86_ID = re.compile(r"family (?P<family>\d+) model (?P<model>\d+)")
_CPU_NOISE = re.compile(
    r"\((?:r|tm|c)\)|@.*$|\b\d+-core\b|\b(?:cpu|processor|technologies|inc|corporation|corp|ltd|co)\b"
)


class DeviceError(ExportError):
    """A device could not measure: the agent is unreachable, refused the request, or failed to measure."""


class _Retryable(DeviceError):
    """A failure that asking again later may cure: the agent is busy or not (yet) accepting connections."""


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is: its table name, runtime and version, and the machine it runs on."""

    name: str
    runtime: str
    runtime_version: str | None
    fingerprint: str
    environment: Environment

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "environment": self.environment.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceInfo:
        missing = {f.name for f in dataclasses.fields(cls)} - set(data)
        if missing:
            raise InputError(f"device info is missing fields {sorted(missing)}")
        return cls(name=str(data["name"]), runtime=str(data["runtime"]), runtime_version=data["runtime_version"],
                   fingerprint=str(data["fingerprint"]), environment=Environment.from_dict(data["environment"]))


@runtime_checkable
class Device(Protocol):
    """Something that times a module: exports it, measures it in a fresh session, returns the result."""

    name: str  # slug used as the table directory, e.g. "amd-epyc-f23m1-ort-t1"
    runtime: str  # "onnxruntime-cpu" | "executorch-xnnpack"

    def describe(self) -> DeviceInfo: ...

    def measure(self, model: nn.Module, input_shape: tuple[int, ...], cfg: BenchConfig,
                label: str = "") -> LatencyResult: ...


# ------------------------------------------------------------------------------------------------- names


def cpu_slug(cpu_model: str, cpu_id: str | None = None) -> str:
    """Vendor, family and model number of a CPU: "AMD EPYC 7763 64-Core Processor" -> "amd-epyc-7763",
    "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz" -> "intel-xeon-8375c", "Apple M2 Pro" -> "apple-m2".

    Latency differs between generations of one family, so a name without a model number (a hypervisor's "AMD EPYC")
    takes the x86 family and model from ``cpu_id`` (``Environment.cpu_id``): "amd-epyc-f23m1" is a Zen 1 EPYC.
    """
    tokens = re.findall(r"[a-z0-9]+", _CPU_NOISE.sub(" ", cpu_model.lower()))
    head = tokens[:2] or ["unknown", "cpu"]
    if not any(_has_digit(t) for t in head):
        number = next((t for t in tokens[2:] if _has_digit(t)), None)
        if number is not None:
            head.append(number)
        elif cpu_id is not None and (x86 := _X86_ID.search(cpu_id)):
            head.append(f"f{x86['family']}m{x86['model']}")
    return "-".join(head)


def _has_digit(token: str) -> bool:
    return any(c.isdigit() for c in token)


def local_device_name(runtime: str, threads: int, cpu_model: str | None = None, cpu_id: str | None = None) -> str:
    """``<cpu slug>-<runtime>-t<threads>``, e.g. "amd-epyc-7763-ort-t1"; the CPU defaults to this machine's."""
    _check_runtime(runtime, LOCAL_RUNTIMES)
    _check_threads(threads)
    if cpu_model is None:
        env = current_environment()
        cpu_model, cpu_id = env.cpu_model, env.cpu_id
    return f"{cpu_slug(cpu_model, cpu_id)}-{runtime}-t{threads}"


def _check_runtime(runtime: str, runtimes: Mapping[str, str] = RUNTIMES) -> None:
    if runtime not in runtimes:
        raise InputError(f"runtime {runtime!r} is not supported; choose one of {sorted(runtimes)}")


def _check_threads(threads: int) -> None:
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InputError(f"threads must be a positive int, got {threads!r}")


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", name):
        raise InputError(f"device name {name!r} must be lowercase [a-z0-9] words joined by '-'")


# --------------------------------------------------------------------------------------------- exporting


def check_input_shape(input_shape: tuple[int, ...], cfg: BenchConfig) -> tuple[int, ...]:
    """``input_shape`` (batch first, e.g. (1, C, H, W) or (1, C)) as a tuple; its batch must be ``cfg.batch_size``."""
    shape = tuple(input_shape)
    if len(shape) < 2 or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape):
        raise InputError(f"input_shape must be (batch, channels, ...) of positive ints, got {input_shape!r}")
    if shape[0] != cfg.batch_size:
        raise InputError(f"input_shape {shape} has batch {shape[0]}, but BenchConfig.batch_size is {cfg.batch_size}")
    return shape


def example_input(input_shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))


def export_onnx_fast(model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike[str]) -> Path:
    """Export ``model`` for exactly ``input_shape`` to ONNX without verification (the device measures, the
    zoo's verified exporter is :func:`export.onnx.export_onnx`). TorchScript exporter, opset 17; the dynamo
    exporter is the fallback for modules TorchScript cannot trace. Raises ``ExportError`` naming the module."""
    target = Path(path)
    x = example_input(input_shape)
    with eval_mode(model), torch.inference_mode(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, once per op otherwise
        try:
            torch.onnx.export(model, (x,), str(target), dynamo=False, opset_version=_ONNX_OPSET,
                              input_names=["input"], output_names=["output"])
            return target
        except Exception as err:
            first = err
        try:
            torch.onnx.export(model, (x,), str(target), dynamo=True, input_names=["input"], output_names=["output"],
                              verbose=False)
            return target
        except Exception as err:
            raise ExportError(f"cannot export {type(model).__name__} for input {tuple(input_shape)} to ONNX: "
                              f"{one_line(first)} (dynamo fallback: {one_line(err)})") from err


def export_pte_fast(model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike[str]) -> Path:
    """Lower ``model`` for exactly ``input_shape`` to an ExecuTorch program with the XNNPACK delegate, without the
    verification of :func:`export.executorch.export_pte` (which also accepts only image inputs). Raises
    ``ExportError`` naming the module."""
    from export.executorch import PteExportConfig, lower_program, pte_metadata_props

    cfg = PteExportConfig(backend="xnnpack", batch_size=input_shape[0])
    with eval_mode(model):
        buffer, _ = lower_program(model, example_input(input_shape), pte_metadata_props(None, cfg), cfg)
    target = Path(path)
    target.write_bytes(buffer)
    return target


def export_litert_fast(model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike[str]) -> Path:
    """Convert ``model`` for exactly ``input_shape`` to an fp32 ``.tflite`` file with litert-torch, without the
    verification of :func:`export.litert.export_litert`. Raises ``ExportError`` naming the module."""
    from export.litert import convert_to_tflite

    target = Path(path)
    target.write_bytes(convert_to_tflite(model, example_input(input_shape), "fp32"))
    return target


def export_ncnn_fast(model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike[str]) -> Path:
    """Convert ``model`` for exactly ``input_shape`` (batch 1) with pnnx to an ncnn package directory at ``path``,
    without the verification of :func:`export.ncnn.export_ncnn`. Raises ``ExportError`` naming the module."""
    import json

    from export.ncnn import BIN_FILE, METADATA_FILE, PARAM_FILE, convert_to_ncnn

    target = Path(path)
    target.mkdir()
    convert_to_ncnn(model, example_input(input_shape), target / PARAM_FILE, target / BIN_FILE)
    (target / METADATA_FILE).write_text(json.dumps({"mzoo.input_shape": json.dumps(list(input_shape))}))
    return target


def _export_artefact(runtime: str, model: nn.Module, input_shape: tuple[int, ...], directory: Path) -> Path:
    path = directory / f"model{ARTEFACT_SUFFIX[runtime]}"
    if runtime == "ort":
        return export_onnx_fast(model, input_shape, path)
    if runtime == "litert":
        return export_litert_fast(model, input_shape, path)
    return export_pte_fast(model, input_shape, path)


def _labelled(result: LatencyResult, model: nn.Module, label: str) -> LatencyResult:
    return dataclasses.replace(result, model=label or type(model).__name__)


# ---------------------------------------------------------------------------------------- local devices


@dataclass(frozen=True)
class _LocalDevice:
    """A runtime on this machine with ``threads`` threads (the protocol's ``threads`` is replaced by the
    device's); ``name`` defaults to ``local_device_name(short_runtime, threads)``. Subclasses say how to
    export a module and time the artefact."""

    threads: int = 1
    name: str = ""
    runtime: ClassVar[str]
    short_runtime: ClassVar[str]
    suffix: ClassVar[str]

    def __post_init__(self) -> None:
        _check_threads(self.threads)
        if not self.name:
            object.__setattr__(self, "name", local_device_name(self.short_runtime, self.threads))
        _check_name(self.name)

    def describe(self) -> DeviceInfo:
        env = current_environment()
        return DeviceInfo(self.name, self.runtime, self._runtime_version(env), env.fingerprint, env)

    def measure(self, model: nn.Module, input_shape: tuple[int, ...], cfg: BenchConfig,
                label: str = "") -> LatencyResult:
        """Export to a temporary directory and time the artefact in a fresh session of the runtime."""
        cfg = dataclasses.replace(cfg, threads=self.threads)
        shape = check_input_shape(input_shape, cfg)
        with scratch_directory("mzoo-device-") as tmp:
            path = self._export(model, shape, tmp / f"model{self.suffix}")
            return _labelled(self._time(path, cfg), model, label)

    def _runtime_version(self, env: Environment) -> str | None:
        raise NotImplementedError

    def _export(self, model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
        raise NotImplementedError

    def _time(self, path: Path, cfg: BenchConfig) -> LatencyResult:
        raise NotImplementedError


@dataclass(frozen=True)
class OrtCpuDevice(_LocalDevice):
    """ONNX Runtime on this machine's CPU: the TorchScript ONNX exporter, then a fresh ``InferenceSession``."""

    runtime: ClassVar[str] = ONNX_RUNTIME
    short_runtime: ClassVar[str] = "ort"
    suffix: ClassVar[str] = ".onnx"

    def _runtime_version(self, env: Environment) -> str | None:
        return env.onnxruntime

    def _export(self, model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
        return export_onnx_fast(model, shape, path)

    def _time(self, path: Path, cfg: BenchConfig) -> LatencyResult:
        return measure_onnx(path, cfg)


@dataclass(frozen=True)
class XnnpackDevice(_LocalDevice):
    """ExecuTorch with the XNNPACK delegate on this machine; every measurement runs in a fresh process (see
    :func:`latency_tables.measure_pte.measure_pte`)."""

    runtime: ClassVar[str] = XNNPACK_RUNTIME
    short_runtime: ClassVar[str] = "xnnpack"
    suffix: ClassVar[str] = ".pte"

    def _runtime_version(self, env: Environment) -> str | None:
        return env.executorch

    def _export(self, model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
        return export_pte_fast(model, shape, path)

    def _time(self, path: Path, cfg: BenchConfig) -> LatencyResult:
        from latency_tables.measure_pte import measure_pte

        return measure_pte(path, cfg)


@dataclass(frozen=True)
class LitertDevice(_LocalDevice):
    """LiteRT with its XNNPACK delegate on this machine (the android extra): litert-torch's fp32 conversion, then
    a fresh interpreter (:func:`latency_tables.measure_android.measure_litert`)."""

    runtime: ClassVar[str] = LOCAL_RUNTIMES["litert"]
    short_runtime: ClassVar[str] = "litert"
    suffix: ClassVar[str] = ".tflite"

    def _runtime_version(self, env: Environment) -> str | None:
        return _distribution_version("ai-edge-litert")

    def _export(self, model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
        return export_litert_fast(model, shape, path)

    def _time(self, path: Path, cfg: BenchConfig) -> LatencyResult:
        from latency_tables.measure_android import measure_litert

        return measure_litert(path, cfg)


@dataclass(frozen=True)
class NcnnDevice(_LocalDevice):
    """ncnn on this machine (the android extra): pnnx's conversion, then a fresh ``ncnn.Net`` with ncnn's own
    defaults (:func:`latency_tables.measure_android.measure_ncnn`). ncnn runs batch 1 only."""

    runtime: ClassVar[str] = LOCAL_RUNTIMES["ncnn"]
    short_runtime: ClassVar[str] = "ncnn"
    suffix: ClassVar[str] = ".ncnn"

    def _runtime_version(self, env: Environment) -> str | None:
        return _distribution_version("ncnn")

    def _export(self, model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
        return export_ncnn_fast(model, shape, path)

    def _time(self, path: Path, cfg: BenchConfig) -> LatencyResult:
        from latency_tables.measure_android import measure_ncnn

        return measure_ncnn(path, cfg)


def _distribution_version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------- remote device


class RemoteDevice:
    """A runtime on another machine, reached through ``mzoo agent`` at ``url`` (``http://HOST:PORT``).

    The module is exported here (ONNX for "ort", ``.pte`` for "xnnpack"), uploaded, and timed there; the result
    carries the remote machine's environment. ``name`` defaults to the remote CPU's slug, runtime and threads,
    which takes one request to the agent the first time it is read. A request the agent answers with 503 (busy),
    or whose connection is refused or reset, is sent again up to ``retries`` times, ``backoff_s`` seconds later,
    then twice as long each time up to ``max_backoff_s``; each retry says so in one line on stderr.
    """

    def __init__(self, url: str, token: str, runtime: str = "ort", timeout_s: float = _DEFAULT_REMOTE_TIMEOUT_S,
                 *, threads: int = 1, name: str | None = None, retries: int = _DEFAULT_RETRIES,
                 backoff_s: float = _DEFAULT_BACKOFF_S, max_backoff_s: float = _DEFAULT_MAX_BACKOFF_S) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
            raise InputError(f"agent URL {url!r} must be http(s)://HOST:PORT")
        if not token:
            raise InputError(f"remote device {url!r} needs a token (pass token= or set {TOKEN_ENV})")
        _check_runtime(runtime)
        _check_threads(threads)
        if not timeout_s > 0:
            raise InputError(f"timeout_s must be > 0, got {timeout_s!r}")
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 100:
            raise InputError(f"retries must be an int in 0..100, got {retries!r}")
        if not 0 < backoff_s <= max_backoff_s <= 3600:
            raise InputError(f"backoff must satisfy 0 < backoff_s <= max_backoff_s <= 3600 s, got {backoff_s!r} "
                             f"and {max_backoff_s!r}")
        if name is not None:
            _check_name(name)
        self.url = url.rstrip("/")
        self.short_runtime = runtime
        self.runtime = RUNTIMES[runtime]
        self.threads = threads
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._token = token
        self._name = name

    def __repr__(self) -> str:  # never shows the token
        return f"RemoteDevice({self.url!r}, runtime={self.short_runtime!r}, threads={self.threads})"

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = self.describe().name
        return self._name

    def info(self) -> dict[str, Any]:
        """The agent's ``GET /v1/info`` answer as JSON."""
        return self._request("GET", f"{API_PREFIX}/info")

    def describe(self) -> DeviceInfo:
        """Ask the agent which machine and runtime versions it has; ``DeviceError`` if it lacks this runtime."""
        info = self.info()
        try:
            env = Environment.from_dict(info["environment"])
            runtimes = info["runtimes"]
        except (KeyError, TypeError, ValueError) as err:
            raise DeviceError(f"agent at {self.url} sent malformed info: {one_line(err)}") from err
        if self.short_runtime not in runtimes:
            raise DeviceError(f"agent at {self.url} has no runtime {self.short_runtime!r} (it has: "
                              f"{', '.join(sorted(runtimes)) or 'none'})")
        name = self._name or local_device_name(self.short_runtime, self.threads, env.cpu_model, env.cpu_id)
        version = runtimes[self.short_runtime].get("version")
        return DeviceInfo(name, self.runtime, version, str(info.get("fingerprint", env.fingerprint)), env)

    def measure(self, model: nn.Module, input_shape: tuple[int, ...], cfg: BenchConfig,
                label: str = "") -> LatencyResult:
        """Export here, upload, and return the agent's measurement (its machine's environment)."""
        cfg = dataclasses.replace(cfg, threads=self.threads)
        shape = check_input_shape(input_shape, cfg)
        with scratch_directory("mzoo-device-") as tmp:
            body = _export_artefact(self.short_runtime, model, shape, tmp).read_bytes()
        query = urllib.parse.urlencode({"runtime": self.short_runtime})
        headers = {CONFIG_HEADER: json.dumps(dataclasses.asdict(cfg)), "Content-Type": "application/octet-stream"}
        data = self._request("POST", f"{API_PREFIX}/measure?{query}", body, headers)
        try:
            result = LatencyResult.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            raise DeviceError(f"agent at {self.url} sent a malformed latency result: {one_line(err)}") from err
        return _labelled(result, model, label)

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One request, sent again after a back-off while the agent is busy or unreachable (see the class)."""
        delay = self.backoff_s
        for attempt in range(1, self.retries + 2):
            try:
                return self._request_once(method, path, body, headers)
            except _Retryable as err:
                if attempt > self.retries:
                    raise DeviceError(f"{err} (gave up after {attempt} tries)") from err
                print(f"mzoo: {err}; retrying {method} {path.partition('?')[0]} in {delay:g} s "
                      f"(retry {attempt} of {self.retries})", file=sys.stderr, flush=True)
                time.sleep(delay)
                delay = min(self.max_backoff_s, 2 * delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _request_once(self, method: str, path: str, body: bytes | None,
                      headers: Mapping[str, str] | None) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method,
                                         headers={"Authorization": f"Bearer {self._token}", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise self._http_error(err, body) from None
        except (TimeoutError, socket.timeout) as err:
            raise DeviceError(f"agent at {self.url} did not answer {method} {path} within {self.timeout_s:g} s") from err
        except urllib.error.URLError as err:
            raise self._connection_error(err.reason, body) from err
        except (ConnectionError, OSError) as err:
            raise self._connection_error(err, body) from err
        try:
            data = json.loads(payload)
        except ValueError as err:
            raise DeviceError(f"agent at {self.url} answered {method} {path} with non-JSON data") from err
        if not isinstance(data, dict):
            raise DeviceError(f"agent at {self.url} answered {method} {path} with {type(data).__name__}, not an object")
        return data

    def _http_error(self, err: urllib.error.HTTPError, body: bytes | None) -> DeviceError:
        try:
            message = str(json.loads(err.read()).get("error", ""))
        except (ValueError, AttributeError, OSError):
            message = ""
        if err.code == 401:
            return DeviceError(f"agent at {self.url} refused the token (401 Unauthorized); check {TOKEN_ENV}")
        if err.code == 413:
            size = len(body) if body is not None else 0
            return DeviceError(f"agent at {self.url} refused an upload of {size} bytes as too large (413): {message}")
        if err.code == 503:
            return _Retryable(f"agent at {self.url} is busy (503): {message or 'no message'}")
        return DeviceError(f"agent at {self.url} failed ({err.code} {err.reason}): {message or 'no message'}")

    def _connection_error(self, reason: object, body: bytes | None) -> DeviceError:
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return DeviceError(f"agent at {self.url} did not answer within {self.timeout_s:g} s")
        if isinstance(reason, ConnectionRefusedError):
            return _Retryable(f"cannot reach the agent at {self.url}: connection refused (is `mzoo agent` running?)")
        if isinstance(reason, ConnectionResetError):
            during = f" while {len(body)} bytes were uploaded (it may limit uploads to fewer bytes)" if body else ""
            return _Retryable(f"agent at {self.url} reset the connection{during}: {reason}")
        if isinstance(reason, BrokenPipeError) and body:
            return DeviceError(f"agent at {self.url} closed the connection while {len(body)} bytes were uploaded "
                               f"(it may limit uploads to fewer bytes: {reason})")
        return DeviceError(f"cannot reach the agent at {self.url}: {reason}")


# ------------------------------------------------------------------------------------------------- specs


def get_device(spec: str, *, threads: int = 1, token: str | None = None) -> Device:
    """A device from its spec: "ort" (ONNX Runtime CPU here), "xnnpack" (ExecuTorch/XNNPACK here), "litert"
    (LiteRT/XNNPACK here), "ncnn" (ncnn here), or "http://HOST:PORT[/ort|/xnnpack]" (a remote agent; ``token``
    defaults to ``$MZOO_AGENT_TOKEN``)."""
    if spec == "ort":
        return OrtCpuDevice(threads)
    if spec == "xnnpack":
        return XnnpackDevice(threads)
    if spec == "litert":
        return LitertDevice(threads)
    if spec == "ncnn":
        return NcnnDevice(threads)
    if spec.startswith(("http://", "https://")):
        parsed = urllib.parse.urlsplit(spec)
        runtime = parsed.path.strip("/") or "ort"
        if runtime not in RUNTIMES:
            raise InputError(f"device {spec!r}: runtime {runtime!r} in the URL path is not one of {sorted(RUNTIMES)}")
        base = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, "", "", ""))
        return RemoteDevice(base, token or os.environ.get(TOKEN_ENV, ""), runtime, threads=threads)
    raise InputError(f"unknown device {spec!r}; use 'ort', 'xnnpack', 'litert', 'ncnn' or "
                     "'http://HOST:PORT[/ort|/xnnpack|/litert]'")
