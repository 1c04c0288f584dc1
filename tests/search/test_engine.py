"""search.engine: recipe, loop, custom steps, exact resumption, atomic checkpoints, evaluate, BN recalibration."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from search.data import ImageFolder, cifar_eval_transform, cifar_train_transform, split_dataset
from search.engine import (CheckpointError, StepContext, TrainConfig, Trainer, WarmupCosine, cross_entropy_step,
                           evaluate, read_checkpoint, recalibrate_bn)
from tests.search.ddp_worker import TinyNet, TwoPassStep, make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("engine")
    make_image_folder(root, classes=3, per_class=16, size=8, split="train", seed=0)
    make_image_folder(root, classes=3, per_class=6, size=8, split="test", seed=1)
    return root


def _train(folder: Path) -> ImageFolder:
    return ImageFolder(folder, "train", cifar_train_transform(), cache=True)


def _test(folder: Path) -> ImageFolder:
    return ImageFolder(folder, "test", cifar_eval_transform(), cache=True)


QUIET = dict(progress=False)


# --- recipe ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, value", [
    ("epochs", 0), ("epochs", 1.5), ("steps", 0), ("batch_size", True), ("lr", 0.0), ("lr", float("nan")),
    ("momentum", 1.0), ("weight_decay", -1e-4), ("min_lr", 0.5), ("warmup_epochs", -1), ("label_smoothing", 1.0),
    ("grad_clip_norm", 0.0), ("seed", -1), ("eval_every", 0), ("checkpoint_every", 2.0), ("workers", -1),
    ("progress", "yes"), ("warmup_start_lr", -0.1),
])
def test_config_rejects_bad_fields_by_name(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"TrainConfig\.{name} must be"):
        TrainConfig(**{name: value})


def test_config_round_trips_and_lists_differences() -> None:
    cfg = TrainConfig(epochs=3, lr=0.05, nesterov=True, grad_clip_norm=5.0)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    other = TrainConfig(epochs=4, lr=0.05, nesterov=True, grad_clip_norm=5.0, workers=3)
    assert cfg.differences(other) == ["epochs: 3 != 4"]
    with pytest.raises(ValueError, match="nesterov"):
        TrainConfig(momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="unknown TrainConfig fields \\['lr_decay'\\]"):
        TrainConfig.from_dict({"lr_decay": 0.1})


def test_warmup_then_cosine_schedule() -> None:
    schedule = WarmupCosine(lr=0.1, min_lr=0.001, warmup_start_lr=0.01, warmup_steps=4, total_steps=20)
    assert [round(schedule.lr_at(s), 6) for s in range(4)] == [0.0325, 0.055, 0.0775, 0.1]
    assert schedule.lr_at(4) == pytest.approx(0.1)
    assert schedule.lr_at(12) == pytest.approx(0.001 + 0.099 * 0.5)  # half way through the cosine
    tail = [schedule.lr_at(s) for s in range(4, 20)]
    assert all(a > b for a, b in zip(tail, tail[1:])) and tail[-1] > 0.001
    assert schedule(12) == pytest.approx(schedule.lr_at(12) / 0.1)


# --- the loop ----------------------------------------------------------------------------------------------------

def test_trainer_learns_and_follows_the_schedule(folder: Path) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.2, warmup_epochs=1, min_lr=0.002, **QUIET)
    lrs: list[float] = []

    def step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        lrs.append(ctx.lr)
        return cross_entropy_step(model, images, targets, ctx)

    trainer = Trainer(model, cfg, _train(folder), eval_data=_test(folder), step_fn=step)
    before, _ = evaluate(model, trainer.eval_loader)
    history = trainer.fit()
    assert trainer.steps_per_epoch == 6 and trainer.total_steps == 24
    assert [row["step"] for row in history] == [6, 12, 18, 24]  # a row at every epoch end
    assert history[-1]["eval_top1"] >= 90 > before + 30
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert lrs == pytest.approx([trainer.schedule.lr_at(s) for s in range(24)])
    assert lrs[5] == pytest.approx(0.2) and lrs[-1] < 0.01


def test_any_map_style_dataset_trains() -> None:
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 2, (64,), generator=gen)
    features = torch.randn(64, 4, generator=gen) + 3.0 * targets[:, None]  # separable
    data = TensorDataset(features, targets)
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    history = Trainer(model, TrainConfig(epochs=10, batch_size=16, lr=0.5, **QUIET), data, eval_data=data).fit()
    assert history[-1]["eval_top1"] > 90


def test_two_backward_passes_accumulate_into_one_step_and_unused_params_stay(folder: Path) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    initial = copy.deepcopy(model)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    inner = TwoPassStep()

    def step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, ctx: StepContext) -> dict[str, float]:
        seen.append((images, targets))
        return inner(model, images, targets, ctx)

    cfg = TrainConfig(steps=1, batch_size=8, lr=0.3, momentum=0.9, weight_decay=0.01, **QUIET)
    Trainer(model, cfg, _train(folder), step_fn=step).fit()
    (_, first, second, _), = inner.log
    images, targets = seen[0]
    loss = sum(0.5 * F.cross_entropy(initial(images, head=h), targets) for h in (first, second))
    loss.backward()
    unused = ({0, 1, 2} - {first, second}).pop()
    for (name, after), before in zip(model.named_parameters(), initial.parameters()):
        if name.startswith(f"heads.{unused}."):
            assert torch.equal(after, before), name  # no gradient: neither moved nor decayed
        else:  # SGD's first step: p - lr * (grad + wd * p), grad from both passes
            torch.testing.assert_close(after, before - 0.3 * (before.grad + 0.01 * before), msg=name)


def test_gradients_are_clipped_to_the_global_norm(folder: Path) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(steps=1, batch_size=8, lr=1.0, momentum=0.0, weight_decay=0.0, grad_clip_norm=0.01, **QUIET)
    Trainer(model, cfg, _train(folder)).fit()
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert moved.norm().item() == pytest.approx(0.01, rel=1e-4)  # lr 1: the step is the clipped gradient


def test_bad_step_results_and_setups_raise(folder: Path) -> None:
    data = _train(folder)
    cfg = TrainConfig(steps=1, batch_size=8, **QUIET)
    with pytest.raises(TypeError, match="step 0: the step function must return a mapping"):
        Trainer(TinyNet(), cfg, data, step_fn=lambda *args: [1.0]).fit()  # type: ignore[arg-type, return-value]
    with pytest.raises(FloatingPointError, match="step 0: metric 'loss' is nan"):
        Trainer(TinyNet(), cfg, data, step_fn=lambda *args: {"loss": math.nan}).fit()
    with pytest.raises(KeyError, match="no data stream 'val'"):
        Trainer(TinyNet(), cfg, data, step_fn=lambda m, x, y, ctx: ctx.next_batch("val")).fit()  # type: ignore
    with pytest.raises(TypeError, match="extra 'tree'"):
        Trainer(TinyNet(), cfg, data, extras={"tree": object()})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="train data has 48 images: too few for one batch of 64"):
        Trainer(TinyNet(), TrainConfig(batch_size=64, **QUIET), data)
    with pytest.raises(ValueError, match="warmup_epochs=2"):
        Trainer(TinyNet(), TrainConfig(epochs=2, batch_size=8, warmup_epochs=2, **QUIET), data)


# --- checkpoints and exact resumption ----------------------------------------------------------------------------

class MixNet(nn.Module):
    """BatchNorm and dropout (the global torch RNG), two heads mixed by architecture weights."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3))
        self.heads = nn.ModuleList(nn.Linear(6, 3) for _ in range(2))

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        f = self.features(x)
        w = weights if weights is not None else torch.full((2,), 0.5)
        return w[0] * self.heads[0](f) + w[1] * self.heads[1](f)


