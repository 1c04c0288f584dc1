"""bench/deploy.py without exporting or timing: its auto rows come from the tables, its table and goal lines are
built from the timings given (fabricated here: no machine's numbers)."""

from __future__ import annotations

import pytest

import zoo
from bench import deploy as bench
from latency_tables import Predictor
from tests.latency_tables.test_deploy import table_with
from zoo.deploy import FUSED, deploy_spec, fusable_blocks

NAME = "hgcnet_0_5x_cifar"


def predictor_for(name: str) -> Predictor:
    """A fake table of both forms of ``name``: fused forms of blocks in the first stage faster, the others slower."""
    spec, size = zoo.get_arch_spec(name), zoo.get_pretrained_cfg(name).input_size
    ms = {op.key: 1.0 for op in zoo.iter_ops(spec, size)}
    for op in zoo.iter_ops(deploy_spec(spec, "all"), size):
        if op.name in fusable_blocks(spec):
            ms[op.key] = 0.5 if op.name.startswith("blocks.0.") else 2.0
    return Predictor([table_with(ms)])


def test_auto_rows_tables_and_goals() -> None:
    notes: list[str] = []
    preds = {"ort": predictor_for(NAME), "xnnpack": None}
    rows = bench.hgcnet_rows(NAME, preds, interpolate=False, notes=notes)
    assert [r.plan for r in rows] == ["none", "all", "auto"] and not notes
    auto = rows[2]
    assert 0 < sum(f == FUSED for f in auto.choice.values()) < len(auto.choice)
    assert rows[0].macs < auto.macs < rows[1].macs
    baseline = bench.Row("mobilenetv2_x", "-", {}, rows[0].resolved, rows[1].macs, rows[1].params)
    for row, ort in zip([*rows, baseline], (3.0, 2.0, 1.5, 1.6)):
        row.times["ort"] = [ort, ort * 1.02]
        row.predicted["ort"] = bench._predict(row, preds["ort"], False)
    table = bench.format_table([*rows, baseline], [baseline], ["ort"])
    assert "| hgcnet_0_5x_cifar | auto |" in table and "0.50×" in table  # auto 1.5 ms vs none 3.0 ms
    goals = bench.goals([*rows, baseline], [baseline], ["ort"])
    assert any("auto on ORT: 0.94× mobilenetv2_x" in g and "-25.0% vs the better of none/all (all" in g
               for g in goals), goals
    assert any(g.startswith(f"{NAME} auto on ORT: predicted") for g in goals)
    assert rows[0].noise("ort") == pytest.approx(0.02 / 1.01)
