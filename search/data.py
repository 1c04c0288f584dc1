"""Training data for supernet search: ImageFolder datasets (a directory or a .zip), CIFAR-10, transforms, splits.

Owns the map-style :class:`ImageFolder` dataset over ``<root>[/<split>]/<class>/<image>`` (listing, reading
and error reporting are :mod:`common.images`' own, so a missing path, an empty split or a corrupt image
raises ``ImageDataError`` naming the path or the file inside the archive), the shared CIFAR-10 JPEGs
(:func:`cifar10`), the standard CIFAR and ImageNet-style train/eval transforms, a seeded class-stratified
split of a training set into two disjoint parts (weights on one, architectures on the other, as DARTS'
50/50), a seeded class-balanced subset (``N`` images per class) for small CPU runs, and the samplers that
make data order *and augmentation* a pure function of ``(seed, epoch, index)``: a sampler yields
``(index, sample_seed)`` keys and :class:`SeededDataset` loads ``dataset[index]`` with torch's and Python's
global generators seeded from ``sample_seed`` (and restored afterwards). An image therefore gets the same
augmentation whichever process or DataLoader worker loads it and whether or not training was resumed,
which is what makes resumption exact and a two-process run equal to a one-process run.

Measured on this machine (one core shared with other jobs, so ranges): listing a CIFAR-10 split takes
1.7-4 s and opening the zip for reading 1.3-6 s, once per process (its central directory has 60,000
entries); a batch of 64 costs ~1 ms an image read from the zip and ~0.4 ms from memory (decode skipped;
augmentation, seeding and collation included). ``cache=True`` / :meth:`ImageFolder.with_cache` decode up
front; the CIFAR transforms work on the decoded array without PIL (torchvision's PIL pipeline: ~1.2 ms).
"""

from __future__ import annotations

import copy
import itertools
import math
import operator
import os
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from common.errors import ImageDataError, InputError
from common.images import CIFAR10_ZIP, ImageFile, ImageReader, eval_transform, list_images, shared_data_dir

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageDataError",
    "EpochSampler",
    "ImageFolder",
    "SampleKey",
    "SeededDataset",
    "ShardSampler",
    "balanced_subset",
    "cifar10",
    "cifar10_source",
    "cifar_eval_transform",
    "cifar_train_transform",
    "imagenet_eval_transform",
    "imagenet_train_transform",
    "mix_seed",
    "search_splits",
    "split_dataset",
]

# zoo.pretrained's values (tests/search/test_data.py checks they agree). Not imported from there: importing
# zoo pulls in timm and torchvision, ~3.5 s of CPU at every process start, which each torchrun worker pays.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# A dataset key: (index, seed of that sample's augmentation). Plain int keys use the global RNG as usual.
SampleKey = tuple[int, int]
Transform = Callable[[Image.Image], Any]

