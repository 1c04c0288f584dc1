"""The ``mzoo`` command line: assembles the verbs each package owns and reports the project's errors.

``list``/``info`` come from :mod:`zoo.cli`, ``export``/``eval`` from :mod:`export.cli`, ``bench``/``demo``/``lut``/
``predict``/``agent`` from :mod:`latency_tables.cli`, ``search``/``prune``/``train`` from :mod:`search.cli`.
A user error (any :class:`common.errors.MzooError`, or an ``OSError`` about a path the user gave) becomes one line
on stderr and exit status 2; anything else is a bug and keeps its traceback. Heavy imports (onnxruntime,
ExecuTorch, coremltools) happen per command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import NoReturn

from common.errors import MzooError


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line that says where the full usage is (not the whole usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mzoo: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``mzoo`` parser: the root options, then each package's verbs, lowest package first."""
    from export.cli import add_commands as add_export_commands
    from latency_tables.cli import add_commands as add_latency_commands
    from search.cli import add_commands as add_search_commands
    from zoo.cli import add_commands as add_zoo_commands

    parser = _Parser(prog="mzoo", description="Mobile Zoo: models, verified export, latency.")
    parser.add_argument("--searched", action="append", default=[], metavar="DIR",
                        help="register the search result(s) in DIR as zoo models first (repeatable; also "
                             "$MZOO_SEARCHED, os.pathsep-separated)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_zoo_commands(sub)
    add_export_commands(sub)
    add_latency_commands(sub)
    add_search_commands(sub)
    return parser


# The library's errors give Python advice (its callers are Python); on the command line the same advice is a
# flag. Every phrase here occurs in a library message (tests/test_user_paths.py checks both directions).
CLI_ADVICE: dict[str, str] = {
    "pass checkpoint_path=": "pass --checkpoint FILE",
    "see zoo.list_models()": "see `mzoo list`",
    "(latency_tables.build.build_table) or pass interpolate=True": "(`mzoo lut build --space SPACE`) or pass "
                                                                   "--interpolate",
    "(latency_tables.build.build_table)": "(`mzoo lut build --space SPACE`)",
    "pass interpolate=True": "pass --interpolate",
    "pass restart=True": "pass --restart",
    "restart=True": "--restart",
}


def cli_message(message: str) -> str:
    """A library error's message in the command line's words (flags instead of keyword arguments)."""
    for python, flag in CLI_ADVICE.items():
        message = message.replace(python, flag)
    return message


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    # A user-facing warning (e.g. int8 calibrated on random data) is one line, not a source location.
    print(f"mzoo: warning: {cli_message(str(message))}", file=sys.stderr)


def _register_searched(directories: Sequence[str]) -> None:
    from zoo.searched import register_from_env

    register_from_env()
    register_from_env(os.pathsep.join(directories))


class _Terminated(BaseException):
    """SIGTERM or SIGHUP: unwinds the command like Ctrl-C, so that its cleanup (temporary files and directories,
    locks) runs before the process ends."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(signum)


@contextlib.contextmanager
def _cleanup_on_termination() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception for the block (main thread only), then restore the handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings(), _cleanup_on_termination():
            warnings.showwarning = _show_warning  # restored when the block exits
            _register_searched(args.searched)
            return args.func(args)
    except BrokenPipeError:  # output piped into e.g. `head`: not an error
        sys.stderr.close()
        return 0
    # OSError: a path the user gave is missing or unreadable (the message names it). Nothing else is caught: an
    # exception that is not the project's own is a bug, and its traceback is what a report needs.
    except (MzooError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"mzoo: error: {cli_message(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mzoo: interrupted", file=sys.stderr)
        return 130
    except _Terminated as stop:
        print(f"mzoo: terminated by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main())
