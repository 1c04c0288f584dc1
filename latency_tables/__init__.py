"""Per-device latency lookup tables (versioned data files keyed on :attr:`zoo.OpCost.key`) and the predictor.

Table files live at ``latency_tables/<device>/<space>.json`` (:mod:`latency_tables.table`); the
:class:`Predictor` sums a spec's op entries plus the table's calibrated per-network overhead
(:mod:`latency_tables.predict`). Building a table measures on a device (:mod:`latency_tables.build`, kept
out of this namespace so that predicting never imports the measurement stack). Nothing is read on import.
"""

from .predict import MissingKeysError, PredictedOp, Prediction, Predictor, op_signature
from .table import (TABLE_SCHEMA_VERSION, Entry, LatencyTable, LatencyTableError, NoTablesError, Overhead,
                    TableVersionError, list_devices, load_tables, table_path, tables_root)

__all__ = [
    "TABLE_SCHEMA_VERSION", "Entry", "LatencyTable", "LatencyTableError", "MissingKeysError", "NoTablesError",
    "Overhead", "PredictedOp", "Prediction", "Predictor", "TableVersionError", "list_devices", "load_tables",
    "op_signature", "table_path", "tables_root",
]
