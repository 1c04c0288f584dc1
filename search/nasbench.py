"""NAS-Bench-Macro as a query API: accuracy, per-seed accuracies, params, MACs and rank of any of its 6561 strings.

Owns reading and validating the benchmark file (papers.md §4.2; ``<shared data>/nas-bench-macro/
nas-bench-macro_cifar10.json``, read from its path and never copied into the repository), look-up by string
(``"22212220"``) or by :class:`~zoo.spaces.NBMacroSpace` arch tuple, competition ranks by mean accuracy
(1 = best; equal accuracies share a rank), and the target sets search benchmarks measure against: the
optimal strings, the top-k and the top fraction, over the whole space or over a subset (the architectures
that satisfy a constraint). The benchmark trained 3969 distinct networks and maps all 6561 strings onto
them: an identity in a non-first layer of a stage is the same network wherever it sits in that stage, so
e.g. ``22212220`` and ``22212202`` share one record, and "reaching the best" means reaching any string of
the optimal set. :func:`network_of` gives a string's trained network.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.images import shared_data_dir
from common.jsonfile import read_json_object
from zoo.spaces import NBMacroSpace
from zoo.nbmacro import NUM_LAYERS, STAGE_DEPTHS

BENCHMARK_FILE = Path("nas-bench-macro") / "nas-bench-macro_cifar10.json"
NUM_ARCHS = 3 ** NUM_LAYERS
NUM_NETWORKS = 3969
RUNS = 3
# mean_acc must be the mean of test_acc; the file stores float32-rounded runs, so allow a little slack.
_MEAN_TOLERANCE = 1e-3
_FIELDS = ("test_acc", "mean_acc", "std", "params", "flops")


class NASBenchError(InputError):
    """The benchmark file is missing, unreadable, truncated or holds an invalid record (the path is named)."""


@dataclass(frozen=True)
class MacroRecord:
    """One string's benchmark entry: CIFAR-10 test accuracy (%) of 3 runs, their mean and std, params, MACs."""

    arch: str
    test_acc: tuple[float, ...]
    mean_acc: float
    std: float
    params: int
    macs: int


def default_path() -> Path:
    """Where the benchmark file is expected: ``<shared data>/nas-bench-macro/nas-bench-macro_cifar10.json``."""
    return shared_data_dir() / BENCHMARK_FILE


def network_of(arch: str) -> str:
    """The trained network's string: identities in non-first layers of each stage moved to the stage's end."""
    _check_string(arch)
    out, start = [], 0
    for depth in STAGE_DEPTHS:
        stage = arch[start:start + depth]
        start += depth
        rest = [c for c in stage[1:] if c != "0"]
        out.append(stage[0] + "".join(rest) + "0" * (depth - 1 - len(rest)))
    return "".join(out)


def _check_string(arch: str) -> None:
    if not isinstance(arch, str) or len(arch) != NUM_LAYERS or any(c not in "012" for c in arch):
        raise KeyError(f"NAS-Bench-Macro architecture must be {NUM_LAYERS} characters of 0/1/2 "
                       f"(or a tuple of {NUM_LAYERS} ints), got {arch!r}")


