"""The auto deploy plan takes, per HGC block, the form the device's table says is faster."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import pytest

import zoo
from latency_tables import Entry, LatencyTable, MissingKeysError, Predictor
from latency_tables.deploy import auto_plan, plan_costs, resolve
from tests.latency_tables import ENVIRONMENT, FAST
from zoo.deploy import FUSED, UNFUSED, deploy_spec, fusable_blocks

SPEC = zoo.get_arch_spec("hgcnet_0_5x_cifar")
SIZE = (3, 32, 32)


def table_with(ms_of: dict[str, float]) -> LatencyTable:
    entries = {key: Entry(ms, 3, kind=key.split("-")[0], min_ms=ms) for key, ms in ms_of.items()}
    return LatencyTable(device="fake-cpu-t1", space="hgcnet_width", source="measured", runtime="fake-runtime",
                        runtime_version="1.0", threads=1, dtype="float32", batch_size=1, protocol=asdict(FAST),
                        environment=ENVIRONMENT.to_dict(), fingerprint="fp-1", created="2025-01-01T00:00:00+00:00",
                        input_sizes=(SIZE,), entries=entries, overhead=None, complete=True)


def fused_keys() -> dict[str, str]:
    """Block name -> the op key of its fused form (blocks of one shape share a key)."""
    return {op.name: op.key for op in zoo.iter_ops(deploy_spec(SPEC, "all"), SIZE) if op.name in fusable_blocks(SPEC)}


def both_forms(faster: set[str]) -> dict[str, float]:
    """Every HGC-form op at 1 ms; each fused op at 0.5 ms if its key is in ``faster``, else 2 ms."""
    ms = {op.key: 1.0 for op in zoo.iter_ops(SPEC, SIZE)}
    for key in fused_keys().values():
        ms[key] = 0.5 if key in faster else 2.0
    return ms


def test_auto_takes_the_faster_form_of_each_block_and_is_never_slower() -> None:
    blocks = fusable_blocks(SPEC)
    faster = set(sorted(set(fused_keys().values()))[::3])
    wins = {b for b, key in fused_keys().items() if key in faster}
    assert 0 < len(wins) < len(blocks)
    predictor = Predictor([table_with(both_forms(faster))])
    plan = auto_plan(SPEC, SIZE, predictor)
    assert plan == {b: FUSED if b in wins else UNFUSED for b in blocks}
    costs = {c.plan: c for c in plan_costs(SPEC, SIZE, predictor)}
    assert costs["auto"].predicted_ms < min(costs["none"].predicted_ms, costs["all"].predicted_ms)
    assert costs["none"].macs < costs["auto"].macs < costs["all"].macs


def test_auto_needs_both_forms_in_the_table_and_a_device() -> None:
    unfused_only = {op.key: 1.0 for op in zoo.iter_ops(SPEC, SIZE)}
    with pytest.raises(MissingKeysError, match="ir-in"):
        auto_plan(SPEC, SIZE, Predictor([table_with(unfused_only)]))
    with pytest.raises(ValueError, match="--device"):
        resolve(SPEC, SIZE, "auto")
    assert resolve(SPEC, SIZE, "all") == {b: FUSED for b in fusable_blocks(SPEC)}


def test_predict_deploy_prices_the_deployed_network(tmp_path, capsys) -> None:
    from mzoo.cli import main
    from latency_tables import table_path

    faster = set(sorted(set(fused_keys().values()))[::3])
    table_with(both_forms(faster)).save(table_path("fake-cpu-t1", "hgcnet_width", tmp_path))
    base = ["predict", "hgcnet_0_5x_cifar", "--device", "fake-cpu-t1", "--root", str(tmp_path), "--json"]
    results = {}
    for plan in ("none", "all", "auto"):
        assert main([*base, "--deploy", plan]) == 0
        results[plan] = json.loads(capsys.readouterr().out)
    assert results["auto"]["total_ms"] < min(results["none"]["total_ms"], results["all"]["total_ms"])
    assert sum(v == FUSED for v in results["auto"]["deploy_plan"].values()) == \
        sum(key in faster for key in fused_keys().values())
    assert any(op["key"].startswith("ir-") for op in results["all"]["ops"])
    assert not any(op["key"].startswith("hgc_ir-") for op in results["all"]["ops"])
    with pytest.raises(SystemExit) as stop:  # argparse: one line naming the flag and its choices
        main([*base[:-1], "--deploy", "most"])
    assert stop.value.code == 2 and "--deploy" in capsys.readouterr().err


def test_predict_defaults_to_auto_as_export_does_and_says_when_the_tables_cannot(tmp_path, capsys) -> None:
    from mzoo.cli import main
    from latency_tables import table_path

    faster = set(sorted(set(fused_keys().values()))[::3])
    table_with(both_forms(faster)).save(table_path("fake-cpu-t1", "hgcnet_width", tmp_path))
    base = ["predict", "hgcnet_0_5x_cifar", "--device", "fake-cpu-t1", "--root", str(tmp_path)]
    assert main([*base, "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    assert main([*base, "--json", "--deploy", "auto"]) == 0
    assert default == json.loads(capsys.readouterr().out)
    assert default["deploy"] == "auto" and FUSED in default["deploy_plan"].values()
    assert main(base) == 0
    assert "deploy auto (default)" in capsys.readouterr().out
    # Tables without the fused form: the default falls back to the network as trained and says why ...
    table_with({op.key: 1.0 for op in zoo.iter_ops(SPEC, SIZE)}).save(
        table_path("fake-cpu-t1", "hgcnet_width", tmp_path))
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "deploy none" in out and "lack" in out and "mzoo lut build" in out
    assert main([*base, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deploy"] == "none"
    # ... while an explicit --deploy auto refuses, naming the flag and a missing key
    assert main([*base, "--deploy", "auto"]) == 2
    assert re.search(r"--deploy auto.*ir-", capsys.readouterr().err)
