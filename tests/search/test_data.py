"""search.data: ImageFolder over a directory or zip, transforms, seeded splits/subsets, samplers, CIFAR-10."""

from __future__ import annotations

import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from export.errors import CalibrationDataError
from search.data import (CIFAR10_CLASSES, EpochSampler, ImageFolder, SeededDataset, ShardSampler, balanced_subset,
                         cifar10,
                         cifar10_source, cifar_eval_transform, cifar_train_transform, imagenet_eval_transform,
                         imagenet_train_transform, mix_seed, split_dataset)
from tests.search.ddp_worker import make_image_folder, zip_folder

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A 3-class, 6-per-class ImageFolder with a train split, as a directory and as a zip."""
    root = make_image_folder(tmp_path / "tree", classes=3, per_class=6, size=8)
    return root, zip_folder(root, tmp_path / "tree.zip")


def _normalised(pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def test_directory_and_zip_give_the_same_labelled_images(tree: tuple[Path, Path]) -> None:
    root, archive = tree
    from_dir = ImageFolder(root, "train", cifar_eval_transform())
    from_zip = ImageFolder(archive, "train", cifar_eval_transform())
    assert from_dir.classes == from_zip.classes == ("c0", "c1", "c2")
    assert len(from_dir) == len(from_zip) == 18
    assert from_dir.targets == from_zip.targets
    assert [f.name for f in from_dir.files] == [f.name for f in from_zip.files]
    for i in range(len(from_dir)):
        a, label = from_dir[i]
        b, _ = from_zip[i]
        assert torch.equal(a, b)
        assert label == int(from_dir.files[i].name.split("/")[1][1:])  # train/c<k>/...
    pixels = np.asarray(Image.open(root / from_dir.files[7].name).convert("RGB"))
    torch.testing.assert_close(from_zip[7][0], _normalised(pixels), rtol=0, atol=1e-6)


def test_missing_empty_and_corrupt_sources_name_the_offender(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tree
    with pytest.raises(CalibrationDataError, match="nowhere.zip"):
        ImageFolder(tmp_path / "nowhere.zip")
    (root / "val" / "c0").mkdir(parents=True)
    with pytest.raises(CalibrationDataError, match="split 'val'"):
        ImageFolder(root, "val")
    with pytest.raises(CalibrationDataError, match="'test'"):
        ImageFolder(tree[1], "test")
    (root / "train" / "c1" / "zz_bad.png").write_bytes(b"not a png at all")
    archive = zip_folder(root, tmp_path / "bad.zip")
    data = ImageFolder(archive, "train", cifar_eval_transform())
    bad = [f.name for f in data.files].index("train/c1/zz_bad.png")
    data[bad - 1]  # its neighbours read fine
    with pytest.raises(CalibrationDataError, match="'train/c1/zz_bad.png' in .*bad.zip"):
        data[bad]
    with pytest.raises(CalibrationDataError, match="class folder 'c2'"):
        ImageFolder(root, "train", classes=("c0", "c1"))
    with pytest.raises(IndexError, match="19"):
        data[19]


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_zip_is_read_by_worker_processes(tree: tuple[Path, Path]) -> None:
    data = SeededDataset(ImageFolder(tree[1], "train", cifar_train_transform()))
    data[0]  # the main process opens its own handle first; forked workers must not share it
    sampler = EpochSampler(data, seed=1)
    batches = [list(DataLoader(data, batch_size=5, sampler=sampler, num_workers=workers)) for workers in (0, 2)]
    assert len(batches[0]) == len(batches[1]) == 4
    for (xa, ya), (xb, yb) in zip(*batches):  # same images, same augmentation, whichever process loaded them
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    clone = pickle.loads(pickle.dumps(data))
    assert torch.equal(clone[(3, 7)][0], data[(3, 7)][0])


class _PythonDraws(Dataset):
    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> float:
        return random.random()


def test_keyed_items_are_seeded_and_leave_the_global_rngs_alone(tree: tuple[Path, Path]) -> None:
    plain = ImageFolder(tree[0], "train", cifar_train_transform())
    data = SeededDataset(plain)
    state, python_state = torch.get_rng_state(), random.getstate()
    first = data[(2, 123)][0]
    assert torch.equal(first, data[(2, 123)][0])
    assert torch.equal(state, torch.get_rng_state()) and random.getstate() == python_state
    others = {tuple(data[(2, seed)][0].flatten()[:64].tolist()) for seed in range(30)}
    assert len(others) > 10  # different seeds, different crops/flips
    python_draws = SeededDataset(_PythonDraws())  # Python's random is seeded too (timm's transforms use it)
    assert python_draws[(1, 5)] == python_draws[(1, 5)] != python_draws[(1, 6)]
    assert random.getstate() == python_state
    plain[2]  # a plain dataset draws from the global generator, as torchvision's datasets do
    assert not torch.equal(state, torch.get_rng_state())
    with pytest.raises(TypeError):
        plain[(2, 123)]  # a key without SeededDataset is refused, not misread


def test_cifar_train_transform_is_torchvisions_pad_crop_flip() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    padded = TF.pad(image, 4)
    references = torch.stack([_normalised(np.asarray(TF.hflip(crop) if flip else crop))
                              for flip in (False, True) for top in range(9) for left in range(9)
                              for crop in [TF.crop(padded, top, left, 6, 6)]])
    transform = cifar_train_transform()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        outputs = torch.stack([transform(image) for _ in range(1500)])
    distances = torch.cdist(outputs.flatten(1).double(), references.flatten(1).double())
    assert ((distances < 1e-5).sum(1) == 1).all()  # every output is exactly one reference crop
    seen = Counter(distances.argmin(1).tolist())
    assert len(seen) == 162  # every offset and flip occurs
    assert max(seen.values()) < 3 * 1500 / 162  # roughly uniformly


def test_normalisation_constants_are_the_zoos() -> None:
    import search.data
    import zoo.pretrained

    for name in ("CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD"):
        assert getattr(search.data, name) == getattr(zoo.pretrained, name)
    assert MEAN == search.data.CIFAR10_MEAN and STD == search.data.CIFAR10_STD


def test_eval_transforms_match_torchvision() -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))  # 300 wide, 200 high
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(image)
    ours = imagenet_eval_transform()(image)
    assert ours.shape == (3, 224, 224)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    small = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    torch.testing.assert_close(cifar_eval_transform()(small), _normalised(np.asarray(small)), rtol=0, atol=1e-6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        a = imagenet_train_transform()(image)
        torch.manual_seed(0)
        b = imagenet_train_transform()(image)
    assert a.shape == (3, 224, 224) and torch.equal(a, b)
    with pytest.raises(ValueError, match="crop_pct"):
        imagenet_eval_transform(crop_pct=1.5)


def test_split_is_stratified_disjoint_and_seeded(tmp_path: Path) -> None:
    data = ImageFolder(make_image_folder(tmp_path, classes=3, per_class=10), "train")
    first, second = split_dataset(data, 0.5, seed=4)
    names = lambda part: [f.name for f in part.files]  # noqa: E731
    assert set(names(first)).isdisjoint(names(second))
    assert sorted(names(first) + names(second)) == sorted(names(data))
    assert Counter(first.targets) == Counter(second.targets) == {0: 5, 1: 5, 2: 5}
    assert names(split_dataset(data, 0.5, seed=4)[0]) == names(first)
    assert names(split_dataset(data, 0.5, seed=5)[0]) != names(first)
    small, _ = split_dataset(data, 0.3, seed=4)
    assert Counter(small.targets) == {0: 3, 1: 3, 2: 3}
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            split_dataset(data, bad)


def test_balanced_subset_takes_n_per_class(tmp_path: Path) -> None:
    data = ImageFolder(make_image_folder(tmp_path, classes=3, per_class=10), "train", cache=True)
    subset = balanced_subset(data, 4, seed=1)
    assert Counter(subset.targets) == {0: 4, 1: 4, 2: 4}
    assert set(f.name for f in subset.files) <= set(f.name for f in data.files)
    assert subset.files == balanced_subset(data, 4, seed=1).files != balanced_subset(data, 4, seed=2).files
    assert subset.cached
    with pytest.raises(ValueError, match="class 'c0' .* 10 images, fewer than per_class=11"):
        balanced_subset(data, 11)


def test_cached_dataset_equals_the_uncached_one(tree: tuple[Path, Path]) -> None:
    plain = ImageFolder(tree[1], "train", cifar_train_transform())
    cached = ImageFolder(tree[1], "train", cifar_train_transform(), cache=True)
    for key in [(i, mix_seed(9, i)) for i in range(len(plain))]:
        assert torch.equal(SeededDataset(plain)[key][0], SeededDataset(cached)[key][0])
    late = balanced_subset(plain, 2, seed=3).with_cache()
    assert late.cached and not plain.cached and len(late._images) == 6
    raw = lambda d: [d.with_transform(None)[i][0].tobytes() for i in range(len(d))]  # noqa: E731
    assert raw(late) == raw(balanced_subset(plain, 2, seed=3))
    other = cached.with_transform(cifar_eval_transform())
    assert other.cached and torch.equal(other[4][0], ImageFolder(tree[0], "train", cifar_eval_transform())[4][0])


def test_epoch_sampler_shards_like_one_process_with_a_bigger_batch() -> None:
    data = list(range(24))
    single = list(EpochSampler(data, seed=7))
    ranks = [list(EpochSampler(data, seed=7, rank=r, world_size=2)) for r in (0, 1)]
    for b in range(3):  # batch b of 4 per rank == batch b of 8 in one process, same keys
        assert sorted(ranks[0][4 * b:4 * b + 4] + ranks[1][4 * b:4 * b + 4]) == sorted(single[8 * b:8 * b + 8])
    assert sorted(i for i, _ in single) == data
    assert all(seed == mix_seed(7, 0, i) for i, seed in single)
    sampler = EpochSampler(data, seed=7)
    sampler.set_epoch(1)
    next_epoch = list(sampler)
    assert [i for i, _ in next_epoch] != [i for i, _ in single]
    sampler.set_epoch(1, start=10)
    assert list(sampler) == next_epoch[10:] and len(sampler) == 14
    shards = [list(ShardSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for shard in shards for i, _ in shard) == list(range(10))
    assert mix_seed(1, 2, 3) != mix_seed(1, 2, 4) and 0 <= mix_seed(1, 2, 3) < 2**63


@pytest.mark.skipif(not cifar10_source().is_file(), reason=f"shared CIFAR-10 zip not found at {cifar10_source()}")
def test_cifar10_from_the_shared_zip() -> None:
    test = cifar10("test")
    assert test.classes == CIFAR10_CLASSES and len(test) == 10_000
    assert Counter(test.targets) == {k: 1000 for k in range(10)}
    image, label = test[1234]
    assert image.shape == (3, 32, 32) and test.files[1234].name.startswith(f"test/{CIFAR10_CLASSES[label]}/")
    assert -3 < image.min() < image.max() < 3
    with pytest.raises(ValueError, match="split"):
        cifar10("val")