_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (splitmix64 over the parts), e.g. ``(seed, epoch, index)``.

    Neighbouring inputs give unrelated seeds, so per-sample, per-step and per-stream generators seeded from
    it do not share streams the way ``seed + epoch`` seeds do.
    """
    state = 0
    for part in parts:
        state = (state ^ (int(part) & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        z = state
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


def cifar10_source() -> Path:
    """The shared CIFAR-10 JPEG zip: ``$MZOO_SHARED_DATA/cifar10/cifar10_jpg.zip`` (default ``../shared/data``)."""
    return shared_data_dir() / CIFAR10_ZIP


class ImageFolder(Dataset):
    """Images of an ImageFolder directory or .zip (optionally below ``split``), labelled by class folder.

    ``classes`` fixes the label order (default: the class folders found, sorted), so a train and a test
    split agree even if one lacks a class; an image in a folder outside ``classes`` is an error. Items are
    ``(transform(image), label)``; images are decoded to RGB. Random transforms draw from the global
    generators, as torchvision's do; wrap the dataset in :class:`SeededDataset` to make them reproducible.

    A zip is opened lazily, once per process, and shared by this dataset's subsets and copies (DataLoader
    workers each open their own handle). ``cache=True`` or :meth:`with_cache` decodes every image up
    front (shared copy-on-write with forked workers); subsets share the cache.
    """

    def __init__(self, source: str | os.PathLike[str], split: str | None = None,
                 transform: Transform | None = None, *, classes: Sequence[str] | None = None,
                 cache: bool = False, progress: bool = False) -> None:
        self.source = Path(source)
        self.split = split
        self.transform = transform
        files = list_images(self.source, split)
        found = sorted({f.label for f in files})
        self.classes: tuple[str, ...] = tuple(classes) if classes is not None else tuple(found)
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise InputError(f"classes must be distinct and not empty, got {self.classes!r}")
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = [f for f in files if f.label not in index]
        if unknown:
            raise ImageDataError(f"image {unknown[0].name!r} in {str(self.source)!r} is in class folder "
                                       f"{unknown[0].label!r}, which is not one of the classes {self.classes!r}")
        self.files: tuple[ImageFile, ...] = tuple(files)
        self.targets: tuple[int, ...] = tuple(index[f.label] for f in files)
        self._images: list[Image.Image] | None = None
        self._handle = _Handle(self.source)  # shared with subsets and copies made in this process
        if cache:
            self._images = self._decode_all(progress)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    @property
    def cached(self) -> bool:
        return self._images is not None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        index = operator.index(index)  # a tuple key here means a missing SeededDataset: fail, don't misread it
        if not -len(self.files) <= index < len(self.files):
            raise IndexError(f"index {index} is out of range for {len(self.files)} images of {str(self.source)!r}")
        image = self._images[index] if self._images is not None else self._read(index)
        return (self.transform(image) if self.transform is not None else image), self.targets[index]

    def subset(self, indices: Sequence[int]) -> ImageFolder:
        """The images at ``indices`` (in that order), same source, classes, transform and cache."""
        n = len(self.files)
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise IndexError(f"subset index {bad[0]} is out of range for {n} images of {str(self.source)!r}")
        new = self._copy()
        new.files = tuple(self.files[i] for i in indices)
        new.targets = tuple(self.targets[i] for i in indices)
        if self._images is not None:
            new._images = [self._images[i] for i in indices]
        return new

    def with_transform(self, transform: Transform | None) -> ImageFolder:
        """The same images (and cache) with another transform, e.g. an eval transform over a train split."""
        new = self._copy()
        new.transform = transform
        return new

    def with_cache(self, progress: bool = False) -> ImageFolder:
        """The same images, all decoded now and kept in memory (e.g. after :func:`balanced_subset`)."""
        new = self._copy()
        if new._images is None:
            new._images = new._decode_all(progress)
        return new

    def close(self) -> None:
        """Release this process's zip handle, shared with this dataset's subsets (reopened on the next read)."""
        self._handle.close()

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split else ""
        return (f"ImageFolder({str(self.source)!r}{split}, {len(self)} images, {len(self.classes)} classes"
                f"{', cached' if self.cached else ''})")

    def _copy(self) -> ImageFolder:
        return copy.copy(self)  # shares the handle and the cache; subset() replaces the lists it changes

    def _decode_all(self, progress: bool) -> list[Image.Image]:
        return [self._read(i) for i in tqdm(range(len(self.files)), desc=f"decoding {self.source.name}",
                                            disable=not progress, leave=False, file=sys.stderr)]

    def _read(self, index: int) -> Image.Image:
        return self._handle.reader().open(self.files[index].name, "RGB")


class _Handle:
    """One process's open reader of a source, opened on first use and again in every new process.

    Opening a zip parses its whole central directory (~3-6 s for CIFAR-10's 60,000 entries on this
    machine), so copies of a dataset share the handle instead of each opening their own. A forked
    DataLoader worker sees a foreign pid and opens its own file: a file offset shared across processes
    would interleave their seeks. The parent's handle is dropped there, not closed (closing would close
    the parent's file), and is never pickled.
    """

    def __init__(self, source: Path) -> None:
        self.source = source
        self._reader: ImageReader | None = None
        self._pid = -1

    def reader(self) -> ImageReader:
        if self._reader is None or self._pid != os.getpid():
            self._reader = ImageReader(self.source).__enter__()
            self._pid = os.getpid()
        return self._reader

    def close(self) -> None:
        if self._reader is not None and self._pid == os.getpid():
            self._reader.__exit__(None, None, None)
        self._reader, self._pid = None, -1

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "_reader": None, "_pid": -1}


def cifar10(split: str = "train", transform: Transform | None | str = "default", *,
            source: str | os.PathLike[str] | None = None, cache: bool = False,
            progress: bool = False) -> ImageFolder:
    """CIFAR-10 from the shared JPEG zip (``train``: 50,000 images, ``test``: 10,000), labels in CIFAR order.

    ``transform="default"`` is :func:`cifar_train_transform` for ``train`` and :func:`cifar_eval_transform`
    otherwise; pass ``None`` for PIL images. ``source`` overrides :func:`cifar10_source`.
    """
    if split not in ("train", "test"):
        raise InputError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    if isinstance(transform, str):
        if transform != "default":
            raise InputError(f"transform must be a callable, None or 'default', got {transform!r}")
        transform = cifar_train_transform() if split == "train" else cifar_eval_transform()
    return ImageFolder(cifar10_source() if source is None else source, split, transform,
                       classes=CIFAR10_CLASSES, cache=cache, progress=progress)


class SeededDataset(Dataset):
    """Any map-style dataset, indexed by :data:`SampleKey`: ``seeded[(index, seed)]`` is ``dataset[index]``
    computed with torch's default CPU generator and Python's ``random`` seeded from ``seed``.

    Both generators are restored afterwards, so loading leaves no trace on the training's random streams.
    That covers torchvision's transforms (torch) and timm's (Python's ``random``); NumPy's global generator
    is not re-seeded (saving and restoring it costs ~0.3 ms an image here), so a transform must not draw
    from it. A plain ``int`` key loads ``dataset[index]`` untouched.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | SampleKey) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        python_state = random.getstate()
        # fork_rng restores the CPU generator; seeding the default generator alone (not torch.manual_seed)
        # leaves CUDA generators alone, which fork_rng(devices=[]) would not restore.
        try:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                random.seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(python_state)

    def __repr__(self) -> str:
        return f"SeededDataset({self.dataset!r})"


