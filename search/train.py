"""Training one network from scratch: the job behind ``mzoo train``, and the uint8 tensor cache of an image set.

Owns :class:`TrainJob` (what to train: a zoo model or a spec file, on CIFAR-10 or an ImageFolder, with a
:class:`~search.engine.TrainConfig`; :func:`nbmacro_recipe` is NAS-Bench-Macro's, the default),
:func:`check_job` (every input validated before any data is read, and a rerun in the same output directory
compared with the settings it started with by :mod:`search.rundir`'s rule, naming any that differ), :func:`run_train` (the engine's
:class:`~search.engine.Trainer` with its default cross-entropy step, evaluated on the test split after every
epoch, resumed from ``train.ckpt`` when rerun) and its result in the layout every search result has
(:mod:`zoo.searched`: ``spec.json``, ``weights.pth``, ``report.json`` with the weights' sha256), which
``mzoo --searched DIR`` registers and ``create_model(name, pretrained=True, pretrained_cfg=...)`` loads.

The recorded figure is NAS-Bench-Macro's: the best test top-1 over epochs (papers.md §4.2). The weights
written are those of the *last* epoch, not of the best one: choosing weights by their test accuracy would make
the shipped model's own test figure a selected one. Both figures are in the report.

Small images (input side up to 64 px) are decoded once into one uint8 array per split (:func:`image_cache`),
kept as a file under the cache directory, so an epoch costs no JPEG decoding and every later run (or a
resumed one) starts in a second. Items are ``transform(pixels[i])`` with the same CIFAR transforms, on the
same decoded pixels as :class:`search.data.ImageFolder`'s, so data order and augmentation stay pure functions
of ``(seed, epoch, image)`` and resumption stays exact. Larger images go through ``ImageFolder`` (an
ImageNet-style random-resized crop needs the originals).

Differences from NAS-Bench-Macro's own script, stated because they can move a figure by a fraction of a
point: the engine drops the last partial batch of an epoch (195 steps of 256 where their loader takes 196)
and steps the cosine per optimizer step rather than per epoch; the images are the shared CIFAR-10 JPEGs,
not the original PNG-equivalent arrays (mean abs pixel error 5.8/255).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.errors import ImageDataError, InputError
from common.files import prepare_directory, publish, temporary_path, write_json_atomic
from search.data import (CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, ImageFolder,
                         balanced_subset, cifar10_source, cifar_eval_transform, cifar_train_transform,
                         imagenet_eval_transform, imagenet_train_transform)
from search.engine import RUNTIME_FIELDS, CheckpointError, TrainConfig, Trainer, evaluate, seed_everything
from search.rundir import RUN_FILE, claim
from search.timings import PhaseTimings

__all__ = ["CACHE_FORMAT", "CHECKPOINT_FILE", "LEGACY_SETTINGS_FILE", "TensorImages", "TrainJob", "TrainResult",
           "check_job", "default_cache_dir", "image_cache", "load_job_data", "nbmacro_recipe", "run_train",
           "score_top1"]

CHECKPOINT_FILE = "train.ckpt"
INITS = ("zoo", "pytorch")  # the zoo models' own (timm-style) initialisation, or PyTorch's layer defaults
LEGACY_SETTINGS_FILE = "train.json"  # before run.json (read once, then moved into it)
CACHE_FORMAT = "mobile-zoo/image-cache"
CACHE_VERSION = 1
SMALL_IMAGE = 64  # up to this side: CIFAR transforms on cached pixels; above: ImageNet-style, from the files
_NAME = re.compile(r"[^a-z0-9_]+")


def nbmacro_recipe(epochs: int = 50, seed: int = 0, *, batch_size: int = 256, progress: bool = True,
                   workers: int = 0) -> TrainConfig:
    """NAS-Bench-Macro's training recipe (papers.md §4.2): SGD lr 0.1, momentum 0.9, wd 5e-4, batch 256,
    cosine over the run to 0, no warm-up, no label smoothing."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.1, momentum=0.9, weight_decay=5e-4,
                       min_lr=0.0, seed=seed, progress=progress, workers=workers, eval_batch_size=500)


