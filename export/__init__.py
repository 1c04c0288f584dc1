"""Deployable artefacts and their verification: ONNX (fp32/fp16/int8), Core ML and ExecuTorch exports, each run in
its runtime and compared with eager PyTorch. Timing them is :mod:`latency_tables`' (``latency_tables.measure``).

Re-exports the public API of the format modules so callers write ``from export import export_onnx``. Importing
it writes nothing, and imports neither coremltools nor ExecuTorch (both load on first use: each takes seconds).
"""

from export.coreml import CoremlExportConfig, CoremlExportReport, export_coreml, verify_coreml_package
from export.errors import (AgreementError, CalibrationDataError, CoremlVerificationError, ExecutorchVerificationError,
                           ExportError, OnnxLoadError, OnnxVerificationError, UnsupportedFormatError)
from export.executorch import PteExportConfig, PteExportReport, export_pte, load_pte
from export.onnx import OnnxExportConfig, OnnxExportReport, export_onnx, load_onnx, onnx_metadata
from export.onnx_precision import Fp16Config, Int8Config, PrecisionReport, convert_fp16, quantize_int8

__all__ = [
    "AgreementError",
    "CalibrationDataError",
    "CoremlExportConfig",
    "CoremlExportReport",
    "CoremlVerificationError",
    "ExecutorchVerificationError",
    "ExportError",
    "Fp16Config",
    "Int8Config",
    "OnnxExportConfig",
    "OnnxExportReport",
    "OnnxLoadError",
    "OnnxVerificationError",
    "PrecisionReport",
    "PteExportConfig",
    "PteExportReport",
    "UnsupportedFormatError",
    "convert_fp16",
    "export_coreml",
    "export_onnx",
    "export_pte",
    "load_onnx",
    "load_pte",
    "onnx_metadata",
    "quantize_int8",
]
