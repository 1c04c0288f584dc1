"""One rule for every long command's output directory: rerunning the same command resumes, anything else is refused.

A search, pruning or training command records what it was asked in ``DIR/run.json`` (the command and its
settings: every option that changes what is computed) before its first expensive step. Run again with ``-o DIR``:

- the same command with the same settings resumes from the checkpoints in ``DIR`` (each command's own resume
  machinery makes that exact);
- other settings are refused, naming each setting that differs, before anything is loaded or trained, instead of
  failing later on a checkpoint of another network (or silently mixing two runs);
- a directory without ``run.json``, or with nothing but it (a run refused or stopped before its first
  checkpoint, e.g. for a missing table), starts a new run.

Options that change only how a run is watched (progress bars, JSON output, worker counts) are not settings.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.files import write_json_atomic
from common.jsonfile import read_json_object

RUN_FILE = "run.json"
# argparse destinations that never change a result.
WATCH_ONLY = frozenset({"func", "command", "search_command", "prune_command", "output", "searched", "progress",
                        "json", "workers", "resume", "space_name", "no_progress"})


class RunDirectoryError(InputError):
    """The output directory holds a run of another command, or of the same command with other settings."""


def settings_of(args: argparse.Namespace, ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The settings of a parsed command line: every option except those in :data:`WATCH_ONLY` and ``ignore``,
    as JSON values."""
    skip = WATCH_ONLY | set(ignore)
    return {k: json.loads(json.dumps(v, default=str)) for k, v in sorted(vars(args).items())
            if k not in skip and not callable(v)}


def claim(directory: str | Path, command: str, settings: Mapping[str, Any]) -> bool:
    """Record (or check) the run in ``directory``; True when it resumes a run of the same command and settings.

    Raises :class:`RunDirectoryError` naming the differing settings, or the other command, otherwise.
    """
    out = Path(directory)
    path = out / RUN_FILE
    wanted = json.loads(json.dumps(dict(settings), default=str))
    started = path.exists() and any(p.name != RUN_FILE for p in out.iterdir())
    if started:
        saved = read_json_object(path, "run record", RunDirectoryError)
        if saved.get("command") != command:
            raise RunDirectoryError(f"{str(out)!r} holds a `{saved.get('command')}` run, not `{command}`: give "
                                    "another -o")
        before = saved.get("settings") if isinstance(saved.get("settings"), dict) else {}
        differ = [f"{k} {before.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(set(before) | set(wanted))
                  if before.get(k) != wanted.get(k)]
        if differ:
            raise RunDirectoryError(f"{str(out)!r} holds a `{command}` run with other settings ({'; '.join(differ)}): "
                                    "rerun with its settings to resume it, or give another -o")
        return True
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"command": command, "settings": wanted})
    return False
