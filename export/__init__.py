"""Deployable artefacts and their verification: ONNX (fp32/fp16/int8), Core ML and ExecuTorch exports, each run in
its runtime and compared with eager PyTorch. Timing them is :mod:`latency_tables`' (``latency_tables.measure``).

Re-exports the public API of the format modules so callers write ``from export import export_onnx``, loading each
format module on first use: importing ``export`` writes nothing and imports neither torch nor any runtime.
"""

from common.lazy import lazy_exports

# Loaded on first use, so ``import export`` and the command line's parser import neither torch nor numpy.
__getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "export.coreml": ("CoremlExportConfig", "CoremlExportReport", "export_coreml", "verify_coreml_package"),
    "export.errors": ("AgreementError", "CalibrationDataError", "CoremlVerificationError", "ExecutorchVerificationError",
                      "ExportError", "OnnxLoadError", "OnnxVerificationError", "UnsupportedFormatError"),
    "export.executorch": ("PteExportConfig", "PteExportReport", "export_pte", "load_pte"),
    "export.onnx": ("OnnxExportConfig", "OnnxExportReport", "export_onnx", "load_onnx", "onnx_metadata"),
    "export.onnx_precision": ("Fp16Config", "Int8Config", "PrecisionReport", "convert_fp16", "quantize_int8"),
})

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
