"""ExecuTorch export that always verifies: ``torch.export``, lower (XNNPACK delegate or portable kernels only),
write a ``.pte`` program, run it in the ExecuTorch runtime, compare with eager PyTorch, then publish.

Owns turning an ``nn.Module`` into one self-contained ``.pte`` file with a static input shape (the usual on-device
case: memory is planned ahead of time for exactly that shape, so the batch size is fixed at export), the
delegation breakdown (which ops XNNPACK runs and which ones are left to the portable kernels), reading such files
back with clear errors (``load_pte``, ``pte_metadata``) and timing them with the protocol of
:mod:`latency_tables.measure` (``measure_pte``). A file only appears at the requested path once the runtime loaded the
bytes on disk and matched eager PyTorch within ``PteExportConfig.atol`` on every seeded verification input; a
network whose own fp32 forward drifts by more than ``atol`` is judged by the float64 noise-floor rule of
:mod:`export.onnx`. ExecuTorch is imported on first use, not with this module: it takes seconds to import.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import io
import json
import logging
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from common.errors import InputError
from export.errors import ExecutorchVerificationError, ExportError, exporter, one_line
from common.files import check_target, publish, temporary_path

from export.parity import (check_input_size, check_metadata, check_model, eval_mode, float64_distances, noise_floor_detail,
                            run_eager, within_noise_floor)

Backend = Literal["xnnpack", "portable"]
BACKENDS: tuple[str, ...] = ("xnnpack", "portable")
XNNPACK_RUNTIME = "executorch-xnnpack"
PORTABLE_RUNTIME = "executorch-portable"
METADATA_METHOD = "mzoo_metadata"
_XNNPACK_ID = b"XnnpackBackend"
_FORWARD = "forward"
# ExecuTorch's flatbuffer file identifier is "ET" + a two-digit schema version at bytes 4..8, optionally followed
# by an "eh00" extended header that records the flatbuffer and segment sizes.
_PTE_MAGIC_OFFSET = 4
_EXTENDED_HEADER = b"eh00"
_MIN_PTE_BYTES = 32
_MAX_LOG_CHARS = 400
_SCALAR_TYPE_FLOAT = 6  # c10::ScalarType::Float as reported by TensorInfo.dtype()
# Structural nodes that run no kernel: tuple indexing of multi-output ops, and the delegate call itself
# (its contents are counted op by op inside the lowered module).
_NOT_COMPUTE = frozenset({"getitem", "executorch_call_delegate"})


@dataclass(frozen=True)
class PteExportConfig:
    """How to export and how strictly to verify.

    ``batch_size`` is baked into the program (static shapes); ``verify_runs`` seeded inputs of that batch are
    compared with eager PyTorch. ``noise_floor_factor`` = 0 switches the float64 escape off. A ``.pte`` method
    takes its arguments by position, so ``input_name``/``output_name`` are recorded in the metadata (for apps
    that bind by name) and used in error messages, not in the program.
    """

    backend: Backend = "xnnpack"
    batch_size: int = 1
    atol: float = 1e-4
    verify_runs: int = 3
    seed: int = 0
    input_name: str = "input"
    output_name: str = "logits"
    noise_floor_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"backend {self.backend!r} is not supported; choose one of {BACKENDS}")
        for name in ("batch_size", "verify_runs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}")
        if not (math.isfinite(self.atol) and self.atol > 0):
            raise InputError(f"atol must be a positive finite number, got {self.atol!r}")
        if not (math.isfinite(self.noise_floor_factor) and self.noise_floor_factor >= 0):
            raise InputError(f"noise_floor_factor must be a finite number >= 0, got {self.noise_floor_factor!r}")
        if not self.input_name or not self.output_name or self.input_name == self.output_name:
            raise InputError(
                f"input_name {self.input_name!r} and output_name {self.output_name!r} must be non-empty and differ"
            )


@dataclass(frozen=True)
class Delegation:
    """How much of the lowered graph a delegate runs. Ops are ``call_function`` nodes other than tuple
    indexing; ``portable_ops`` maps each op type left to the portable kernels to its count."""

    backend: str
    delegated_ops: int
    total_ops: int
    delegate_blobs: int
    portable_ops: dict[str, int]

    @property
    def fraction(self) -> float:
        """Delegated ops / all ops (0 for an empty graph)."""
        return self.delegated_ops / self.total_ops if self.total_ops else 0.0

    def describe(self) -> str:
        if self.backend == "portable":
            return f"portable kernels only ({self.total_ops} ops, no delegate)"
        return (f"{100 * self.fraction:.1f} % of {self.total_ops} ops delegated to XNNPACK "
                f"in {self.delegate_blobs} blob{'s' if self.delegate_blobs != 1 else ''}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction}


@dataclass(frozen=True)
class PteExportReport:
    """What was written and how well it matched eager PyTorch on each verification input."""

    path: str
    backend: Backend
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    max_abs_diff: tuple[float, ...]  # one per verification input
    atol: float
    # Verification inputs that passed through the float64 noise-floor rule: (ExecuTorch vs fp64, eager vs fp64).
    noise_floor: dict[int, tuple[float, float]]
    delegation: Delegation
    file_size_bytes: int
    export_seconds: float  # torch.export + lowering + serialisation; verification is not included
    verify_seconds: float
    verification: str
    torch_version: str
    executorch_version: str

    @property
    def summary(self) -> str:
        """One line: worst difference over the verification inputs and the delegated share."""
        floor = " (within float64 noise floor)" if self.noise_floor else ""
        return f"max abs diff {max(self.max_abs_diff):.1e}{floor}; {self.delegation.describe()}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(input_shape=list(self.input_shape), output_shape=list(self.output_shape),
                    max_abs_diff=list(self.max_abs_diff), delegation=self.delegation.to_dict(),
                    noise_floor={str(k): list(v) for k, v in self.noise_floor.items()}, summary=self.summary)
        return data


@dataclass(frozen=True)
class PteProgram:
    """A ``.pte`` file loaded into the ExecuTorch runtime with its ``forward`` method ready to run."""

    path: str
    program: Any  # executorch.runtime.Program
    forward: Any  # executorch.runtime.Method
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    xnnpack: bool  # the program holds at least one XNNPACK delegate blob

    @property
    def runtime(self) -> str:
        return XNNPACK_RUNTIME if self.xnnpack else PORTABLE_RUNTIME

    def run(self, x: torch.Tensor) -> list[Any]:
        """Execute ``forward`` on ``x``; raises ``ExecutorchVerificationError`` with the runtime's own log line."""
        with runtime_log() as log:
            try:
                return list(self.forward.execute([x]))
            except Exception as err:
                raise ExecutorchVerificationError(
                    f"ExecuTorch failed to run {self.path!r} on input {tuple(x.shape)}: {with_log(err, log)}"
                ) from err


