"""The latency predictor: a spec's latency on a device as the sum of its ops' table entries plus the overhead.

:class:`Predictor` walks a spec with :func:`zoo.iter_ops` (the one walker), looks every op key up in one
device's tables and adds the per-network :class:`~latency_tables.table.Overhead` of the table that covers
the spec best (or of the table of the space the caller names), so that the prediction is calibrated on
whole networks measured on that device. A key no table holds is an error (:class:`MissingKeysError`)
unless the caller asks for interpolation: then it is estimated from measured entries of the same op
signature (same kind, kernel, stride, expansion, groups, activation and suffixes; only channel counts and
spatial size differ) by linear interpolation of latency against MACs between the nearest measured
neighbours, clamped outside the measured range, and flagged in the :class:`Prediction`.
"""

from __future__ import annotations

import bisect
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from common.errors import InputError, MzooError
import zoo
from zoo.costs import OpCost
from zoo.spec import AnySpec

from .table import LatencyTable, NoTablesError, load_tables

_SHOWN_KEYS = 3
_KEY = re.compile(r"^(?P<kind>.+?)-in(?P<ic>\d+)x(?P<ih>\d+)x(?P<iw>\d+)"
                  r"-out(?P<oc>\d+)x(?P<oh>\d+)x(?P<ow>\d+)-(?P<rest>k\d+-s\d+-.*)$")
# Suffixes that are channel counts (explicit hidden width, inner group widths): part of the width, not the
# signature. Their presence and the number of inner groups stay in the signature.
_MID_SUFFIX = re.compile(r"^m\d+$")
_INNER_SUFFIX = re.compile(r"^i\d+(x\d+)*$")


class MissingKeysError(MzooError, LookupError):
    """Op keys of a spec that no table of the device holds (and that could not be interpolated)."""

    def __init__(self, keys: Sequence[str], device: str, spaces: Sequence[str], interpolate: bool = False) -> None:
        self.keys = tuple(keys)
        self.device = device
        self.spaces = tuple(spaces)
        self.interpolate = interpolate
        shown = ", ".join(self.keys[:_SHOWN_KEYS]) + (", ..." if len(self.keys) > _SHOWN_KEYS else "")
        tables = ", ".join(self.spaces) or "none"
        if interpolate:
            why = (f"{len(self.keys)} op key(s) are not in the latency tables of device {device!r} (tables: {tables}) "
                   f"and no measured entry shares their op signature, so they cannot be interpolated: {shown}; "
                   f"build the table for the space this spec comes from (latency_tables.build.build_table)")
        else:
            why = (f"{len(self.keys)} op key(s) are not in the latency tables of device {device!r} (tables: {tables}): "
                   f"{shown}; build the table for the space this spec comes from "
                   f"(latency_tables.build.build_table) or pass interpolate=True")
        super().__init__(why)

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # The default pickles self.args (the message), which does not fit __init__ (pytest-xdist, multiprocessing).
        return (type(self), (self.keys, self.device, self.spaces, self.interpolate))


class _Named(Protocol):
    name: str


class _Space(Protocol):
    """What :meth:`Predictor.predict_arch` needs of a :class:`zoo.spaces.SearchSpace`."""

    name: str

    def to_spec(self, arch: Any) -> tuple[AnySpec, tuple[int, int, int]]: ...


@dataclass(frozen=True)
class PredictedOp:
    """One op's share of a prediction; ``table`` is the space of the table its number came from.

    ``interpolated`` ops were estimated from same-signature neighbours; ``extrapolated`` ones lay outside
    the neighbours' MAC range and were clamped.
    """

    name: str
    key: str
    ms: float
    table: str
    interpolated: bool = False
    extrapolated: bool = False



def kind_sums(ops: Sequence[OpCost], ms: Sequence[float]) -> dict[str, tuple[int, float]]:
    """``{op kind: (count, Σ ms)}`` of a network's ops: what :meth:`Overhead.network_ms` takes as ``kind_ops``."""
    sums: dict[str, tuple[int, float]] = {}
    for op, value in zip(ops, ms, strict=True):
        count, total = sums.get(op.kind, (0, 0.0))
        sums[op.kind] = (count + 1, total + value)
    return sums

@dataclass(frozen=True)
class Prediction:
    """Predicted latency of one spec: ``total_ms = ops_ms + overhead_ms``.

    ``overhead_table`` is the space of the table whose calibrated overhead was added (None when it had
    none); ``complete`` is False when a table used was a partial build; ``notes`` say what to be wary of.
    """

    total_ms: float
    ops_ms: float
    overhead_ms: float
    ops: tuple[PredictedOp, ...]
    interpolated_keys: tuple[str, ...]
    overhead_table: str | None
    device: str
    complete: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Measured:
    """A table entry as an interpolation neighbour."""

    key: str
    size: float
    ms: float
    hw: tuple[int, int, int, int]


