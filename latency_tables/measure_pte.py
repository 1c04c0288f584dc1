"""ExecuTorch latency: a ``.pte`` program timed in the ExecuTorch runtime with the protocol of
:func:`latency_tables.measure.measure_onnx`, in a fresh process (the exporter, :mod:`export.executorch`, writes and
verifies the program; this module only times it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

import numpy as np
import torch

from common.errors import InputError
from export.errors import ExecutorchVerificationError, ExportError
from export.executorch import load_pte, portable_lib, runtime_log, runtime_without_compiler, with_log
from latency_tables.measure import CHILD_THREAD_ENV, BenchConfig, LatencyResult, child_env, make_result, time_runs


def measure_pte(path: str | os.PathLike[str], cfg: BenchConfig = BenchConfig()) -> LatencyResult:
    """Time a ``.pte`` program in the ExecuTorch runtime with the protocol of :func:`latency_tables.measure.measure_onnx`.

    The timing runs in a fresh Python process whose XNNPACK thread pool is set to ``cfg.threads`` before any
    program is loaded: ExecuTorch's pool is process-wide and an XNNPACK program keeps a pointer to the pool it
    was loaded with, so resizing it (``_unsafe_reset_threadpool``) under a loaded program corrupts the heap.
    ``session_create_ms`` is loading the program and preparing ``forward`` in that process. The program's batch
    is static, so ``cfg.batch_size`` must equal it; the portable kernels are single-threaded whatever the pool.
    Raises ``ExecutorchVerificationError`` for a file the runtime cannot load or run.
    """
    loaded = load_pte(path)  # clear errors (and the batch check) before paying for a new process
    if loaded.input_shape[0] != cfg.batch_size:
        raise InputError(f"{loaded.path!r} was exported for batch {loaded.input_shape[0]} (static shape "
                         f"{loaded.input_shape}); BenchConfig.batch_size is {cfg.batch_size}")
    request = json.dumps({"path": loaded.path, "config": asdict(cfg)})
    del loaded
    env = child_env(CHILD_THREAD_ENV)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD_COMMAND, request], capture_output=True, text=True, env=env,
            timeout=2 * cfg.max_seconds + _CHILD_START_SECONDS,
        )
    except subprocess.TimeoutExpired as err:
        raise ExecutorchVerificationError(f"timing {str(path)!r} did not finish in {err.timeout:.0f} s") from err
    return _child_answer(done, str(path))


_CHILD_COMMAND = "import sys; from latency_tables.measure_pte import _child_main; sys.exit(_child_main(sys.argv[1]))"
_CHILD_PREFIX = "mzoo-pte-latency "
# Importing torch and ExecuTorch in the child takes seconds, several times that on a busy 2-core machine.
_CHILD_START_SECONDS = 180.0


def _child_answer(done: subprocess.CompletedProcess[str], path: str) -> LatencyResult:
    answers = [line[len(_CHILD_PREFIX):] for line in done.stdout.splitlines() if line.startswith(_CHILD_PREFIX)]
    if done.returncode != 0 or not answers:
        tail = " | ".join(line.strip() for line in done.stderr.splitlines()[-3:] if line.strip())
        raise ExecutorchVerificationError(
            f"timing {path!r} failed: the measuring process exited with code {done.returncode} ({tail or 'no output'})"
        )
    answer = json.loads(answers[-1])
    if "error" in answer:
        raise ExecutorchVerificationError(answer["error"])
    return LatencyResult.from_dict(answer)


def _child_main(request_json: str) -> int:
    """Entry point of the measuring process: fix the thread pool, then load and time the program."""
    runtime_without_compiler()
    request = json.loads(request_json)
    cfg = BenchConfig(**request["config"])
    try:
        answer = measure_pte_in_process(request["path"], cfg).to_dict()
    except (ExportError, ValueError) as err:
        answer = {"error": str(err)}
    print(_CHILD_PREFIX + json.dumps(answer), flush=True)
    return 0


def measure_pte_in_process(path: str, cfg: BenchConfig) -> LatencyResult:
    """Time a .pte in THIS process: only safe in a fresh process that has run no XNNPACK program yet
    (``measure_pte`` and the agent's measuring child call it there)."""
    lib = portable_lib()
    with runtime_log():
        lib._unsafe_reset_threadpool(cfg.threads)  # before any XNNPACK program exists in this process
    start = time.perf_counter_ns()
    loaded = load_pte(path)
    session_create_ms = (time.perf_counter_ns() - start) / 1e6
    threads = int(lib._threadpool_get_thread_count())
    if threads != cfg.threads:
        raise ExecutorchVerificationError(f"ExecuTorch's thread pool has {threads} threads, asked for {cfg.threads}")
    x = torch.from_numpy(np.random.default_rng(cfg.seed).standard_normal(loaded.input_shape).astype(np.float32))
    with runtime_log() as log:
        try:
            first_run_ms, samples = time_runs(lambda: loaded.forward.execute([x]), cfg)
        except Exception as err:
            raise ExecutorchVerificationError(f"ExecuTorch failed to run {path!r}: {with_log(err, log)}") from err
    return make_result(loaded.runtime, loaded.path, loaded.input_shape, samples, first_run_ms, session_create_ms,
                       cfg)
