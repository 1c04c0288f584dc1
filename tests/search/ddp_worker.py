"""The script ``tests/search/test_distributed.py`` launches under torchrun, and the pieces the search tests share.

Run as ``python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_worker.py DATA OUT``: each rank
trains :class:`TinyNet` with the default step, with :class:`TwoPassStep` (two forward/backward passes per
step on heads drawn from ``ctx.rng``), with :class:`UnevenStep` (a head only rank 0 touches) and, as
``resume``, crashed after a checkpoint and resumed; it saves its parameters and step logs to
``OUT/<mode>_rank<r>.pt``. Imported, it offers the synthetic
ImageFolder maker and the same model, steps and config for the single-process reference.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from search.data import ImageFolder, cifar_train_transform
from search.distributed import shutdown
from search.engine import StepContext, TrainConfig, Trainer, cross_entropy_step

COLORS = ((220, 40, 40), (40, 220, 40), (40, 40, 220), (220, 220, 40))


def run_torchrun(script: Path, *args: str, nproc: int = 2, timeout: int = 300) -> None:
    """Run ``script args`` under torchrun with ``nproc`` CPU processes (one OpenMP thread each); fails on error."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    # --standalone picks a free port, so parallel test workers cannot collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(script), *args]
    proc = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def make_image_folder(root: Path, *, classes: int = 3, per_class: int = 8, size: int = 8, split: str | None = "train",
                      seed: int = 0, ext: str = "png") -> Path:
    """``root[/split]/c<k>/<i>.<ext>``: noisy images whose mean colour is their class (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    base = root / split if split else root
    for k in range(classes):
        folder = base / f"c{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.array(COLORS[k % len(COLORS)])[None, None] + rng.normal(0, 50, (size, size, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.{ext}")
    return root


def zip_folder(root: Path, target: Path) -> Path:
    """A .zip of the tree under ``root`` with root-relative POSIX names (directory entries included)."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(root.rglob("*")):
            archive.write(path, path.relative_to(root).as_posix())
    return target


class TinyNet(nn.Module):
    """Conv → ReLU → pool → one of three linear heads. No BatchNorm, so ranks differ only through gradients."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleList(nn.Linear(6, classes) for _ in range(3))

    def forward(self, x: torch.Tensor, head: int = 0) -> torch.Tensor:
        return self.heads[head](self.features(x))


class TwoPassStep:
    """Two forward/backward passes per step (loss × 0.5 each, as BCNet's left/right pair) on two different heads
    drawn from ``ctx.rng``; logs the heads and the global mean loss of every step."""

    def __init__(self) -> None:
        self.log: list[tuple[int, int, int, float]] = []

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 ctx: StepContext) -> dict[str, float]:
        first, second = ctx.rng.sample(range(3), 2)
        total = 0.0
        for head in (first, second):
            loss = 0.5 * ctx.criterion(model(images, head=head), targets)
            loss.backward()
            total += loss.item()
        self.log.append((ctx.step, first, second, ctx.global_mean({"loss": total})["loss"]))
        return {"loss": total}


class UnevenStep:
    """Head 0 on every rank, head 2 only on rank 0: head 2 has no gradient on the other ranks."""

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 ctx: StepContext) -> dict[str, float]:
        loss = ctx.criterion(model(images, head=0), targets)
        if ctx.rank == 0:
            loss = loss + ctx.criterion(model(images, head=2), targets)
        loss.backward()
        return {"loss": loss.item()}


class CrashAt:
    """The default step, raising on every rank when it reaches ``step`` (a simulated crash)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 ctx: StepContext) -> dict[str, float]:
        if ctx.step == self.step:
            raise RuntimeError("simulated crash")
        return cross_entropy_step(model, images, targets, ctx)


def config(batch_size: int, steps: int = 5, checkpoint_every: int | None = None) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-3,
                       warmup_epochs=0.5, grad_clip_norm=2.0, seed=3, checkpoint_every=checkpoint_every,
                       progress=False)


def train(data: Path, batch_size: int, mode: str) -> tuple[TinyNet, list[tuple[int, int, int, float]]]:
    """Train a seeded TinyNet on ``data/train`` with one of the modes; returns the model and the step log."""
    torch.manual_seed(0)
    model = TinyNet()
    step = {"default": None, "two_pass": TwoPassStep(), "uneven": UnevenStep()}[mode]
    dataset = ImageFolder(data, "train", cifar_train_transform())
    kwargs = {"step_fn": step} if step is not None else {}
    Trainer(model, config(batch_size), dataset, device="cpu", **kwargs).fit()
    return model, list(getattr(step, "log", []))


def crash_and_resume(data: Path, batch_size: int, checkpoint: Path) -> TinyNet:
    """The default run, crashed at step 3 after a checkpoint at step 2, then resumed in a fresh model."""
    dataset = ImageFolder(data, "train", cifar_train_transform())
    torch.manual_seed(0)
    crashed = Trainer(TinyNet(), config(batch_size, checkpoint_every=2), dataset, step_fn=CrashAt(3), device="cpu",
                      checkpoint_path=checkpoint)
    try:
        crashed.fit()
    except RuntimeError as err:
        assert "simulated crash" in str(err)
    else:
        raise AssertionError("the simulated crash did not happen")
    torch.manual_seed(1)  # other initial weights: everything must come from the checkpoint
    model = TinyNet()
    resumed = Trainer(model, config(batch_size), dataset, device="cpu")
    resumed.load_checkpoint(checkpoint)
    resumed.fit()
    return model


def main(argv: list[str]) -> int:
    data, out = Path(argv[1]), Path(argv[2])
    import torch.distributed as dist

    for mode in ("default", "two_pass", "uneven", "resume"):
        if mode == "resume":
            model, log = crash_and_resume(data, batch_size=4, checkpoint=out / "checkpoint.pt"), []
        else:
            model, log = train(data, batch_size=4, mode=mode)
        rank = dist.get_rank()
        torch.save({"params": {k: v.detach().clone() for k, v in model.state_dict().items()}, "log": log,
                    "world_size": dist.get_world_size()}, out / f"{mode}_rank{rank}.pt")
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