class Predictor:
    """Predicts latency on one device from its tables. Nothing is read or measured beyond the tables given."""

    def __init__(self, tables: Sequence[LatencyTable]) -> None:
        tables = list(tables)
        if not tables:
            raise InputError("Predictor needs at least one latency table, got none")
        devices = sorted({t.device for t in tables})
        if len(devices) > 1:
            raise InputError(f"Predictor tables must all be for one device, got {devices}")
        spaces = [t.space for t in tables]
        duplicated = sorted({s for s in spaces if spaces.count(s) > 1})
        if duplicated:
            raise InputError(f"Predictor got more than one table for space(s) {duplicated} of device {devices[0]!r}")
        statistics = sorted({t.statistic for t in tables})
        if len(statistics) > 1:
            raise InputError(f"Predictor tables of device {devices[0]!r} sum different statistics {statistics}; "
                             "rebuild them with one")
        self.device: str = devices[0]
        self.statistic: str = statistics[0]  # what predictions (and the measurements they are compared with) mean
        self.tables: tuple[LatencyTable, ...] = tuple(sorted(tables, key=lambda t: t.space))
        self._by_signature: dict[str, list[_Measured]] | None = None  # built on the first interpolation

    @classmethod
    def for_device(cls, device: str | _Named, root: Path | None = None) -> Predictor:
        """A predictor over every table of ``device`` (a name or a Device) under ``root`` (default tables root)."""
        name = device if isinstance(device, str) else device.name
        return cls(load_tables(name, root))

    def predict(self, spec: AnySpec, input_size: int | Sequence[int], *, interpolate: bool = False,
                space: str | _Named | None = None) -> Prediction:
        """Predict ``spec`` at ``input_size`` (int, (H, W) or (C, H, W)).

        Raises :class:`MissingKeysError` for keys no table holds (with ``interpolate=True``, only for keys
        whose op signature no table has measured) and ``LookupError`` when ``space`` names no table.
        """
        ops = list(zoo.iter_ops(spec, input_size))
        chosen = self._choose_table(ops, space)
        order = [chosen] + [t for t in self.tables if t is not chosen]
        found: dict[str, tuple[float, str]] = {}
        missing: list[str] = []
        for op in ops:
            if op.key in found or op.key in missing:
                continue
            table = next((t for t in order if op.key in t.entries), None)
            if table is None:
                missing.append(op.key)
            else:
                found[op.key] = (table.entries[op.key].value(self.statistic), table.space)
        estimated: dict[str, tuple[float, bool]] = {}
        if missing and not interpolate:
            raise MissingKeysError(missing, self.device, [t.space for t in self.tables])
        if missing:
            by_key = {op.key: op for op in ops}
            estimated = {key: est for key in missing if (est := self._interpolate(by_key[key])) is not None}
            unmatched = [key for key in missing if key not in estimated]
            if unmatched:
                raise MissingKeysError(unmatched, self.device, [t.space for t in self.tables], interpolate=True)
        return self._prediction(ops, chosen, found, estimated)

    def predict_arch(self, space: _Space, arch: Any, *, interpolate: bool = False) -> Prediction:
        """Predict an architecture of ``space``, using that space's table for the overhead."""
        spec, input_size = space.to_spec(arch)
        return self.predict(spec, input_size, interpolate=interpolate, space=space)

    def _choose_table(self, ops: Sequence[OpCost], space: str | _Named | None) -> LatencyTable:
        """The named space's table, else the one holding most of the spec's keys (ties: complete, then name)."""
        if space is not None:
            name = space if isinstance(space, str) else space.name
            for table in self.tables:
                if table.space == name:
                    return table
            raise NoTablesError(f"device {self.device!r} has no latency table for space {name!r} "
                              f"(tables: {', '.join(t.space for t in self.tables)})")
        keys = {op.key for op in ops}
        return max(self.tables, key=lambda t: (sum(k in t.entries for k in keys), t.complete, -self.tables.index(t)))

    def _prediction(self, ops: Sequence[OpCost], chosen: LatencyTable, found: dict[str, tuple[float, str]],
                    estimated: dict[str, tuple[float, bool]]) -> Prediction:
        predicted = []
        for op in ops:
            if op.key in found:
                ms, table = found[op.key]
                predicted.append(PredictedOp(op.name, op.key, ms, table))
            else:
                ms, clamped = estimated[op.key]
                predicted.append(PredictedOp(op.name, op.key, ms, "", interpolated=True, extrapolated=clamped))
        notes = []
        used = {chosen.space} | {p.table for p in predicted if p.table}
        if estimated:
            used |= {t.space for t in self.tables}  # interpolation may draw on any table
        partial = sorted(t.space for t in self.tables if t.space in used and not t.complete)
        if partial:
            message = (f"latency table(s) {partial} of device {self.device!r} are incomplete (a build in progress "
                       f"or interrupted): the prediction uses partial data")
            warnings.warn(message, stacklevel=3)
            notes.append(message)
        ops_ms = sum(p.ms for p in predicted)
        if chosen.overhead is None:
            notes.append(f"table {chosen.space!r} has no calibrated overhead: overhead counted as 0 ms")
            overhead_ms = 0.0
        else:
            overhead_ms = chosen.overhead.ms(len(ops), ops_ms, kind_sums(ops, [p.ms for p in predicted]))
        clamped = sorted({p.key for p in predicted if p.extrapolated})
        if clamped:
            notes.append(f"{len(clamped)} interpolated op(s) lie outside the MAC range of their measured "
                         f"neighbours and were clamped: {', '.join(clamped[:_SHOWN_KEYS])}")
        return Prediction(
            total_ms=ops_ms + overhead_ms,
            ops_ms=ops_ms,
            overhead_ms=overhead_ms,
            ops=tuple(predicted),
            interpolated_keys=tuple(estimated),
            overhead_table=chosen.space if chosen.overhead is not None else None,
            device=self.device,
            complete=not partial,
            notes=tuple(notes),
        )

    def _interpolate(self, op: OpCost) -> tuple[float, bool] | None:
        """``(ms, clamped)`` for ``op`` from same-signature entries, or None when there are none."""
        parsed = _parse_key(op.key)
        if parsed is None:
            return None
        signature, hw = parsed
        candidates = self._signatures().get(signature, [])
        if not candidates:
            return None
        # Latency per MAC differs between a wider and a larger-resolution op; prefer neighbours at the same
        # spatial size when there are enough of them to interpolate.
        same_hw = [c for c in candidates if c.hw == hw]
        if len(same_hw) >= 2 or (same_hw and len(candidates) == 1):
            candidates = same_hw
        return _interpolate_1d(_size(op.macs, op.in_chs, hw), candidates)

    def _signatures(self) -> dict[str, list[_Measured]]:
        if self._by_signature is None:
            index: dict[str, list[_Measured]] = {}
            for table in self.tables:
                for key, entry in table.entries.items():
                    parsed = _parse_key(key)
                    if parsed is None:
                        continue
                    signature, hw = parsed
                    in_chs = int(_KEY.match(key)["ic"])  # type: ignore[index]
                    index.setdefault(signature, []).append(
                        _Measured(key, _size(entry.macs, in_chs, hw), entry.value(self.statistic), hw))
            self._by_signature = index
        return self._by_signature


