"""Reading a JSON object from a file with errors that name the file and say what is wrong with it.

Shared by every reader of the project's JSON data files (latency tables, NAS-Bench-Macro, search results), so
a missing, unreadable, truncated or mistyped file fails the same way everywhere, with the caller's error type.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json_object"]


def read_json_object(path: str | os.PathLike[str], what: str, error: type[Exception],
                     missing_hint: str = "") -> dict[str, Any]:
    """The JSON object in ``path``; raises ``error`` naming ``what`` and the path (``missing_hint`` is appended
    to the message for a file that does not exist)."""
    source = Path(path)
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise error(f"{what} {str(source)!r} does not exist{missing_hint}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"cannot read {what} {str(source)!r}: {err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{what} {str(source)!r} is not valid JSON (truncated or corrupt?): {err.msg} at line "
                    f"{err.lineno} column {err.colno}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {str(source)!r} must hold a JSON object, got {type(data).__name__}")
    return data
