"""The deployability report of an artefact on disk: what its runtime will run, and what falls off the fast path.

Owns reading a LiteRT ``.tflite`` file (ops by type, the share and number of ops XNNPACK takes, its partitions,
each op left to LiteRT's own kernels with the module it came from, the transposes and reshapes in the graph) or
an ncnn package (layers by type, the layout layers and the split/concat plumbing that grouped convolutions become)
into one ``Inspection`` with a plain-text rendering. ONNX and ExecuTorch files are not read here yet.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InputError

_NCNN_PLUMBING = ("Split", "Slice", "Concat", "Permute", "Reshape", "Flatten")


@dataclass(frozen=True)
class Inspection:
    """What one artefact asks of its runtime. ``delegated_ops`` / ``partitions`` are None where the runtime has
    no delegate (ncnn runs every layer with its own kernels)."""

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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "not_delegated_at": list(self.not_delegated_at)}

    def to_text(self) -> str:
        lines = [f"{self.path} ({self.format}, {self.runtime}): {self.total_ops} ops"]
        if self.delegated_ops is not None:
            share = self.delegated_ops / self.total_ops if self.total_ops else 0.0
            lines.append(f"  delegated to XNNPACK: {self.delegated_ops} of {self.total_ops} ops ({100 * share:.1f} %) "
                         f"in {self.partitions} partition{'s' if self.partitions != 1 else ''}")
            left = ", ".join(f"{k} x{v}" for k, v in self.not_delegated.items()) or "none"
            lines.append(f"  left to the runtime's own kernels: {left}")
            lines += [f"    {where}" for where in self.not_delegated_at]
        layout = ", ".join(f"{k} x{v}" for k, v in self.layout_ops.items()) or "none"
        lines.append(f"  layout and plumbing ops: {layout}")
        lines.append("  ops by type: " + ", ".join(f"{k} x{v}" for k, v in self.ops.items()))
        return "\n".join(lines) + "\n"


def inspect_artefact(path: str | os.PathLike[str]) -> Inspection:
    """The deployability report of a ``.tflite`` file or an ncnn package (``.ncnn`` directory or ``.param`` file).

    Raises ``InputError`` naming ``path`` for another kind of file, and the format's verification error for a
    file its runtime cannot load.
    """
    file = Path(path)
    if file.suffix == ".tflite":
        from export.litert import LITERT_RUNTIME, load_litert

        ops = load_litert(file).ops
        return Inspection(str(file), "litert", LITERT_RUNTIME, ops.ops, ops.total_ops, ops.delegated_ops,
                          ops.partitions, ops.not_delegated, ops.not_delegated_at, ops.layout_ops)
    if file.suffix in (".ncnn", ".param"):
        from export.ncnn import NCNN_RUNTIME, load_ncnn

        layers = {k: v for k, v in load_ncnn(file).layers.items() if k != "Input"}
        plumbing = {k: v for k, v in layers.items() if k in _NCNN_PLUMBING}
        return Inspection(str(file), "ncnn", NCNN_RUNTIME, layers, sum(layers.values()), layout_ops=plumbing)
    raise InputError(f"cannot inspect {str(file)!r}: give a .tflite file or an ncnn package (.ncnn directory or "
                     ".param file)")
