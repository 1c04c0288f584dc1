"""``mzoo export --deploy/--device``: the plan chosen from a device's tables (the planner this package gives the
export verb), tables that hold both forms of every HGC block, and searched HGCNets that deploy like zoo models."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from latency_tables import table_path
from latency_tables.build import build_table
from latency_tables.table import LatencyTable
from mzoo.cli import main
from tests.latency_tables import FAST, FakeDevice
from tests.latency_tables.test_deploy import table_with
from zoo.deploy import FUSED, UNFUSED, deploy_spec, fusable_blocks
from zoo.spaces import HGCNetWidthSpace, op_keys
from zoo.spec import ArchSpec, BlockSpec

DEVICE = "fake-cpu-t1"
ROOT = Path(__file__).resolve().parents[2]


def tiny_hgc_spec() -> ArchSpec:
    blocks = (BlockSpec("hgc_ir", 16, 1, 3, 2.0, 4, "relu6", residual=True),
              BlockSpec("hgc_ir", 32, 2, 3, 2.0, 4, "relu6", residual=False))
    return ArchSpec(family="hgcnet", stem=BlockSpec("conv", 16, 1, 3, act="relu6"), stages=(blocks,), num_classes=10)


def tables_for(spec: ArchSpec, root: Path, fused_faster: set[str], size: int = 32,
               both: bool = True) -> dict[str, str]:
    """A fake device's table of ``spec``'s ops: HGC forms at 1 ms, fused forms at 0.5 ms for the blocks in
    ``fused_faster`` and 2 ms for the others (``both=False``: the HGC forms only). Returns the plan auto must
    choose (blocks of one shape share a key, so the last block of a shape decides for all of them)."""
    ms = {op.key: 1.0 for op in zoo.iter_ops(spec, size)}
    fused_key = {op.name: op.key for op in zoo.iter_ops(deploy_spec(spec, "all"), size)
                 if op.name in fusable_blocks(spec)}
    if both:
        for name, key in fused_key.items():
            ms[key] = 0.5 if name in fused_faster else 2.0
    table_with(ms).save(table_path(DEVICE, "hgcnet_width", root))
    return {name: FUSED if ms.get(key, 2.0) < 1.0 else UNFUSED for name, key in fused_key.items()}


@pytest.fixture
def spec_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MZOO_LATENCY_TABLES", str(tmp_path / "tables"))
    path = tmp_path / "tiny_hgc.json"
    path.write_text(tiny_hgc_spec().to_json())
    return path


def _report(out: Path) -> dict:
    return json.loads((out / "tiny_hgc.onnx.json").read_text())


def test_export_defaults_to_auto_with_a_device_and_writes_the_plan(spec_file: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec = tiny_hgc_spec()
    first, second = fusable_blocks(spec)
    tables_for(spec, tmp_path / "tables", fused_faster={second})
    out = tmp_path / "out"
    assert main(["export", "--spec", str(spec_file), "--device", DEVICE, "-o", str(out)]) == 0
    record = _report(out)["deploy"]
    assert record["requested"] is None and record["mode"] == "auto" and record["device"] == DEVICE
    assert record["plan"] == {first: UNFUSED, second: FUSED} and "default with --device" in record["reason"]
    assert record["predicted_ms"] < record["predicted_trained_ms"]  # the table says fusing `second` is faster
    assert record["after"]["macs"] > record["before"]["macs"] and record["artefact_max_abs_diff_vs_trained"] <= 1e-4
    printed = capsys.readouterr().out
    assert "deploy auto: 1 of 2 HGC blocks fused" in printed and f"on {DEVICE}" in printed


def test_export_without_a_device_is_as_trained_and_says_so(spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["export", "--spec", str(spec_file), "-o", str(out)]) == 0
    record = _report(out)["deploy"]
    assert record["mode"] == "none" and record["fused_blocks"] == 0 and "without --device" in record["reason"]
    assert record["predicted_ms"] is None and record["before"] == record["after"]


@pytest.mark.parametrize("flags, message", [
    (["--device", "no-such-device"], "--device 'no-such-device'"),
    (["--deploy", "auto", "--device", DEVICE], "--deploy auto: device 'fake-cpu-t1'"),  # table lacks the fused form
])
def test_bad_deploy_flags_fail_before_any_work(spec_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], flags: list[str],
                                               message: str) -> None:
    import export.pipeline

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built before the flags were checked")

    monkeypatch.setattr(export.pipeline, "resolve_spec", no_work)
    tables_for(tiny_hgc_spec(), tmp_path / "tables", fused_faster=set(), both=False)
    out = tmp_path / "out"
    assert main(["export", "--spec", str(spec_file), "-o", str(out), *flags]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mzoo: error:")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not out.exists()
    with pytest.raises(SystemExit) as stop:
        main(["export", "--spec", str(spec_file), "-o", str(out), "--deploy", "most"])
    assert stop.value.code == 2 and "--deploy" in capsys.readouterr().err and not out.exists()


def test_op_keys_hold_both_forms_of_every_hgc_block() -> None:
    space = HGCNetWidthSpace(multipliers=(0.5, 1.0), layout="cifar", num_classes=10)
    keys = op_keys(space)
    rng = random.Random(0)
    for _ in range(20):
        spec, size = space.to_spec(space.sample(rng))
        plan = {b: rng.choice((FUSED, UNFUSED)) for b in fusable_blocks(spec)}
        deployed = {op.key for op in zoo.iter_ops(deploy_spec(spec, plan), size)}
        assert deployed <= set(keys), sorted(deployed - set(keys))[:3]
    assert any(k.startswith("ir-") for k in keys) and any(k.startswith("hgc_ir-") for k in keys)


def test_a_built_table_prices_predict_deploy_auto_with_every_key(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # What `mzoo lut build` runs, on a fake device and a small HGCNet space: fast, and no timings.
    space = HGCNetWidthSpace(multipliers=(0.5, 1.0), layout="cifar", num_classes=10)
    device = FakeDevice(name=DEVICE)
    build_table(space, device, cfg=FAST, path=table_path(DEVICE, space.name, tmp_path), calibration_networks=2,
                progress=False, calibration_rounds=1)
    networks = [label for label in device.calls if label.startswith(space.name)]
    assert len(networks) == 2 and networks[1].endswith(" fused")  # the overhead is fitted on both forms
    args = ["predict", "hgcnet_0_5x_cifar", "--device", DEVICE, "--root", str(tmp_path), "--json"]
    for plan in ("auto", "all"):
        assert main([*args, "--deploy", plan]) == 0
        result = json.loads(capsys.readouterr().out)
        assert not result["interpolated_keys"] and set(result["deploy_plan"]) == set(
            fusable_blocks(zoo.get_arch_spec("hgcnet_0_5x_cifar")))
    assert any(op["key"].startswith("ir-") for op in result["ops"])  # the fused form was measured, not guessed


def _searched_hgcnet(directory: Path) -> str:
    """A DAGGER-like pruned HGCNet (narrower widths of the CIFAR width space) saved as a search result."""
    from zoo.searched import write_searched

    space = HGCNetWidthSpace(multipliers=(0.5, 1.0), layout="cifar", num_classes=10)
    spec, size = space.to_spec(space.sample(random.Random(3)))
    torch.manual_seed(0)
    model = zoo.build_model(spec)
    name = "hgcnet_pruned_test"
    write_searched(directory, spec, {"name": name, "method": "dagger", "space": space.name,
                                     "input_size": list(size)}, model.state_dict())
    return name


@pytest.mark.slow
def test_a_searched_hgcnet_exports_and_predicts_with_its_deploy_plan(tmp_path: Path) -> None:
    result = tmp_path / "result"
    name = _searched_hgcnet(result)
    spec = zoo.spec_from_json((result / "spec.json").read_text())
    expected = tables_for(spec, tmp_path / "tables", fused_faster=set(fusable_blocks(spec)[::2]))
    assert 0 < sum(form == FUSED for form in expected.values()) < len(expected)
    env = os.environ | {"MZOO_LATENCY_TABLES": str(tmp_path / "tables"), "OMP_NUM_THREADS": "1"}
    mzoo = [sys.executable, "-m", "mzoo", "--searched", str(result)]
    out = tmp_path / "out"
    run = subprocess.run(mzoo + ["export", name, "--deploy", "auto", "--device", DEVICE, "-o", str(out)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    record = json.loads((out / f"{name}.onnx.json").read_text())["deploy"]
    assert record["plan"] == expected
    assert record["requested"] == "auto" and record["artefact_max_abs_diff_vs_trained"] <= 1e-4
    assert isinstance(json.loads((out / f"{name}.onnx.json").read_text())["weights"], dict)  # its own weights
    run = subprocess.run(mzoo + ["predict", name, "--deploy", "auto", "--device", DEVICE, "--json"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["deploy_plan"] == record["plan"]


def test_calibration_gives_the_hgc_form_its_own_scale_and_prices_both_forms(tmp_path: Path) -> None:
    # HGC networks run less efficiently in a network than their fused form (measured 1.3-1.5x against 1.1-1.3x
    # their entries' sum): with one scale for both, one form is always mispredicted.
    from latency_tables.predict import Predictor

    space = HGCNetWidthSpace(multipliers=(0.5, 1.0), layout="cifar", num_classes=10)
    device = FakeDevice(name=DEVICE, network_scale=0.1, hgc_scale=0.3)
    table = build_table(space, device, cfg=FAST, path=table_path(DEVICE, space.name, tmp_path),
                        calibration_networks=8, progress=False, calibration_rounds=1)
    overhead = table.overhead
    assert overhead.scale == pytest.approx(0.1, abs=1e-6)
    assert dict(overhead.kind_scales) == {"hgc_ir": pytest.approx(0.3, abs=1e-6)}
    predictor = Predictor([table])
    spec, size = space.to_spec(space.sample(random.Random(5)))
    half = {block: FUSED if i % 2 else UNFUSED for i, block in enumerate(fusable_blocks(spec))}
    for plan in ("none", "all", half):
        deployed = deploy_spec(spec, plan)
        measured = device.latency_ms(zoo.build_model(deployed), (1, *size))
        assert predictor.predict(deployed, size).total_ms == pytest.approx(measured, rel=1e-6), plan


def test_demo_deploys_by_this_machines_tables_and_says_when_it_cannot(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`mzoo demo`'s deployed row: auto from this machine's tables; every layer fused, with the reason, without."""
    from dataclasses import replace

    from latency_tables.compare import deploy_choice
    from latency_tables.devices import local_device_name

    spec = tiny_hgc_spec()
    first, second = fusable_blocks(spec)
    monkeypatch.setenv("MZOO_LATENCY_TABLES", str(tmp_path / "tables"))
    choice, note = deploy_choice("auto", spec, (3, 32, 32))  # no tables for this machine
    assert choice.mode == "all" and choice.fused == 2 and "no auto plan (" in note and "mzoo lut build" in note
    assert deploy_choice("none", spec, (3, 32, 32)) == (None, "")
    plan = tables_for(spec, tmp_path / "fake", fused_faster={second})
    fake = next((tmp_path / "fake").rglob("hgcnet_width.json"))
    mine = local_device_name("ort", 1)
    table = replace(LatencyTable.load(fake), device=mine)
    table.save(table_path(mine, "hgcnet_width", tmp_path / "tables"))
    choice, note = deploy_choice("auto", spec, (3, 32, 32))
    assert note == "" and choice.mode == "auto" and dict(choice.blocks) == plan == {first: UNFUSED, second: FUSED}
