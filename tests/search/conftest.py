"""Fixtures shared by the search tests."""

from __future__ import annotations

import pytest

from search.nasbench import NASBenchMacro, default_path


@pytest.fixture(scope="session")
def bench() -> NASBenchMacro:
    """The published NAS-Bench-Macro file, read once per session (skips the test where it is absent)."""
    path = default_path()
    if not path.is_file():
        pytest.skip(f"NAS-Bench-Macro file not found at {path} (set MZOO_SHARED_DATA to the shared data folder)")
    return NASBenchMacro.load(path)
