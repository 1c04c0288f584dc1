"""Writing benchmark tables into BENCHMARKS.md: one marked section per benchmark, replaced in place."""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEvery table below is written by a script under `bench/`; rerun the command shown to refresh it.\n"


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])


def write_section(key: str, title: str, body: str, machine: str) -> None:
    """Replace (or append) the section ``key`` of BENCHMARKS.md atomically."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"<!-- bench:{key} -->\n## {title}\n\n"
               f"- machine: {machine}\n- date: {stamp}\n- command: `{command_line()}`\n\n{body.strip()}\n"
               f"<!-- /bench:{key} -->\n")
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(key)} -->.*?<!-- /bench:{re.escape(key)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    fd, tmp = tempfile.mkstemp(dir=BENCHMARKS.parent, suffix=".md.tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, BENCHMARKS)
