"""Reading images is bounded: a zip bomb, a pixel bomb and an oversized batch are refused before they cost memory."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from common.errors import ImageDataError, InputError
from common.images import ImageLimits, ImageReader, check_images, load_images

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MZOO_MAX_IMAGE_BYTES", "MZOO_MAX_IMAGE_PIXELS", "MZOO_MAX_IMAGES_TOTAL_BYTES"):
        monkeypatch.delenv(name, raising=False)


def _png(size: tuple[int, int], seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width × height`` grey pixels, with almost no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(16))) + chunk(b"IEND", b""))


def _load(source: Path, count: int = 1, **kwargs) -> np.ndarray:
    return load_images(source, (3, 8, 8), MEAN, STD, count=count, **kwargs)


def test_a_zip_bomb_entry_is_refused_from_its_declared_size_without_being_read(tmp_path: Path) -> None:
    # 65 MiB of zeros deflate to ~66 kB: over the default 64 MiB per image file. Before the bound, the entry was
    # read whole (then refused by PIL); a 6 MB zip of such entries took an export to 5 GB.
    source = tmp_path / "bomb.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("c0/bomb.bmp", "w", force_zip64=True) as entry:
        block = bytes(2**20)
        for _ in range(65):
            entry.write(block)
    assert source.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ImageDataError) as info:
            _load(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "'c0/bomb.bmp' in" in message and str(source) in message
    assert "68,157,440 bytes" in message and "MZOO_MAX_IMAGE_BYTES" in message
    assert peak < 8 * 2**20
    with pytest.raises(ImageDataError, match="68,157,440 bytes"):  # what a command checks before its work
        check_images(source, 1)


def test_a_file_larger_than_it_declares_is_stopped_by_the_bounded_read(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c0").mkdir()
    (tmp_path / "c0" / "big.png").write_bytes(bytes(5000))
    real_fstat = os.fstat

    def lying_fstat(fd: int) -> os.stat_result:
        fields = list(real_fstat(fd))
        fields[6] = 10  # st_size: what a file that grows after it was measured would have declared
        return os.stat_result(fields)

    monkeypatch.setattr(os, "fstat", lying_fstat)
    with ImageReader(tmp_path, ImageLimits(max_file_bytes=1000)) as reader, \
            pytest.raises(ImageDataError, match=r"big\.png' is more than 1,001 bytes, more than the limit of 1,000"):
        reader.read_bytes("c0/big.png")


def test_a_zip_entry_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "liar.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("c0/liar.png", bytes(50_000))
    data = bytearray(source.read_bytes())
    # Shrink the uncompressed size the local header and the central directory declare.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(signature)
        data[at + offset:at + offset + 4] = struct.pack("<I", 100)
    source.write_bytes(bytes(data))
    with ImageReader(source, ImageLimits(max_file_bytes=1000)) as reader:
        assert reader.declared_size("c0/liar.png") == 100
        with pytest.raises(ImageDataError, match=r"cannot read image 'c0/liar\.png' in"):
            reader.read_bytes("c0/liar.png")


def test_a_pixel_bomb_is_refused_from_its_header_before_it_is_decoded(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # 9000 × 9000 = 81 Mpx: under Pillow's own limit (it would only warn at 89.5 Mpx), over ours (8192² = 67 Mpx).
    source = tmp_path / "pixels.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("c0/huge.png", _png_header(9000, 9000))

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageDataError) as info:
        _load(source)
    message = str(info.value)
    assert "'c0/huge.png' in" in message and str(source) in message
    assert "9000x9000 = 81,000,000 pixels" in message and "67,108,864" in message
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # Pillow's global setting is left alone


def test_limits_are_set_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c0").mkdir()
    (tmp_path / "c0" / "a.png").write_bytes(_png((20, 20)))
    assert _load(tmp_path).shape == (1, 3, 8, 8)
    monkeypatch.setenv("MZOO_MAX_IMAGE_PIXELS", "399")
    with pytest.raises(ImageDataError, match=r"20x20 = 400 pixels, more than the limit of 399 \(\$MZOO_MAX_IMAGE_PIX"):
        _load(tmp_path)
    monkeypatch.setenv("MZOO_MAX_IMAGE_PIXELS", "400")
    monkeypatch.setenv("MZOO_MAX_IMAGE_BYTES", "100")
    with pytest.raises(ImageDataError, match=r"a\.png' is [\d,]+ bytes, more than the limit of 100 per image file"):
        _load(tmp_path)
    monkeypatch.setenv("MZOO_MAX_IMAGE_BYTES", "lots")
    with pytest.raises(InputError, match=r"\$MZOO_MAX_IMAGE_BYTES must be a positive whole number, got 'lots'"):
        _load(tmp_path)


def test_a_batch_over_the_total_is_refused_before_any_image_is_read(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for k in range(3):
        (tmp_path / f"c{k}").mkdir()
        (tmp_path / f"c{k}" / "a.png").write_bytes(_png((20, 20), seed=k))
    total = sum(p.stat().st_size for p in tmp_path.rglob("*.png"))
    assert _load(tmp_path, count=3, limits=ImageLimits(max_total_bytes=total)).shape == (3, 3, 8, 8)

    def no_reading(self: ImageReader, name: str) -> bytes:
        raise AssertionError(f"{name} was read")

    monkeypatch.setattr(ImageReader, "read_bytes", no_reading)
    with pytest.raises(ImageDataError, match=rf"the 3 images chosen from .* are {total:,} bytes together, more than "
                                             rf"the limit of {total - 1:,}"):
        _load(tmp_path, count=3, limits=ImageLimits(max_total_bytes=total - 1))
    monkeypatch.setenv("MZOO_MAX_IMAGES_TOTAL_BYTES", str(total - 1))
    with pytest.raises(ImageDataError, match="MZOO_MAX_IMAGES_TOTAL_BYTES"):
        _load(tmp_path, count=3)
    with pytest.raises(ImageDataError, match="MZOO_MAX_IMAGES_TOTAL_BYTES"):
        check_images(tmp_path, 3)
    assert len(check_images(tmp_path, 2)) == 2


def test_limits_must_be_positive_ints() -> None:
    with pytest.raises(InputError, match="ImageLimits.max_pixels must be a positive int, got 0"):
        ImageLimits(max_pixels=0)