# --- transforms -------------------------------------------------------------------------------------------------


class _Normalize:
    """An HxWxC uint8 array or PIL image (or float HWC array in [0, 1]) to a normalised CHW float32 tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise InputError(f"mean and std need 3 values each and std > 0, got {tuple(mean)!r}, {tuple(std)!r}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.inv_std = 1.0 / torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, pixels: Image.Image | np.ndarray) -> torch.Tensor:
        array = np.asarray(pixels)
        # astype copies into a fresh, writable, contiguous float32 array (PIL's arrays are read-only).
        tensor = torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1)
        if array.dtype == np.uint8:
            tensor = tensor.div_(255.0)
        return tensor.sub_(self.mean).mul_(self.inv_std)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={(1 / self.inv_std).flatten().tolist()})"


class _PadCropFlip:
    """CIFAR augmentation on the decoded array: zero-pad, random crop back to size, random horizontal flip.

    The same distribution as torchvision's ``RandomCrop(size, padding=pad)`` + ``RandomHorizontalFlip()``
    (every offset and flip equally likely), from one draw of the global torch generator, without PIL.
    """

    def __init__(self, pad: int, normalize: _Normalize) -> None:
        if pad < 0:
            raise InputError(f"pad must be >= 0, got {pad!r}")
        self.pad = pad
        self.normalize = normalize

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        array = np.asarray(image)
        h, w, c = array.shape
        span = 2 * self.pad + 1
        draw = int(torch.randint(0, span * span * 2, (1,)))
        top, left, flip = draw % span, (draw // span) % span, draw // (span * span)
        padded = np.zeros((h + 2 * self.pad, w + 2 * self.pad, c), dtype=array.dtype)
        padded[self.pad:self.pad + h, self.pad:self.pad + w] = array
        crop = padded[top:top + h, left:left + w]
        return self.normalize(crop[:, ::-1] if flip else crop)

    def __repr__(self) -> str:
        return f"PadCropFlip(pad={self.pad}, {self.normalize!r})"


class _TimmEval:
    """timm's eval transform (shorter side to ``size / crop_pct``, centre crop) via :mod:`common.images`."""

    def __init__(self, size: int, crop_pct: float, interpolation: str, normalize: _Normalize) -> None:
        self.size, self.crop_pct, self.interpolation, self.normalize = size, crop_pct, interpolation, normalize

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(eval_transform(image, (self.size, self.size), self.crop_pct, self.interpolation))

    def __repr__(self) -> str:
        return f"TimmEval(size={self.size}, crop_pct={self.crop_pct}, {self.interpolation}, {self.normalize!r})"