class Arch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(2))


class Record:
    """Search-method state that is not a module: saved with checkpoints through state_dict/load_state_dict."""

    def __init__(self) -> None:
        self.entries: list[list[float]] = []

    def state_dict(self) -> dict[str, list[list[float]]]:
        return {"entries": [list(e) for e in self.entries]}

    def load_state_dict(self, state: dict[str, list[list[float]]]) -> None:
        self.entries = [list(e) for e in state["entries"]]


class SearchLikeStep:
    """First-order DARTS-like: an architecture step on a validation batch, then a weight step; touches every RNG."""

    def __init__(self, arch: Arch, arch_opt: torch.optim.Optimizer, record: Record, crash_at: int | None) -> None:
        self.arch, self.arch_opt, self.record, self.crash_at = arch, arch_opt, record, crash_at

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 ctx: StepContext) -> dict[str, float]:
        if ctx.step == self.crash_at:
            raise RuntimeError("simulated crash")
        val_images, val_targets = ctx.next_batch("val")
        self.arch_opt.zero_grad()
        val_loss = ctx.criterion(model(val_images, torch.softmax(self.arch.alpha, 0)), val_targets)
        val_loss.backward()
        ctx.average_gradients(self.arch.parameters())
        self.arch_opt.step()
        ctx.zero_grad()
        noise = 1.0 + 1e-3 * random.random() + 1e-3 * float(np.random.rand())
        loss = noise * ctx.criterion(model(images, torch.softmax(self.arch.alpha, 0).detach()), targets)
        loss.backward()
        self.record.entries.append([ctx.step, loss.item(), ctx.rng.random()])
        return {"loss": loss.item(), "val_loss": val_loss.item()}