# ---------------------------------------------------------------------------------------------- exporting


@exporter
def export_pte(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size: tuple[int, int, int],
    *,
    metadata: Mapping[str, str] | None = None,
    cfg: PteExportConfig = PteExportConfig(),
) -> PteExportReport:
    """Export ``model`` to a verified ExecuTorch program at ``path`` for inputs of (cfg.batch_size, *input_size).

    ``input_size`` is (channels, height, width); ``metadata`` is stored in the program as the constant method
    ``mzoo_metadata`` (read it with :func:`pte_metadata`). Raises ``ExportError`` if the model cannot be
    exported or lowered or the directory cannot be written, and ``ExecutorchVerificationError`` if the runtime
    cannot load or run the program or disagrees with eager PyTorch. An existing file is replaced only on success.
    """
    check_model(model)
    input_size = check_input_size(input_size)
    props = pte_metadata_props(metadata, cfg)
    target = Path(path)
    check_target(target, "ExecuTorch")

    with eval_mode(model), temporary_path(target, suffix=".pte.tmp") as tmp:
        return _export_to(model, target, tmp, input_size, props, cfg)


def _export_to(model: nn.Module, target: Path, tmp: Path, input_size: tuple[int, int, int],
               props: dict[str, str], cfg: PteExportConfig) -> PteExportReport:
    inputs = _verification_inputs(input_size, cfg)
    start = time.perf_counter()
    buffer, delegation = lower_program(model, inputs[0], props, cfg)
    tmp.write_bytes(buffer)
    export_seconds = time.perf_counter() - start
    start = time.perf_counter()
    loaded = load_pte(tmp)  # the bytes on disk, as a device would read them
    diffs, noise_floor = _verify(model, loaded, inputs, cfg)
    verify_seconds = time.perf_counter() - start
    report = PteExportReport(
        path=str(target),
        backend=cfg.backend,
        input_shape=loaded.input_shape,
        output_shape=loaded.output_shape,
        max_abs_diff=diffs,
        atol=cfg.atol,
        noise_floor=noise_floor,
        delegation=delegation,
        file_size_bytes=tmp.stat().st_size,
        export_seconds=export_seconds,
        verify_seconds=verify_seconds,
        verification=(f"ExecuTorch {_backend_label(cfg.backend)} vs eager fp32, {cfg.verify_runs} seeded "
                      f"input{'s' if cfg.verify_runs != 1 else ''} at batch {cfg.batch_size}"),
        torch_version=torch.__version__,
        executorch_version=_executorch_version(),
    )
    del loaded  # release the runtime's mapping of the temp file before it is renamed
    publish(tmp, target)
    return report


