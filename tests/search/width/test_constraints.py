"""Budgets: MACs from the walker, latency from a device's tables, clear refusals for devices without a table."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

import zoo
from latency_tables.table import LatencyTable, NoTablesError
from zoo.spaces import MobileNetV2WidthSpace
from search.width import Budget, CostModel

from .conftest import MS_PER_MAC, SHIPPED_TABLE, toy_table

SPACE = MobileNetV2WidthSpace(fractions=(0.5, 1.0), layout="cifar")


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Device 'toy-cpu' with a mobilenetv2_width table for SPACE; 'other-cpu' with an nbmacro table only."""
    root = tmp_path_factory.mktemp("tables")
    toy_table(root, "toy-cpu", SPACE)
    other = dataclasses.replace(LatencyTable.load(SHIPPED_TABLE), device="other-cpu", space="nbmacro", entries={})
    other.save(root / "other-cpu" / "nbmacro.json")
    return root


def test_macs_come_from_the_walker_and_budgets_are_checked() -> None:
    model = CostModel(SPACE, Budget(max_macs=150_000_000))
    rng = random.Random(0)
    seen = set()
    for _ in range(30):
        arch = SPACE.sample(rng)
        spec, size = SPACE.to_spec(arch)
        count = zoo.count(spec, size)
        c = model.costs(arch)
        assert (c.macs, c.params, c.latency_ms) == (count.macs, count.params, None)
        assert model.feasible(arch) == (count.macs <= 150_000_000)
        assert model.feasible(arch, lower=0.9) == (135_000_000 < count.macs <= 150_000_000)
        seen.add(model.feasible(arch))
    assert seen == {True, False}
    full = tuple(c[-1] for c in SPACE.choices())
    assert model.violations(full) == [f"MACs {model.costs(full).macs:.6g} > budget 1.5e+08"]


def test_latency_comes_from_the_device_table(tables: Path) -> None:
    budget = Budget(max_latency_ms=20.0, device="toy-cpu", tables_root=str(tables))
    model = CostModel(SPACE, budget)
    rng = random.Random(1)
    verdicts = set()
    for _ in range(10):
        arch = SPACE.sample(rng)
        spec, size = SPACE.to_spec(arch)
        expected = sum(op.macs for op in zoo.iter_ops(spec, size)) * MS_PER_MAC + 1.0
        latency = model.costs(arch).latency_ms
        assert latency == pytest.approx(expected)
        assert model.feasible(arch) == (latency <= 20.0)
        verdicts.add(model.feasible(arch))
    assert verdicts == {True, False}
    both = CostModel(SPACE, dataclasses.replace(budget, max_macs=100_000_000))
    arch = tuple(c[-1] for c in SPACE.choices())
    assert [v.split()[0] for v in both.violations(arch)] == ["MACs", "latency_ms"]


def test_devices_without_a_table_for_the_space_are_refused(tables: Path) -> None:
    with pytest.raises(NoTablesError, match="no-such-device"):
        CostModel(SPACE, Budget(max_latency_ms=5.0, device="no-such-device", tables_root=str(tables)))
    with pytest.raises(ValueError, match="'other-cpu' has no latency table for space 'mobilenetv2_width'.*nbmacro"):
        CostModel(SPACE, Budget(max_latency_ms=5.0, device="other-cpu", tables_root=str(tables)))
    # The shipped table was measured at 224×224 (ImageNet layout): the CIFAR layout's keys are not in it.
    with pytest.raises(ValueError, match="lacks op keys"):
        CostModel(SPACE, Budget(max_latency_ms=5.0, device="amd-epyc-f23m1-ort-t1"))


def test_budgets_must_make_sense() -> None:
    with pytest.raises(ValueError, match="max_macs, max_latency_ms"):
        Budget()
    with pytest.raises(ValueError, match="needs a device"):
        Budget(max_latency_ms=3.0)
    with pytest.raises(ValueError, match="max_macs"):
        Budget(max_macs=-5)
