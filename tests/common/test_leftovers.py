"""What a killed process leaves behind: temporaries swept on the next run (only ours, only dead owners'), and lock
files that refuse a second live holder but are taken over from a dead one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from common.files import (
    STALE_TEMP_AGE_S,
    LockHeldError,
    exclusive_lock,
    scratch_directory,
    temporary_path,
    write_text_atomic,
)

REPO = Path(__file__).resolve().parents[2]


def _killed(code: str, **env: str) -> str:
    """Run ``code`` in a fresh Python that SIGKILLs itself at the end (no ``finally`` runs); its stdout."""
    script = textwrap.dedent(code) + "\nimport os, signal, sys\nsys.stdout.flush()\nos.kill(os.getpid(), signal.SIGKILL)\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout.strip()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_temporaries_of_a_killed_writer_are_swept_by_the_next_write_and_nothing_else(tmp_path: Path) -> None:
    package = Path(_killed(f"""
        from pathlib import Path
        from common.files import temporary_path
        cm = temporary_path(Path({str(tmp_path / 'model.mlpackage')!r}), suffix=".mlpackage", directory=True)
        print(cm.__enter__())
    """))
    assert package.is_dir() and package.name.startswith(".model.mlpackage.mzoo-")
    left = Path(_killed(f"""
        from pathlib import Path
        from common.files import temporary_path
        cm = temporary_path(Path({str(tmp_path / 'model.onnx')!r}), suffix=".onnx.tmp")
        tmp = cm.__enter__()
        tmp.write_bytes(b"half an export")
        print(tmp)
    """))
    assert not package.exists()  # the second killed export swept the first one's package on its way in
    assert left.exists() and left.parent == tmp_path and left.name.startswith(".model.onnx.mzoo-")
    # What must stay: a user's files, a live process's temporary, and a young one in the old naming.
    keep = [tmp_path / ".notes.txt", tmp_path / "model.onnx.tmp", tmp_path / ".model.onnx.abcdefgh.onnx.tmp"]
    live = tmp_path / left.name.replace(f"-{left.name.split('-')[2]}-", f"-{os.getppid()}-")
    for path in [*keep, live]:
        path.write_text("keep me")
    old_user_file = tmp_path / ".model.onnx.backup"
    old_user_file.write_text("old, but not ours")
    _age(old_user_file, 2 * STALE_TEMP_AGE_S)
    old_legacy = tmp_path / ".report.json.k3j_9zq1.tmp"  # what a killed write of the old naming left a while ago
    old_legacy.write_text("{")
    _age(old_legacy, 2 * STALE_TEMP_AGE_S)

    write_text_atomic(tmp_path / "report.json", "{}\n")  # any write in the directory sweeps it
    assert not left.exists() and not old_legacy.exists()
    assert all(p.exists() for p in [*keep, live, old_user_file])
    assert (tmp_path / "report.json").read_text() == "{}\n"


def test_own_temporaries_are_removed_on_the_way_out(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    with pytest.raises(KeyboardInterrupt), temporary_path(target) as tmp:
        assert f"-{os.getpid()}-" in tmp.name
        tmp.write_text("partial")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_scratch_directories_of_a_killed_process_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    left = Path(_killed("""
        from common.files import scratch_directory
        cm = scratch_directory("mzoo-export-")
        path = cm.__enter__()
        (path / "model.onnx").write_bytes(b"x")
        print(path)
    """, TMPDIR=str(tmp_path)))
    assert left.is_dir() and left.parent == tmp_path and left.name.startswith("mzoo-export-")
    other = tmp_path / "mzoo-export-notours"
    other.mkdir()
    with scratch_directory("mzoo-export-") as scratch:
        assert scratch.is_dir() and not left.exists() and other.exists()
    assert not scratch.exists()


def test_a_live_lock_is_refused_naming_the_file_and_its_pid(tmp_path: Path) -> None:
    lock = tmp_path / "tiny.json.lock"
    with exclusive_lock(lock, "latency table 'tiny.json'"):
        assert lock.read_text().split()[0] == str(os.getpid())
        with pytest.raises(LockHeldError) as info, exclusive_lock(lock, "latency table 'tiny.json'"):
            pass
        assert str(info.value) == (f"latency table 'tiny.json' is in use by process {os.getpid()} (lock file "
                                   f"{str(lock)!r}); wait for it to finish, or stop that process")
        assert lock.exists()
    assert not lock.exists()


def test_a_lock_held_by_another_live_process_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    script = ("import time\nfrom pathlib import Path\nfrom common.files import exclusive_lock\n"
              f"with exclusive_lock(Path({str(lock)!r}), 'x'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError, match=f"in use by process {holder.pid} "), exclusive_lock(lock, "x"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_lock(lock, "x"):  # killed: the kernel released its lock, the file (and its pid) is taken over
        assert lock.read_text().split()[0] == str(os.getpid())


def test_a_stale_lock_file_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(f"{_dead_pid()} 0123abcd\n")
    with exclusive_lock(lock, "x"):
        assert lock.read_text().split()[0] == str(os.getpid())
    assert not lock.exists()
