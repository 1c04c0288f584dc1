"""Typed errors raised by the export package: one base class, one subclass per way an artefact can be bad.

Callers (the CLI, bench scripts) catch ``ExportError`` to report any export problem in one line; tests and
tooling that need the specifics read the attributes of the subclasses.
"""

from __future__ import annotations


class ExportError(Exception):
    """A model could not be exported, written, or read back as a deployable artefact."""


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