def default_cache_dir() -> Path:
    """Where decoded image sets are kept: ``$MZOO_CACHE/data`` (default ``~/.cache/mobile_zoo/data``)."""
    from zoo.pretrained import cache_dir

    return cache_dir() / "data"


# --- the uint8 tensor cache ---------------------------------------------------------------------------------


class TensorImages(Dataset):
    """Decoded images as one uint8 array ``[N, H, W, 3]`` plus labels; items are ``(transform(pixels[i]), label)``.

    Quacks like :class:`search.data.ImageFolder` where the splitters need it (``targets``, ``classes``,
    ``source``, :meth:`subset`), so :func:`search.data.balanced_subset` picks the same images from either.
    Random transforms draw from the global generators; the trainer's :class:`search.data.SeededDataset` seeds them.
    """

    def __init__(self, pixels: np.ndarray, targets: Sequence[int], classes: Sequence[str], source: Path,
                 transform: Any = None) -> None:
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3 or len(pixels) != len(targets):
            raise InputError(f"pixels must be uint8 [N, H, W, 3] with one label per image, got {pixels.dtype} "
                             f"{tuple(pixels.shape)} and {len(targets)} labels")
        self.pixels, self.targets = pixels, tuple(int(t) for t in targets)
        self.classes, self.source, self.transform = tuple(classes), Path(source), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.pixels[index]
        return (self.transform(image) if self.transform is not None else image), self.targets[index]

    def subset(self, indices: Sequence[int]) -> TensorImages:
        """The images at ``indices`` (in that order), same classes and transform."""
        return TensorImages(self.pixels[np.asarray(indices, dtype=np.int64)], [self.targets[i] for i in indices],
                            self.classes, self.source, self.transform)

    def with_transform(self, transform: Any) -> TensorImages:
        return TensorImages(self.pixels, self.targets, self.classes, self.source, transform)

    def __repr__(self) -> str:
        return (f"TensorImages({str(self.source)!r}, {len(self)} images {self.pixels.shape[1]}x{self.pixels.shape[2]}, "
                f"{len(self.classes)} classes)")


def image_cache(source: str | os.PathLike[str], split: str, classes: Sequence[str] | None = None, *,
                cache_dir: str | os.PathLike[str] | None = None, progress: bool = False) -> TensorImages:
    """Split ``split`` of an ImageFolder directory or .zip as :class:`TensorImages`, decoded once and cached.

    The cache file is keyed by the source's path, size and modification time, the split, the classes and the
    file list, so a changed source is decoded again; an unreadable cache file is rebuilt. Every image must
    have the same size (a different one is a ``ImageDataError`` naming it). Written atomically, so
    processes building the same cache at once (torchrun ranks) each leave a whole file.
    """
    folder = ImageFolder(source, split, None, classes=classes)
    names = [f.name for f in folder.files]
    stat = folder.source.stat()
    key = hashlib.sha256(json.dumps([CACHE_VERSION, str(folder.source.resolve()), stat.st_size, stat.st_mtime_ns,
                                     split, list(folder.classes), names]).encode()).hexdigest()[:16]
    stem = _NAME.sub("_", folder.source.stem.lower())
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{stem}-{split}-{key}.pt"
    cached = _read_cache(path, len(names))
    if cached is None:
        cached = _decode(folder, progress)
        _write_cache(path, cached)
    return TensorImages(cached["pixels"].numpy(), cached["targets"].tolist(), folder.classes, folder.source)


def _decode(folder: ImageFolder, progress: bool) -> dict[str, torch.Tensor]:
    first = np.asarray(folder[0][0])
    pixels = np.empty((len(folder), *first.shape), dtype=np.uint8)
    for i in tqdm(range(len(folder)), desc=f"decoding {folder.source.name}:{folder.split}", disable=not progress,
                  leave=False, file=sys.stderr):
        image = np.asarray(folder[i][0])
        if image.shape != first.shape:
            raise ImageDataError(f"image {folder.files[i].name!r} in {str(folder.source)!r} is "
                                       f"{image.shape[1]}x{image.shape[0]}, the first one is {first.shape[1]}x"
                                       f"{first.shape[0]}: a tensor cache needs one size")
        pixels[i] = image
    folder.close()
    return {"pixels": torch.from_numpy(pixels), "targets": torch.tensor(folder.targets, dtype=torch.int64)}


