"""Validation metrics, sampling and the scatter plot (the measuring loop is covered end to end in test_cli)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from latency_tables.validate import (MachineMismatchError, ValidationPoint, ValidationResult, check_same_machine,
                                     prediction_metrics, sample_archs, scatter_plot, spearman)
from tests.latency_tables import ENVIRONMENT
from tests.latency_tables.test_table import make_table


def test_metrics_count_shares_within_bands() -> None:
    measured = [10.0, 10.0, 10.0, 10.0]
    predicted = [10.4, 9.2, 11.5, 10.0]  # +4 %, -8 %, +15 %, 0 %
    m = prediction_metrics(predicted, measured)
    assert m["within_5"] == pytest.approx(0.5)
    assert m["within_10"] == pytest.approx(0.75)
    assert m["mape"] == pytest.approx((0.04 + 0.08 + 0.15 + 0.0) / 4)
    assert m["bias"] == pytest.approx((0.04 - 0.08 + 0.15) / 4)


def test_spearman_matches_pearson_of_ranks_and_handles_ties() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(50)
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ties get their average rank: [1, 1, 2] ranks as [0.5, 0.5, 2]
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.corrcoef([0.5, 0.5, 2], [0, 1, 2])[0, 1])
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("pred, meas", [([1.0], [1.0]), ([1.0, 2.0], [1.0]), ([1.0, float("nan")], [1.0, 2.0]),
                                        ([1.0, 2.0], [0.0, 2.0])])
def test_metrics_reject_bad_series(pred: list[float], meas: list[float]) -> None:
    with pytest.raises(ValueError):
        prediction_metrics(pred, meas)


class _Coin:
    name = "coin"

    def sample(self, rng: random.Random) -> tuple[int, ...]:
        return tuple(rng.randrange(2) for _ in range(3))


def test_sample_archs_is_distinct_seeded_and_stops_at_space_size() -> None:
    archs = sample_archs(_Coin(), 5, seed=3)
    assert len(archs) == len(set(archs)) == 5
    assert archs == sample_archs(_Coin(), 5, seed=3)
    assert archs != sample_archs(_Coin(), 5, seed=4)
    assert len(sample_archs(_Coin(), 100, seed=3)) == 8  # only 2**3 architectures exist


def test_scatter_plot_writes_a_png_atomically(tmp_path) -> None:
    points = tuple(ValidationPoint([i], predicted_ms=1.0 + i * 1.05, measured_ms=1.0 + i, n_ops=3, interpolated=0)
                   for i in range(10))
    result = ValidationResult("toy", "dev", points)
    assert result.metrics()["spearman"] == pytest.approx(1.0)
    out = scatter_plot([result], tmp_path / "sub" / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["plot.png"]  # no temp file left behind


def _info(**env_changes):
    from latency_tables.devices import DeviceInfo

    env = replace(ENVIRONMENT, **env_changes)
    return DeviceInfo("fake-cpu-t1", "fake-runtime", "1.0", env.fingerprint, env)


def test_validation_refuses_tables_of_other_hardware_and_warns_about_other_software() -> None:
    table = make_table()  # measured on ENVIRONMENT
    check_same_machine(table, _info())  # same machine, same software: silent
    for field, value in [("cpu_model", "Other CPU"), ("logical_cores", 64), ("machine", "aarch64")]:
        with pytest.raises(MachineMismatchError, match=f"other hardware.*{field}.*mzoo lut build --space tiny"):
            check_same_machine(table, _info(**{field: value}))
    with pytest.warns(UserWarning, match=r"other software.*onnxruntime '1.0' -> '9.9'"):
        check_same_machine(table, _info(onnxruntime="9.9"))
    zen1 = replace(table, environment={**table.environment, "cpu_id": "AuthenticAMD family 23 model 1 stepping 2"})
    with pytest.raises(MachineMismatchError, match="cpu_id"):  # same masked name, another generation
        check_same_machine(zen1, _info(cpu_id="AuthenticAMD family 25 model 1 stepping 1"))
    with pytest.raises(MachineMismatchError, match="records no machine"):
        check_same_machine(replace(table, environment=None, source="imported:ofa"), _info())