def op_signature(key: str) -> str | None:
    """The key without channel counts and spatial size (what interpolation matches on); None if not a walker key."""
    parsed = _parse_key(key)
    return None if parsed is None else parsed[0]


def _parse_key(key: str) -> tuple[str, tuple[int, int, int, int]] | None:
    """``(signature, (in_h, in_w, out_h, out_w))`` of a walker key, or None for a key of another form."""
    match = _KEY.match(key)
    if match is None:
        return None
    parts = []
    for part in match["rest"].split("-"):
        if _MID_SUFFIX.match(part):
            part = "m*"
        elif _INNER_SUFFIX.match(part):
            part = "i" + "x".join("*" for _ in part.split("x"))
        parts.append(part)
    hw = (int(match["ih"]), int(match["iw"]), int(match["oh"]), int(match["ow"]))
    return f"{match['kind']}-{'-'.join(parts)}", hw


def _size(macs: int, in_chs: int, hw: tuple[int, int, int, int]) -> float:
    # Ops without MACs (pools, identities) scale with the activation they move instead.
    return float(macs) if macs > 0 else float(in_chs * hw[0] * hw[1])


def _interpolate_1d(x: float, points: Iterable[_Measured]) -> tuple[float, bool]:
    """Piecewise-linear latency at size ``x`` through ``points``; outside their range, clamped.

    Outside the range the line through the two nearest distinct points is followed, but only between the
    nearest point's latency and that latency scaled in proportion to size: a fixed per-call cost makes
    latency grow no faster than proportionally, and it never shrinks as the op grows.
    """
    by_size: dict[float, list[float]] = {}
    for p in points:
        by_size.setdefault(p.size, []).append(p.ms)
    xs = sorted(by_size)
    ys = [sum(by_size[s]) / len(by_size[s]) for s in xs]
    if x in by_size:
        return ys[xs.index(x)], False
    i = bisect.bisect_left(xs, x)
    if 0 < i < len(xs):
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0), False
    near = 0 if i == 0 else len(xs) - 1
    xn, yn = xs[near], ys[near]
    if len(xs) == 1:
        line = yn
    else:
        other = 1 if near == 0 else near - 1
        slope = (ys[other] - yn) / (xs[other] - xn)
        line = yn + slope * (x - xn)
    proportional = yn * x / xn if xn > 0 else yn
    low, high = sorted((yn, proportional))
    return min(max(line, low), high), True
