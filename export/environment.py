"""Where a measurement was taken: CPU, core count, OS, and the versions of every runtime involved.

Owns the ``Environment`` record attached to each latency result so that numbers from different machines or
library versions are never compared by accident. Reading it has no side effects and needs no network.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Environment:
    """The machine and software a measurement ran on; versions are None when a package is not installed."""

    cpu_model: str
    logical_cores: int | None
    machine: str
    os: str
    python: str
    torch: str | None
    onnx: str | None
    onnxruntime: str | None
    numpy: str | None
    executorch: str | None = None
    coremltools: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Environment:
        names = {f.name for f in fields(cls)}
        # Records written before a field existed lack it; fields with a default may be absent.
        optional = {f.name for f in fields(cls) if f.default is not MISSING}
        missing = names - set(data) - optional
        if missing:
            raise ValueError(f"environment record is missing fields {sorted(missing)}")
        return cls(**{name: data[name] for name in names if name in data})


def current_environment() -> Environment:
    """Describe this process's machine and library versions."""
    return Environment(
        cpu_model=_cpu_model(),
        logical_cores=os.cpu_count(),
        machine=platform.machine(),
        os=platform.platform(),
        python=platform.python_version(),
        torch=_version("torch"),
        onnx=_version("onnx"),
        onnxruntime=_version("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
        numpy=_version("numpy"),
        executorch=_version("executorch"),
        coremltools=_version("coremltools"),
    )


def _cpu_model() -> str:
    # platform.processor() is often just "x86_64" on Linux; /proc/cpuinfo has the marketing name.
    try:
        for line in _CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or sys.platform


def _version(*distributions: str) -> str | None:
    # ORT ships under several distribution names (CPU, GPU, OpenVINO builds) with one import name.
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
