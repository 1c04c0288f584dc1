"""The deployability report of an artefact on disk: what its runtime will run, what falls off the fast path, and
(on request) each op's measured share of latency.

Owns reading a LiteRT ``.tflite`` file (ops by type, the share and number of ops XNNPACK takes, its partitions,
each op left to LiteRT's own kernels with the module it came from, the transposes and reshapes in the graph), an
ncnn package (layers by type, the layout layers and the split/concat plumbing that grouped convolutions become),
an ONNX file (nodes by type, each mapped to the module whose weights it reads, the execution providers ONNX Runtime
places them on here, and what ORT's graph optimiser fused, converted and added) and an ExecuTorch ``.pte`` program
(the ops inside each XNNPACK partition as the delegate serialised them, the kernel calls left to portable kernels
in execution order, and the export-time breakdown of :func:`export.executorch.delegation_of` from the report beside
the file) into one ``Inspection`` with a plain-text rendering. ``profile_runs`` > 0 also times every op where the
runtime can say: ONNX Runtime's profiler (per-node kernel times) and ExecuTorch's ETDump (per XNNPACK op and per
portable kernel call). LiteRT's and ncnn's Python bindings expose no per-op timer; the report says so.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import statistics
import tempfile
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InputError

_NCNN_PLUMBING = ("Split", "Slice", "Concat", "Permute", "Reshape", "Flatten")
_ONNX_LAYOUT = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Split", "Slice", "Concat",
                          "ReorderInput", "ReorderOutput"})
# XNNPACK's serialised node types and the portable kernels that only move data.
_PTE_LAYOUT = frozenset({"XNNStaticTranspose", "XNNStaticReshape", "XNNStaticSlice", "XNNConcatenate2",
                         "XNNConcatenate3", "XNNConcatenate4", "XNNConcatenate5", "XNNCopy"})
_PTE_LAYOUT_KERNELS = ("permute", "view", "reshape", "squeeze", "unsqueeze", "expand", "cat", "split", "slice",
                       "transpose")
_SUFFIXES = ".tflite, .onnx or .pte file or an ncnn package (.ncnn directory or .param file)"
_TOP_OPS = 10
_MAX_WHERE = 50  # as LiteRT's not_delegated_at: a portable-heavy program would otherwise print every kernel call
_WARMUP_RUNS = 1
PORTABLE = "portable"  # where an op left to ExecuTorch's portable kernels ran: the one label of an op off the delegate
_PARAM_NAME = re.compile(r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$")  # "blocks.0.1.conv.weight": a module's parameter
_XNN_NODE_TYPE = re.compile(r'"xnode_union_type"\s*:\s*"(\w+)"')


@dataclass(frozen=True)
class OpTime:
    """One op's median time per run and its share of the time of all measured ops. ``block`` is the spec block
    (``blocks.<stage>.<index>``, ``stem``, ``head``, ...) its module belongs to, ``"?"`` where the artefact holds
    no names; ``where`` is what ran it (an ORT execution provider, ``XNNPACK partition <k>``, ``portable``)."""

    name: str
    op_type: str
    block: str
    where: str
    ms: float
    share: float


@dataclass(frozen=True)
class Profile:
    """Measured op times of one artefact in its runtime: the median over ``runs`` runs after a warm-up run, on
    seeded random inputs of the artefact's shape. ``op_ms`` is the sum of the ops' medians (the shares are of it
    and sum to 1), ``run_ms`` the median run as the runtime timed it: where ``op_ms`` falls short of it, the
    difference is the runtime's own overhead (scheduling, delegate calls, copies)."""

    runtime: str
    runs: int
    threads: int
    op_ms: float
    run_ms: float
    ops: tuple[OpTime, ...]  # largest share first

    def share_by(self, key: str) -> dict[str, float]:
        """The shares summed by ``op_type``, ``block`` or ``where``, largest first."""
        totals: dict[str, float] = defaultdict(float)
        for op in self.ops:
            totals[getattr(op, key)] += op.share
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "by_type": self.share_by("op_type"), "by_block": self.share_by("block"),
                "by_where": self.share_by("where")}

    def to_lines(self) -> list[str]:
        coverage = self.op_ms / self.run_ms if self.run_ms else 0.0
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        # Medians of each op need not add up to the median run; only a shortfall is the runtime's overhead.
        rest = ("the rest is the runtime's own overhead" if coverage <= 1
                else "per-op medians add up to more than the median run")
        head = (f"  measured share of latency ({self.runtime}, {threads}, median of {self.runs} runs after "
                f"{_WARMUP_RUNS} warm-up): ops {self.op_ms:.3f} ms of a {self.run_ms:.3f} ms run "
                f"({100 * coverage:.0f} %; {rest})")
        lines = [head]
        for title, key in (("by op type", "op_type"), ("by block", "block"), ("by where it ran", "where")):
            shares = self.share_by(key)
            if len(shares) > 1 or key == "op_type":
                lines.append(f"    {title}: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in shares.items()))
        off = [op for op in self.ops if op.where == PORTABLE]
        if off and len(off) < len(self.ops):  # with no delegate at all, "largest ops" already lists them
            lines.append(f"    not delegated ({100 * sum(op.share for op in off):.1f} % of op time):")
            lines += [f"      {_op_line(op)}" for op in off]
        lines.append(f"    largest ops (of {len(self.ops)}):")
        lines += [f"      {_op_line(op)}" for op in self.ops[:_TOP_OPS]]
        return lines


def _op_line(op: OpTime) -> str:
    return f"{100 * op.share:5.1f} %  {op.ms:.4f} ms  {op.op_type}  {op.name} @ {op.block}  ({op.where})"


@dataclass(frozen=True)
class Inspection:
    """What one artefact asks of its runtime. ``delegated_ops`` / ``partitions`` are None where the runtime has
    no delegate (ncnn runs every layer with its own kernels; ONNX Runtime places nodes on execution providers,
    counted in ``providers``). ``runtime_ops`` are the op types the runtime runs after its own graph rewrites where
    that differs from the file (ORT's optimised graph), ``runtime_changes`` what those rewrites added (+) and
    removed (-). ``not_delegated_at`` names each op off the fast path with the module or position it came from."""

    path: str
    format: str
    runtime: str
    ops: dict[str, int]
    total_ops: int
    delegated_ops: int | None = None
    partitions: int | None = None
    not_delegated: dict[str, int] = field(default_factory=dict)
    not_delegated_at: tuple[str, ...] = ()
    layout_ops: dict[str, int] = field(default_factory=dict)
    providers: dict[str, int] = field(default_factory=dict)
    runtime_ops: dict[str, int] = field(default_factory=dict)
    runtime_changes: dict[str, int] = field(default_factory=dict)
    ops_by_block: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    profile: Profile | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "not_delegated_at": list(self.not_delegated_at), "notes": list(self.notes)}
        data["profile"] = self.profile.to_dict() if self.profile else None
        return data

    def to_text(self) -> str:
        lines = [f"{self.path} ({self.format}, {self.runtime}): {self.total_ops} ops"]
        if self.delegated_ops is not None:
            share = self.delegated_ops / self.total_ops if self.total_ops else 0.0
            lines.append(f"  delegated to XNNPACK: {self.delegated_ops} of {self.total_ops} ops ({100 * share:.1f} %) "
                         f"in {self.partitions} partition{'s' if self.partitions != 1 else ''}")
            left = ", ".join(f"{k} x{v}" for k, v in self.not_delegated.items()) or "none"
            lines.append(f"  left to the runtime's own kernels: {left}")
            lines += [f"    {where}" for where in self.not_delegated_at]
        if self.providers:
            lines.append("  execution providers: " + ", ".join(f"{k} {v} nodes" for k, v in self.providers.items()))
        if self.runtime_changes:
            lines.append(f"  the runtime's graph rewrites ({sum(self.runtime_ops.values())} nodes run for the file's "
                         f"{self.total_ops}): " + ", ".join(f"{k} {v:+d}" for k, v in self.runtime_changes.items()))
        layout = ", ".join(f"{k} x{v}" for k, v in self.layout_ops.items()) or "none"
        lines.append(f"  layout and plumbing ops: {layout}")
        lines.append("  ops by type: " + ", ".join(f"{k} x{v}" for k, v in self.ops.items()))
        if self.ops_by_block:
            lines.append("  ops by block: " + ", ".join(f"{k} x{v}" for k, v in self.ops_by_block.items()))
        lines += [f"  note: {note}" for note in self.notes]
        if self.profile is not None:
            lines += self.profile.to_lines()
        return "\n".join(lines) + "\n"