RESUME_CFG = TrainConfig(steps=11, batch_size=4, lr=0.1, nesterov=True, weight_decay=1e-3, warmup_epochs=1,
                         min_lr=1e-3, label_smoothing=0.1, grad_clip_norm=1.0, seed=5, eval_every=3,
                         checkpoint_every=4, **QUIET)


def _search_run(folder: Path, path: Path, crash_at: int | None, init_seed: int,
                cfg: TrainConfig = RESUME_CFG) -> tuple[Trainer, MixNet, Arch, torch.optim.Optimizer, Record]:
    torch.manual_seed(init_seed)
    model, arch, record = MixNet(), Arch(), Record()
    arch_opt = torch.optim.Adam(arch.parameters(), lr=0.01, betas=(0.5, 0.999), weight_decay=1e-3)
    weights, val = split_dataset(ImageFolder(folder, "train", cifar_train_transform(), cache=True), 0.25, seed=1)
    trainer = Trainer(model, cfg, weights, eval_data=_test(folder), step_fn=SearchLikeStep(arch, arch_opt, record,
                                                                                           crash_at),
                      extras={"arch": arch, "arch_opt": arch_opt, "record": record}, streams={"val": val},
                      checkpoint_path=path)
    return trainer, model, arch, arch_opt, record


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_crash_and_resume_equals_training_straight(folder: Path, tmp_path: Path) -> None:
    straight, model, arch, arch_opt, record = _search_run(folder, tmp_path / "straight.pt", None, init_seed=0)
    assert straight.steps_per_epoch == 3  # 12 training images, batch 4: the checkpoint at step 8 is mid-epoch
    history = straight.fit()

    crashed, *_ = _search_run(folder, tmp_path / "run.pt", crash_at=9, init_seed=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    assert read_checkpoint(tmp_path / "run.pt")["step"] == 8

    # A fresh process: other initial weights, and DataLoader workers this time (a runtime-only field).
    resumed, model2, arch2, arch_opt2, record2 = _search_run(
        folder, tmp_path / "run.pt", None, init_seed=1, cfg=TrainConfig(**{**RESUME_CFG.to_dict(), "workers": 2}))
    resumed.load_checkpoint(tmp_path / "run.pt")
    assert resumed.step == 8
    resumed_history = resumed.fit()

    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), name  # weights and BatchNorm statistics, bit for bit
    assert torch.equal(arch.alpha, arch2.alpha)
    assert torch.equal(arch_opt.state_dict()["state"][0]["exp_avg"], arch_opt2.state_dict()["state"][0]["exp_avg"])
    assert record.entries == record2.entries and len(record.entries) == 11
    assert resumed_history == history and [row["step"] for row in history] == [3, 6, 9, 11]
    assert read_checkpoint(tmp_path / "run.pt")["step"] == 11


