"""The latency lookup table as versioned data: its record types, its JSON schema and where its files live.

A :class:`LatencyTable` holds, for one device and one search space, the measured latency of every walker op
key (:attr:`zoo.OpCost.key`) with its statistics, the per-network :class:`Overhead` calibrated on whole
networks, and everything needed to judge whether two numbers are comparable: device, runtime and version,
threads, dtype, batch, the measurement protocol, the machine's environment and fingerprint, where the
numbers came from and when. Files are ``<root>/<device>/<space>.json`` with a ``schema_version`` (and, while
a build writes one, its lock file ``<space>.json.lock``: :func:`table_lock_path`); they are written atomically
and read only when asked, and any file that cannot be trusted (missing, truncated, corrupt, a missing field, an
unknown version) is refused with a one-line :class:`LatencyTableError` that names it.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from common.errors import InputError, MzooError
from common.files import write_json_atomic
from common.jsonfile import read_json_object

TABLE_SCHEMA_VERSION = 2
# Version 1 tables lack Overhead.scale and Overhead.call_ms (both read as 0, which is what version 1 meant).
READABLE_TABLE_SCHEMA_VERSIONS = (1, 2)
# Which per-entry statistic a table's predictions sum. The minimum is the default because interference only
# ever adds time; on this shared VM the evidence is mixed (one run: min 94 % vs median 42 % within ±10 % on
# nbmacro; bench/lut_statistic.py in BENCHMARKS.md: min 68 % vs median 84 %), so tables record every
# statistic and a table can be built to sum another one.
STATISTICS = ("min_ms", "median_ms", "mean_ms", "p10_ms")
DEFAULT_STATISTIC = "min_ms"
TABLES_ENV = "MZOO_LATENCY_TABLES"
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class LatencyTableError(InputError):
    """A latency table file or record is missing, unreadable, corrupt, incomplete or of an unknown version."""


class TableVersionError(LatencyTableError):
    """A table file was written with a ``schema_version`` this code does not read."""


class NoTablesError(MzooError, LookupError):
    """A device has no latency tables under the tables root."""


@dataclass(frozen=True)
class Entry:
    """The measured latency of one op key, with the statistics of the timed runs and the op's size.

    ``passes`` is how many times the build measured the op (``mzoo lut build --passes N``, round-robin over the
    space's keys); the statistics are those of the pass fastest on the table's statistic."""

    median_ms: float
    n: int
    p10_ms: float | None = None
    p90_ms: float | None = None
    std_ms: float | None = None
    macs: int = 0
    params: int = 0
    kind: str = ""
    min_ms: float | None = None
    mean_ms: float | None = None
    passes: int = 1

    def __post_init__(self) -> None:
        _check_ms("Entry.median_ms", self.median_ms, required=True)
        _check_count("Entry.passes", self.passes, minimum=1)
        for name in ("p10_ms", "p90_ms", "std_ms", "min_ms", "mean_ms"):
            _check_ms(f"Entry.{name}", getattr(self, name), required=False)
        for name in ("n", "macs", "params"):
            _check_count(f"Entry.{name}", getattr(self, name), minimum=0)
        if not isinstance(self.kind, str):
            raise LatencyTableError(f"Entry.kind must be a string, got {self.kind!r}")

    def value(self, statistic: str) -> float:
        """The entry's ``statistic`` (one of ``STATISTICS``); an error names a statistic it lacks."""
        if statistic not in STATISTICS:
            raise LatencyTableError(f"unknown statistic {statistic!r}; known: {', '.join(STATISTICS)}")
        value = getattr(self, statistic)
        if value is None:
            raise LatencyTableError(f"this entry has no {statistic} (it records {self._recorded()})")
        return value

    def _recorded(self) -> str:
        return ", ".join(s for s in STATISTICS if getattr(self, s) is not None)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if data["passes"] == 1:  # entries measured once read as before in older versions
            del data["passes"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entry:
        return cls(**_fields_of(cls, data, "entry"))


IMPLAUSIBLE_FACTOR = 30.0
IMPLAUSIBLE_MIN_MACS = 1_000_000
_MIN_JUDGED_ENTRIES = 5


def implausible_entries(entries: Mapping[str, Entry], statistic: str = DEFAULT_STATISTIC,
                        factor: float = IMPLAUSIBLE_FACTOR) -> list[tuple[str, float]]:
    """Entries far slower per MAC than the others of their op kind: ``(key, times that median)``, worst first.

    Only entries of at least ``IMPLAUSIBLE_MIN_MACS`` MACs are judged (below that a runtime call's fixed cost
    dominates, so ms per MAC legitimately varies), each against the median ms per MAC of the entries of its kind
    (``Entry.kind``: an HGC block runs slower per MAC than a dense conv), and only kinds with at least five such
    entries. One that takes more than ``factor`` times that median measured something else than the op:
    ExecuTorch timings pinned to a CPU that a second OpenMP thread shared recorded 4 ms scheduler slices for
    0.1-0.2 ms ops, up to 200x their kind's median, while no entry of the valid tables measured here exceeds 19x
    (XNNPACK's HGC block at 112x112 with 4-channel groups, memory-bound). It catches slices on small ops only: a
    4 ms slice recorded for a 2 ms op is within any plausible spread.
    """
    by_kind: dict[str, dict[str, float]] = {}
    for key, entry in entries.items():
        if entry.macs >= IMPLAUSIBLE_MIN_MACS:
            by_kind.setdefault(entry.kind, {})[key] = entry.value(statistic) / entry.macs
    slow = []
    for rates in by_kind.values():
        if len(rates) >= _MIN_JUDGED_ENTRIES:
            median = statistics.median(rates.values())
            slow += [(key, rate / median) for key, rate in rates.items() if rate > factor * median]
    return sorted(slow, key=lambda item: -item[1])


@dataclass(frozen=True)
class CalibrationNetwork:
    """One network the overhead was fitted on: what it measured end to end and what its entries sum to, kept in the
    table so that a fit can be audited (and refitted) without measuring again. ``kind_ops`` maps an op kind to
    ``[count, Σ entries]`` of the network's ops of that kind (:func:`latency_tables.predict.kind_sums`);
    ``rounds_ms`` the network's figure in each calibration round (``measured_ms`` is their fastest), empty when it
    was measured once."""

    label: str
    measured_ms: float
    n_ops: int
    ops_ms: float
    kind_ops: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    rounds_ms: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.rounds_ms, (list, tuple)):
            raise LatencyTableError(f"CalibrationNetwork.rounds_ms must be a list of finite numbers >= 0, got "
                                    f"{self.rounds_ms!r}")
        object.__setattr__(self, "rounds_ms", tuple(self.rounds_ms))
        for value in self.rounds_ms:
            _check_ms("CalibrationNetwork.rounds_ms[]", value, required=True)
        if not isinstance(self.label, str) or not self.label:
            raise LatencyTableError(f"CalibrationNetwork.label must be a non-empty string, got {self.label!r}")
        for name in ("measured_ms", "ops_ms"):
            _check_ms(f"CalibrationNetwork.{name}", getattr(self, name), required=True)
        _check_count("CalibrationNetwork.n_ops", self.n_ops, minimum=0)
        try:
            kinds = {str(k): (int(c), float(ms)) for k, (c, ms) in dict(self.kind_ops).items()}
        except (TypeError, ValueError) as err:
            raise LatencyTableError(f"CalibrationNetwork.kind_ops must map op kinds to [count, ms], got "
                                    f"{self.kind_ops!r}") from err
        object.__setattr__(self, "kind_ops", types.MappingProxyType(kinds))

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "measured_ms": self.measured_ms, "n_ops": self.n_ops, "ops_ms": self.ops_ms,
                "kind_ops": {k: list(v) for k, v in self.kind_ops.items()}, "rounds_ms": list(self.rounds_ms)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationNetwork:
        return cls(**_fields_of(cls, data, "overhead.networks[]"))


@dataclass(frozen=True)
class Overhead:
    """How a whole network's latency follows from its ops' entries, calibrated on networks measured end to end.

    ``network = intercept_ms + per_op_ms × n + (1 + scale) × (Σ entries − call_ms × n)`` for a network of ``n``
    walker ops. Each entry was timed as its own runtime call and so carries one call's fixed cost (dispatch,
    input/output binding, thread-pool wake-up) that a network, one call for all its ops, pays once:
    ``call_ms`` is that cost, measured on a trivial module with the table's protocol. ``scale`` is how much
    slower ops run inside a network than alone (weights and activations no longer stay hot in the caches
    between runs), net of what the runtime gains by fusing across op boundaries; it can be negative.
    ``intercept_ms`` is what only whole networks pay (global pooling, flatten, DARTS node sums, the one call).
    ``per_op_ms`` is the per-op term that schema-1 builds fitted instead of measuring ``call_ms``; newer builds
    leave it 0. ``n_networks`` is how many networks the fit used; ``note`` says how it was fit; ``networks`` are
    those networks' measurements (:class:`CalibrationNetwork`; empty in tables built before they were kept).

    ``kind_scales`` adds, for ops of the named kinds (an entry's ``kind``, the op key's prefix), a scale of their
    own on top of ``scale``: ``network += Σ_kind kind_scale × (Σ entries of that kind − call_ms × their count)``.
    It is fitted only for the two forms of a re-parameterisable block (HGC's ``hgc_ir`` against its fused ``ir``,
    :mod:`zoo.deploy`), whose in-network efficiency differs: measured on this project's Zen 5 VM, HGC networks ran
    1.3-1.5x their entries' sum and fused ones 1.1-1.3x, so one scale left both off by up to 35 %.
    """

    intercept_ms: float
    per_op_ms: float
    n_networks: int
    note: str = ""
    scale: float = 0.0
    call_ms: float = 0.0
    kind_scales: Mapping[str, float] = field(default_factory=dict)
    networks: tuple[CalibrationNetwork, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "networks", tuple(
            n if isinstance(n, CalibrationNetwork) else CalibrationNetwork.from_dict(n) for n in self.networks))
        for name in ("intercept_ms", "per_op_ms", "scale", "call_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise LatencyTableError(f"Overhead.{name} must be a finite number, got {value!r}")
        if self.call_ms < 0 or self.scale <= -1:
            raise LatencyTableError(f"Overhead needs call_ms >= 0 and scale > -1, got call_ms={self.call_ms!r}, "
                                    f"scale={self.scale!r}")
        if isinstance(self.n_networks, bool) or not isinstance(self.n_networks, int) or self.n_networks < 0:
            raise LatencyTableError(f"Overhead.n_networks must be an int >= 0, got {self.n_networks!r}")
        if not isinstance(self.kind_scales, Mapping) or not all(
                isinstance(k, str) and k and not isinstance(v, bool) and isinstance(v, (int, float))
                and math.isfinite(v) for k, v in self.kind_scales.items()):
            raise LatencyTableError(f"Overhead.kind_scales must map op kinds to finite numbers, got "
                                    f"{self.kind_scales!r}")
        object.__setattr__(self, "kind_scales", types.MappingProxyType(dict(self.kind_scales)))

    def network_ms(self, n_ops: int, ops_ms: float, kind_ops: Mapping[str, tuple[int, float]] | None = None) -> float:
        """The latency of a network of ``n_ops`` walker ops whose entries sum to ``ops_ms``; ``kind_ops`` maps an
        op kind to ``(count, Σ entries)`` of the network's ops of that kind, needed when ``kind_scales`` is set
        (absent kinds count as none)."""
        total = self.intercept_ms + self.per_op_ms * n_ops + (1.0 + self.scale) * (ops_ms - self.call_ms * n_ops)
        if self.kind_scales:
            if kind_ops is None:
                raise LatencyTableError(f"this overhead scales ops of kind(s) {sorted(self.kind_scales)} on their own: "
                                        f"network_ms needs kind_ops")
            for kind, extra in self.kind_scales.items():
                count, ms = kind_ops.get(kind, (0, 0.0))
                total += extra * (ms - self.call_ms * count)
        return total

    def ms(self, n_ops: int, ops_ms: float, kind_ops: Mapping[str, tuple[int, float]] | None = None) -> float:
        """What the overhead adds to the entries' sum: ``network_ms(n_ops, ops_ms, kind_ops) − ops_ms``."""
        return self.network_ms(n_ops, ops_ms, kind_ops) - ops_ms

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["kind_scales"] = dict(self.kind_scales)
        if not data["kind_scales"]:  # tables without kind scales read as before in older versions
            del data["kind_scales"]
        data["networks"] = [n.to_dict() for n in self.networks]
        if not data["networks"]:
            del data["networks"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Overhead:
        return cls(**_fields_of(cls, data, "overhead"))


@dataclass(frozen=True)
class LatencyTable:
    """Measured op latencies of one search space on one device, with the metadata that makes them comparable.

    ``source`` is ``"measured"`` or ``"imported:<what>"``; ``complete`` is False while a build is in
    progress (a checkpoint) and True once every key is measured and the overhead calibrated.
    ``input_sizes`` are the (C, H, W) the space runs at. Mappings are stored read-only.
    """

    device: str
    space: str
    source: str
    runtime: str
    runtime_version: str | None
    threads: int | None
    dtype: str
    batch_size: int
    protocol: Mapping[str, Any]
    environment: Mapping[str, Any] | None
    fingerprint: str | None
    created: str
    input_sizes: tuple[tuple[int, int, int], ...]
    entries: Mapping[str, Entry]
    overhead: Overhead | None
    complete: bool
    notes: str = ""
    statistic: str = DEFAULT_STATISTIC
    schema_version: int = TABLE_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version not in READABLE_TABLE_SCHEMA_VERSIONS or isinstance(self.schema_version, bool):
            raise TableVersionError(f"latency table schema_version {self.schema_version!r} is not supported; "
                                    f"this code reads versions {READABLE_TABLE_SCHEMA_VERSIONS}")
        for name in ("device", "space"):
            _check_slug(f"LatencyTable.{name}", getattr(self, name))
        for name in ("source", "runtime", "dtype", "created", "notes"):
            if not isinstance(getattr(self, name), str):
                raise LatencyTableError(f"LatencyTable.{name} must be a string, got {getattr(self, name)!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise LatencyTableError(f"LatencyTable.threads must be an int >= 1 or None, got {self.threads!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise LatencyTableError(f"LatencyTable.batch_size must be an int >= 1, got {self.batch_size!r}")
        if not isinstance(self.complete, bool):
            raise LatencyTableError(f"LatencyTable.complete must be a bool, got {self.complete!r}")
        if self.statistic not in STATISTICS:
            raise LatencyTableError(f"LatencyTable.statistic must be one of {', '.join(STATISTICS)}, "
                                    f"got {self.statistic!r}")
        if self.overhead is not None and not isinstance(self.overhead, Overhead):
            raise LatencyTableError(f"LatencyTable.overhead must be an Overhead or None, got {self.overhead!r}")
        for key, entry in self.entries.items():
            if not isinstance(key, str) or not isinstance(entry, Entry):
                raise LatencyTableError(f"LatencyTable.entries must map key strings to Entry, got {key!r}")
        sizes = tuple(_input_size(s) for s in self.input_sizes)
        # Frozen, so normalise through object.__setattr__; read-only views keep the table immutable in use.
        object.__setattr__(self, "input_sizes", sizes)
        object.__setattr__(self, "entries", types.MappingProxyType(dict(self.entries)))
        object.__setattr__(self, "protocol", types.MappingProxyType(dict(self.protocol)))
        if self.environment is not None:
            object.__setattr__(self, "environment", types.MappingProxyType(dict(self.environment)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``save`` writes it with sorted keys)."""
        return {
            "schema_version": self.schema_version,
            "device": self.device,
            "space": self.space,
            "source": self.source,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "threads": self.threads,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "protocol": dict(self.protocol),
            "environment": None if self.environment is None else dict(self.environment),
            "fingerprint": self.fingerprint,
            "created": self.created,
            "input_sizes": [list(s) for s in self.input_sizes],
            "entries": {key: entry.to_dict() for key, entry in sorted(self.entries.items())},
            "overhead": None if self.overhead is None else self.overhead.to_dict(),
            "complete": self.complete,
            "notes": self.notes,
            "statistic": self.statistic,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """Rebuild a table from its JSON form; raises ``LatencyTableError`` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise LatencyTableError(f"a latency table must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version not in READABLE_TABLE_SCHEMA_VERSIONS or isinstance(version, bool):
            raise TableVersionError(f"schema_version {version!r} is not supported; "
                                    f"this code reads versions {READABLE_TABLE_SCHEMA_VERSIONS}")
        values = _fields_of(cls, data, "latency table")
        entries = values["entries"]
        if not isinstance(entries, Mapping):
            raise LatencyTableError(f"'entries' must be an object, got {type(entries).__name__}")
        values["entries"] = {key: _entry(key, e) for key, e in entries.items()}
        overhead = values["overhead"]
        if overhead is not None:
            if not isinstance(overhead, Mapping):
                raise LatencyTableError(f"'overhead' must be an object or null, got {type(overhead).__name__}")
            values["overhead"] = Overhead.from_dict(overhead)
        for name in ("protocol", "environment"):
            if not (isinstance(values[name], Mapping) or (name == "environment" and values[name] is None)):
                raise LatencyTableError(f"{name!r} must be an object, got {type(values[name]).__name__}")
        if not isinstance(values["input_sizes"], list):
            raise LatencyTableError(f"'input_sizes' must be a list, got {type(values['input_sizes']).__name__}")
        values["input_sizes"] = tuple(_input_size(s) for s in values["input_sizes"])
        return cls(**values)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table to ``path`` atomically (temp file + rename); returns the path."""
        target = Path(path)
        write_json_atomic(target, self.to_dict())
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        """Read a table file; raises ``LatencyTableError`` (``TableVersionError``) naming the file."""
        source = Path(path)
        data = read_json_object(source, "latency table", LatencyTableError)
        try:
            return cls.from_dict(data)
        except TableVersionError as err:
            raise TableVersionError(f"latency table {str(source)!r}: {err}") from None
        except (LatencyTableError, TypeError, ValueError) as err:
            raise LatencyTableError(f"latency table {str(source)!r} is invalid: {err}") from None


def tables_root() -> Path:
    """Where table files live: ``$MZOO_LATENCY_TABLES`` if set, else this package's directory."""
    override = os.environ.get(TABLES_ENV)
    return Path(override) if override else Path(__file__).resolve().parent


def table_path(device: str, space: str, root: Path | None = None) -> Path:
    """``<root>/<device>/<space>.json``; refuses names that are not plain slugs (no separators, no ``..``)."""
    _check_slug("device", device)
    _check_slug("space", space)
    return (tables_root() if root is None else Path(root)) / device / f"{space}.json"


def table_lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file a build holds while it writes the table file ``path``: ``<space>.json.lock`` beside it
    (not a ``*.json``, so never read as a table)."""
    table = Path(path)
    return table.with_name(f"{table.name}.lock")


def list_devices(root: Path | None = None) -> list[str]:
    """Devices (sorted) that have at least one table file under ``root``."""
    base = tables_root() if root is None else Path(root)
    if not base.is_dir():
        return []
    return sorted(d.name for d in base.iterdir() if d.is_dir() and _table_files(d))


def load_tables(device: str, root: Path | None = None) -> list[LatencyTable]:
    """Every table of ``device``, sorted by space; raises ``NoTablesError`` naming the device and known ones.

    Each file must hold the device and space its path names, so a copied or renamed file cannot pass
    for another device's numbers.
    """
    _check_slug("device", device)
    base = tables_root() if root is None else Path(root)
    files = _table_files(base / device)
    if not files:
        known = ", ".join(list_devices(base)) or "none"
        raise NoTablesError(f"no latency tables for device {device!r} under {str(base)!r} (devices with tables: "
                            f"{known}); build one with latency_tables.build.build_table")
    tables = []
    for path in files:
        table = LatencyTable.load(path)
        if table.device != device or table.space != path.stem:
            raise LatencyTableError(f"latency table {str(path)!r} holds device {table.device!r} and space "
                                    f"{table.space!r}, but its path says {device!r} and {path.stem!r}")
        tables.append(table)
    return tables


def _table_files(directory: Path) -> list[Path]:
    # Dot-files are temporaries of atomic writes in flight (common.files.temporary_path).
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if not p.name.startswith(".") and p.is_file())


def _fields_of(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The dataclass fields of ``cls`` from ``data``: required ones must be present, unknown ones are refused."""
    if not isinstance(data, Mapping):
        raise LatencyTableError(f"{what} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise LatencyTableError(f"{what} is missing field(s) {missing}")
    unknown = sorted(set(data) - names)
    if unknown:
        raise LatencyTableError(f"{what} has unknown field(s) {unknown}")
    return dict(data)


def _entry(key: object, data: object) -> Entry:
    if not isinstance(key, str) or not key:
        raise LatencyTableError(f"entry key {key!r} is not a non-empty string")
    try:
        return Entry.from_dict(data)  # type: ignore[arg-type]
    except (LatencyTableError, TypeError) as err:
        raise LatencyTableError(f"entry {key!r}: {err}") from None


def _input_size(size: object) -> tuple[int, int, int]:
    if (not isinstance(size, (list, tuple)) or len(size) != 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in size)):
        raise LatencyTableError(f"input size {size!r} is not (C, H, W) of positive ints")
    return tuple(size)  # type: ignore[return-value]


def _check_ms(name: str, value: object, required: bool) -> None:
    """``name`` (e.g. "Entry.min_ms") holds a finite number >= 0 (or None, when not ``required``)."""
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise LatencyTableError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_count(name: str, value: object, minimum: int) -> None:
    """``name`` (e.g. "Entry.n") holds an int >= ``minimum`` (a bool is no count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LatencyTableError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_slug(what: str, name: object) -> None:
    if not isinstance(name, str) or not _SLUG.match(name) or ".." in name:
        raise LatencyTableError(f"{what} {name!r} is not a valid name (letters, digits, '.', '_', '+', '-'; "
                                f"no path separators)")
