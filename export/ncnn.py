"""ncnn export that always verifies: trace with TorchScript, convert with ``pnnx`` to an ncnn model (``.param`` +
``.bin``), run it with the ``ncnn`` Python binding, compare with eager PyTorch, then publish.

Owns the ncnn package: a directory ``<model>.ncnn`` holding ``model.ncnn.param`` (the graph), ``model.ncnn.bin``
(fp32 weights) and ``mzoo_metadata.json`` (ncnn files have no metadata slot), published as one unit so that a
param file never sits beside another model's weights. Verification runs ncnn with fp16 storage and arithmetic off
(the defaults an Android build turns on where the CPU has them) and without Winograd convolution (a fast, less
exact algorithm), so it checks the converted graph in exact fp32 against eager fp32, held to ``atol`` (1e-4) with
the float64 noise-floor rule of :mod:`export.parity`; timing (:mod:`latency_tables.measure_android`) uses ncnn's
own defaults. ncnn runs one image at a time (its
``Mat`` has no batch axis), so the package is exported for batch 1. ``pnnx`` and ``ncnn`` come with the
``android`` extra and are imported on first use.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import math
import os
import re
import subprocess
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.errors import InputError
from common.files import check_target, publish, scratch_directory, temporary_path
from export.errors import ExportError, NcnnVerificationError, exporter, missing_extra, one_line
from export.parity import (check_input_size, check_metadata, check_model, eval_mode, float64_distances,
                           noise_floor_detail, run_eager, within_noise_floor)

NCNN_RUNTIME = "ncnn-cpu"
PARAM_FILE = "model.ncnn.param"
BIN_FILE = "model.ncnn.bin"
METADATA_FILE = "mzoo_metadata.json"
_PARAM_MAGIC = "7767517"
_CONVERT_TIMEOUT_S = 600.0
_MAX_LOG_CHARS = 400


@dataclass(frozen=True)
class NcnnExportConfig:
    """How strictly to verify: ``verify_runs`` seeded inputs within ``atol`` of eager PyTorch (``noise_floor_factor``
    0 switches the float64 escape off); ``threads`` is ncnn's thread count while verifying."""

    atol: float = 1e-4
    verify_runs: int = 3
    seed: int = 0
    noise_floor_factor: float = 2.0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("verify_runs", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"NcnnExportConfig.{name} must be a positive int, got {value!r}")
        if not (math.isfinite(self.atol) and self.atol > 0):
            raise InputError(f"NcnnExportConfig.atol must be a positive finite number, got {self.atol!r}")
        if not (math.isfinite(self.noise_floor_factor) and self.noise_floor_factor >= 0):
            raise InputError(f"NcnnExportConfig.noise_floor_factor must be finite and >= 0, "
                             f"got {self.noise_floor_factor!r}")


@dataclass(frozen=True)
class NcnnExportReport:
    """What was written and how well it matched eager PyTorch on each verification input."""

    path: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    layers: dict[str, int]  # ncnn layer type -> count (Input and the graph's Split/Noop plumbing included)
    num_layers: int
    max_abs_diff: tuple[float, ...]
    atol: float
    noise_floor: dict[int, tuple[float, float]]
    file_size_bytes: int
    export_seconds: float  # trace + pnnx conversion; verification is not included
    verify_seconds: float
    verification: str
    torch_version: str
    pnnx_version: str
    ncnn_version: str
    layout_layers: dict[str, int] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        floor = " (within float64 noise floor)" if self.noise_floor else ""
        return f"max abs diff {max(self.max_abs_diff):.1e}{floor}; {self.num_layers} ncnn layers"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(input_shape=list(self.input_shape), output_shape=list(self.output_shape),
                    max_abs_diff=list(self.max_abs_diff),
                    noise_floor={str(k): list(v) for k, v in self.noise_floor.items()}, summary=self.summary)
        return data


# ---------------------------------------------------------------------------------------------- exporting


