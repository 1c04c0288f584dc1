"""Typed errors raised by the export package: one base class, one subclass per way an artefact can be bad.

Callers (the CLI, bench scripts) catch ``ExportError`` to report any export problem in one line; tests and
tooling that need the specifics read the attributes of the subclasses.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from common.errors import ImageDataError, MzooError, OutputError

P = ParamSpec("P")
R = TypeVar("R")


class ExportError(MzooError):
    """A model could not be exported, written, or read back as a deployable artefact."""


class ExportOutputError(ExportError, OutputError):
    """An artefact's destination cannot be written (the shared floor's :class:`~common.errors.OutputError`, raised
    by an exporter): both ``except ExportError`` and ``except OutputError`` catch it."""


def exporter(fn: Callable[P, R]) -> Callable[P, R]:
    """Mark a public exporter: an ``OutputError`` from the shared floor (target not writable, a directory where a
    file goes, ...) leaves it as :class:`ExportOutputError`, so callers catch one type for any export problem."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ExportOutputError:
            raise
        except OutputError as err:
            raise ExportOutputError(str(err)) from err

    return wrapper


class OnnxLoadError(ExportError):
    """An ONNX file is missing, unreadable, not ONNX, or fails the ONNX checker."""


class OnnxVerificationError(ExportError):
    """ONNX Runtime's output differs from eager PyTorch for one output at one batch size."""

    def __init__(
        self,
        output_name: str,
        batch_size: int,
        max_abs_diff: float,
        atol: float,
        detail: str = "",
    ) -> None:
        self.output_name = output_name
        self.batch_size = batch_size
        self.max_abs_diff = max_abs_diff
        self.atol = atol
        self.detail = detail
        what = detail or f"max abs diff {max_abs_diff:.3g} exceeds atol {atol:.3g}"
        super().__init__(
            f"ONNX output {output_name!r} at batch size {batch_size} does not match eager PyTorch: "
            f"{what} (max abs diff {max_abs_diff:.3g}, atol {atol:.3g})"
        )

    def __reduce__(self) -> tuple[type, tuple[str, int, float, float, str]]:
        # Exceptions pickle via self.args (the message) by default, which would not fit __init__;
        # pytest-xdist and multiprocessing pickle errors raised in workers.
        return (type(self), (self.output_name, self.batch_size, self.max_abs_diff, self.atol, self.detail))


class UnsupportedFormatError(ExportError, ValueError):
    """An export format name the pipeline does not know."""


# Calibration and verification images are read by the shared floor (common.images), which raises its own error;
# export's callers know it by this name.
CalibrationDataError = ImageDataError


class AgreementError(ExportError):
    """A reduced-precision artefact (fp16, int8, CoreML fp16) disagrees with its reference beyond a threshold."""

    def __init__(self, artefact: str, metric: str, value: float, threshold: float, detail: str = "") -> None:
        self.artefact = artefact
        self.metric = metric
        self.value = value
        self.threshold = threshold
        self.detail = detail
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{artefact}: {metric} {value:.4g} is below the required {threshold:.4g}{extra}")

    def __reduce__(self) -> tuple[type, tuple[str, str, float, float, str]]:
        return (type(self), (self.artefact, self.metric, self.value, self.threshold, self.detail))


class CoremlVerificationError(ExportError):
    """A converted Core ML package fails its structural check or (on macOS) its numerical comparison."""


class ExecutorchVerificationError(ExportError):
    """An ExecuTorch ``.pte`` program fails to load or run, or disagrees with eager PyTorch."""


class LitertVerificationError(ExportError):
    """A LiteRT ``.tflite`` model fails to load or run in LiteRT's interpreter, or disagrees with eager PyTorch."""


class NcnnVerificationError(ExportError):
    """An ncnn model (``.param`` + ``.bin``) fails to convert, load or run, or disagrees with eager PyTorch."""


# The optional dependencies of the Android formats (setup.cfg's ``android`` extra).
ANDROID_EXTRA = "pip install -e '.[android]'"


def missing_extra(what: str, packages: str, err: ImportError) -> ExportError:
    """The one-line error for an optional runtime that is not installed, naming the extra that brings it."""
    return ExportError(f"{what} needs {packages}, which are not installed ({err.name or err}): {ANDROID_EXTRA}")


# torch's exporters colour their messages; they end up in one-line error messages and log files.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def one_line(err: BaseException) -> str:
    """The innermost cause of ``err`` as ``Type: first line``, for messages that must fit on one line."""
    root = err
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    lines = [line.strip() for line in _ANSI_ESCAPE.sub("", str(root)).splitlines() if line.strip()]
    text = lines[0] if lines else "(no message)"
    return f"{type(root).__name__}: {text}"