def pte_metadata_props(metadata: Mapping[str, str] | None, cfg: PteExportConfig) -> dict[str, str]:
    """The checked user metadata plus what every program records (backend, batch, I/O names, versions)."""
    props = check_metadata(metadata)
    props.update({"mzoo.backend": cfg.backend, "mzoo.batch_size": str(cfg.batch_size),
                  "mzoo.input_name": cfg.input_name, "mzoo.output_name": cfg.output_name,
                  "mzoo.torch_version": torch.__version__, "mzoo.executorch_version": _executorch_version()})
    return props


def _verification_inputs(input_size: tuple[int, int, int], cfg: PteExportConfig) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(cfg.seed)
    return [torch.randn(cfg.batch_size, *input_size, generator=generator) for _ in range(cfg.verify_runs)]


def lower_program(model: nn.Module, example: torch.Tensor, props: Mapping[str, str],
           cfg: PteExportConfig) -> tuple[bytes, Delegation]:
    """torch.export, lower to the edge dialect with the configured delegate, and serialise to .pte bytes."""
    name = type(model).__name__
    try:
        program = torch.export.export(model, (example,))
    except Exception as err:
        raise ExportError(f"torch.export failed for {name}: {one_line(err)}") from err
    to_edge_transform_and_lower, partitioner = _lowering_api(cfg.backend)
    try:
        edge = to_edge_transform_and_lower(program, partitioner=partitioner,
                                           constant_methods={METADATA_METHOD: json.dumps(dict(props))})
        # to_executorch rewrites the graph into out-variants in place, so count delegation before it.
        delegation = delegation_of(edge.exported_program().graph_module, cfg.backend)
        buffer = edge.to_executorch().buffer
    except Exception as err:
        raise ExportError(
            f"lowering {name} to ExecuTorch ({_backend_label(cfg.backend)}) failed: {one_line(err)}"
        ) from err
    return bytes(buffer), delegation


def delegation_of(graph_module: torch.fx.GraphModule, backend: str = "xnnpack") -> Delegation:
    """Count delegated and portable ops in a lowered edge graph (before ``to_executorch``)."""
    portable: Counter[str] = Counter()
    delegated = blobs = 0
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module"):
            blobs += 1
            delegated += sum(1 for n in getattr(graph_module, node.target).original_module.graph.nodes
                             if _is_compute(n))
        elif _is_compute(node):
            portable[_op_name(node.target)] += 1
    return Delegation(backend, delegated, delegated + sum(portable.values()), blobs, dict(sorted(portable.items())))