def test_resume_refuses_another_run(folder: Path, tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, **QUIET)
    Trainer(TinyNet(), cfg, _train(folder), checkpoint_path=path).save_checkpoint(path)
    other = TrainConfig(epochs=3, batch_size=8, lr=0.05, **QUIET)
    with pytest.raises(CheckpointError, match=r"different config .*epochs: 2 != 3; lr: 0.1 != 0.05"):
        Trainer(TinyNet(), other, _train(folder)).load_checkpoint(path)
    runtime_only = TrainConfig(epochs=2, batch_size=8, lr=0.1, workers=1, eval_every=5, progress=False)
    Trainer(TinyNet(), runtime_only, _train(folder)).load_checkpoint(path)
    smaller = _train(folder).subset(range(40))
    with pytest.raises(CheckpointError, match="train data of size 48, this run has 40"):
        Trainer(TinyNet(), cfg, smaller).load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"extras \[\], this run registers \['record'\]"):
        Trainer(TinyNet(), cfg, _train(folder), extras={"record": Record()}).load_checkpoint(path)
    state = torch.load(path, weights_only=True)
    state["world_size"] = 2
    torch.save(state, tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match="world size 2, this run has 1"):
        Trainer(TinyNet(), cfg, _train(folder)).load_checkpoint(tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match="does not fit this model"):
        Trainer(MixNet(), cfg, _train(folder)).load_checkpoint(path)
    with pytest.raises(CheckpointError, match="nothing.pt' does not exist"):
        read_checkpoint(tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="junk.pt' cannot be read"):
        read_checkpoint(tmp_path / "junk.pt")


def test_checkpoint_writes_are_atomic(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck" / "last.pt"
    trainer = Trainer(TinyNet(), TrainConfig(steps=2, batch_size=8, checkpoint_every=1, **QUIET), _train(folder),
                      checkpoint_path=path)
    trainer.save_checkpoint(path)
    real_save = torch.save

    def interrupted(obj: object, handle: object) -> None:
        real_save({"half": torch.zeros(1000)}, handle)  # some bytes reach the temporary file
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()  # the checkpoint after the first step is interrupted
    monkeypatch.undo()
    assert read_checkpoint(path)["step"] == 0  # the earlier checkpoint, whole
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind
    (tmp_path / "plain").write_text("a file, not a directory")
    with pytest.raises(CheckpointError, match="plain"):
        trainer.save_checkpoint(tmp_path / "plain" / "last.pt")


# --- evaluate and recalibrate_bn ---------------------------------------------------------------------------------

def test_evaluate_counts_top1_and_mean_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(50, 4, generator=gen), torch.randint(0, 4, (50,), generator=gen)
    loader = DataLoader(TensorDataset(logits, targets), batch_size=16)
    model = nn.Sequential(nn.Identity()).train()
    top1, loss = evaluate(model, loader)
    assert top1 == pytest.approx(100.0 * (logits.argmax(1) == targets).float().mean().item())
    assert loss == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    assert model.training  # mode restored
    top1_neg, _ = evaluate(model, loader, forward=lambda x: -x)  # how a search passes arch=...
    assert top1_neg == pytest.approx(100.0 * (logits.argmin(1) == targets).float().mean().item())
    with pytest.raises(ValueError, match="no images"):
        evaluate(model, [])


def test_recalibrate_bn_averages_batch_statistics_without_touching_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.1), nn.ReLU(), nn.Dropout(0.5)).eval()
    model[1].running_mean.fill_(5.0)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [(torch.randn(6, 3, 8, 8) * (i + 1) + i, torch.zeros(6)) for i in range(3)]
    recalibrate_bn(model, batches, 2)
    with torch.no_grad():
        feats = [model[0](x) for x, _ in batches[:2]]
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    expected_var = torch.stack([f.transpose(0, 1).flatten(1).var(1, unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(model[1].running_mean, expected_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var, expected_var, rtol=1e-5, atol=1e-6)
    assert int(model[1].num_batches_tracked) == 2
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert not model.training and model[1].momentum == 0.1
    with pytest.raises(ValueError, match="fewer than batches=4"):
        recalibrate_bn(model, batches, 4)
    recalibrate_bn(nn.Linear(2, 2), batches, 1)  # no BatchNorm: nothing to do