@dataclass(frozen=True)
class NASBenchMacro:
    """The benchmark in memory; build it with :meth:`load` (or from records, e.g. in tests).

    ``source`` says where the records came from (the file path). Ranks are computed once, on construction.
    """

    records: Mapping[str, MacroRecord]
    source: str
    space: NBMacroSpace = field(default_factory=NBMacroSpace)
    _ranks: dict[str, int] = field(init=False, repr=False, compare=False)
    _order: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.records) != NUM_ARCHS:
            raise NASBenchError(f"NAS-Bench-Macro from {self.source!r} holds {len(self.records)} strings, "
                                f"expected all {NUM_ARCHS}")
        order = tuple(sorted(self.records, key=lambda k: (-self.records[k].mean_acc, k)))
        ranks: dict[str, int] = {}
        for position, key in enumerate(order):
            previous = order[position - 1] if position else None
            tied = previous is not None and self.records[previous].mean_acc == self.records[key].mean_acc
            ranks[key] = ranks[previous] if tied else position + 1
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_ranks", ranks)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> NASBenchMacro:
        """Read and validate the benchmark file (default :func:`default_path`); errors name the path."""
        source = Path(path) if path is not None else default_path()
        data = read_json_object(source, "NAS-Bench-Macro file", NASBenchError,
                                missing_hint=" (set MZOO_SHARED_DATA to the shared data folder, or pass the path)")
        records = {key: _record(source, key, value) for key, value in data.items()}
        return cls(records, str(source))

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, arch: object) -> bool:
        try:
            return self.key(arch) in self.records  # type: ignore[arg-type]
        except KeyError:
            return False

    def key(self, arch: str | Sequence[int]) -> str:
        """The benchmark string of ``arch`` (a string, or a tuple of 8 ints in {0, 1, 2}); ``KeyError`` names it."""
        if isinstance(arch, str):
            _check_string(arch)
            return arch
        if (not isinstance(arch, Sequence) or len(arch) != NUM_LAYERS
                or any(isinstance(v, bool) or v not in (0, 1, 2) for v in arch)):
            raise KeyError(f"NAS-Bench-Macro architecture must be {NUM_LAYERS} ints in {{0, 1, 2}} "
                           f"(or a string), got {arch!r}")
        return "".join(str(v) for v in arch)

    def arch(self, key: str) -> tuple[int, ...]:
        """The :class:`NBMacroSpace` arch tuple of a benchmark string."""
        _check_string(key)
        return tuple(int(c) for c in key)

    def keys(self) -> tuple[str, ...]:
        """Every string, best first (ties by string)."""
        return self._order

    def record(self, arch: str | Sequence[int]) -> MacroRecord:
        return self.records[self.key(arch)]

    def accuracy(self, arch: str | Sequence[int]) -> float:
        """Mean CIFAR-10 test accuracy (%) over the 3 runs."""
        return self.record(arch).mean_acc

    def accuracies(self, arch: str | Sequence[int]) -> tuple[float, ...]:
        """Test accuracy (%) of each of the 3 runs (seeds 0, 1, 2; best epoch of each)."""
        return self.record(arch).test_acc

    def params(self, arch: str | Sequence[int]) -> int:
        return self.record(arch).params

    def macs(self, arch: str | Sequence[int]) -> int:
        """The benchmark's ``flops``: multiply-accumulates of every conv and linear layer."""
        return self.record(arch).macs

    def rank(self, arch: str | Sequence[int]) -> int:
        """1 + the number of strings with a strictly higher mean accuracy (equal accuracies share a rank)."""
        return self._ranks[self.key(arch)]

    def num_networks(self) -> int:
        """How many distinct trained networks the strings map onto (3969 in the published file)."""
        return len({network_of(k) for k in self.records})

    def optimal(self, among: Iterable[str | Sequence[int]] | None = None) -> frozenset[str]:
        """The strings with the highest mean accuracy (of ``among``, default all)."""
        return self.top_k(1, among)

    def top_k(self, k: int, among: Iterable[str | Sequence[int]] | None = None) -> frozenset[str]:
        """Strings ranked ``<= k`` within ``among`` (default all), ties at the boundary included."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"top_k needs an int k >= 1, got {k!r}")
        keys = self._order if among is None else sorted({self.key(a) for a in among},
                                                         key=lambda s: (-self.records[s].mean_acc, s))
        if not keys:
            return frozenset()
        cutoff = self.records[keys[min(k, len(keys)) - 1]].mean_acc
        return frozenset(s for s in keys if self.records[s].mean_acc >= cutoff)

    def top_fraction(self, fraction: float, among: Iterable[str | Sequence[int]] | None = None) -> frozenset[str]:
        """The top ``ceil(fraction × n)`` strings of ``among`` (n strings; default all), ties included."""
        if not 0.0 < fraction <= 1.0:
            raise InputError(f"top_fraction needs a fraction in (0, 1], got {fraction!r}")
        keys = list(self._order) if among is None else list({self.key(a) for a in among})
        return self.top_k(max(1, math.ceil(fraction * len(keys) - 1e-9)), keys) if keys else frozenset()


def _record(source: Path, key: Any, value: Any) -> MacroRecord:
    where = f"NAS-Bench-Macro file {str(source)!r}, entry {key!r}"
    try:
        _check_string(key)
    except KeyError as err:
        raise NASBenchError(f"{where}: the key is not an architecture string ({err.args[0]})") from None
    if not isinstance(value, dict):
        raise NASBenchError(f"{where}: must be an object, got {type(value).__name__}")
    missing = [f for f in _FIELDS if f not in value]
    if missing:
        raise NASBenchError(f"{where}: missing field(s) {', '.join(missing)}")
    runs = value["test_acc"]
    if not isinstance(runs, list) or len(runs) != RUNS or not all(_is_accuracy(a) for a in runs):
        raise NASBenchError(f"{where}: test_acc must be {RUNS} accuracies in [0, 100], got {runs!r}")
    for name in ("mean_acc", "std"):
        if not _is_accuracy(value[name]):
            raise NASBenchError(f"{where}: {name} must be a number in [0, 100], got {value[name]!r}")
    if abs(value["mean_acc"] - sum(runs) / RUNS) > _MEAN_TOLERANCE:
        raise NASBenchError(f"{where}: mean_acc {value['mean_acc']!r} is not the mean of test_acc {runs!r}")
    for name in ("params", "flops"):
        if isinstance(value[name], bool) or not isinstance(value[name], int) or value[name] <= 0:
            raise NASBenchError(f"{where}: {name} must be a positive int, got {value[name]!r}")
    return MacroRecord(key, tuple(float(a) for a in runs), float(value["mean_acc"]), float(value["std"]),
                       value["params"], value["flops"])


def _is_accuracy(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and 0.0 <= value <= 100.0)
