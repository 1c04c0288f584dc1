"""The project's error base classes: one root (:class:`MzooError`) for everything a user can cause.

The command line (:mod:`mzoo.cli`) prints an ``MzooError`` (and an ``OSError`` about a user's path) as one line
and exits 2; any other exception is a bug and keeps its traceback. Each package derives its own errors from
these (``export.errors.ExportError``, ``zoo.pretrained.WeightsError``, ``latency_tables.table.LatencyTableError``,
...). Classes that were ``ValueError``/``LookupError``/``RuntimeError`` before the root existed still are, so
Python callers that catch those keep working.
"""

from __future__ import annotations


class MzooError(Exception):
    """An error about the user's input, files or environment, with a message that names the cause."""


class InputError(MzooError, ValueError):
    """An argument, option, spec or file content is invalid: the message names it and what was expected."""


class OutputError(MzooError):
    """A result cannot be written where it was asked to go (directory not creatable or not writable)."""


class ImageDataError(MzooError):
    """Images (a folder or .zip for calibration, verification, training or evaluation) are missing, unreadable,
    corrupt or of the wrong kind."""