def cifar_train_transform(mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                          pad: int = 4) -> Transform:
    """Random crop (same size, zero padding ``pad``) + horizontal flip + normalise: the CIFAR recipe of
    DARTS and NAS-Bench-Macro."""
    return _PadCropFlip(pad, _Normalize(mean, std))


def cifar_eval_transform(mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> Transform:
    """Normalise only."""
    return _Normalize(mean, std)


def imagenet_train_transform(size: int = 224, scale: tuple[float, float] = (0.08, 1.0),
                             mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                             interpolation: str = "bilinear") -> Transform:
    """``RandomResizedCrop(size, scale)`` + horizontal flip + normalise (BCNet's and MCT-NAS' supernet recipe)."""
    from torchvision import transforms as T  # here, not at the top: see CIFAR10_MEAN

    modes = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
    if interpolation not in modes:
        raise InputError(f"interpolation must be one of {', '.join(modes)}, got {interpolation!r}")
    return T.Compose([T.RandomResizedCrop(size, scale=scale, interpolation=modes[interpolation]),
                      T.RandomHorizontalFlip(), _Normalize(mean, std)])


def imagenet_eval_transform(size: int = 224, crop_pct: float = 0.875, mean: Sequence[float] = IMAGENET_MEAN,
                            std: Sequence[float] = IMAGENET_STD, interpolation: str = "bilinear") -> Transform:
    """Resize the shorter side to ``size / crop_pct`` (256 for 224), centre-crop ``size``, normalise.

    The same function the exporters verify with (:func:`common.images.eval_transform`), so a searched
    model is scored with the preprocessing it ships with.
    """
    if not isinstance(size, int) or size < 1:
        raise InputError(f"size must be a positive int, got {size!r}")
    if not 0.0 < crop_pct <= 1.0:
        raise InputError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    if interpolation not in ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"):
        raise InputError(f"interpolation {interpolation!r} is not a PIL resampling filter name")
    return _TimmEval(size, crop_pct, interpolation, _Normalize(mean, std))


# --- splits and subsets -----------------------------------------------------------------------------------------


def _by_class(dataset: ImageFolder, seed: int) -> list[list[int]]:
    """Per class (label order), that class's indices in a seeded random order."""
    rng = np.random.default_rng(seed)
    members: dict[int, list[int]] = {}
    for i, target in enumerate(dataset.targets):
        members.setdefault(target, []).append(i)
    return [[idx[j] for j in rng.permutation(len(idx))] for _, idx in sorted(members.items())]


def split_dataset(dataset: ImageFolder, fraction: float = 0.5, seed: int = 0) -> tuple[ImageFolder, ImageFolder]:
    """Two disjoint parts covering ``dataset``: ``fraction`` of each class in the first, the rest in the second.

    Stratified (each class split in the same proportion, rounded per class) and a pure function of
    ``seed``; each part keeps the dataset's order. Used to train weights on one part and score or update
    architectures on the other (DARTS: 50/50 of the CIFAR-10 training set).
    """
    if not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise InputError(f"fraction must be strictly between 0 and 1, got {fraction!r}")
    first: list[int] = []
    second: list[int] = []
    for members in _by_class(dataset, seed):
        cut = int(math.floor(fraction * len(members) + 0.5))
        first += members[:cut]
        second += members[cut:]
    if not first or not second:
        raise InputError(f"fraction {fraction} of {len(dataset)} images of {str(dataset.source)!r} leaves "
                         f"one part empty ({len(first)} / {len(second)} images)")
    return dataset.subset(sorted(first)), dataset.subset(sorted(second))


def balanced_subset(dataset: ImageFolder, per_class: int, seed: int = 0) -> ImageFolder:
    """``per_class`` images of every class present, chosen with ``seed``, in the dataset's order."""
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise InputError(f"per_class must be a positive int, got {per_class!r}")
    chosen: list[int] = []
    for members in _by_class(dataset, seed):
        if len(members) < per_class:
            label = dataset.classes[dataset.targets[members[0]]]
            raise InputError(f"class {label!r} of {str(dataset.source)!r} has {len(members)} images, "
                             f"fewer than per_class={per_class}")
        chosen += members[:per_class]
    return dataset.subset(sorted(chosen))


# --- samplers ---------------------------------------------------------------------------------------------------


class EpochSampler(DistributedSampler):
    """torch's ``DistributedSampler`` (same per-epoch permutation and rank sharding), yielding
    ``(index, sample_seed)`` keys and able to start mid-epoch.

    The permutation depends on ``seed + epoch`` only, so the union of the ranks' ``i``-th batches of size
    ``b`` is a single process's ``i``-th batch of size ``world_size × b``; ``sample_seed`` is
    ``mix_seed(seed, epoch, index)``, so (through :class:`SeededDataset`) an image is augmented the same
    wherever it is loaded. Works
    without a process group (``rank``/``world_size`` are given). ``set_epoch(epoch, start)`` skips the
    first ``start`` samples of this rank's epoch, without loading them (how a resumed run re-enters).
    """

    def __init__(self, dataset: Sized, *, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= self.num_samples:
            raise InputError(f"start must be in 0..{self.num_samples}, got {start!r}")
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        for index in itertools.islice(super().__iter__(), self.start, None):
            yield index, mix_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(Sampler[SampleKey]):
    """Every ``world_size``-th index from ``rank`` in order, each exactly once over all ranks (no padding,
    unlike ``DistributedSampler``), so summed evaluation counts are exact. Keys are seeded like
    :class:`EpochSampler`'s at epoch 0."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise InputError(f"rank must be in 0..{world_size - 1}, got {rank!r}")
        self.size, self.rank, self.world_size, self.seed = size, rank, world_size, seed

    def __iter__(self) -> Iterator[SampleKey]:
        for index in range(self.rank, self.size, self.world_size):
            yield index, mix_seed(self.seed, 0, index)

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


def search_splits(source: str, input_size: int, *, per_class: int | None = None, test_per_class: int | None = None,
                  held_fraction: float = 0.5, held_transform: str = "train") -> dict[str, Any]:
    """The data of a search: ``train`` (weights), ``held`` (architecture updates or scoring), ``test``.

    ``source`` is ``"cifar10"`` (the shared JPEGs) or an ImageFolder directory/.zip with a ``train`` split and
    a ``val`` (or ``test``) split. ``held`` is ``held_fraction`` of every class of the training split (a
    class-balanced ``per_class`` subset of it when given), with the training transform (``"train"``: DARTS
    updates α on augmented images) or the evaluation one (``"eval"``: scoring). Images up to 64 px get the
    CIFAR transforms, larger ones ImageNet-style ones. Also returns ``classes``, ``mean``, ``std``, ``all_train``
    (both parts, for retraining a derived network) and a one-line ``description``.
    """
    if held_transform not in ("train", "eval"):
        raise InputError(f"held_transform must be 'train' or 'eval', got {held_transform!r}")
    small = input_size <= 64
    train_t = cifar_train_transform() if small else imagenet_train_transform(input_size)
    eval_t = cifar_eval_transform() if small else imagenet_eval_transform(input_size)
    if source == "cifar10":
        train_all, test = cifar10("train", train_t), cifar10("test", eval_t)
        where = "CIFAR-10 (../shared/data)"
    else:
        if not Path(source).exists():
            raise InputError(f"data {source!r}: no such directory or .zip (or use 'cifar10')")
        train_all = ImageFolder(source, "train", train_t)
        test = _test_split(source, train_all.classes, eval_t)
        where = f"ImageFolder {source}"
    if per_class is not None:
        train_all = balanced_subset(train_all, per_class, seed=0)
    if test_per_class is not None:
        test = balanced_subset(test, test_per_class, seed=0)
    weights, held = split_dataset(train_all, 1.0 - held_fraction, seed=0)
    if held_transform == "eval":
        held = held.with_transform(eval_t)
    description = (f"{where}: {len(weights)} training images, {len(held)} held out, {len(test)} test images, "
                   f"{len(train_all.classes)} classes, {input_size}×{input_size}")
    return {"train": weights, "held": held, "test": test, "all_train": train_all, "classes": train_all.classes,
            "description": description, "input_size": input_size, "mean": list(CIFAR10_MEAN if small else IMAGENET_MEAN),
            "std": list(CIFAR10_STD if small else IMAGENET_STD)}


def load_splits(data: str, *, subset: int | None, val_per_class: int, input_size: int, seed: int,
                progress: bool = False) -> tuple[Any, Any, int]:
    """(training part, held-out part, number of classes) of ``data``: ``"cifar10"`` or an ImageFolder path.

    The held-out part is ``val_per_class`` images of every class taken from the training split (seeded,
    disjoint from the training part); ``subset`` limits the training part to that many images per class.
    CIFAR-10 gets the CIFAR transforms (pad-crop-flip) and a directory ImageNet-style ones at ``input_size``.
    Subsets are decoded into memory.
    """
    for name, value in (("--subset", subset), ("--val-per-class", val_per_class)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    if data == "cifar10":
        train = cifar10("train", cifar_train_transform())
        eval_transform = cifar_eval_transform()
    else:
        if not Path(data).exists():
            raise InputError(f"--data {data!r}: no such directory or .zip (or use 'cifar10')")
        train = ImageFolder(data, "train", imagenet_train_transform(input_size, scale=(0.35, 1.0)))
        eval_transform = imagenet_eval_transform(input_size, crop_pct=1.0)
    counts = Counter(train.targets)
    smallest = min(counts.values())
    take = smallest if subset is None else subset + val_per_class
    if take > smallest or val_per_class >= take:
        raise InputError(f"--data {data!r}: the smallest class has {smallest} training images; --subset "
                         f"{subset} + --val-per-class {val_per_class} do not fit")
    pool = balanced_subset(train, take, seed) if take < len(train) else train
    if subset is not None:
        pool = pool.with_cache(progress)
    fit, held = split_dataset(pool, (take - val_per_class) / take, seed)
    return fit, held.with_transform(eval_transform), len(train.classes)



def _test_split(source: str, classes: tuple[str, ...], transform: Any) -> ImageFolder:
    """The ``val`` split of an ImageFolder source, else its ``test`` split, labelled like the training split."""
    for split in ("val", "test"):
        try:
            return ImageFolder(source, split, transform, classes=classes)
        except ImageDataError:
            continue
    raise ImageDataError(f"{source!r} has no 'val' or 'test' split to measure accuracy on")