def _is_compute(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and _op_name(node.target) not in _NOT_COMPUTE


def _op_name(target: Any) -> str:
    # Edge ops print their full schema; their __name__ is the short "aten.conv.default" form.
    return str(getattr(target, "__name__", target))


def _backend_label(backend: str) -> str:
    return "XNNPACK" if backend == "xnnpack" else "portable"


# -------------------------------------------------------------------------------------------- verification


def _verify(model: nn.Module, loaded: PteProgram, inputs: list[torch.Tensor],
            cfg: PteExportConfig) -> tuple[tuple[float, ...], dict[int, tuple[float, float]]]:
    diffs: list[float] = []
    noise_floor: dict[int, tuple[float, float]] = {}
    model64: nn.Module | None = None
    for index, x in enumerate(inputs):
        expected = run_eager(model, x)
        outputs = loaded.run(x.clone())  # a clone: the comparison must not depend on what the runtime does to x
        diff = _compare(outputs, expected, index, cfg)
        if not diff <= cfg.atol:  # `not <=` so that NaN fails too
            if not math.isfinite(diff) or cfg.noise_floor_factor == 0:
                raise _mismatch(cfg, index, diff)
            if model64 is None:
                model64 = copy.deepcopy(model).double()
            got = outputs[0].detach().float().cpu().numpy()
            noise_floor[index] = _check_float64_floor(model64, x, got, expected, diff, index, cfg)
        diffs.append(diff)
    return tuple(diffs), noise_floor


def _compare(outputs: list[Any], expected: np.ndarray, index: int, cfg: PteExportConfig) -> float:
    if len(outputs) != 1 or not isinstance(outputs[0], torch.Tensor):
        kinds = [type(o).__name__ for o in outputs]
        raise _mismatch(cfg, index, math.nan, f"the program returned {kinds}, expected one tensor")
    got = outputs[0].detach().float().cpu().numpy()
    if got.shape != expected.shape:
        raise _mismatch(cfg, index, math.inf, f"shape {got.shape} != eager shape {expected.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)), initial=0.0))


def _check_float64_floor(model64: nn.Module, x: torch.Tensor, got: np.ndarray, expected: np.ndarray, diff: float,
                         index: int, cfg: PteExportConfig) -> tuple[float, float]:
    et_err, eager_err = float64_distances(model64, x, got, expected)
    if within_noise_floor(et_err, eager_err, cfg.atol, cfg.noise_floor_factor):
        return et_err, eager_err
    raise _mismatch(cfg, index, diff, noise_floor_detail(diff, et_err, eager_err, cfg.atol, cfg.noise_floor_factor))


def _mismatch(cfg: PteExportConfig, index: int, diff: float, detail: str = "") -> ExecutorchVerificationError:
    what = detail or f"max abs diff {diff:.3g} exceeds atol {cfg.atol:.3g}"
    return ExecutorchVerificationError(
        f"ExecuTorch ({_backend_label(cfg.backend)}) output {cfg.output_name!r} for verification input {index} "
        f"(seed {cfg.seed}, batch {cfg.batch_size}) does not match eager PyTorch: {what} "
        f"(max abs diff {diff:.3g}, atol {cfg.atol:.3g})"
    )


# ------------------------------------------------------------------------------------------------ reading


def load_pte(path: str | os.PathLike[str]) -> PteProgram:
    """Load a ``.pte`` file into the ExecuTorch runtime and prepare ``forward``.

    Raises ``ExecutorchVerificationError`` with a one-line reason naming ``path`` for a missing, non-regular,
    truncated or non-ExecuTorch file, or one the runtime rejects.
    """
    file = Path(path)
    if not file.exists():
        raise ExecutorchVerificationError(f"ExecuTorch file {str(file)!r} does not exist")
    if not file.is_file():
        raise ExecutorchVerificationError(f"ExecuTorch path {str(file)!r} is not a regular file")
    flatbuffer = _check_header(file)
    runtime = _runtime()
    with runtime_log() as log:
        try:
            program = runtime.load_program(str(file))
            if _FORWARD not in program.method_names:
                raise InputError(f"it has no {_FORWARD!r} method (methods: {sorted(program.method_names)})")
            forward = program.load_method(_FORWARD)
            meta = forward.metadata
            if meta.num_inputs() != 1 or meta.num_outputs() < 1:
                raise InputError(f"'forward' takes {meta.num_inputs()} inputs, expected one image tensor")
            info = meta.input_tensor_meta(0)
            if info.dtype() != _SCALAR_TYPE_FLOAT:
                raise InputError(f"'forward' input has scalar type {info.dtype()}, expected float32")
        except Exception as err:
            raise ExecutorchVerificationError(
                f"ExecuTorch cannot load {str(file)!r}: {with_log(err, log)}"
            ) from err
    return PteProgram(
        path=str(file),
        program=program,
        forward=forward,
        input_shape=tuple(int(d) for d in info.sizes()),
        output_shape=tuple(int(d) for d in meta.output_tensor_meta(0).sizes()),
        xnnpack=_XNNPACK_ID in flatbuffer,
    )


def _check_header(file: Path) -> bytes:
    """Check the identifier and the sizes the header promises; returns the flatbuffer part (without segments).

    The runtime must never see a file without an ExecuTorch identifier: it logs the four identifier bytes,
    and bytes that are not UTF-8 abort the whole Python process inside the pybind log handler.
    """
    data = file.read_bytes()
    name = str(file)
    if len(data) < _MIN_PTE_BYTES:
        raise ExecutorchVerificationError(f"{name!r} is not an ExecuTorch program: only {len(data)} bytes")
    ident = data[_PTE_MAGIC_OFFSET:_PTE_MAGIC_OFFSET + 4]
    if not (ident[:2] == b"ET" and ident[2:].isdigit()):
        raise ExecutorchVerificationError(
            f"{name!r} is not an ExecuTorch program: no 'ET..' file identifier (found {ident!r})"
        )
    header = data[8:40]
    if header[:4] != _EXTENDED_HEADER:
        return data
    program_size = int.from_bytes(header[8:16], "little")
    segment_base = int.from_bytes(header[16:24], "little")
    segment_size = int.from_bytes(header[24:32], "little")
    expected = max(program_size, segment_base + segment_size if segment_base else 0)
    if len(data) < expected:
        raise ExecutorchVerificationError(
            f"{name!r} is truncated: its header promises {expected} bytes, the file has {len(data)}"
        )
    return data[:program_size]


def pte_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``mzoo_metadata`` written by :func:`export_pte` (``{}`` for a program exported elsewhere)."""
    loaded = load_pte(path)
    if METADATA_METHOD not in loaded.program.method_names:
        return {}
    with runtime_log() as log:
        try:
            (text,) = loaded.program.load_method(METADATA_METHOD).execute([])
            data = json.loads(text)
        except Exception as err:
            raise ExecutorchVerificationError(
                f"{loaded.path!r} has an unreadable {METADATA_METHOD!r} method: {with_log(err, log)}"
            ) from err
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ExecutorchVerificationError(f"{loaded.path!r}: {METADATA_METHOD!r} is not a str -> str mapping")
    return data


# ------------------------------------------------------------------------------------------ the library


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    # Importing ExecuTorch warns that the pybindings are experimental, and torchao (pulled in by the XNNPACK
    # partitioner) logs a torch deprecation warning; neither is actionable for a user of this exporter.
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This API is experimental")
            yield
    finally:
        pytree_log.setLevel(level)


def _lowering_api(backend: str) -> tuple[Any, list[Any]]:
    with _quiet_import():
        from executorch.exir import to_edge_transform_and_lower

        if backend == "portable":
            return to_edge_transform_and_lower, []
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    return to_edge_transform_and_lower, [XnnpackPartitioner()]


def _runtime() -> Any:
    with _quiet_import():
        from executorch.runtime import Runtime
    return Runtime.get()


def portable_lib() -> Any:
    with _quiet_import():
        from executorch.extension.pybindings import portable_lib
    return portable_lib


_BINDINGS = "executorch.extension.pybindings.portable_lib"


def runtime_without_compiler() -> None:
    """Let this process load ExecuTorch's runtime without its compiler: for a process that only runs programs.

    ``pybindings.portable_lib``, which the runtime API imports, re-exports the C extension ``pybindings._C`` but
    first imports ``executorch.exir`` (the whole compiler: 4-5 s of a measuring process's 6 s of imports, paid once
    per op of a latency table) for one warning class. After this call ``_C`` itself stands in for
    ``portable_lib``: the same extension and the same functions, so the runtime and every timing are unchanged.
    It does nothing where ``portable_lib`` or ``exir`` is already loaded (a process that exports keeps the real
    module) or where this ExecuTorch has no ``_C`` extension.
    """
    if _BINDINGS in sys.modules or "executorch.exir" in sys.modules:
        return
    import torch  # noqa: F401 (the extension links against libtorch, which this loads)

    try:
        from executorch.extension import pybindings
        from executorch.extension.pybindings import _C
    except ImportError:
        return
    sys.modules[_BINDINGS] = _C
    pybindings.portable_lib = _C  # type: ignore[attr-defined]


@contextlib.contextmanager
def runtime_log() -> Iterator[io.StringIO]:
    """Capture the runtime's C++ log lines (cpuinfo probing, thread-pool resets, error context).

    ExecuTorch's pybindings write them to Python's ``sys.stderr``; they are noise on success and the useful part
    of the message on failure, where ``with_log`` appends them.
    """
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer


def with_log(err: BaseException, log: io.StringIO) -> str:
    lines = [line.strip() for line in log.getvalue().splitlines() if line.strip() and "cpuinfo" not in line]
    text = " | ".join(lines)
    if len(text) > _MAX_LOG_CHARS:
        text = text[:_MAX_LOG_CHARS] + "..."
    return one_line(err) + (f" [runtime log: {text}]" if text else "")


def _executorch_version() -> str:
    try:
        return importlib.metadata.version("executorch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
