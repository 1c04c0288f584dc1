"""Android runtimes' latency on this machine: a ``.tflite`` file in LiteRT's interpreter with the XNNPACK delegate,
and an ncnn package in the ncnn binding, each timed with the protocol of :func:`latency_tables.measure.time_runs`
(the exporters, :mod:`export.litert` and :mod:`export.ncnn`, write and verify the artefacts; this module only
times them). Both runtimes keep their thread pools per interpreter / net, so timing runs in this process.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from common.errors import InputError
from latency_tables.measure import BenchConfig, LatencyResult, make_result, pinned_cpus, time_runs

LITERT_RUNTIME = "litert-xnnpack"  # same value as export.litert.LITERT_RUNTIME (not imported: it loads torch)
NCNN_RUNTIME = "ncnn-cpu"  # same value as export.ncnn.NCNN_RUNTIME


def measure_litert(path: str | os.PathLike[str], cfg: BenchConfig = BenchConfig()) -> LatencyResult:
    """Time a ``.tflite`` file in LiteRT's interpreter (XNNPACK delegate, ``cfg.threads`` threads), in
    ``cfg.sessions`` fresh interpreters; ``session_create_ms`` is the first interpreter's creation and tensor
    allocation (the delegate is applied then). An int8 file gets int8 input. The batch is static in the file, so
    ``cfg.batch_size`` must equal it. Raises ``LitertVerificationError`` for a file LiteRT cannot load or run."""
    from export.litert import load_litert, quantize_input

    samples: list[float] = []
    first_run_ms = session_create_ms = 0.0
    shape: tuple[int, ...] = ()
    for i in range(cfg.sessions):
        with pinned_cpus(cfg.cpus):  # the delegate's pool threads start with the interpreter
            start = time.perf_counter_ns()
            loaded = load_litert(path, threads=cfg.threads, xnnpack=True)
            created_ms = (time.perf_counter_ns() - start) / 1e6
            shape = _check_batch(loaded.input_shape, cfg, str(path))
            interpreter = loaded.interpreter
            (detail,) = interpreter.get_input_details()
            x = _random(shape, cfg.seed)
            interpreter.set_tensor(detail["index"], quantize_input(x, detail))
            first_ms, timed = time_runs(interpreter.invoke, cfg)
        if i == 0:
            first_run_ms, session_create_ms = first_ms, created_ms
        samples += timed
    return make_result(LITERT_RUNTIME, str(path), shape, samples, first_run_ms, session_create_ms, cfg)


def measure_ncnn(path: str | os.PathLike[str], cfg: BenchConfig = BenchConfig()) -> LatencyResult:
    """Time an ncnn package in the ncnn binding with ncnn's own defaults (fp16 storage and arithmetic where this
    CPU has them, as an app gets them) and ``cfg.threads`` threads, in ``cfg.sessions`` fresh nets. Each run
    makes an extractor, feeds the input and extracts the output, as an app does per image."""
    from export.ncnn import input_shape_of, load_ncnn

    import ncnn

    shape = _check_batch(input_shape_of(path), cfg, str(path))
    if cfg.batch_size != 1:
        raise InputError(f"ncnn runs one image at a time; BenchConfig.batch_size is {cfg.batch_size}")
    samples: list[float] = []
    first_run_ms = session_create_ms = 0.0
    for i in range(cfg.sessions):
        with pinned_cpus(cfg.cpus):
            start = time.perf_counter_ns()
            loaded = load_ncnn(path, threads=cfg.threads, fp16=None)
            created_ms = (time.perf_counter_ns() - start) / 1e6
            mat = ncnn.Mat(_random(shape, cfg.seed)[0]).clone()

            def run(loaded: Any = loaded, mat: Any = mat) -> None:
                with loaded.net.create_extractor() as ex:
                    ex.input(loaded.input_name, mat)
                    ex.extract(loaded.output_name)

            first_ms, timed = time_runs(run, cfg)
        if i == 0:
            first_run_ms, session_create_ms = first_ms, created_ms
        samples += timed
    return make_result(NCNN_RUNTIME, str(path), shape, samples, first_run_ms, session_create_ms, cfg)


def _check_batch(shape: tuple[int, ...], cfg: BenchConfig, label: str) -> tuple[int, ...]:
    if shape[0] != cfg.batch_size:
        raise InputError(f"{label!r} was exported for batch {shape[0]} (static shape {shape}); "
                         f"BenchConfig.batch_size is {cfg.batch_size}")
    return shape


def _random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

