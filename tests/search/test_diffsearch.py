"""The differentiable searches end to end on a tiny image folder: EoiNAS / DARTS runs, resumption, the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import zoo
from search.data import search_splits
from search.differentiable import ArchConfig
from search.diff_cli import add_commands
from search.diffsearch import CostTarget, EoiNASStep, EvalNetConfig, run_eoinas, search_recipe, train_recipe
from search.eoinas import EoiNASConfig
from zoo.spaces import DartsSpace
from tests.search.cli_runner import search_runner
from tests.search.ddp_worker import make_image_folder, run_torchrun
from zoo.searched import register_searched
from zoo.spec import Genotype

DEVICE = "amd-epyc-f23m1-ort-t1"  # the shipped tables, named: without --device a search uses this machine's own
TINY_NET = dict(supernet_chs=4, supernet_layers=3, eval_net=EvalNetConfig(init_chs=4, layers=3))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("diff_data")
    make_image_folder(root, classes=3, per_class=8, size=16, split="train")
    make_image_folder(root, classes=3, per_class=2, size=16, split="val", seed=1)
    return root


@pytest.fixture(scope="module")
def data(folder: Path) -> dict:
    return search_splits(str(folder), 16, held_fraction=0.5)


def _search(epochs: int = 3, **kw: object) -> object:
    return dataclasses.replace(search_recipe(epochs, batch_size=4, progress=False), **kw)


def test_eoinas_run_prunes_gradually_and_writes_a_registrable_model(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "eoinas"
    result = run_eoinas(out, data, search=_search(), eoinas=EoiNASConfig(final_ops=2),
                        cost=CostTarget("macs", 30e6, weight=0.5), train=train_recipe(1, batch_size=4, progress=False),
                        name="eoinas_tiny", **TINY_NET)
    report = json.loads((out / "report.json").read_text())
    events = report["supernet"]["pruning_events"]
    assert [e["live_ops"] for e in events] == [7, 6, 5, 4, 3, 2]  # one op per edge per event, down to final_ops
    assert all(e["removed"] == 2 * 14 for e in events)  # one op on each of the 14 edges of both cell types
    live = report["supernet"]["arch"]["normal"]["live"]
    assert all(sum(row) == 2 for row in live)
    genotype = Genotype.from_dict(report["genotype"])
    assert all(live[edge][list(report["supernet"]["arch"]["normal"]["ops"]).index(op)]
               for edge, op in _edges(genotype.normal))
    assert report["space_costs"]["macs"]["eoinas"] == zoo.count(*DartsSpace().to_spec(
        DartsSpace().from_genotype(genotype))).macs
    assert set(report["genotypes"]) == {"eoinas", "darts"} and report["method"] == "eoinas"
    assert all(k in report["history"][-1] for k in ("train_arch_cost", "train_val_loss", "train_live_ops"))
    # The spec file rebuilds as the trained model, registers under its name and loads its weights.
    spec = zoo.spec_from_json((out / "spec.json").read_text())
    assert spec.family == "eoinas" and spec.genotype == genotype and spec.num_classes == 3
    name = register_searched(out)
    model = zoo.create_model(name, pretrained=True).eval()
    assert model.pretrained_cfg["first_conv"] == "stem.0" and model.pretrained_cfg["input_size"] == (3, 16, 16)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(model(x), result.model.eval()(x), atol=1e-6)


def _edges(cell: tuple) -> list[tuple[int, str]]:
    from search.eoinas import edge_index

    index = edge_index(4)
    return [(index[(k // 2, src)], op) for k, (op, src) in enumerate(cell)]


def test_darts_selection_never_prunes_and_derives_from_alpha(data: dict, tmp_path: Path) -> None:
    result = run_eoinas(tmp_path / "darts", data, search=_search(2), eoinas=EoiNASConfig(selection="darts"),
                        train=None, **TINY_NET)
    report = result.report
    assert report["supernet"]["pruning_events"] == [] and report["method"] == "darts"
    assert all(sum(row) == 8 for row in report["supernet"]["arch"]["normal"]["live"])
    assert report["genotype"] == report["genotypes"]["darts"]
    assert not (tmp_path / "darts" / "weights.pth").exists()  # untrained: no weights to register
    assert "test_top1" not in report


def test_an_interrupted_search_resumes_to_the_uninterrupted_result(data: dict, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    search = _search(3, checkpoint_every=1, seed=2)
    kwargs = dict(search=search, eoinas=EoiNASConfig(final_ops=3), arch=ArchConfig(), train=None, **TINY_NET)
    straight = run_eoinas(tmp_path / "straight", data, **kwargs)
    call = EoiNASStep.__call__

    def interrupted(self: EoiNASStep, model: object, images: object, targets: object, ctx: object) -> object:
        if ctx.step == 5:  # type: ignore[attr-defined]
            raise KeyboardInterrupt
        return call(self, model, images, targets, ctx)

    monkeypatch.setattr(EoiNASStep, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_eoinas(tmp_path / "resumed", data, **kwargs)
    monkeypatch.setattr(EoiNASStep, "__call__", call)
    resumed = run_eoinas(tmp_path / "resumed", data, **kwargs)
    a, b = straight.report, resumed.report  # type: ignore[union-attr]
    assert a["supernet"]["arch"] == b["supernet"]["arch"]  # α, live ops and the indicator, to the digit
    assert a["supernet"]["pruning_events"] == b["supernet"]["pruning_events"] and a["genotype"] == b["genotype"]


def test_a_latency_target_predicts_from_the_table(data: dict, tmp_path: Path) -> None:
    cost = CostTarget("latency", 3.0, weight=1.0, device="amd-epyc-f23m1-ort-t1")
    result = run_eoinas(tmp_path / "lat", data, search=_search(1), cost=cost, train=None, **TINY_NET)
    costs = result.report["space_costs"]  # type: ignore[union-attr]
    assert set(costs) == {"macs", "latency"} and costs["latency"]["eoinas"] > 0
    with pytest.raises(ValueError, match="needs a device"):
        CostTarget("latency", 3.0)


# --- the CLI ----------------------------------------------------------------------------------------------------


_run = search_runner(add_commands)


TINY = ("--epochs", "1", "--batch-size", "4", "--supernet-chs", "4", "--supernet-layers", "3", "--init-chs", "4",
        "--layers", "3", "--train-epochs", "1", "--train-batch-size", "4", "--input-size", "16", "--no-progress")


def test_cli_eoinas_end_to_end(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert _run("eoinas", "--data", str(folder), *TINY, "--macs-target", "40M", "--name", "eoinas_cli", "-o",
                str(out)) == 0
    text = capsys.readouterr().out
    assert "eoinas_cli: eoinas search of the DARTS cell space" in text and "test top-1" in text
    assert "mzoo --searched" in text
    report = json.loads((out / "report.json").read_text())
    assert report["name"] == "eoinas_cli" and report["config"]["cost"]["target"] == 40e6
    assert {p.name for p in out.iterdir()} >= {"spec.json", "weights.pth", "report.json", "supernet.pth"}
    # Exportable as any zoo model: ONNX, verified against eager PyTorch.
    from mzoo.cli import main as mzoo

    assert mzoo(["export", "--spec", str(out / "spec.json"), "--checkpoint", str(out / "weights.pth"),
                 "--format", "onnx", "-o", str(tmp_path / "onnx")]) == 0
    exported = json.loads((tmp_path / "onnx" / "spec.onnx.json").read_text())
    assert max(exported["max_abs_diff"].values()) <= 1e-4


@pytest.mark.parametrize("argv, message", [
    (("--macs-target", "40M", "--latency-target", "3"), "not both"),
    (("--latency-target", "3", "--device", "no-such-device"), "no-such-device"),
    (("--device", "pixel-9"), "give a target"),
    (("--name", "Bad-Name"), "--name"),
    (("--latency-target", "-1"), "positive number of ms"),
    (("--final-ops", "0"), "final_ops"),
    (("--epochs", "0"), "--epochs"),
])
def test_cli_eoinas_rejects_bad_input_before_training(folder: Path, tmp_path: Path, argv: tuple[str, ...],
                                                      message: str) -> None:
    with pytest.raises((ValueError, LookupError), match=message):
        _run("eoinas", "--data", str(folder), *TINY, *argv, "-o", str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "supernet.pth").exists()


MK_TINY = ("--epochs", "1", "--batch-size", "4", "--train-epochs", "1", "--input-size", "16", "--no-progress")


def test_cli_metakernel_end_to_end(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mk"
    assert _run("metakernel", "--data", str(folder), *MK_TINY, "--latency-target", "20", "--device", DEVICE, "-o", str(out)) == 0
    text = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert "metakernel_cifar: Meta-Kernel search (meta supernet)" in text and report["tokens"] in text
    from search.metakernel import MetaKernelCostModel
    from zoo.spaces import MetaKernelSpace

    space = MetaKernelSpace()
    tokens = tuple(report["arch"])
    assert report["space_costs"]["macs"] == zoo.count(*space.to_spec(tokens)).macs
    assert report["space_costs"]["latency_ms"] == pytest.approx(
        MetaKernelCostModel.latency(space, "amd-epyc-f23m1-ort-t1").exact(tokens))
    assert report["history"][-1]["train_arch_cost"] > 0 and 0 <= report["test_top1"] <= 100
    spec = zoo.spec_from_json((out / "spec.json").read_text())
    assert spec == space.to_spec(tokens)[0].replace(num_classes=3)
    name = register_searched(out, name="metakernel_cli_test")
    model = zoo.create_model(name, pretrained=True)
    assert model.pretrained_cfg["paper_ids"] == "arXiv:1912.04749"


@pytest.mark.parametrize("argv, message", [
    (("--identity", "--latency-target", "5", "--device", DEVICE), "id"),  # the shipped table has no skip keys
    (("--mode", "mixed"), "--mode"),
    (("--temperature", "0"), "--temperature"),
    (("--macs-target", "lots"), "--macs-target"),
])
def test_cli_metakernel_rejects_bad_input_before_training(folder: Path, tmp_path: Path, argv: tuple[str, ...],
                                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _run("metakernel", "--data", str(folder), *MK_TINY, *argv, "-o", str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "supernet.pth").exists()


def test_two_cpu_processes_under_torchrun_search_in_lock_step(tmp_path: Path) -> None:
    from tests.search import ddp_diff_worker

    data = make_image_folder(tmp_path / "data", classes=3, per_class=8, size=16, split="train")
    make_image_folder(tmp_path / "data", classes=3, per_class=2, size=16, split="val", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    run_torchrun(Path(ddp_diff_worker.__file__), str(data), str(out))
    ranks = [torch.load(out / f"eoinas_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["returned"] and not ranks[1]["returned"]  # rank 0 alone gets (and writes) the result
    state0, state1 = ranks[0]["supernet"], ranks[1]["supernet"]
    assert set(state0) == set(state1) and len(state0) == 8
    for key, value in state0.items():  # α, pruning and the indicator agree on both processes
        assert torch.equal(value, state1[key]), key
    assert int(state0["live_normal"].sum(1).max()) == 4  # the schedule ran
    report = json.loads((out / "eoinas" / "report.json").read_text())
    assert report["config"]["search"]["batch_size"] == 2 and "test_top1" in report
    assert (out / "metakernel" / "weights.pth").is_file() and (out / "metakernel" / "report.json").is_file()
