"""Running a ``mzoo search`` sub-command in-process through its own ``add_commands``, with a real argparse parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def search_runner(add_commands: Callable[[Any], None]) -> Callable[..., int]:
    """``run(*argv)``: parse ``mzoo search *argv`` with the sub-commands ``add_commands`` adds and run it."""

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="mzoo")
        group = parser.add_subparsers(dest="command", required=True).add_parser("search")
        add_commands(group.add_subparsers(dest="search_command", required=True))
        args = parser.parse_args(["search", *argv])
        return args.func(args)

    return run
