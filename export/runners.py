"""Runners: one exported artefact in its own runtime (or the eager model), float32 NCHW images in, logits out.

Used by ``mzoo eval`` (:mod:`export.evaluate`) to score every format on the same images, and by the deploy check
(:mod:`export.deploy`) to compare an artefact of the re-parameterised network with the network as trained. Below
:mod:`export.formats` (which calls that check), so neither needs the other's module.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from common.errors import InputError
from export.errors import ExportError
from export.parity import run_batched

REFERENCE = "pytorch"  # the row every drop is measured against


class Runner(Protocol):
    """One runtime running one model: float32 NCHW images in, (N, outputs) float32 logits out."""

    format: str
    runtime: str
    path: str

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


@dataclass
class TorchRunner:
    """Eager PyTorch fp32: the reference every other format is compared with."""

    model: torch.nn.Module
    format: str = REFERENCE
    runtime: str = f"eager PyTorch {torch.__version__.split('+')[0]} fp32"
    path: str = ""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(images)).float().numpy()


@dataclass
class OrtRunner:
    """An ONNX file in ONNX Runtime's CPU provider with every graph optimisation, as deployed."""

    format: str
    path: str
    threads: int = 0
    runtime: str = ""
    session: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        from export.onnx_precision import ort_session

        self.session = ort_session(Path(self.path), self.threads)
        self.runtime = f"ONNX Runtime {ort.__version__} CPU"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        name = self.session.get_inputs()[0].name
        return np.asarray(self.session.run(None, {name: images})[0], dtype=np.float32)


@dataclass
class PteRunner:
    """A ``.pte`` program in the ExecuTorch runtime. Its batch size is baked in: images run in chunks of it, the
    last one padded with zeros whose outputs are dropped."""

    path: str
    format: str = "pte"
    runtime: str = ""
    program: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from export.executorch import load_pte

        self.program = load_pte(self.path)
        backend = "XNNPACK" if self.program.xnnpack else "portable kernels"
        self.runtime = f"ExecuTorch {importlib.metadata.version('executorch')} {backend}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return run_in_batches(self.path, self.program.input_shape, lambda x: self.program.run(torch.tensor(x))[0],
                              images)


@dataclass
class LitertRunner:
    """A ``.tflite`` file in LiteRT's interpreter with its XNNPACK delegate (the CPU kernels Android phones use); an
    int8 file's input is quantised and its output dequantised with its own scales. Static batch, run in chunks."""

    format: str
    path: str
    threads: int = 0
    runtime: str = ""
    program: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from export.litert import load_litert

        self.program = load_litert(self.path, threads=max(1, self.threads))
        self.runtime = f"LiteRT {importlib.metadata.version('ai-edge-litert')} XNNPACK"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return run_in_batches(self.path, self.program.input_shape, self.program.run, images)


@dataclass
class NcnnRunner:
    """An ncnn package (``.ncnn`` directory) in the ncnn binding, fp32 kernels, one image at a time."""

    path: str
    threads: int = 0
    format: str = "ncnn"
    runtime: str = ""
    program: Any = field(default=None, repr=False)
    input_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        from export.ncnn import input_shape_of, load_ncnn

        self.program = load_ncnn(self.path, threads=max(1, self.threads))
        self.input_shape = tuple(input_shape_of(self.path))
        self.runtime = f"ncnn {importlib.metadata.version('ncnn')}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return run_in_batches(self.path, self.input_shape, lambda x: self.program.run(x).reshape(1, -1), images)


def run_in_batches(path: str, input_shape: tuple[int, ...], run: Any, images: np.ndarray) -> np.ndarray:
    """``run`` over ``images`` in chunks of the artefact's baked-in batch size (:func:`export.parity.run_batched`),
    after checking the images fit the artefact's input."""
    if tuple(images.shape[1:]) != tuple(input_shape[1:]):
        raise ExportError(f"{path!r} takes inputs {tuple(input_shape)}, the images are {tuple(images.shape[1:])}")
    return run_batched(run, images, input_shape[0])


LITERT_FORMATS = ("litert", "litert-fp16", "litert-int8-dynamic", "litert-int8")
RUNNABLE = ("onnx", "onnx-fp16", "onnx-int8", "pte", *LITERT_FORMATS, "ncnn")


def open_runner(fmt: str, path: str | os.PathLike[str], threads: int = 0) -> Runner:
    """The runner of an artefact in format ``fmt`` (not ``coreml``, which predicts only on macOS)."""
    if fmt in ("onnx", "onnx-fp16", "onnx-int8"):
        return OrtRunner(fmt, str(path), threads)
    if fmt == "pte":
        return PteRunner(str(path))
    if fmt in LITERT_FORMATS:
        return LitertRunner(fmt, str(path), threads)
    if fmt == "ncnn":
        return NcnnRunner(str(path), threads)
    raise InputError(f"format {fmt!r} cannot be run here (runnable: {', '.join(RUNNABLE)})")