@exporter
def export_ncnn(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size: tuple[int, int, int],
    *,
    metadata: Mapping[str, str] | None = None,
    cfg: NcnnExportConfig = NcnnExportConfig(),
) -> NcnnExportReport:
    """Export ``model`` to a verified ncnn package (a directory) at ``path`` for inputs of (1, *input_size).

    Raises ``ExportError`` (``NcnnVerificationError``) if the model cannot be traced or converted, or if ncnn
    cannot run the result or disagrees with eager PyTorch. An existing package is replaced only on success.
    """
    check_model(model)
    input_size = check_input_size(input_size)
    props = check_metadata(metadata)
    target = Path(path)
    check_target(target, "ncnn", is_package=True)
    _ncnn(), _pnnx()  # a missing extra is one line before any work
    with eval_mode(model), temporary_path(target, suffix=".ncnn.tmp", directory=True) as tmp:
        start = time.perf_counter()
        example = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(cfg.seed))
        convert_to_ncnn(model, example, tmp / PARAM_FILE, tmp / BIN_FILE)
        props.update({"mzoo.torch_version": torch.__version__, "mzoo.pnnx_version": _version("pnnx"),
                      "mzoo.input_shape": json.dumps([1, *input_size])})
        (tmp / METADATA_FILE).write_text(json.dumps(props, indent=1, sort_keys=True) + "\n")
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        try:
            loaded = load_ncnn(tmp, threads=cfg.threads)
        except NcnnVerificationError as err:  # named as the package the user asked for, not the temporary one
            raise NcnnVerificationError(str(err).replace(str(tmp), str(target))) from err
        diffs, floor, out_shape = _verify(model, loaded, (1, *input_size), cfg)
        layers = loaded.layers
        report = NcnnExportReport(
            path=str(target), input_shape=(1, *input_size), output_shape=out_shape, layers=layers,
            num_layers=sum(layers.values()), max_abs_diff=diffs, atol=cfg.atol, noise_floor=floor,
            file_size_bytes=sum(p.stat().st_size for p in tmp.iterdir()), export_seconds=export_seconds,
            verify_seconds=time.perf_counter() - start,
            verification=f"ncnn fp32 (fp16 and Winograd off) vs eager fp32, {cfg.verify_runs} seeded input"
                         f"{'s' if cfg.verify_runs != 1 else ''} at batch 1",
            torch_version=torch.__version__, pnnx_version=_version("pnnx"), ncnn_version=_version("ncnn"),
            layout_layers={k: v for k, v in layers.items() if k in ("Permute", "Reshape", "Flatten")})
        del loaded
        publish(tmp, target)
    return report


def convert_to_ncnn(model: nn.Module, example: torch.Tensor, param: Path, weights: Path) -> None:
    """Trace ``model`` on ``example`` and convert it with pnnx to ``param`` + ``weights`` (fp32), unverified
    (:func:`export_ncnn` verifies). ``ExportError`` with pnnx's last log lines when it fails."""
    pnnx = _pnnx()
    name = type(model).__name__
    if example.shape[0] != 1:
        raise InputError(f"ncnn runs one image at a time; the example batch must be 1, got {tuple(example.shape)}")
    with scratch_directory("mzoo-pnnx-") as work, eval_mode(model), torch.inference_mode(False):
        traced = work / "model.pt"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's deprecation notices: pnnx reads TorchScript
                torch.jit.trace(model, (example,), check_trace=False).save(str(traced))
        except Exception as err:
            raise ExportError(f"TorchScript cannot trace {name} for pnnx: {one_line(err)}") from err
        shape = ",".join(str(d) for d in example.shape)
        command = [pnnx.EXEC_PATH, str(traced), f"inputshape=[{shape}]f32", "fp16=0", "device=cpu",
                   f"ncnnparam={param}", f"ncnnbin={weights}", f"ncnnpy={work / 'ncnn.py'}",
                   f"pnnxparam={work / 'pnnx.param'}", f"pnnxbin={work / 'pnnx.bin'}", f"pnnxpy={work / 'pnnx.py'}",
                   f"pnnxonnx={work / 'pnnx.onnx'}"]
        try:
            done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=_CONVERT_TIMEOUT_S)
        except subprocess.TimeoutExpired as err:
            raise ExportError(f"pnnx did not convert {name} within {err.timeout:.0f} s") from err
    if done.returncode != 0 or not param.is_file() or not weights.is_file():
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        tail = " | ".join(lines[-3:])[:_MAX_LOG_CHARS]
        raise ExportError(f"pnnx cannot convert {name} to ncnn (exit code {done.returncode}): {tail or 'no output'}")


