"""Real images for calibrating and verifying reduced-precision exports, preprocessed as a model expects them.

Owns reading an ImageFolder tree (``<root>[/<split>]/<class>/**/<image>``) from a directory or from a .zip of
one, the seeded, class-balanced choice of which images to use, timm's evaluation transform (shorter-side
resize to ``size / crop_pct``, centre crop, scale to [0, 1], normalise with the model's mean/std) done with
PIL, the shared CIFAR-10 JPEGs as the default source, and the random-data fallback that is used only when no
source is given and always says so loudly. Anything wrong with a source (missing, empty, corrupt or not an
image) raises ``ImageDataError`` naming the path or the file inside the archive.

Reading is bounded (:class:`ImageLimits`), because a few megabytes of zip can declare gigabytes: a file larger than
``max_file_bytes`` is refused from its declared size (the zip's ``ZipInfo.file_size``, the file system's size)
before it is read and again by a bounded read that never trusts the declaration; an image of more than
``max_pixels`` pixels is refused from its header before it is decoded (Pillow's decompression-bomb check, as an
error and without touching Pillow's global ``Image.MAX_IMAGE_PIXELS``); and one :func:`load_images` batch reads at
most ``max_total_bytes``, checked on the declared sizes of the chosen files before any is read. The defaults can
be changed per process with ``MZOO_MAX_IMAGE_BYTES``, ``MZOO_MAX_IMAGE_PIXELS`` and ``MZOO_MAX_IMAGES_TOTAL_BYTES``
(read when a reader is made, not at import) or per call with an ``ImageLimits``.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.errors import ImageDataError, InputError

# torchvision's ImageFolder extensions (IMG_EXTENSIONS), lower-cased comparison.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# timm's create_transform(is_training=False) defaults, so that a caller passing nothing gets timm's result.
DEFAULT_CROP_PCT = 0.875
DEFAULT_INTERPOLATION = "bilinear"
RANDOM_CALIBRATION_SOURCE = "random data (no calibration images given)"
RANDOM_VERIFICATION_SOURCE = "random data (no verification images given)"
CIFAR10_ZIP = Path("cifar10") / "cifar10_jpg.zip"

_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def check_input_size(input_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """``input_size`` as a (channels, height, width) tuple of positive ints; ``InputError`` otherwise."""
    size = tuple(input_size)
    if len(size) != 3 or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in size):
        raise InputError(f"input_size must be (channels, height, width) of positive ints, got {input_size!r}")
    return size  # type: ignore[return-value]


# Larger than any mobile network's input; one 4096×4096 RGB fp32 image is already 200 MB before the first conv.
MAX_IMAGE_SIDE = 4096


def check_image_side(side: object, flag: str = "--input-size") -> int:
    """An image side a user typed, as an int in [1, MAX_IMAGE_SIDE]; ``InputError`` naming ``flag`` otherwise."""
    if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= MAX_IMAGE_SIDE:
        raise InputError(f"{flag} must be an image side between 1 and {MAX_IMAGE_SIDE} pixels, got {side!r}")
    return side


# Reading limits (see ImageLimits). One image file: far above any photo a mobile model is calibrated on (a
# 24-Mpx JPEG is ~10 MB, an uncompressed 4096x4096 RGB BMP 48 MB).
MAX_IMAGE_FILE_BYTES = 64 * 2**20
# Pixels of one image, checked from its header: 8192x8192 (192 MB as RGB once decoded). Below Pillow's own
# default (Image.MAX_IMAGE_PIXELS, 89.5 Mpx, which only warns; it refuses at twice that), so ours acts first.
MAX_IMAGE_PIXELS = 8192 * 8192
# All the files of one load_images batch together (calibration and verification sets: hundreds of images).
MAX_IMAGES_TOTAL_BYTES = 2 * 2**30
IMAGE_BYTES_ENV = "MZOO_MAX_IMAGE_BYTES"
IMAGE_PIXELS_ENV = "MZOO_MAX_IMAGE_PIXELS"
IMAGES_TOTAL_BYTES_ENV = "MZOO_MAX_IMAGES_TOTAL_BYTES"


@dataclass(frozen=True)
class ImageLimits:
    """How much reading one image (and one :func:`load_images` batch) may cost before it is refused.

    Attributes:
        max_file_bytes: the largest image file, as declared and as read (``$MZOO_MAX_IMAGE_BYTES``).
        max_pixels: the most pixels (width × height) of one image, from its header (``$MZOO_MAX_IMAGE_PIXELS``).
            Pillow refuses images of more than twice its ``Image.MAX_IMAGE_PIXELS`` on its own, whatever this says.
        max_total_bytes: the most bytes of all the files one :func:`load_images` call reads
            (``$MZOO_MAX_IMAGES_TOTAL_BYTES``); training and evaluation readers stream whole datasets and are
            bounded per file only.
    """

    max_file_bytes: int = MAX_IMAGE_FILE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS
    max_total_bytes: int = MAX_IMAGES_TOTAL_BYTES

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_pixels", "max_total_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"ImageLimits.{name} must be a positive int, got {value!r}")

    @classmethod
    def from_env(cls) -> ImageLimits:
        """The defaults, each overridden by its environment variable when that is set."""
        return cls(max_file_bytes=_env_limit(IMAGE_BYTES_ENV, MAX_IMAGE_FILE_BYTES),
                   max_pixels=_env_limit(IMAGE_PIXELS_ENV, MAX_IMAGE_PIXELS),
                   max_total_bytes=_env_limit(IMAGES_TOTAL_BYTES_ENV, MAX_IMAGES_TOTAL_BYTES))


def _env_limit(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"${name} must be a positive whole number, got {text!r}")
    return value


class RandomImagesWarning(UserWarning):
    """Calibration or verification is running on random data because no images were given."""


@dataclass(frozen=True)
class ImageFile:
    """One image of a source: ``name`` is the path relative to the source root (POSIX separators)."""

    name: str
    label: str


def shared_data_dir() -> Path:
    """``$MZOO_SHARED_DATA``, or ``<repo>/../shared/data`` when it is unset."""
    env = os.environ.get("MZOO_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_image_source() -> Path | None:
    """The shared CIFAR-10 JPEG zip (``train/`` and ``test/`` ImageFolder splits), or None if it is absent."""
    path = shared_data_dir() / CIFAR10_ZIP
    return path if path.is_file() else None


def list_images(source: str | os.PathLike[str], split: str | None = None) -> list[ImageFile]:
    """Every image file of an ImageFolder directory or zip (optionally below ``split``), sorted by name.

    As in torchvision's ImageFolder, the classes are the folders directly below the root, images may sit at
    any depth inside them, and only files with an image extension count (files at the root, such as a
    README, are ignored). Raises ``ImageDataError`` if the source is missing, not a directory or zip,
    unreadable, lacks ``split``, or holds no image.
    """
    path = Path(source)
    split_parts = _split_parts(split)
    if path.is_dir():
        names = _directory_names(path, split_parts)
    elif path.is_file():
        names = _zip_names(path, split_parts)
    elif not path.exists():
        raise ImageDataError(f"image source {str(path)!r} does not exist")
    else:
        raise ImageDataError(f"image source {str(path)!r} is neither a directory nor a zip file")
    prefix = len(split_parts)
    files = []
    for name in sorted(names):
        parts = [p for p in name.split("/") if p][prefix:]  # not PurePosixPath: too slow over 60k names
        # <class>/<file> at least; hidden files (.DS_Store, ._x.jpg from macOS archives) are not images.
        if len(parts) >= 2 and not parts[-1].startswith(".") and parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            files.append(ImageFile(name, parts[0]))
    if not files:
        where = f"{str(path)!r}" + (f" under split {split!r}" if split else "")
        raise ImageDataError(
            f"image source {where} holds no images in ImageFolder layout (<class>/<image> with one of "
            f"{', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def _split_parts(split: str | None) -> tuple[str, ...]:
    if split is None:
        return ()
    parts = PurePosixPath(split.replace("\\", "/")).parts
    if not parts or any(p in ("..", "/") for p in parts):
        raise InputError(f"split must be a relative folder inside the image source, got {split!r}")
    return parts


def _directory_names(root: Path, split_parts: tuple[str, ...]) -> list[str]:
    base = root.joinpath(*split_parts)
    if not base.is_dir():
        raise ImageDataError(f"image source {str(root)!r} has no split folder {'/'.join(split_parts)!r}")
    names = []
    errors: list[OSError] = []
    for dirpath, _, filenames in os.walk(base, onerror=errors.append, followlinks=True):
        rel = Path(dirpath).relative_to(root)
        names += [(rel / f).as_posix() for f in filenames]
    if errors:
        raise ImageDataError(f"cannot read image folder {str(errors[0].filename)!r}: "
                                   f"{errors[0].strerror or errors[0]}")
    return names


def _zip_names(path: Path, split_parts: tuple[str, ...]) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [i.filename for i in archive.infolist() if not i.is_dir()]
    except zipfile.BadZipFile as err:
        raise ImageDataError(f"image source {str(path)!r} is neither a directory nor a zip file") from err
    except OSError as err:
        raise ImageDataError(f"cannot read image source {str(path)!r}: {err.strerror or err}") from err
    prefix = "/".join(split_parts) + "/" if split_parts else ""
    inside = [n for n in names if n.startswith(prefix)]
    if prefix and not inside:
        raise ImageDataError(f"image source {str(path)!r} has no split folder {prefix[:-1]!r}")
    return inside


def select_images(files: Sequence[ImageFile], count: int, *, seed: int = 0, offset: int = 0) -> list[ImageFile]:
    """``count`` files, balanced across classes, from position ``offset`` of one seeded order.

    The order deals one image of each class in turn (classes sorted by name, each class shuffled with
    ``seed``), so any ``count`` is as balanced as the classes allow, and slices at different offsets of the
    same seed never share an image (how a verification batch is kept apart from a calibration set drawn from
    the same source). Raises ``ImageDataError`` when the source has too few images.
    """
    _check_count(count, "count")
    if offset < 0:
        raise InputError(f"offset must be >= 0, got {offset!r}")
    if offset + count > len(files):
        raise ImageDataError(
            f"asked for {count} images from position {offset}, but the source has only {len(files)}"
        )
    by_class: dict[str, list[ImageFile]] = {}
    for f in sorted(files, key=lambda f: f.name):
        by_class.setdefault(f.label, []).append(f)
    rng = np.random.default_rng(seed)
    queues = [[members[i] for i in rng.permutation(len(members))] for _, members in sorted(by_class.items())]
    order: list[ImageFile] = []
    for rank in range(max(len(q) for q in queues)):
        order += [q[rank] for q in queues if rank < len(q)]
        if len(order) >= offset + count:
            break
    return order[offset:offset + count]


def load_images(
    source: str | os.PathLike[str],
    input_size: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    count: int,
    seed: int = 0,
    split: str | None = None,
    offset: int = 0,
    crop_pct: float = DEFAULT_CROP_PCT,
    interpolation: str = DEFAULT_INTERPOLATION,
    limits: ImageLimits | None = None,
) -> np.ndarray:
    """A float32 NCHW batch of ``count`` real images, preprocessed exactly as timm's eval transform would.

    ``source`` is an ImageFolder directory or a .zip of one, ``split`` an optional subfolder (``"test"``);
    the images are chosen by :func:`select_images`. Each is decoded with PIL and converted to RGB (or L for
    one-channel models), so grayscale and palette images are fine; a file that cannot be decoded raises
    ``ImageDataError`` naming it. ``limits`` (default :meth:`ImageLimits.from_env`) bounds each file, each image's
    pixels and, before anything is read, the declared sizes of the chosen files (:func:`check_images`).
    """
    channels, height, width = _check_input_size(input_size)
    mean_arr, std_arr = _check_stats(mean, std, channels)
    _check_crop(crop_pct, interpolation)
    limits = limits if limits is not None else ImageLimits.from_env()
    chosen = check_images(source, count, seed=seed, split=split, offset=offset, limits=limits)
    mode = "RGB" if channels == 3 else "L"
    with ImageReader(Path(source), limits, max_total_bytes=limits.max_total_bytes) as reader:
        batch = np.empty((count, channels, height, width), dtype=np.float32)
        for i, file in enumerate(chosen):
            image = reader.open(file.name, mode)
            pixels = eval_transform(image, (height, width), crop_pct, interpolation)
            batch[i] = pixels.reshape(height, width, channels).transpose(2, 0, 1)
    # Same arithmetic as torchvision's Normalize on a float32 tensor: (x - mean) / std.
    batch -= mean_arr[None, :, None, None]
    batch /= std_arr[None, :, None, None]
    return batch


def check_images(source: str | os.PathLike[str], count: int, *, seed: int = 0, split: str | None = None,
                 offset: int = 0, limits: ImageLimits | None = None) -> list[ImageFile]:
    """The files :func:`load_images` would read with these arguments, after checking without reading any that
    there are enough, that none declares more than ``limits.max_file_bytes`` and that together they declare at
    most ``limits.max_total_bytes``: what a command checks before its expensive work; ``ImageDataError`` else."""
    limits = limits if limits is not None else ImageLimits.from_env()
    chosen = select_images(list_images(source, split), count, seed=seed, offset=offset)
    with ImageReader(Path(source), limits, max_total_bytes=limits.max_total_bytes) as reader:
        reader.check_declared([file.name for file in chosen])
    return chosen


def eval_transform(image: Image.Image, size: tuple[int, int], crop_pct: float = DEFAULT_CROP_PCT,
                   interpolation: str = DEFAULT_INTERPOLATION) -> np.ndarray:
    """timm's centre-crop eval transform up to ``ToTensor``: an HxWxC float32 array in [0, 1].

    The image is resized, keeping its aspect ratio, until it covers ``floor(size / crop_pct)`` (for a square
    target: its shorter side equals that), then the centre ``size`` is cut out. Small images (CIFAR's 32×32
    for a 224 model) are simply scaled up before the crop.
    """
    height, width = size
    _check_crop(crop_pct, interpolation)
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    resample = _INTERPOLATIONS[interpolation]
    if scale[0] == scale[1]:
        short, long = sorted(image.size)
        new_long = int(scale[0] * long / short)
        new_size = (scale[0], new_long) if image.width <= image.height else (new_long, scale[0])
    else:
        # timm's ResizeKeepRatio: the side that needs the least scaling meets its target, aspect kept.
        ratio = min(image.height / scale[0], image.width / scale[1])
        new_size = (round(image.width / ratio), round(image.height / ratio))
    if image.size != new_size:
        image = image.resize(new_size, resample)
    top = int(round((image.height - height) / 2.0))
    left = int(round((image.width - width) / 2.0))
    image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def random_images(count: int, input_size: tuple[int, int, int], *, seed: int = 0,
                  purpose: str = "calibration") -> np.ndarray:
    """Seeded standard-normal inputs (the scale of normalised images), with a loud ``RandomImagesWarning``.

    Only for when no image source was given; reports then name the source :data:`RANDOM_CALIBRATION_SOURCE`
    (or :data:`RANDOM_VERIFICATION_SOURCE`).
    """
    _check_count(count, "count")
    channels, height, width = _check_input_size(input_size)
    warnings.warn(
        f"NO REAL IMAGES: {purpose} is using {count} random-noise inputs because no {purpose} images were "
        f"given; the result says little about real inputs. Pass an ImageFolder directory or .zip of images.",
        RandomImagesWarning,
        stacklevel=2,
    )
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, channels, height, width), dtype=np.float32)


class ImageReader:
    """Opens image files of a directory or a zip by their source-relative name, within ``limits``.

    ``limits`` defaults to :meth:`ImageLimits.from_env`; its per-file and pixel bounds apply to every image.
    ``max_total_bytes``, when given, also bounds the bytes this reader reads over its whole life (what one batch of
    :func:`load_images` may cost); a reader that streams a dataset epoch after epoch leaves it ``None``.
    """

    def __init__(self, source: Path, limits: ImageLimits | None = None, *,
                 max_total_bytes: int | None = None) -> None:
        self.source = source
        self.limits = limits if limits is not None else ImageLimits.from_env()
        self.max_total_bytes = max_total_bytes
        self.bytes_read = 0
        self.archive: zipfile.ZipFile | None = None

    def __enter__(self) -> ImageReader:
        if self.source.is_file():
            self.archive = zipfile.ZipFile(self.source)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.archive is not None:
            self.archive.close()

    def _where(self, name: str) -> str:
        return f"{name!r} in {str(self.source)!r}" if self.archive else f"{str(self.source / name)!r}"

    def declared_size(self, name: str) -> int:
        """The size ``name`` declares (the zip's central directory, the file system), without reading it."""
        try:
            if self.archive is not None:
                return self.archive.getinfo(name).file_size
            return os.stat(self.source / name).st_size
        except KeyError:
            raise ImageDataError(f"cannot read image {self._where(name)}: no such file in the archive") from None
        except OSError as err:
            raise ImageDataError(f"cannot read image {self._where(name)}: {err.strerror or err}") from err

    def check_declared(self, names: Sequence[str]) -> None:
        """Refuse, before reading any, files one of which declares more than ``limits.max_file_bytes`` or whose
        declared sizes add up to more than ``max_total_bytes``."""
        sizes = [self.declared_size(name) for name in names]
        for name, size in zip(names, sizes):
            self._check_size(self._where(name), size, self.limits.max_file_bytes)
        total = sum(sizes)
        if self.max_total_bytes is not None and total > self.max_total_bytes:
            raise ImageDataError(
                f"the {len(names)} images chosen from {str(self.source)!r} are {total:,} bytes together, more than "
                f"the limit of {self.max_total_bytes:,} (${IMAGES_TOTAL_BYTES_ENV}, ImageLimits.max_total_bytes)")

    def read_bytes(self, name: str) -> bytes:
        """The bytes of ``name``, refused from its declared size and by a bounded read if over the limits."""
        where = self._where(name)
        limit = self.limits.max_file_bytes
        try:
            if self.archive is not None:
                info = self.archive.getinfo(name)
                self._check_size(where, info.file_size, limit)
                with self.archive.open(info) as stream:
                    data = stream.read(limit + 1)
            else:
                with open(self.source / name, "rb") as stream:
                    status = os.fstat(stream.fileno())
                    if not stat.S_ISREG(status.st_mode):
                        raise ImageDataError(f"image {where} is not a regular file")
                    self._check_size(where, status.st_size, limit)
                    data = stream.read(limit + 1)
        except KeyError:
            raise ImageDataError(f"cannot read image {where}: no such file in the archive") from None
        except (OSError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as err:
            # RuntimeError: an encrypted entry; NotImplementedError: a compression method zipfile lacks.
            raise ImageDataError(f"cannot read image {where}: {getattr(err, 'strerror', None) or err}") from err
        # The declared size is only a claim (a zip's header, a file that grows): the read itself is what is bounded.
        self._check_size(where, len(data), limit)
        self.bytes_read += len(data)
        if self.max_total_bytes is not None and self.bytes_read > self.max_total_bytes:
            raise ImageDataError(
                f"reading image {where} takes the images read from {str(self.source)!r} past "
                f"{self.max_total_bytes:,} bytes (${IMAGES_TOTAL_BYTES_ENV}, ImageLimits.max_total_bytes)")
        return data

    @staticmethod
    def _check_size(where: str, size: int, limit: int) -> None:
        if size > limit:
            raise ImageDataError(f"image {where} is {'more than ' if size == limit + 1 else ''}{size:,} bytes, "
                                 f"more than the limit of {limit:,} per image file "
                                 f"(${IMAGE_BYTES_ENV}, ImageLimits.max_file_bytes)")

    def open(self, name: str, mode: str) -> Image.Image:
        where = self._where(name)
        data = self.read_bytes(name)
        try:
            with warnings.catch_warnings():
                # Pillow's warning is about its own (larger) limit; ours is checked below, as an error.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))  # reads the header only
            with image:
                pixels = image.width * image.height
                if pixels > self.limits.max_pixels:
                    raise ImageDataError(
                        f"image {where} is {image.width}x{image.height} = {pixels:,} pixels, more than the limit of "
                        f"{self.limits.max_pixels:,} (${IMAGE_PIXELS_ENV}, ImageLimits.max_pixels)")
                image.load()  # decode now: a truncated file fails here, not later in resize
                # "P" and "LA"/"RGBA" images go through RGBA so palette transparency is handled by PIL.
                return image.convert(mode)
        except Image.DecompressionBombError as err:
            raise ImageDataError(f"image {where} is too large to decode: {err}") from err
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise ImageDataError(f"image {where} is corrupt or not an image: {err}") from err


def _check_count(count: int, name: str) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise InputError(f"{name} must be a positive int, got {count!r}")


def _check_input_size(input_size: tuple[int, int, int]) -> tuple[int, int, int]:
    size = check_input_size(input_size)
    if size[0] not in (1, 3):
        raise InputError(f"images can be loaded for 1 or 3 input channels, got input_size {input_size!r}")
    return size  # type: ignore[return-value]


def _check_stats(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple[np.ndarray, np.ndarray]:
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(-1)
    std_arr = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean_arr.size != channels or std_arr.size != channels:
        raise InputError(f"mean {tuple(mean)!r} and std {tuple(std)!r} need {channels} values each")
    if not (np.all(np.isfinite(mean_arr)) and np.all(np.isfinite(std_arr)) and np.all(std_arr > 0)):
        raise InputError(f"mean must be finite and std finite and positive, got {tuple(mean)!r}, {tuple(std)!r}")
    return mean_arr, std_arr


def _check_crop(crop_pct: float, interpolation: str) -> None:
    if not (isinstance(crop_pct, (int, float)) and 0 < crop_pct <= 1):
        raise InputError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    if interpolation not in _INTERPOLATIONS:
        raise InputError(f"interpolation {interpolation!r} is not one of {', '.join(_INTERPOLATIONS)}")