def _read_cache(path: Path, count: int) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file: decode again
        return None
    ok = (isinstance(state, dict) and state.get("format") == CACHE_FORMAT and state.get("version") == CACHE_VERSION
          and isinstance(state.get("pixels"), torch.Tensor) and state["pixels"].dtype == torch.uint8
          and state["pixels"].ndim == 4 and len(state["pixels"]) == count
          and isinstance(state.get("targets"), torch.Tensor) and len(state["targets"]) == count)
    return state if ok else None


def _write_cache(path: Path, cached: dict[str, torch.Tensor]) -> None:
    prepare_directory(path.parent)
    with temporary_path(path) as tmp:
        torch.save({"format": CACHE_FORMAT, "version": CACHE_VERSION, **cached}, tmp)
        publish(tmp, path)


# --- the job ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainJob:
    """What ``mzoo train`` trains: exactly one of ``model`` (a zoo name) or ``spec_file``, on ``data``.

    ``data`` is ``"cifar10"`` (the shared JPEGs) or an ImageFolder directory/.zip with a ``train`` split and a
    ``val`` (or ``test``) split. ``input_size`` is the image side (default: the model's cfg; for a spec file 32
    when it has 10 classes, else 224). ``per_class``/``test_per_class`` train and test on class-balanced
    subsets (small runs). ``name`` is what the result registers as (default ``<model or file stem>_<data>``).
    """

    model: str | None = None
    spec_file: str | None = None
    data: str = "cifar10"
    train: TrainConfig = dataclasses.field(default_factory=nbmacro_recipe)
    input_size: int | None = None
    per_class: int | None = None
    test_per_class: int | None = None
    name: str | None = None
    cache_dir: str | None = None
    init: str = "zoo"

    def __post_init__(self) -> None:
        if (self.model is None) == (self.spec_file is None):
            raise InputError("give exactly one of a model name or a spec file")
        if self.init not in INITS:
            raise InputError(f"--init must be one of {', '.join(INITS)}, got {self.init!r}")
        for field in ("input_size", "per_class", "test_per_class"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InputError(f"{field.replace('_', '-')} must be a positive integer, got {value!r}")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")

    def settings(self) -> dict[str, Any]:
        """What the run computes (compared on resume): the job and the recipe, runtime fields left out."""
        recipe = {k: v for k, v in self.train.to_dict().items() if k not in RUNTIME_FIELDS}
        job = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("train", "cache_dir")}
        if job["init"] == "zoo":  # the default is left out, so runs recorded before --init existed still match
            del job["init"]
        return {**job, **{f"train.{k}": v for k, v in recipe.items()}}


@dataclass
class TrainResult:
    """A finished run: where its files are and the report written with them."""

    directory: Path
    report: dict[str, Any]


@dataclass(frozen=True)
class _Checked:
    spec: Any
    input_size: int
    out: Path
    settings: dict[str, Any]


def pytorch_default_init(model: torch.nn.Module) -> None:
    """Re-initialise every layer with PyTorch's own defaults (``reset_parameters``: Kaiming-uniform with a = √5 for
    convs and linears, BatchNorm at 1/0), the initialisation of training scripts that set none, such as
    NAS-Bench-Macro's ``train/model.py``. The zoo's models otherwise start from timm's fan-out normal init."""
    for module in model.modules():
        if module is not model and callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()


