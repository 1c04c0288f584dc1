"""Real image batches: ImageFolder directories and zips, timm's eval transform, seeded balanced selection, errors."""

from __future__ import annotations

import io
import os
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from timm.data import create_transform

from export.errors import CalibrationDataError
from common.images import (
    RANDOM_CALIBRATION_SOURCE,
    RandomImagesWarning,
    default_image_source,
    list_images,
    load_images,
    random_images,
    select_images,
)

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
CLASSES = ("cat", "dog", "eel")
PER_CLASS = 4
CIFAR = default_image_source()


def _image_bytes(seed: int, size: tuple[int, int], mode: str, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _tree() -> dict[str, bytes]:
    """Class folders with images of several sizes, modes and formats, plus files that are not images."""
    files = {"README.md": b"not an image, and not in a class folder"}
    modes = [("RGB", "JPEG", ".jpg"), ("L", "PNG", ".png"), ("P", "PNG", ".PNG"), ("RGBA", "PNG", ".png")]
    for c, label in enumerate(CLASSES):
        for i in range(PER_CLASS):
            mode, fmt, ext = modes[(c + i) % len(modes)]
            sub = "nested/" if i == 3 else ""  # ImageFolder takes images at any depth below the class folder
            files[f"{label}/{sub}{i:02d}{ext}"] = _image_bytes(10 * c + i, (40 + 7 * i, 30 + 5 * c), mode, fmt)
        files[f"{label}/notes.txt"] = b"ignored: no image extension"
    return files


def _write_dir(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _write_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(prefix + name, data)
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return _write_dir(tmp_path / "images", _tree())


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    return _write_zip(tmp_path / "images.zip", _tree(), prefix="test/")


def _timm_batch(root: Path, names: list[str], size: tuple[int, int, int], crop_pct: float,
                interpolation: str) -> np.ndarray:
    transform = create_transform(size, is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                                 mean=MEAN, std=STD)
    return np.stack([transform(Image.open(root / n).convert("RGB")).numpy() for n in names])


# ------------------------------------------------------------------------------------------ happy path


@pytest.mark.parametrize(
    "size, crop_pct, interpolation",
    [((3, 32, 32), 1.0, "bilinear"), ((3, 224, 224), 0.875, "bicubic"), ((3, 24, 40), 0.9, "bilinear")],
)
def test_batch_equals_timm_eval_transform(folder: Path, size: tuple[int, int, int], crop_pct: float,
                                          interpolation: str) -> None:
    batch = load_images(folder, size, MEAN, STD, count=12, crop_pct=crop_pct, interpolation=interpolation)
    names = [f.name for f in select_images(list_images(folder), 12)]
    assert batch.shape == (12, *size) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, _timm_batch(folder, names, size, crop_pct, interpolation), rtol=0, atol=1e-6)


def test_zip_with_split_gives_the_same_batch_as_the_directory(folder: Path, archive: Path) -> None:
    from_dir = load_images(folder, (3, 32, 32), MEAN, STD, count=7, seed=3)
    from_zip = load_images(archive, (3, 32, 32), MEAN, STD, count=7, seed=3, split="test")
    np.testing.assert_array_equal(from_dir, from_zip)
    assert [f.name for f in list_images(archive, "test")] == [f"test/{f.name}" for f in list_images(folder)]


def test_listing_follows_imagefolder_layout(folder: Path) -> None:
    files = list_images(folder)
    assert len(files) == len(CLASSES) * PER_CLASS  # README and notes.txt are not images
    assert Counter(f.label for f in files) == {c: PER_CLASS for c in CLASSES}
    assert "cat/nested/03.png" in {f.name for f in files}


def test_selection_is_seeded_balanced_and_disjoint_across_offsets(folder: Path) -> None:
    files = list_images(folder)
    first = select_images(files, 5, seed=0)
    assert first == select_images(files, 5, seed=0)
    assert first != select_images(files, 5, seed=1)
    counts = Counter(f.label for f in first)
    assert max(counts.values()) - min(counts.values()) <= 1 and set(counts) == set(CLASSES)
    second = select_images(files, 7, seed=0, offset=5)
    assert not {f.name for f in first} & {f.name for f in second}
    assert first + second == select_images(files, 12, seed=0)


def test_grayscale_and_palette_images_become_rgb(tmp_path: Path) -> None:
    gray = _write_dir(tmp_path / "gray", {"a/0.png": _image_bytes(0, (20, 20), "L", "PNG")})
    batch = load_images(gray, (3, 16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), count=1)
    np.testing.assert_array_equal(batch[0, 0], batch[0, 1])
    np.testing.assert_array_equal(batch[0, 0], batch[0, 2])
    one_channel = load_images(gray, (1, 16, 16), (0.5,), (0.25,), count=1)
    np.testing.assert_allclose(one_channel[0, 0], batch[0, 0], atol=1e-6)


def test_cifar_images_scale_up_for_imagenet_sized_models() -> None:
    if CIFAR is None:
        pytest.skip("CIFAR-10 JPEGs not found (set MZOO_SHARED_DATA to the shared data folder)")
    small = load_images(CIFAR, (3, 32, 32), MEAN, STD, count=10, split="test", crop_pct=1.0)
    large = load_images(CIFAR, (3, 224, 224), MEAN, STD, count=10, split="test", crop_pct=0.875,
                        interpolation="bicubic")
    assert small.shape == (10, 3, 32, 32) and large.shape == (10, 3, 224, 224)
    assert Counter(f.label for f in select_images(list_images(CIFAR, "test"), 10)) == {
        c: 1 for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")}
    for batch in (small, large):  # natural images, normalised: roughly zero-mean, unit-scale
        assert abs(float(batch.mean())) < 0.5 and 0.5 < float(batch.std()) < 1.5


def test_default_image_source_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MZOO_SHARED_DATA", str(tmp_path))
    assert default_image_source() is None
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10_jpg.zip").write_bytes(b"")
    assert default_image_source() == tmp_path / "cifar10" / "cifar10_jpg.zip"
    monkeypatch.delenv("MZOO_SHARED_DATA")
    repo = Path(__file__).resolve().parents[2]
    expected = repo.parent / "shared" / "data" / "cifar10" / "cifar10_jpg.zip"
    assert default_image_source() == (expected if expected.is_file() else None)


def test_random_fallback_warns_loudly_and_is_seeded() -> None:
    with pytest.warns(RandomImagesWarning, match="NO REAL IMAGES: calibration is using 4 random-noise inputs"):
        first = random_images(4, (3, 8, 8), seed=5)
    with pytest.warns(RandomImagesWarning, match="verification"):
        second = random_images(4, (3, 8, 8), seed=5, purpose="verification")
    assert first.shape == (4, 3, 8, 8) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert "random data" in RANDOM_CALIBRATION_SOURCE


# -------------------------------------------------------------------------------------------- failures


def test_missing_source_is_named(tmp_path: Path) -> None:
    with pytest.raises(CalibrationDataError, match="'.*nowhere' does not exist"):
        load_images(tmp_path / "nowhere", (3, 8, 8), MEAN, STD, count=1)


def test_broken_symlink_is_an_unreadable_source(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(CalibrationDataError, match="link"):
        load_images(link, (3, 8, 8), MEAN, STD, count=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads directories whatever their mode")
def test_unreadable_class_folder_is_named(folder: Path) -> None:
    (folder / "dog").chmod(0)
    try:
        with pytest.raises(CalibrationDataError, match="dog"):
            load_images(folder, (3, 8, 8), MEAN, STD, count=1)
    finally:
        (folder / "dog").chmod(0o755)


def test_unreadable_folder_is_named_even_for_root(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_walk = os.walk

    def walk(top: str, onerror: object = None, followlinks: bool = False) -> object:
        onerror(PermissionError(13, "Permission denied", str(folder / "dog")))  # type: ignore[operator]
        return real_walk(top, followlinks=followlinks)

    monkeypatch.setattr("common.images.os.walk", walk)
    with pytest.raises(CalibrationDataError, match="cannot read image folder '.*dog': Permission denied"):
        load_images(folder, (3, 8, 8), MEAN, STD, count=1)


def test_file_that_is_neither_folder_nor_zip(tmp_path: Path) -> None:
    path = tmp_path / "images.tar"
    path.write_bytes(b"just some bytes")
    with pytest.raises(CalibrationDataError, match="images.tar' is neither a directory nor a zip file"):
        load_images(path, (3, 8, 8), MEAN, STD, count=1)


def test_folder_without_images(tmp_path: Path) -> None:
    empty = _write_dir(tmp_path / "empty", {"cat/notes.txt": b"x", "loose.jpg": _image_bytes(0, (8, 8), "RGB", "JPEG")})
    with pytest.raises(CalibrationDataError, match="empty' holds no images in ImageFolder layout"):
        load_images(empty, (3, 8, 8), MEAN, STD, count=1)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CalibrationDataError, match="nothing' holds no images"):
        list_images(tmp_path / "nothing")


def test_missing_split(folder: Path, archive: Path) -> None:
    for source in (folder, archive):
        with pytest.raises(CalibrationDataError, match="has no split folder 'train'"):
            load_images(source, (3, 8, 8), MEAN, STD, count=1, split="train")


def test_too_few_images(folder: Path) -> None:
    with pytest.raises(CalibrationDataError, match="asked for 10 images from position 5, but the source has only 12"):
        load_images(folder, (3, 8, 8), MEAN, STD, count=10, offset=5)


@pytest.mark.parametrize("data", [b"this is not a jpeg", _image_bytes(1, (64, 64), "RGB", "JPEG")[:300]],
                         ids=["not-an-image", "truncated"])
def test_corrupt_image_in_folder_is_named(tmp_path: Path, data: bytes) -> None:
    files = {"cat/good.jpg": _image_bytes(0, (16, 16), "RGB", "JPEG"), "dog/bad.jpg": data}
    root = _write_dir(tmp_path / "imgs", files)
    with pytest.raises(CalibrationDataError, match=r"dog/bad\.jpg' is corrupt or not an image"):
        load_images(root, (3, 8, 8), MEAN, STD, count=2)


def test_corrupt_image_in_zip_names_member_and_archive(tmp_path: Path) -> None:
    files = {"cat/good.jpg": _image_bytes(0, (16, 16), "RGB", "JPEG"), "dog/bad.png": b"\x89PNG but no more"}
    path = _write_zip(tmp_path / "imgs.zip", files)
    with pytest.raises(CalibrationDataError, match=r"'dog/bad\.png' in '.*imgs\.zip' is corrupt or not an image"):
        load_images(path, (3, 8, 8), MEAN, STD, count=2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"count": 0}, "count"),
        ({"input_size": (2, 8, 8)}, "1 or 3 input channels"),
        ({"input_size": (3, 8)}, "input_size"),
        ({"mean": (0.5, 0.5)}, "need 3 values"),
        ({"std": (0.5, 0.0, 0.5)}, "std finite and positive"),
        ({"crop_pct": 1.5}, "crop_pct"),
        ({"crop_pct": 0.0}, "crop_pct"),
        ({"interpolation": "cubic-ish"}, "interpolation"),
        ({"split": "../elsewhere"}, "relative folder"),
        ({"offset": -1}, "offset"),
    ],
)
def test_invalid_arguments(folder: Path, kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"input_size": (3, 8, 8), "mean": MEAN, "std": STD, "count": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        load_images(folder, **args)  # type: ignore[arg-type]