# -------------------------------------------------------------------------------------------- verification


def _verify(model: nn.Module, loaded: NcnnProgram, shape: tuple[int, ...], cfg: NcnnExportConfig
            ) -> tuple[tuple[float, ...], dict[int, tuple[float, float]], tuple[int, ...]]:
    generator = torch.Generator().manual_seed(cfg.seed)
    diffs: list[float] = []
    floor: dict[int, tuple[float, float]] = {}
    model64: nn.Module | None = None
    out_shape: tuple[int, ...] = ()
    for index in range(cfg.verify_runs):
        x = torch.randn(*shape, generator=generator)
        expected = run_eager(model, x)
        got = loaded.run(x.numpy())
        if got.size != expected.size:
            raise _mismatch(cfg, index, math.inf, f"{got.size} output values, eager PyTorch has {expected.size} "
                                                  f"{tuple(expected.shape)}")
        got = got.reshape(expected.shape)
        out_shape = tuple(expected.shape)
        diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
        if not diff <= cfg.atol:  # `not <=` so that NaN fails too
            if not math.isfinite(diff) or cfg.noise_floor_factor == 0:
                raise _mismatch(cfg, index, diff)
            model64 = model64 or copy.deepcopy(model).double()
            ncnn_err, eager_err = float64_distances(model64, x, got, expected)
            if not within_noise_floor(ncnn_err, eager_err, cfg.atol, cfg.noise_floor_factor):
                raise _mismatch(cfg, index, diff, noise_floor_detail(diff, ncnn_err, eager_err, cfg.atol,
                                                                     cfg.noise_floor_factor))
            floor[index] = (ncnn_err, eager_err)
        diffs.append(diff)
    return tuple(diffs), floor, out_shape


def _mismatch(cfg: NcnnExportConfig, index: int, diff: float, detail: str = "") -> NcnnVerificationError:
    what = detail or f"max abs diff {diff:.3g} exceeds atol {cfg.atol:.3g}"
    return NcnnVerificationError(f"ncnn output for verification input {index} (seed {cfg.seed}) does not match "
                                 f"eager PyTorch: {what} (max abs diff {diff:.3g}, atol {cfg.atol:.3g})")


# ------------------------------------------------------------------------------------------------ reading


@dataclass
class NcnnProgram:
    """An ncnn package loaded into an ``ncnn.Net`` (fp16 off, ``threads`` threads); ``run`` takes a batch of one."""

    path: str
    net: Any
    input_name: str
    output_name: str
    layers: dict[str, int]

    def run(self, x: np.ndarray) -> np.ndarray:
        """The output for a (1, C, H, W) float32 input, as a flat float32 array."""
        import ncnn

        data = np.asarray(x, dtype=np.float32)
        if data.ndim != 4 or data.shape[0] != 1:
            raise InputError(f"{self.path!r} runs one image at a time: input must be (1, C, H, W), got {data.shape}")
        with self.net.create_extractor() as ex:
            ex.input(self.input_name, ncnn.Mat(np.ascontiguousarray(data[0])).clone())
            code, out = ex.extract(self.output_name)
        if code != 0:
            raise NcnnVerificationError(f"ncnn failed to run {self.path!r}: extract({self.output_name!r}) "
                                        f"returned {code}")
        return np.array(out, dtype=np.float32).reshape(-1)


