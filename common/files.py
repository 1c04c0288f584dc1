"""Atomic publication of artefacts: every exporter writes to a temporary path beside the target and renames it
into place only after verification, so a failure (or Ctrl-C) never leaves a half-written file or package.

Owns the temporary-path context manager (files and directory packages such as ``.mlpackage``), the
output-directory check, and atomic JSON / text writes used for reports and matrices.

A process killed outright (``kill -9``, a lost machine) cannot remove its temporaries, so their names say whose
they are: ``.<target>.mzoo-<owner>-<pid>-<random><suffix>`` beside a target (:func:`temporary_path`) and
``<prefix><owner>-<pid>-<random>`` in the system's temp directory (:func:`scratch_directory`), where ``<owner>``
hashes the host name and PID namespace. Each new temporary first sweeps the leftovers of its kind: names of that
exact pattern whose process is gone (same owner, pid not alive), or that are older than
:data:`STALE_TEMP_AGE_S` whoever made them, plus, for the same target, names of the old ``.<target>.<random>
<suffix>`` pattern of that age. Nothing else is ever removed. :func:`exclusive_lock` is the lock file a long job
holds on what it writes (its pid inside; the kernel's ``flock`` frees it when the process dies, however it dies).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no flock; the pid written in the lock file decides alone
    fcntl = None  # type: ignore[assignment]

# Files at mkstemp's default 0600 would be unreadable to other users once published.
PUBLISHED_FILE_MODE = 0o644
PUBLISHED_DIR_MODE = 0o755
# A temporary this old is a leftover whoever made it: no write or export of this project takes a day, and a pid
# can be reused or live in another PID namespace or on another host sharing the directory.
STALE_TEMP_AGE_S = 24 * 3600
_RANDOM = r"[a-z0-9_]{8}"  # tempfile's random part: 8 of "abcdefghijklmnopqrstuvwxyz0123456789_"
_OWNED_TEMP = re.compile(rf"^\..+\.mzoo-(?P<owner>[0-9a-f]{{8}})-(?P<pid>\d+)-{_RANDOM}")


class LockHeldError(OutputError):
    """Another live process holds the lock file of what this one was asked to write."""


def _owner() -> str:
    """This host and PID namespace, hashed: pids are only comparable between processes with the same owner."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return hashlib.sha1(f"{socket.gethostname()}/{namespace}".encode()).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a pid that cannot be checked counts as alive)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def _is_stale(path: Path, owner: str, pid: int) -> bool:
    if owner == _owner() and pid != os.getpid() and not pid_alive(pid):
        return True
    try:
        return time.time() - path.lstat().st_mtime > STALE_TEMP_AGE_S
    except OSError:
        return False


def _sweep(directory: Path, is_leftover: re.Pattern[str], legacy: re.Pattern[str] | None = None) -> list[Path]:
    """Remove the leftovers in ``directory`` that ``is_leftover`` (owner and pid groups) or ``legacy`` (age only)
    names; never fails (a sweep is housekeeping, the write that called it must go on)."""
    removed = []
    try:
        names = [entry.name for entry in os.scandir(directory)]
    except OSError:
        return removed
    for name in names:
        path = directory / name
        match = is_leftover.match(name)
        if match:
            stale = _is_stale(path, match["owner"], int(match["pid"]))
        elif legacy is not None and legacy.match(name):
            stale = _is_stale(path, "", 0)
        else:
            continue
        if stale:
            with contextlib.suppress(OSError):
                remove(path)
                removed.append(path)
    return removed


def sweep_stale_temporaries(target: Path, suffix: str = ".tmp") -> list[Path]:
    """Remove the temporaries killed processes left in ``target``'s directory (see the module docstring);
    the paths removed."""
    legacy = re.compile(rf"^{re.escape(f'.{target.name}.')}{_RANDOM}{re.escape(suffix)}$")
    return _sweep(target.parent, _OWNED_TEMP, legacy)


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.mzoo-{_owner()}-{os.getpid()}-"


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
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".probe")
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
    removed, including on ``BaseException``; what a killed process left there is swept first
    (:func:`sweep_stale_temporaries`).
    """
    sweep_stale_temporaries(target, suffix)
    prefix = _temp_prefix(target)
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


@contextlib.contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """A private working directory in the system's temp directory (as ``tempfile.TemporaryDirectory``), removed
    when the block exits; ``<prefix>`` directories that killed processes left there are swept first."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+-", prefix):
        raise ValueError(f"scratch_directory prefix must be a plain name ending in '-', got {prefix!r}")
    base = Path(tempfile.gettempdir())
    _sweep(base, re.compile(rf"^{re.escape(prefix)}(?P<owner>[0-9a-f]{{8}})-(?P<pid>\d+)-{_RANDOM}$"))
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{_owner()}-{os.getpid()}-", dir=base))
    try:
        yield path
    finally:
        remove(path)


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` (``<pid> <owner>`` inside) for the block, then remove it.

    Another live holder makes this raise ``LockHeldError`` naming ``what``, the lock file and the holder's pid, at
    once (a second job refuses rather than waits). A lock file whose process died (even by ``kill -9``) is taken
    over: the kernel releases ``flock`` locks with their process; where ``flock`` is unavailable, the pid inside
    decides.
    """
    prepare_directory(path.parent)
    fd = _acquire(path, what)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if _same_file(path, fd):
                os.unlink(path)
        os.close(fd)  # releases the flock


def _acquire(path: Path, what: str) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(f"cannot create lock file {str(path)!r}: {err.strerror or err}") from err
        try:
            held = _try_flock(fd)
            holder = _lock_holder(fd)
            if held is None:  # no flock here: a live pid of this owner (not us) holds it
                held = holder is not None and holder[1] == _owner() and holder[0] != os.getpid() and \
                    pid_alive(holder[0])
            if held:
                pid = f"process {holder[0]}" if holder else "another process"
                raise LockHeldError(f"{what} is in use by {pid} (lock file {str(path)!r}); wait for it to finish, "
                                    "or stop that process")
            if _same_file(path, fd):  # else its holder removed it between our open and flock: take the new one
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {_owner()}\n".encode(), 0)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _try_flock(fd: int) -> bool | None:
    """False when the lock was taken, True when another open file holds it, None when flock is unavailable."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # ENOLCK, EOPNOTSUPP: a file system without flock
        return None
    return False


def _lock_holder(fd: int) -> tuple[int, str] | None:
    try:
        fields = os.pread(fd, 200, 0).decode("ascii", "replace").split()
        return int(fields[0]), fields[1] if len(fields) > 1 else ""
    except (OSError, ValueError, IndexError):
        return None


def _same_file(path: Path, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


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
