"""Wall and CPU seconds per phase of a search, summed over every run that worked on it.

A search resumed after an interruption adds the resumed part to what its earlier runs spent, so a report
counts what the search really cost. The totals live in a JSON file next to the search's checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from common.files import write_json_atomic

__all__ = ["PhaseTimings"]


class PhaseTimings:
    """``<phase>_seconds`` and ``<phase>_cpu_seconds`` per phase, kept in ``path`` (read back if it exists)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.values[f"{name}_seconds"] = self.values.get(f"{name}_seconds", 0.0) + time.perf_counter() - wall
            self.values[f"{name}_cpu_seconds"] = (self.values.get(f"{name}_cpu_seconds", 0.0)
                                                  + time.process_time() - cpu)
            write_json_atomic(self.path, self.values)

    def totals(self) -> dict[str, float]:
        return dict(self.values)
