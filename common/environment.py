"""Where a measurement was taken: CPU, core count, OS, and the versions of every runtime involved.

Owns the ``Environment`` record attached to each latency result so that numbers from different machines or
library versions are never compared by accident, and its ``fingerprint``: a short hash that latency tables and
device agents use to tell whether two records come from the same machine and software. Reading it has no side
effects and needs no network.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from common.errors import InputError

_CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo keys that name the CPU or board, best first: x86 has "model name"; ARM boards (Raspberry Pi)
# often only "Model", older Android kernels "Hardware".
_CPUINFO_KEYS = ("model name", "Model", "Hardware")
FINGERPRINT_CHARS = 12
# Everything that changes latency: the CPU, the OS and every runtime version. ``python`` is in: the
# interpreter's overhead shows up in timed Python calls.
_FINGERPRINT_FIELDS = ("cpu_model", "logical_cores", "machine", "os", "python", "torch", "onnx", "onnxruntime",
                       "numpy", "executorch", "coremltools")
# Added after records existed: hashed only when set, so that older records keep their fingerprint.
_OPTIONAL_FINGERPRINT_FIELDS = ("cpu_id",)
# /proc/cpuinfo keys that identify the microarchitecture behind a marketing name. Hypervisors often mask the name
# ("AMD EPYC" for every generation: this project's VMs have run on hosts 2x apart in speed under that one name),
# while family/model/stepping (x86) or implementer/part (ARM) still tell the cores apart.
_X86_ID_KEYS = ("vendor_id", "cpu family", "model", "stepping")
_ARM_ID_KEYS = ("CPU implementer", "CPU part")


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
    # The CPU's identity below its name: "AuthenticAMD family 23 model 1 stepping 2" (x86), "ARM 0x41:0xd05+0x41:0xd0d"
    # (the distinct core types of a big.LITTLE SoC); None where the OS does not say.
    cpu_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def fingerprint(self) -> str:
        """12 hex digits of the SHA-256 of the CPU, core count, machine, OS and runtime versions.

        Stable across processes and Python versions of the same record (canonical JSON); not part of
        ``to_dict`` so that records written before it existed stay byte-identical after a round trip.
        """
        hashed = {name: getattr(self, name) for name in _FINGERPRINT_FIELDS}
        hashed |= {name: getattr(self, name) for name in _OPTIONAL_FINGERPRINT_FIELDS if getattr(self, name) is not None}
        payload = json.dumps(hashed, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:FINGERPRINT_CHARS]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Environment:
        names = {f.name for f in fields(cls)}
        # Records written before a field existed lack it; fields with a default may be absent.
        optional = {f.name for f in fields(cls) if f.default is not MISSING}
        missing = names - set(data) - optional
        if missing:
            raise InputError(f"environment record is missing fields {sorted(missing)}")
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
        cpu_id=_cpu_id(),
    )


def _cpu_model() -> str:
    # platform.processor() is often just "x86_64" on Linux; /proc/cpuinfo has the marketing name.
    found: dict[str, str] = {}
    try:
        for line in _CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in _CPUINFO_KEYS and value.strip():
                found.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    for key in _CPUINFO_KEYS:
        if key in found:
            return found[key]
    if sys.platform == "darwin":
        brand = _sysctl("machdep.cpu.brand_string")  # "Apple M2"; platform.processor() says only "arm"
        if brand:
            return brand
    return platform.processor() or platform.machine() or sys.platform


def _cpu_id(text: str | None = None) -> str | None:
    """The CPU's identity from ``/proc/cpuinfo`` (or ``text``, for tests): x86 vendor, family, model and stepping;
    ARM implementer:part of each distinct core type; None when neither is there (macOS, Windows)."""
    if text is None:
        try:
            text = _CPUINFO.read_text(errors="replace")
        except OSError:
            return None
    first: dict[str, str] = {}
    arm_parts: set[str] = set()
    for block in text.split("\n\n"):
        values = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            values[key.strip()] = value.strip()
        for key, value in values.items():
            first.setdefault(key, value)
        if all(values.get(k) for k in _ARM_ID_KEYS):
            arm_parts.add(":".join(values[k] for k in _ARM_ID_KEYS))
    if all(first.get(k) for k in _X86_ID_KEYS):
        vendor, family, model, stepping = (first[k] for k in _X86_ID_KEYS)
        return f"{vendor} family {family} model {model} stepping {stepping}"
    if arm_parts:
        return "ARM " + "+".join(sorted(arm_parts))
    return None


def _sysctl(name: str) -> str | None:
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def _version(*distributions: str) -> str | None:
    # ORT ships under several distribution names (CPU, GPU, OpenVINO builds) with one import name.
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
