"""Exporting the deployed network: the rewrite is checked against the training-time network, the plan and the
before/after costs reach the report and metadata, bad flags fail before any work, and nothing is left half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from common.errors import InputError
from export.deploy import DeployChoice, check_mode, deploy, eager_parity, plain_choice
from export.errors import ExportError
from export.formats import export_formats
from export.onnx import onnx_metadata
from export.pipeline import ResolvedModel, calibrate_batchnorm
from zoo.deploy import FUSED, UNFUSED, fusable_blocks
from zoo.hgc import HierarchicalGroupConv
from zoo.spec import ArchSpec, BlockSpec

SIZE = (3, 16, 16)


def tiny_hgc_spec() -> ArchSpec:
    """Two HGC inverted residuals (one with a shortcut) between a stem and a classifier: exports in seconds."""
    blocks = (BlockSpec("hgc_ir", 16, 1, 3, 2.0, 4, "relu6", residual=True),
              BlockSpec("hgc_ir", 32, 2, 3, 2.0, 4, "relu6", residual=False))
    return ArchSpec(family="hgcnet", stem=BlockSpec("conv", 16, 1, 3, act="relu6"), stages=(blocks,), num_classes=10)


def tiny_resolved(seed: int = 0) -> ResolvedModel:
    torch.manual_seed(seed)
    spec = tiny_hgc_spec()
    model = calibrate_batchnorm(zoo.build_model(spec), SIZE, seed=seed)
    return ResolvedModel("tiny_hgc", "spec", model, SIZE, (0.5,) * 3, (0.25,) * 3, spec.to_json())


def choice(mode: str, spec: ArchSpec) -> DeployChoice:
    return plain_choice(mode, spec, SIZE, None)


def test_bad_flags_are_refused_naming_them() -> None:
    with pytest.raises(InputError, match="--deploy must be one of none, all, auto, got 'most'"):
        check_mode("most")
    with pytest.raises(InputError, match="--deploy auto needs a device's latency tables"):
        plain_choice("auto", tiny_hgc_spec(), SIZE, None)
    with pytest.raises(InputError, match="--device needs a device's latency tables"):
        plain_choice(None, tiny_hgc_spec(), SIZE, "some-phone")
    default = plain_choice(None, tiny_hgc_spec(), SIZE, None)
    assert default.mode == "none" and default.fused == 0 and "without --device" in default.reason


def test_deploy_rewrites_checks_and_records_costs_leaving_the_trained_network() -> None:
    resolved = tiny_resolved()
    before = {k: v.clone() for k, v in resolved.model.state_dict().items()}
    fused = deploy(resolved, choice("all", tiny_hgc_spec()))
    assert not any(isinstance(m, HierarchicalGroupConv) for m in fused.model.modules())
    assert fused.trained_model is resolved.model and all(torch.equal(before[k], v)
                                                       for k, v in resolved.model.state_dict().items())
    record = fused.deploy
    assert record["plan"] == {b: FUSED for b in fusable_blocks(tiny_hgc_spec())} and record["fused_blocks"] == 2
    assert record["after"]["macs"] > record["before"]["macs"] and record["after"]["params"] > record["before"]["params"]
    assert record["eager_max_abs_diff_vs_trained"] <= 1e-5
    assert json.loads(fused.deploy_metadata)["plan"] == record["plan"]
    kept = deploy(resolved, choice("none", tiny_hgc_spec()))
    assert kept.model is resolved.model and kept.trained_model is None
    assert kept.deploy["before"] == kept.deploy["after"] and kept.deploy["mode"] == "none"


def test_a_rewrite_that_is_not_exact_is_refused() -> None:
    resolved = tiny_resolved()
    other = tiny_resolved(seed=1).model  # other weights: what a wrong fold would compute
    with pytest.raises(ExportError, match="differs from the training-time"):
        eager_parity(resolved.model, other, SIZE)


def test_the_artefact_is_checked_against_the_trained_network_and_reports_the_plan(tmp_path: Path) -> None:
    spec = tiny_hgc_spec()
    plan = {b: FUSED if i == 0 else UNFUSED for i, b in enumerate(fusable_blocks(spec))}
    resolved = deploy(tiny_resolved(), DeployChoice("auto", "auto", plan, "fake-cpu-t1", "as asked", 1.5, 2.0))
    (cell,) = export_formats(resolved, tmp_path, "onnx")
    report = json.loads((tmp_path / "tiny_hgc.onnx.json").read_text())["deploy"]
    assert report["plan"] == plan and report["requested"] == "auto" and report["device"] == "fake-cpu-t1"
    assert report["predicted_ms"] == 1.5 and report["predicted_trained_ms"] == 2.0
    assert report["artefact_max_abs_diff_vs_trained"] <= 1e-4
    # Measured on an export of the trained network: more, smaller convs plus slices and concats, not the same file.
    assert 0 < report["before"]["file_size_bytes"] != report["after"]["file_size_bytes"]
    assert report["after"]["file_size_bytes"] == (tmp_path / "tiny_hgc.onnx").stat().st_size
    meta = onnx_metadata(tmp_path / "tiny_hgc.onnx")
    assert json.loads(meta["deploy"])["plan"] == plan and json.loads(meta["arch_spec"])["stages"][0][0]["kind"] == \
        "hgc_ir"  # the metadata's spec is the trained one; the plan says what was fused
    assert cell.report["deploy"] == report


def test_an_artefact_that_fails_the_trained_check_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import export.deploy

    def differs(*args: object) -> float:
        raise ExportError("deploy: onnx artefact differs from the training-time (unfused) network: max abs diff 1")

    monkeypatch.setattr(export.deploy, "check_artefact", differs)
    resolved = deploy(tiny_resolved(), choice("all", tiny_hgc_spec()))
    with pytest.raises(ExportError, match="training-time"):
        export_formats(resolved, tmp_path / "out", "onnx")
    assert not (tmp_path / "out").exists()  # neither the artefact nor its report, nor the directory it made


@pytest.mark.slow
def test_export_all_deploys_every_matching_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mzoo.cli import main

    out = tmp_path / "matrix"
    assert main(["export", "--all", "hgcnet_0_5x_cifar", "--deploy", "all", "-o", str(out)]) == 0
    record = json.loads((out / "hgcnet_0_5x_cifar.onnx.json").read_text())["deploy"]
    assert record["mode"] == "all" and record["fused_blocks"] == record["hgc_blocks"] > 0
    assert record["artefact_max_abs_diff_vs_trained"] <= 1e-4 and (out / "compatibility.json").is_file()
