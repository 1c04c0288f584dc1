"""Deployable artefacts and their measurement: verified ONNX (fp32/fp16/int8), Core ML and ExecuTorch exports,
and latency on this machine.

Re-exports the public API of the format modules so callers write ``from export import export_onnx,
measure_onnx``. Importing it measures and writes nothing, and imports neither coremltools nor ExecuTorch
(both load on first use: each takes seconds to import).
"""

from export.coreml import CoremlExportConfig, CoremlExportReport, export_coreml, verify_coreml_package
from export.environment import Environment, current_environment
from export.errors import (AgreementError, CalibrationDataError, CoremlVerificationError, ExecutorchVerificationError,
                           ExportError, OnnxLoadError, OnnxVerificationError, UnsupportedFormatError)
from export.executorch import PteExportConfig, PteExportReport, export_pte, load_pte, measure_pte
from export.images import default_image_source, load_images
from export.latency import BenchConfig, LatencyResult, measure_onnx, measure_torch, summarize
from export.onnx import OnnxExportConfig, OnnxExportReport, export_onnx, load_onnx, onnx_metadata
from export.onnx_precision import Fp16Config, Int8Config, PrecisionReport, convert_fp16, quantize_int8

__all__ = [
    "AgreementError",
    "BenchConfig",
    "CalibrationDataError",
    "CoremlExportConfig",
    "CoremlExportReport",
    "CoremlVerificationError",
    "Environment",
    "ExecutorchVerificationError",
    "ExportError",
    "Fp16Config",
    "Int8Config",
    "LatencyResult",
    "OnnxExportConfig",
    "OnnxExportReport",
    "OnnxLoadError",
    "OnnxVerificationError",
    "PrecisionReport",
    "PteExportConfig",
    "PteExportReport",
    "UnsupportedFormatError",
    "convert_fp16",
    "current_environment",
    "default_image_source",
    "export_coreml",
    "export_onnx",
    "export_pte",
    "load_images",
    "load_onnx",
    "load_pte",
    "measure_onnx",
    "measure_pte",
    "measure_torch",
    "onnx_metadata",
    "quantize_int8",
    "summarize",
]
