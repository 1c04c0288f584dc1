"""``mzoo agent``'s options and their limits, apart from the server: building the command line's parser (and
``mzoo agent --help``) must not import the runtimes the server measures with.

Every limit has an option, checked with one line naming it before anything listens (:func:`agent_config_from_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from common.errors import InputError

DEFAULT_PORT = 8765
TOKEN_ENV = "MZOO_AGENT_TOKEN"
MAX_UPLOAD_MB = 4096  # larger than any mobile model; the body is written to disk before it is measured


@dataclass(frozen=True)
class AgentConfig:
    """How the agent listens and what it accepts. ``port`` 0 picks a free port (tests). Each limit has an
    ``mzoo agent`` option (see ``_LIMITS``); the README's reliability section explains them."""

    token: str
    host: str = "127.0.0.1"  # this machine only; listening on a network is the user's explicit choice (--host)
    port: int = DEFAULT_PORT
    max_upload_bytes: int = 256 * 2**20
    header_timeout_s: float = 10.0  # request line and headers, from the start of the request
    upload_timeout_s: float = 300.0  # request line, headers and body together, from the start of the request
    read_timeout_s: float = 30.0  # longest silence of a client while a request is read or a response written
    measure_timeout_s: float = 600.0  # one measuring subprocess, from start to its result
    queue_timeout_s: float = 600.0  # how long a request waits for the measurement in progress
    max_queue: int = 8  # admitted requests waiting behind the one measured; more are refused with 503 at once
    max_connections: int = 32  # open connections (one thread each); more are answered 503 and closed at once
    child_memory_mb: int = 2048  # address space a measurement may add to its process once the runtime is loaded

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token.strip():
            raise InputError(f"the agent needs a non-empty token (--token or ${TOKEN_ENV}); refusing to start")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InputError(f"agent port must be in 0..65535, got {self.port!r}")
        if not isinstance(self.max_upload_bytes, int) or self.max_upload_bytes < 1:
            raise InputError(f"max_upload_bytes must be a positive int, got {self.max_upload_bytes!r}")
        for name, (flag, kind, highest) in _LIMITS.items():
            _check_limit(name, flag, kind, highest, getattr(self, name))
        if self.upload_timeout_s < self.header_timeout_s:
            raise InputError(f"agent --upload-timeout ({self.upload_timeout_s:g} s: headers and body) must be at "
                             f"least --header-timeout ({self.header_timeout_s:g} s: headers alone)")


# field -> (its `mzoo agent` option, int or float, the largest value): floats must be > 0, ints >= the lowest below.
_LIMITS: dict[str, tuple[str, type, float]] = {
    "header_timeout_s": ("--header-timeout", float, 3600),
    "upload_timeout_s": ("--upload-timeout", float, 86400),
    "read_timeout_s": ("--read-timeout", float, 3600),
    "measure_timeout_s": ("--measure-timeout", float, 86400),
    "queue_timeout_s": ("--queue-timeout", float, 86400),
    "max_queue": ("--max-queue", int, 1024),
    "max_connections": ("--max-connections", int, 4096),
    "child_memory_mb": ("--child-memory-mb", int, 2**20),
}
_LOWEST_INT = {"max_queue": 0, "max_connections": 1, "child_memory_mb": 64}


def _check_limit(name: str, flag: str, kind: type, highest: float, value: object) -> None:
    if kind is int:
        lowest = _LOWEST_INT[name]
        if not isinstance(value, int) or isinstance(value, bool) or not lowest <= value <= highest:
            raise InputError(f"agent {flag} ({name}) must be an integer in {lowest}..{highest:g}, got {value!r}")
    elif not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and 0 < value <= highest):
        raise InputError(f"agent {flag} ({name}) must be a number of seconds more than 0 and at most {highest:g}, "
                         f"got {value!r}")


def _default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(AgentConfig) if f.name == name)


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mzoo agent``; every limit's default is ``AgentConfig``'s."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; give 0.0.0.0 or an "
                             "interface's address to serve phones or other machines on the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--token", default=None,
                        help=f"bearer token clients must send (default: ${TOKEN_ENV}; prefer the variable, "
                             "a command-line token is visible to other users in `ps`)")
    parser.add_argument("--max-upload-mb", type=float, default=256.0,
                        help=f"largest accepted artefact, MiB (default 256, at most {MAX_UPLOAD_MB})")
    parser.add_argument("--max-queue", type=int, default=_default("max_queue"),
                        help="measurement requests admitted behind the one being measured; more get 503 before "
                             f"their upload is read (default {_default('max_queue')})")
    parser.add_argument("--max-connections", type=int, default=_default("max_connections"),
                        help=f"open connections, one thread each; more get 503 at once "
                             f"(default {_default('max_connections')})")
    parser.add_argument("--header-timeout", type=float, default=_default("header_timeout_s"),
                        help=f"seconds a client has to send a request's headers (default {_default('header_timeout_s'):g})")
    parser.add_argument("--upload-timeout", type=float, default=_default("upload_timeout_s"),
                        help="seconds a client has to send a request's headers and body together "
                             f"(default {_default('upload_timeout_s'):g})")
    parser.add_argument("--read-timeout", type=float, default=_default("read_timeout_s"),
                        help=f"seconds a client may stay silent while a request is read or an answer written "
                             f"(default {_default('read_timeout_s'):g})")
    parser.add_argument("--measure-timeout", type=float, default=_default("measure_timeout_s"),
                        help=f"seconds one measurement may take (default {_default('measure_timeout_s'):g})")
    parser.add_argument("--queue-timeout", type=float, default=_default("queue_timeout_s"),
                        help="seconds a request waits for the measurement in progress before 503 "
                             f"(default {_default('queue_timeout_s'):g})")
    parser.add_argument("--child-memory-mb", type=int, default=_default("child_memory_mb"),
                        help="address space, MiB, a measurement may add to its process once the runtime is loaded; "
                             f"more fails with 507 (default {_default('child_memory_mb')}; Linux and Android)")


def agent_config_from_args(args: argparse.Namespace) -> AgentConfig:
    """The ``AgentConfig`` of parsed ``mzoo agent`` options; ``InputError`` (a ``ValueError``) naming the option for
    an empty token or a value out of its bounds, before anything is started."""
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if not (math.isfinite(args.max_upload_mb) and 0 < args.max_upload_mb <= MAX_UPLOAD_MB):
        raise InputError(f"--max-upload-mb must be more than 0 and at most {MAX_UPLOAD_MB} (an upload is held on "
                         f"disk while it is measured), got {args.max_upload_mb:g}")
    return AgentConfig(token=token, host=args.host, port=args.port,
                       max_upload_bytes=max(1, int(args.max_upload_mb * 2**20)),
                       header_timeout_s=args.header_timeout, upload_timeout_s=args.upload_timeout,
                       read_timeout_s=args.read_timeout, measure_timeout_s=args.measure_timeout,
                       queue_timeout_s=args.queue_timeout, max_queue=args.max_queue,
                       max_connections=args.max_connections, child_memory_mb=args.child_memory_mb)