def check_job(job: TrainJob, out_dir: str | os.PathLike[str]) -> _Checked:
    """Validate ``job`` before any work: model or spec, data path, output directory, and a rerun's settings.

    Raises ``ValueError`` (or ``zoo.UnknownModelError``, a ``ValueError``) naming the input, ``ExportError`` for
    an unwritable directory, :class:`~search.engine.CheckpointError` when ``out_dir`` holds a run started with
    other settings (each differing one named).
    """
    import zoo

    if job.model is not None:
        spec = zoo.get_arch_spec(job.model)  # UnknownModelError suggests close names
        size = job.input_size or zoo.get_pretrained_cfg(job.model).input_size[1]
    else:
        path = Path(job.spec_file)  # type: ignore[arg-type]
        if not path.is_file():
            raise InputError(f"spec file {str(path)!r} does not exist")
        try:
            spec = zoo.spec_from_json(path.read_text())
        except (ValueError, TypeError, KeyError) as err:
            raise InputError(f"{str(path)!r} is not a valid architecture spec: {err}") from None
        size = job.input_size or (32 if spec.num_classes == 10 else 224)
    if job.data != "cifar10":
        if not Path(job.data).exists():
            raise InputError(f"--data {job.data!r}: no such directory or .zip (or use 'cifar10')")
    elif not cifar10_source().is_file():
        raise InputError(f"CIFAR-10 is not at {str(cifar10_source())!r} (set $MZOO_SHARED_DATA)")
    if job.name is not None:
        from zoo.searched import is_valid_name

        if not is_valid_name(job.name):
            raise InputError(f"--name {job.name!r} must be lowercase letters, digits and '_', starting with a letter")
    out = Path(out_dir)
    prepare_directory(out)
    settings = {**job.settings(), "input_size": size,
                "spec_sha256": hashlib.sha256(spec.to_json().encode()).hexdigest()}
    _adopt_legacy_settings(out)
    claim(out, "train", settings)  # the one rule of every long command's -o (search.rundir)
    return _Checked(spec, size, out, settings)


