"""The device agent's measuring child: a fresh process that loads the runtime, caps its own address space, times
one artefact with the project's protocol and writes its answer (or its error) to a file; and the parent's reading
of that answer. One process per measurement, so a model that aborts or runs out of memory takes only it down.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

from common.files import write_json_atomic
from export.errors import ExportError, one_line
from latency_tables.agent_checks import AgentError
from latency_tables.measure import BenchConfig, LatencyResult

_STDERR_TAIL_LINES = 3
_ALLOCATION_FAILURE = re.compile(r"bad_alloc|failed to allocate|cannot allocate|out of memory", re.IGNORECASE)
_CHILD_COMMAND = "import sys; from latency_tables.agent_child import _child_main; sys.exit(_child_main(sys.argv[1:]))"


def _read_answer(answer: Path, stderr: Path, returncode: int, memory_mb: int) -> LatencyResult:
    """The measuring process's result, or its error as an ``AgentError``."""
    try:
        data = json.loads(answer.read_text())
    except (OSError, ValueError):
        with stderr.open("rb") as file:
            file.seek(max(0, stderr.stat().st_size - 16384))
            text = file.read().decode("utf-8", "replace")
        tail = " | ".join(line.strip() for line in text.splitlines()[-_STDERR_TAIL_LINES:] if line.strip())
        hint = (f"; it may have exceeded its memory cap of {memory_mb} MiB (--child-memory-mb)"
                if returncode < 0 or _ALLOCATION_FAILURE.search(text) or "MemoryError" in text else "")
        raise AgentError(HTTPStatus.INTERNAL_SERVER_ERROR,
                         f"the measuring process exited with code {returncode} without a result "
                         f"({tail or 'no output'}){hint}") from None
    if "error" in data:
        raise AgentError(HTTPStatus(int(data.get("status", 500))), str(data["error"]))
    return LatencyResult.from_dict(data["result"])


def _child_main(argv: Sequence[str]) -> int:
    """Entry point of the measuring process: read the request, load the runtime, cap the address space, time the
    artefact, write the answer."""
    request_path, answer_path = argv
    request = json.loads(Path(request_path).read_text())
    runtime, memory_mb = request["runtime"], int(request["memory_mb"])
    try:
        _load_runtime(runtime)
        _cap_address_space(memory_mb)
        result = _measure_here(runtime, request["artefact"], BenchConfig.from_dict(request["config"]))
        answer: dict[str, Any] = {"result": result.to_dict()}
    except Exception as err:
        answer = _child_failure(err, memory_mb)
    write_json_atomic(Path(answer_path), answer)
    return 0


def _child_failure(err: Exception, memory_mb: int) -> dict[str, Any]:
    """The answer for a measurement that failed; anything else than the cases below is re-raised (a bug: its
    traceback goes to the agent's log through the process's stderr)."""
    if isinstance(err, MemoryError) or _ALLOCATION_FAILURE.search(str(err)):
        return {"error": f"the measurement needs more memory than this agent allows one ({memory_mb} MiB, "
                         f"--child-memory-mb): {one_line(err)}", "status": int(HTTPStatus.INSUFFICIENT_STORAGE)}
    if isinstance(err, ExportError):  # the runtime refused the artefact
        return {"error": str(err), "status": int(HTTPStatus.UNPROCESSABLE_ENTITY)}
    if isinstance(err, ValueError):  # the config does not fit this machine (e.g. pinned CPUs it lacks)
        return {"error": str(err), "status": int(HTTPStatus.BAD_REQUEST)}
    raise err


def _load_runtime(runtime: str) -> None:
    """Import the runtime before the cap, so that the cap counts what a measurement adds, not the libraries."""
    if runtime == "ort":
        import onnxruntime  # noqa: F401 (loaded for its side effect: its libraries are mapped)
    elif runtime == "litert":
        import ai_edge_litert.interpreter  # noqa: F401 (as above)
    else:
        from export.executorch import portable_lib, runtime_without_compiler

        runtime_without_compiler()
        portable_lib()


def memory_cap_enforced() -> bool:
    """Whether this platform enforces ``--child-memory-mb``: Linux and Android do (RLIMIT_AS, with the process's
    current size read from /proc); macOS does not enforce RLIMIT_AS."""
    return sys.platform.startswith("linux") and Path("/proc/self/statm").exists()


def _cap_address_space(memory_mb: int) -> None:
    """Limit this process's address space to what it maps now plus ``memory_mb`` MiB, so that a model that asks for
    more (a huge ConstantOfShape, say) fails its allocation here instead of swapping or OOM-killing the machine."""
    if not memory_cap_enforced():
        return  # run_agent says so when it starts
    import resource

    pages = int(Path("/proc/self/statm").read_text().split()[0])
    limit = pages * os.sysconf("SC_PAGE_SIZE") + memory_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _measure_here(runtime: str, artefact: str, cfg: BenchConfig) -> LatencyResult:
    if runtime == "ort":
        from latency_tables.measure import measure_onnx

        return measure_onnx(artefact, cfg)
    if runtime == "litert":
        from latency_tables.measure_android import measure_litert

        return measure_litert(artefact, cfg)
    # This process is already fresh, so time the program here rather than through measure_pte's own subprocess.
    from latency_tables.measure_pte import measure_pte_in_process as measure_pte_here

    return measure_pte_here(artefact, cfg)


# --------------------------------------------------------------------------------------------------- CLI