def load_ncnn(path: str | os.PathLike[str], threads: int = 1, fp16: bool | None = False) -> NcnnProgram:
    """Load an ncnn package directory (or a ``.param`` file with its ``.bin`` beside it) into ``ncnn.Net``;
    ``fp16`` switches fp16 storage and arithmetic off (False, for verification) or on, or leaves ncnn's own
    per-CPU defaults (None, as an app gets them).

    Raises ``NcnnVerificationError`` naming the path for a missing package, a param file without the ncnn magic
    line, missing weights, or a graph ncnn refuses.
    """
    param, weights = _package_files(Path(path))
    text = param.read_text(errors="replace")
    lines = text.splitlines()
    if not lines or lines[0].strip() != _PARAM_MAGIC or len(lines) < 2:
        raise NcnnVerificationError(f"{str(param)!r} is not an ncnn param file (no '{_PARAM_MAGIC}' magic line)")
    layers = Counter(line.split()[0] for line in lines[2:] if line.strip())
    inputs = [line.split()[1] for line in lines[2:] if line.split() and line.split()[0] == "Input"]
    ncnn = _ncnn()
    net = ncnn.Net()
    if fp16 is not None:
        net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = fp16
        net.opt.use_bf16_storage = False
    if not fp16 and fp16 is not None:
        # Exact fp32 kernels: Winograd convolution trades accuracy for speed, and a chaotic random-init network
        # (darts_v2_cifar) amplifies its error past the float64 rule although the graph is right.
        net.opt.use_winograd_convolution = False
    net.opt.num_threads = threads
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise NcnnVerificationError(f"ncnn cannot load {str(param)!r} with {str(weights)!r}")
    in_names, out_names = list(net.input_names()), list(net.output_names())
    if len(in_names) != 1 or len(out_names) != 1:
        raise NcnnVerificationError(f"{str(param)!r} has inputs {in_names or inputs} and outputs {out_names}; "
                                    "expected one image tensor in and one out")
    return NcnnProgram(str(path), net, in_names[0], out_names[0], dict(sorted(layers.items())))


def _package_files(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        param, weights = path / PARAM_FILE, path / BIN_FILE
    elif path.suffix == ".param":
        param, weights = path, path.with_suffix(".bin")
    else:
        what = "does not exist" if not path.exists() else "is neither an ncnn package directory nor a .param file"
        raise NcnnVerificationError(f"ncnn model {str(path)!r} {what}")
    for file in (param, weights):
        if not file.is_file():
            raise NcnnVerificationError(f"ncnn model {str(path)!r} lacks {file.name}")
    return param, weights


def ncnn_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata :func:`export_ncnn` wrote into the package (``{}`` for one made elsewhere)."""
    file = Path(path) / METADATA_FILE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise NcnnVerificationError(f"{str(file)!r} is unreadable: {one_line(err)}") from err
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise NcnnVerificationError(f"{str(file)!r} is not a str -> str mapping")
    return data


def input_shape_of(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The input shape recorded in a package's metadata, else read from its param file's ``Input`` layer."""
    meta = ncnn_metadata(path) if Path(path).is_dir() else {}
    if "mzoo.input_shape" in meta:
        return tuple(int(d) for d in json.loads(meta["mzoo.input_shape"]))
    param, _ = _package_files(Path(path))
    for line in param.read_text(errors="replace").splitlines()[2:]:
        fields = line.split()
        if fields and fields[0] == "Input":
            dims = dict(re.findall(r"(\d+)=(-?\d+)", " ".join(fields[4:])))
            w, h, c = (int(dims.get(k, 0)) for k in ("0", "1", "2"))
            if w > 0 and h > 0 and c > 0:
                return (1, c, h, w)
    raise NcnnVerificationError(f"{str(path)!r} does not say its input shape (no mzoo metadata, no sized Input layer)")


# ------------------------------------------------------------------------------------------ the library


def _ncnn() -> Any:
    try:
        import ncnn
    except ImportError as err:
        raise missing_extra("ncnn export", "pnnx and ncnn", err) from err
    return ncnn


def _pnnx() -> Any:
    try:
        import pnnx
    except ImportError as err:
        raise missing_extra("ncnn export", "pnnx and ncnn", err) from err
    return pnnx


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