def inspect_artefact(path: str | os.PathLike[str], *, profile_runs: int = 0, threads: int = 1) -> Inspection:
    """The deployability report of a ``.tflite``, ``.onnx`` or ``.pte`` file or an ncnn package (``.ncnn``
    directory or ``.param`` file). ``profile_runs`` > 0 times each op over that many runs (after a warm-up run) on
    ``threads`` intra-op threads (ONNX Runtime; ExecuTorch uses its process-wide pool as it is) where the runtime
    can measure it; elsewhere a note says why not.

    Raises ``InputError`` naming ``path`` for another kind of file, a missing one, or (ONNX, ExecuTorch) one its
    runtime cannot load; a ``.tflite`` file LiteRT cannot load raises ``LitertVerificationError``.
    """
    file = Path(path)
    for name, value, least in (("profile_runs", profile_runs, 0), ("threads", threads, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise InputError(f"{name} must be an int >= {least}, got {value!r}")
    if file.suffix not in (".tflite", ".onnx", ".pte", ".ncnn", ".param"):
        raise InputError(f"cannot inspect {str(file)!r}: give a {_SUFFIXES}")
    if not file.exists():
        raise InputError(f"cannot inspect {str(file)!r}: it does not exist")
    if file.suffix == ".onnx":
        return _inspect_onnx(file, profile_runs, threads)
    if file.suffix == ".pte":
        return _inspect_pte(file, profile_runs)
    if file.suffix == ".tflite":
        from export.litert import LITERT_RUNTIME, load_litert

        ops = load_litert(file).ops
        notes = (_litert_not_measurable(),) if profile_runs else ()
        return Inspection(str(file), "litert", LITERT_RUNTIME, ops.ops, ops.total_ops, ops.delegated_ops,
                          ops.partitions, ops.not_delegated, ops.not_delegated_at, ops.layout_ops, notes=notes)
    from export.ncnn import NCNN_RUNTIME, load_ncnn

    layers = {k: v for k, v in load_ncnn(file).layers.items() if k != "Input"}
    plumbing = {k: v for k, v in layers.items() if k in _NCNN_PLUMBING}
    notes = (("per-layer latency is not measured: the ncnn Python binding has no per-layer timer (ncnn times "
              "layers only in builds with NCNN_BENCHMARK)"),) if profile_runs else ()
    return Inspection(str(file), "ncnn", NCNN_RUNTIME, layers, sum(layers.values()), layout_ops=plumbing, notes=notes)


def _litert_not_measurable() -> str:
    return (f"per-op latency is not measured: ai-edge-litert {_version('ai-edge-litert')}'s Python Interpreter and "
            "CompiledModel expose no op profiler (op details carry no timings; the wheel's benchmark tool times "
            "whole runs, and the C++ benchmark_model with --enable_op_profiling is not in it); only whole-file "
            "timing is possible here")


def _cannot_inspect(file: Path, err: BaseException) -> InputError:
    """One line naming ``file`` once, from a loader's error that names it too."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return InputError(f"cannot inspect {str(file)!r}: {reason.replace(repr(str(file)), 'it')}")


def block_of(module: str) -> str:
    """The spec block a module path belongs to: up to its first run of indices (``blocks.0.1.conv_pw`` ->
    ``blocks.0.1``, ``features.3.conv.0`` -> ``features.3``), else its first name (``stem.conv`` -> ``stem``);
    ``"?"`` for no path."""
    parts = [p for p in module.split(".") if p]
    if not parts:
        return "?"
    first = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    if first is None:
        return parts[0]
    end = first
    while end < len(parts) and parts[end].isdigit():
        end += 1
    return ".".join(parts[:end])


def _by_block(modules: Iterable[str]) -> dict[str, int]:
    return dict(Counter(block_of(m) for m in modules))


def _median_ms(values: list[float], scale: float) -> float:
    return statistics.median(values) * scale if values else 0.0


def _profile(runtime: str, runs: int, threads: int, times: list[tuple[str, str, str, str, float]],
             run_ms: float) -> Profile:
    """``times``: (name, op type, block, where, median ms) per op."""
    total = sum(t[4] for t in times)
    ops = [OpTime(n, t, b, w, ms, ms / total if total else 0.0) for n, t, b, w, ms in times]
    return Profile(runtime, runs, threads, total, run_ms, tuple(sorted(ops, key=lambda op: -op.share)))


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------------------- ONNX


def _inspect_onnx(file: Path, runs: int, threads: int) -> Inspection:
    import onnxruntime as ort

    from export.errors import ExportError
    from export.onnx import load_onnx

    try:
        proto = load_onnx(file)
    except ExportError as err:
        raise _cannot_inspect(file, err) from err
    names = _onnx_modules(proto.graph)
    ops = Counter(_onnx_type(n) for n in proto.graph.node)
    optimised, profile = _ort_run(file, runs, threads, names)
    run_ops = Counter(_onnx_type(n) for n in optimised.node)
    changes = {k: run_ops[k] - ops[k] for k in sorted(set(ops) | set(run_ops)) if run_ops[k] != ops[k]}
    providers = (Counter(op.where for op in profile.ops) if profile
                 else Counter({"CPUExecutionProvider": len(optimised.node)}))
    notes = _ort_notes()
    if not names.params:
        notes.append("no node reads a named weight: blocks cannot be told apart in this file")
    return Inspection(str(file), "onnx", f"onnxruntime-cpu {ort.__version__}", dict(sorted(ops.items())),
                      len(proto.graph.node), layout_ops={k: v for k, v in sorted(ops.items()) if k in _ONNX_LAYOUT},
                      providers=dict(providers), runtime_ops=dict(sorted(run_ops.items())), runtime_changes=changes,
                      ops_by_block=_by_block(names.in_order), notes=tuple(notes), profile=profile)


def _ort_run(file: Path, runs: int, threads: int, names: _OnnxNames) -> tuple[Any, Profile | None]:
    """(the graph ORT runs after its optimiser, as deployed: level 'all' on the CPU provider; its profile over
    ``runs`` runs, None for 0)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="mzoo-inspect-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as OrtRunner deploys it
        options.intra_op_num_threads = threads
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        options.log_severity_level = 3  # its warning that an NCHWc-optimised graph is machine-specific is expected
        if runs:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / "profile")
        try:
            session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise _cannot_inspect(file, RuntimeError(f"ONNX Runtime cannot load it: {err}")) from err
        optimised = onnx.load_model(options.optimized_model_filepath).graph
        profile = _ort_profile(session, runs, threads, _onnx_modules(optimised, names).nodes) if runs else None
    return optimised, profile


def _ort_notes() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    # AzureExecutionProvider forwards whole requests to a remote endpoint; it runs no graph nodes.
    others = [p for p in available if p not in ("CPUExecutionProvider", "AzureExecutionProvider")]
    why = (f"{', '.join(others)} not used: mzoo runs ONNX files on the CPU provider" if others
           else "this machine has no accelerator provider")
    return [(f"ONNX Runtime {ort.__version__} here offers {', '.join(available)}; the session ran on "
             f"CPUExecutionProvider alone ({why}), so nothing is delegated and the graph is one partition"),
            ("graph rewrites at optimisation level 'all' as deployed (NCHWc layouts and ReorderInput/ReorderOutput "
             "are x86-specific); nodes map to modules by the weights they read, a node without weights to the node "
             "feeding it")]


def _onnx_type(node: Any) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


@dataclass(frozen=True)
class _OnnxNames:
    """Where each node and tensor of an ONNX graph came from: node name -> module path, tensor name -> module path,
    parameter (initializer) name -> module path, and each node's module in graph order (names may be empty)."""

    nodes: dict[str, str]
    tensors: dict[str, str]
    params: dict[str, str]
    in_order: tuple[str, ...]


def _onnx_modules(graph: Any, file: _OnnxNames | None = None) -> _OnnxNames:
    """The module each node of ``graph`` came from. A node reading a parameter (``blocks.0.1.conv.weight``), or a
    tensor computed from parameters alone (a QDQ file's dequantised weight), belongs to that parameter's module;
    else, in ORT's optimised graph, to the node of ``file`` of that name or that wrote its output (``relu_nchwc`` is
    the conv ORT fused into the ``relu`` node); else to the node that wrote its latest non-constant input. ORT
    renames the weights it rewrites (``FusedBack_big.weight``): a name holding a parameter name of ``file`` is that
    parameter."""
    initializers = {i.name for i in graph.initializer}
    params = {name: name.rsplit(".", 1)[0] for name in initializers if _PARAM_NAME.match(name)} if file is None else {}
    constant: dict[str, str] = {t: "" for t in initializers}  # tensors computed from initializers alone
    tensors: dict[str, str] = {}
    order: dict[str, int] = {}
    nodes: dict[str, str] = {}
    in_order: list[str] = []
    for index, node in enumerate(graph.node):
        inputs = [t for t in node.input if t]
        module = next((m for m in (_param_module(t, params, file) or constant.get(t, "") for t in inputs) if m), "")
        if inputs and all(t in constant for t in inputs):
            for t in node.output:
                constant[t] = module
        if not module and file is not None:
            named = file.nodes.get(node.name, "") if node.name else ""  # unnamed nodes share the key ""
            module = named or next((file.tensors[t] for t in node.output if file.tensors.get(t)), "")
            module = module or file.tensors.get(node.name.rsplit("_", 1)[0], "")
        if not module:
            fed = [t for t in inputs if t in order and t not in constant]
            module = tensors[max(fed, key=order.__getitem__)] if fed else ""
        nodes[node.name] = module
        in_order.append(module)
        for t in node.output:
            tensors[t], order[t] = module, index
    return _OnnxNames(nodes, tensors, params, tuple(in_order))


def _param_module(tensor: str, params: dict[str, str], file: _OnnxNames | None) -> str:
    if tensor in params:
        return params[tensor]
    if file is None:
        return ""
    if tensor in file.params:
        return file.params[tensor]
    held = [p for p in file.params if p in tensor]
    return file.params[max(held, key=len)] if held else ""


def _ort_profile(session: Any, runs: int, threads: int, modules: dict[str, str]) -> Profile:
    """Per-node kernel times from ORT's profiler. A node the optimised graph left unnamed (ORT names it
    ``Max_15`` in the profile only) takes the module of the node run before it."""
    import numpy as np

    rng = np.random.default_rng(0)
    feed = {}
    for value in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in value.shape]  # a symbolic (batch) dimension runs as 1
        dtype = np.float16 if "float16" in value.type else np.float32
        feed[value.name] = rng.standard_normal(shape).astype(dtype)
    for _ in range(_WARMUP_RUNS + runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")[_WARMUP_RUNS:]
    per_node: dict[str, list[float]] = defaultdict(list)
    kinds: dict[str, tuple[str, str]] = {}
    for e in sorted(events, key=lambda e: e.get("ts", 0)):
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not any(start <= e["ts"] <= end for start, end in windows):
            continue
        name = e["name"][:-len("_kernel_time")]
        per_node[name].append(float(e["dur"]))
        kinds[name] = (e["args"].get("op_name", "?"), e["args"].get("provider", "?"))
    times, module = [], ""
    for name, values in per_node.items():  # in the order the first measured run ran them
        module = modules.get(name) or module
        times.append((name, kinds[name][0], block_of(module), kinds[name][1], _median_ms(values, 1e-3)))
    run_ms = _median_ms([end - start for start, end in windows], 1e-3)
    return _profile("ONNX Runtime profiler, CPUExecutionProvider", runs, threads, times, run_ms)


# ------------------------------------------------------------------------------------------------- ExecuTorch


@dataclass(frozen=True)
class _Step:
    """One instruction of a ``.pte`` program's ``forward``: a delegate call (its backend and the node types it
    serialised, one placeholder where the blob is not XNNPACK's) or a kernel call (its operator)."""

    kind: str  # "delegate" or "kernel"
    name: str  # backend id or "aten::cumsum.out"
    nodes: tuple[str, ...] = ()


def _inspect_pte(file: Path, runs: int) -> Inspection:
    from export.errors import ExportError
    from export.executorch import PORTABLE_RUNTIME, XNNPACK_RUNTIME, load_pte

    try:
        loaded = load_pte(file)
        steps = _pte_steps(file)
    except (ExportError, ValueError, OSError) as err:
        raise _cannot_inspect(file, err) from err
    partitions = sum(step.kind == "delegate" for step in steps)
    ops: Counter[str] = Counter()
    portable: Counter[str] = Counter()
    where: list[str] = []
    seen = 0
    for step in steps:
        ops.update(step.nodes or [step.name])
        if step.kind == "delegate":
            seen += 1
        else:
            portable[step.name] += 1
            if partitions:
                where.append(f"{step.name} @ {_pte_position(seen, partitions)}")
    delegated = sum(len(step.nodes) for step in steps if step.kind == "delegate")
    layout = {k: v for k, v in sorted(ops.items()) if k in _PTE_LAYOUT or
              k.split("::")[-1].split(".")[0].removesuffix("_copy") in _PTE_LAYOUT_KERNELS}
    notes = ["the .pte holds no module names: its ops cannot be mapped to blocks without an ETRecord written at export"]
    if partitions:
        notes.insert(0, "XNNPACK ops are the delegate's own serialised nodes (activations fused into the op before "
                        "them; XNNStaticTranspose are the NCHW<->NHWC layout changes it adds)")
    notes += _export_breakdown(file)
    profile = _pte_profile(file, loaded.input_shape, runs, steps) if runs else None
    if runs and profile is None:
        notes.append("per-op latency is not measured: this ExecuTorch build wrote no ETDump events")
    elif profile is not None and partitions:
        notes.append("XNNPACK times its ops to the microsecond: an op under 1 us reads as 0")
    return Inspection(str(file), "pte", XNNPACK_RUNTIME if loaded.xnnpack else PORTABLE_RUNTIME,
                      dict(sorted(ops.items())), sum(ops.values()), delegated if partitions else None,
                      partitions or None, dict(sorted(portable.items())), tuple(where[:_MAX_WHERE]), layout,
                      notes=tuple(notes), profile=profile)


def _pte_position(partition: int, partitions: int) -> str:
    if partition == 0:
        return "before XNNPACK partition 1"
    if partition == partitions:
        return f"after XNNPACK partition {partition}"
    return f"between XNNPACK partitions {partition} and {partition + 1}"


def _pte_steps(file: Path) -> list[_Step]:
    """The instructions of ``forward`` in execution order, read from the program's flatbuffer."""
    from export.executorch import portable_lib

    portable_lib()  # ExecuTorch's import-time warnings silenced once, as the exporter does
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(file.read_bytes()).program
    plan = next(p for p in program.execution_plan if p.name == "forward")
    steps = []
    for instruction in plan.chains[0].instructions:
        args = instruction.instr_args
        if hasattr(args, "delegate_index"):
            delegate = plan.delegates[args.delegate_index]
            nodes: tuple[str, ...] = (f"{delegate.id} partition (its ops are not readable here)",)
            if delegate.id == "XnnpackBackend" and delegate.processed.location.name == "INLINE":
                nodes = _xnnpack_nodes(bytes(program.backend_delegate_data[delegate.processed.index].data))
            steps.append(_Step("delegate", delegate.id, nodes))
        elif hasattr(args, "op_index"):
            op = plan.operators[args.op_index]
            steps.append(_Step("kernel", f"{op.name}.{op.overload}" if op.overload else op.name))
    return steps


def _xnnpack_nodes(blob: bytes) -> tuple[str, ...]:
    """The node types of one XNNPACK delegate blob, in order, by converting its flatbuffer to JSON with the
    ``flatc`` and schema ExecuTorch ships (the delegate has no Python reader)."""
    import subprocess

    import executorch
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import (
        XNNHeader,
    )

    root = Path(next(iter(executorch.__path__)))
    header = XNNHeader.from_bytes(blob[:XNNHeader.EXPECTED_LENGTH])
    graph = blob[header.flatbuffer_offset:header.flatbuffer_offset + header.flatbuffer_size]
    with tempfile.TemporaryDirectory(prefix="mzoo-xnn-") as tmp:
        (Path(tmp) / "graph.bin").write_bytes(graph)
        done = subprocess.run([str(root / "data" / "bin" / "flatc"), "--json", "--strict-json", "--raw-binary",
                               "-o", tmp, str(root / "backends" / "xnnpack" / "serialization" / "schema.fbs"), "--",
                               str(Path(tmp) / "graph.bin")], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ValueError(f"its XNNPACK blob is unreadable: {done.stderr.strip()[:200]}")
        text = (Path(tmp) / "graph.json").read_text()  # not json.loads: flatc writes bare inf for unbounded clamps
    return tuple(_XNN_NODE_TYPE.findall(text))


def _export_breakdown(file: Path) -> list[str]:
    """What ``export.executorch.delegation_of`` counted at export, from the report ``mzoo export`` wrote beside
    the file (edge-dialect aten ops, before XNNPACK fused them)."""
    from export.executorch import Delegation

    report = file.with_name(file.name + ".json")
    try:
        data = json.loads(report.read_text())["delegation"]
        delegation = Delegation(**{k: data[k] for k in ("backend", "delegated_ops", "total_ops", "delegate_blobs",
                                                         "portable_ops")})
    except (OSError, ValueError, KeyError, TypeError):
        return [f"no export report beside it ({report.name}): the export-time breakdown of aten ops is not known"]
    left = ", ".join(f"{k} x{v}" for k, v in delegation.portable_ops.items()) or "none"
    return [f"at export (edge aten ops, {report.name}): {delegation.describe()}; left to portable kernels: {left}"]


def _pte_profile(file: Path, input_shape: tuple[int, ...], runs: int, steps: list[_Step]) -> Profile | None:
    """Per-op times from an ETDump of ``runs`` + 1 executions: XNNPACK's per-op events and the portable kernel
    calls (``native_call_*``), each in the partition or position it ran. XNNPACK runs on the process-wide thread
    pool as it is (resizing it under a loaded program corrupts the heap: see ``latency_tables.measure_pte``), whose
    size the profile records; portable kernels are single-threaded."""
    import torch

    from export.executorch import _runtime, portable_lib, runtime_log

    runtime = _runtime()
    threads = int(portable_lib()._threadpool_get_thread_count())
    with tempfile.TemporaryDirectory(prefix="mzoo-etdump-") as tmp, runtime_log():
        program = runtime.load_program(str(file), enable_etdump=True)
        method = program.load_method("forward")
        x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        for _ in range(_WARMUP_RUNS + runs):
            method.execute([x])
        dump = Path(tmp) / "forward.etdp"
        program.write_etdump_result_to_file(str(dump), str(Path(tmp) / "debug.bin"))
        if not dump.exists() or dump.stat().st_size == 0:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it warns that no ETRecord / debug buffer was given: none is needed
            from executorch.devtools import Inspector

            blocks = Inspector(etdump_path=str(dump)).event_blocks
    events = [e for b in blocks if b.name == "Execute" for e in b.events]
    if not events:
        return None
    kernels = {s.name.split("::")[-1]: s.name for s in steps if s.kind == "kernel"}
    times, partition, run_ms = [], 1, 0.0
    for event in events:
        raw = list(event.perf_data.raw)[_WARMUP_RUNS:] if event.perf_data else []
        if event.name == "Method::execute":
            run_ms = _median_ms(raw, 1.0)
        elif event.name == "DELEGATE_CALL":
            partition += 1
        elif event.is_delegated_op:
            times.append((event.name, re.sub(r"\s*#\d+$", "", event.name), "?", f"XNNPACK partition {partition}",
                          _median_ms(raw, 1.0)))
        elif event.name.startswith("native_call_"):
            kernel = event.name[len("native_call_"):]
            times.append((event.name, kernels.get(kernel, kernel), "?", PORTABLE, _median_ms(raw, 1.0)))
    return _profile(f"ExecuTorch {_version('executorch')} ETDump", runs, threads, times, run_ms)
