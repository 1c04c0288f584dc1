"""Deployable artefacts and their measurement: verified ONNX export, ONNX loading, and latency on this machine.

Re-exports the public API of ``export.onnx``, ``export.latency``, ``export.environment`` and ``export.errors``
so callers write ``from export import export_onnx, measure_onnx``. Importing it measures and writes nothing.
"""

from export.environment import Environment, current_environment
from export.errors import ExportError, OnnxLoadError, OnnxVerificationError
from export.latency import BenchConfig, LatencyResult, measure_onnx, measure_torch, summarize
from export.onnx import OnnxExportConfig, OnnxExportReport, export_onnx, load_onnx, onnx_metadata

__all__ = [
    "BenchConfig",
    "Environment",
    "ExportError",
    "LatencyResult",
    "OnnxExportConfig",
    "OnnxExportReport",
    "OnnxLoadError",
    "OnnxVerificationError",
    "current_environment",
    "export_onnx",
    "load_onnx",
    "measure_onnx",
    "measure_torch",
    "onnx_metadata",
    "summarize",
]
