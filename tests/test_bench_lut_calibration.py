"""bench/lut_calibration.py on fabricated calibration networks: its error figures and its absolute refit."""

from __future__ import annotations

import numpy as np
import pytest

from bench import lut_calibration as bench
from latency_tables.table import CalibrationNetwork, Overhead


HGC_SHARE = [0.5, 0.2, 0.7, 0.4, 0.6]  # the share of each network's entries in HGC blocks


def _kinds(i: int, s: float) -> dict[str, tuple[int, float]]:
    return {"hgc_ir": (4, HGC_SHARE[i] * s)}


def _nets(measured: list[float], sums: list[float]) -> list[CalibrationNetwork]:
    return [CalibrationNetwork(f"net{i}", m, 10, s, _kinds(i, s), (m, 1.5 * m))
            for i, (m, s) in enumerate(zip(measured, sums))]


def test_relative_errors_and_summary_follow_the_overhead() -> None:
    sums = [2.0, 4.0, 8.0]
    overhead = Overhead(0.5, 0.0, 3, "", scale=0.1)
    exact = [overhead.network_ms(10, s, _kinds(i, s)) for i, s in enumerate(sums)]
    measured = [exact[0], exact[1] * 1.25, exact[2]]  # one network 25 % slower than the line says
    errors = bench.relative_errors(overhead, _nets(measured, sums), measured)
    assert errors == pytest.approx([0.0, 1 / 1.25 - 1, 0.0])
    assert bench.summary(errors) == f"2/3 | 20.0 % | {100 * np.sqrt(0.2 ** 2 / 3):.1f} %"


def test_the_absolute_refit_recovers_a_line_in_ms() -> None:
    class Table:  # what absolute_fit reads of a table: its overhead's call cost and kind scales
        overhead = Overhead(0.0, 0.0, 0, "", call_ms=0.01, kind_scales={"hgc_ir": 0.0})

    sums = [2.0, 3.0, 5.0, 8.0, 13.0]
    truth = Overhead(0.4, 0.0, 5, "", scale=0.05, call_ms=0.01, kind_scales={"hgc_ir": 0.2})
    measured = [truth.network_ms(10, s, _kinds(i, s)) for i, s in enumerate(sums)]
    fit = bench.absolute_fit(Table(), _nets(measured, sums), measured)
    assert (fit.intercept_ms, fit.scale, fit.kind_scales["hgc_ir"]) == (
        pytest.approx(0.4), pytest.approx(0.05), pytest.approx(0.2))
