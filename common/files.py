"""Atomic publication of artefacts: every exporter writes to a temporary path beside the target and renames it
into place only after verification, so a failure (or Ctrl-C) never leaves a half-written file or package.

Owns the temporary-path context manager (files and directory packages such as ``.mlpackage``), the
output-directory check, and atomic JSON / text writes used for reports and matrices.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from common.errors import OutputError

# Files at mkstemp's default 0600 would be unreadable to other users once published.
PUBLISHED_FILE_MODE = 0o644
PUBLISHED_DIR_MODE = 0o755


def prepare_directory(directory: Path) -> None:
    """Create ``directory`` (and parents) and check it is writable; raises ``OutputError`` naming it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output directory {str(directory)!r}: {err.strerror or err}") from err
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {str(directory)!r} is not writable")


def check_writable(target: str | os.PathLike[str], flag: str) -> Path:
    """Check, before any expensive work, that a file can be written at ``target`` (its folder is created); raises
    ``OutputError`` naming ``flag`` otherwise. Writes and removes a probe file, which ``os.access`` cannot replace
    (it answers yes to root on read-only or virtual file systems such as /proc)."""
    path = Path(target)
    if path.is_dir():
        raise OutputError(f"{flag} {str(path)!r} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{flag} {str(path)!r} cannot be written: {err.strerror or err}") from err
    return path


def check_target(target: Path, kind: str, is_package: bool = False) -> None:
    """Refuse a target that is an existing entry of the wrong kind, then prepare its directory."""
    if target.is_dir() and not is_package:
        raise OutputError(f"{kind} output path {str(target)!r} is a directory")
    if target.is_file() and is_package:
        raise OutputError(f"{kind} output path {str(target)!r} is a file; a {kind} package is a directory")
    prepare_directory(target.parent)


@contextlib.contextmanager
def temporary_path(target: Path, suffix: str = ".tmp", directory: bool = False) -> Iterator[Path]:
    """A temp file (or empty temp directory) next to ``target``, so ``publish`` is a same-filesystem rename.

    Whatever is left at the temp path when the block exits (on success after ``publish`` nothing is) is
    removed, including on ``BaseException``.
    """
    prefix = f".{target.name}."
    try:
        if directory:
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix, suffix=suffix))
        else:
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=suffix)
            os.close(fd)
            tmp = Path(name)
    except OSError as err:
        raise OutputError(f"output directory {str(target.parent)!r} is not writable: {err.strerror or err}") from err
    try:
        yield tmp
    finally:
        remove(tmp)


def publish(tmp: Path, target: Path) -> None:
    """Move a verified temp file or package to ``target``, replacing what was there, with readable modes."""
    if tmp.is_dir():
        for root, dirs, files in os.walk(tmp):
            os.chmod(root, PUBLISHED_DIR_MODE)
            for name in files:
                os.chmod(os.path.join(root, name), PUBLISHED_FILE_MODE)
        if target.exists():
            # A directory cannot be os.replace'd over a non-empty one: move the old one aside first.
            old = target.with_name(f".{target.name}.old")
            remove(old)
            os.replace(target, old)
            os.replace(tmp, target)
            remove(old)
            return
    else:
        os.chmod(tmp, PUBLISHED_FILE_MODE)
    os.replace(tmp, target)


def remove(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file and rename."""
    prepare_directory(path.parent)
    with temporary_path(path) as tmp:
        tmp.write_text(text)
        publish(tmp, path)


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_figure(fig: object, path: Path, dpi: float | None = None) -> Path:
    """Save the matplotlib figure ``fig`` as a PNG at ``path`` atomically, then close it (also on failure)."""
    import matplotlib.pyplot as plt

    try:
        prepare_directory(path.parent)
        with temporary_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)  # type: ignore[attr-defined]
            publish(tmp, path)
    finally:
        plt.close(fig)  # type: ignore[arg-type]
    return path