def _adopt_legacy_settings(out: Path) -> None:
    """A run started before ``mzoo train`` kept its settings in ``run.json`` wrote them to ``train.json``: move them
    there, so it resumes (or is refused) by the same rule as every other command."""
    legacy = out / LEGACY_SETTINGS_FILE
    if not legacy.is_file() or (out / RUN_FILE).exists():
        return
    try:
        saved = json.loads(legacy.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{str(legacy)!r} is not a training settings file ({err}); use another -o") from None
    write_json_atomic(out / RUN_FILE, {"command": "train", "settings": saved})
    legacy.unlink()


def load_job_data(job: TrainJob, input_size: int, progress: bool = False) -> dict[str, Any]:
    """``train`` and ``test`` datasets with their transforms, ``classes``, ``mean``/``std`` and a description."""
    small = input_size <= SMALL_IMAGE
    source = cifar10_source() if job.data == "cifar10" else Path(job.data)
    classes = CIFAR10_CLASSES if job.data == "cifar10" else None
    if small:
        train = image_cache(source, "train", classes, cache_dir=job.cache_dir, progress=progress)
        test_split = _test_split_name(source)
        test = image_cache(source, test_split, train.classes, cache_dir=job.cache_dir, progress=progress)
        side = train.pixels.shape[1:3]
        if tuple(side) != (input_size, input_size) or tuple(test.pixels.shape[1:3]) != (input_size, input_size):
            raise InputError(f"the images of {str(source)!r} are {side[1]}x{side[0]}; the model is trained at "
                             f"{input_size}x{input_size} (pass --input-size {side[0]}, or larger images)")
        train = train.with_transform(cifar_train_transform())
        test = test.with_transform(cifar_eval_transform())
    else:
        train = ImageFolder(source, "train", imagenet_train_transform(input_size), classes=classes)
        test = ImageFolder(source, _test_split_name(source), imagenet_eval_transform(input_size),
                           classes=train.classes)
    if job.per_class is not None:
        train = balanced_subset(train, job.per_class, seed=0)  # type: ignore[arg-type]
    if job.test_per_class is not None:
        test = balanced_subset(test, job.test_per_class, seed=0)  # type: ignore[arg-type]
    where = "CIFAR-10 (../shared/data)" if job.data == "cifar10" else f"ImageFolder {job.data}"
    return {"train": train, "test": test, "classes": train.classes,
            "mean": list(CIFAR10_MEAN if small else IMAGENET_MEAN), "std": list(CIFAR10_STD if small else IMAGENET_STD),
            "description": f"{where}: {len(train)} training images, {len(test)} test images, "
                           f"{len(train.classes)} classes, {input_size}x{input_size}"}


def _test_split_name(source: Path) -> str:
    """``val`` when the source has that split, else ``test``."""
    from common.images import list_images

    try:
        list_images(source, "val")
        return "val"
    except ImageDataError:
        return "test"


def run_train(job: TrainJob, out_dir: str | os.PathLike[str], *, progress: bool = True) -> TrainResult | None:
    """Train (or resume) ``job`` into ``out_dir``; ``None`` on ranks other than 0 under torchrun.

    Records the run in ``run.json`` (:func:`search.rundir.claim`) first, writes ``train.ckpt`` after every epoch,
    and at the end ``spec.json``, ``weights.pth`` (the last epoch's state dict) and ``report.json``.
    """
    import zoo
    from search import distributed
    from search.diffsearch import DiffResult  # the one writer of the three result files
    from zoo.pretrained import sha256_of

    checked = check_job(job, out_dir)
    out, config = checked.out, job.train if progress else dataclasses.replace(job.train, progress=False)
    data = load_job_data(job, checked.input_size, progress=progress and distributed.env_info().rank == 0)
    spec = checked.spec
    if spec.num_classes != len(data["classes"]):
        if job.spec_file is not None:
            raise InputError(f"spec {job.spec_file!r} has {spec.num_classes} classes, the data has "
                             f"{len(data['classes'])}")
        spec = dataclasses.replace(spec, num_classes=len(data["classes"]))
    seed_everything(config.seed)  # the initial weights are a function of the seed
    model = zoo.build_model(spec)
    if job.init == "pytorch":
        pytorch_default_init(model)
    trainer = Trainer(model, config, data["train"], eval_data=data["test"], checkpoint_path=out / CHECKPOINT_FILE)
    if (out / CHECKPOINT_FILE).exists():
        trainer.load_checkpoint(out / CHECKPOINT_FILE)
    timings = PhaseTimings(out / "timings.json")  # summed over resumed runs
    with timings.phase("train"):
        trainer.fit()
    if distributed.is_active():
        rank = distributed.env_info().rank
        distributed.shutdown()
        if rank != 0:
            return None
    epochs = [row for row in trainer.history if "eval_top1" in row]
    best = max(epochs, key=lambda row: row["eval_top1"])
    base = job.model or Path(job.spec_file).stem  # type: ignore[arg-type]
    data_tag = "cifar10" if job.data == "cifar10" else Path(job.data).stem
    name = job.name or _NAME.sub("_", f"{base}_{data_tag}".lower()).strip("_")
    counted = zoo.count(spec, checked.input_size)
    report = {
        "name": name, "method": "train", "model": job.model, "spec_file": job.spec_file,
        "input_size": [3, checked.input_size, checked.input_size], "mean": data["mean"], "std": data["std"],
        "data": data["description"], "classes": list(data["classes"]), "macs": counted.macs,
        "params": counted.params, "final_top1": epochs[-1]["eval_top1"], "best_top1": best["eval_top1"],
        "best_epoch": round(best["epoch"]), "epochs": config.epochs, "steps": trainer.total_steps,
        "config": config.to_dict(), "settings": checked.settings, "history": trainer.history,
        **timings.totals(),
    }
    model.eval()
    paths = DiffResult(spec, model, report).save(out)
    report["files"] = {k: p.name for k, p in paths.items()}
    report["sha256"] = sha256_of(paths["weights"])
    write_json_atomic(paths["report"], report)
    return TrainResult(out, report)


def score_top1(model: torch.nn.Module, test: Dataset, batch_size: int = 500) -> float:
    """Top-1 (%) of ``model`` on a test set, with the batches the trainer evaluates with."""
    return float(evaluate(model, DataLoader(test, batch_size=batch_size))[0])
