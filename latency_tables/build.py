"""Building a latency table: measure every op key of a search space on a device, then calibrate the overhead.

:func:`build_table` enumerates the space's op keys (:func:`zoo.spaces.op_keys`, the union of the
walker's ops over the space's covering specs), measures each one as a standalone module
(:func:`zoo.ops.op_module`) with ``device.measure``, and checkpoints the partial table (``complete=False``)
atomically as it goes and on Ctrl-C, so a long build on a phone or a remote agent resumes where it
stopped, after checking that the saved table was measured the same way. It then measures what one runtime call
costs (:func:`measure_call_ms`: a trivial module, same protocol), because every entry was timed as its own call
and includes that fixed cost (dispatch, input/output binding, thread-pool wake-up) which a network, one call for
all its ops, pays once; and it measures random networks of the space end to end to fit the rest of the
per-network :class:`~latency_tables.table.Overhead` (:func:`fit_overhead`): with ``S = Σ entries − call × n_ops``,
``measured − S = intercept + scale × S``. The intercept is what only whole networks run (global pooling, flatten,
DARTS node sums) plus their one call; ``scale`` is how much slower (or faster) ops run inside a network than
alone: alone, their weights stay hot in the caches between timed runs; inside, the runtime may fuse across op
boundaries (on this project's 2-core EPYC VM, fitted between -10 % and +12 % depending on the space; a
constant overhead left NAS-Bench-Macro networks of 0.4-3 ms between -10 % and +47 % off).

A build holds the table's lock file (:func:`~latency_tables.table.table_lock_path`, the builder's pid inside) from
before it reads the saved table until its last write, so a second build of the same table refuses at once with
``LockHeldError`` naming the lock file and the pid; a lock whose process died is taken over. And a checkpoint
never replaces a table on disk that is more complete than it (complete, or holding a superset of its entries):
whatever wrote that, the finished work and its fitted overhead are not lost to a partial one.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch import nn
from tqdm import tqdm

from common.errors import InputError
from common.files import exclusive_lock
import zoo
from latency_tables.devices import Device
from latency_tables.measure import BenchConfig, LatencyResult
from zoo.spaces import SearchSpace, layout_variants, op_keys, sample_distinct
from zoo.costs import OpCost
from zoo.deploy import FUSABLE_KIND, deploy_spec, fusable_blocks
from zoo.ops import op_module

from .predict import kind_sums
from .table import (DEFAULT_STATISTIC, IMPLAUSIBLE_FACTOR, CalibrationNetwork, Entry, LatencyTable,
                    LatencyTableError, Overhead, implausible_entries, table_lock_path, table_path)

DTYPE = "float32"
_MIN_FIT_NETWORKS = 3
_OUTLIER_FLOOR = 1e-3  # ... and more than 0.1 % off: an error that small is no interference burst
_OUTLIER_MADS = 3.0  # calibration networks whose residual is this many (normal-scaled) MADs off are refit without
_CALL_LABEL = "runtime-call"
_MAX_SAMPLE_TRIES = 20  # per wanted network: how hard to look for distinct architectures in a small space


class TableMismatchError(LatencyTableError):
    """A saved partial table was measured differently (device, runtime, protocol...) from the build resuming it."""


@dataclass(frozen=True)
class _Context:
    """Everything that stamps a table of this build, from the device, the space and the protocol."""

    device: str
    space: str
    runtime: str
    runtime_version: str | None
    fingerprint: str | None
    environment: Mapping[str, Any] | None
    cfg: BenchConfig
    input_sizes: tuple[tuple[int, int, int], ...]

    def table(self, entries: Mapping[str, Entry], overhead: Overhead | None, complete: bool,
              created: str | None = None) -> LatencyTable:
        return LatencyTable(
            device=self.device, space=self.space, source="measured", runtime=self.runtime,
            runtime_version=self.runtime_version, threads=self.cfg.threads, dtype=DTYPE,
            batch_size=self.cfg.batch_size, protocol=asdict(self.cfg), environment=self.environment,
            fingerprint=self.fingerprint, created=created or _now(), input_sizes=self.input_sizes,
            entries=entries, overhead=overhead, complete=complete,
        )


def build_table(
    space: SearchSpace,
    device: Device,
    *,
    cfg: BenchConfig,
    path: Path | None = None,
    resume: bool = True,
    restart: bool = False,
    calibration_networks: int = 20,
    seed: int = 0,
    progress: bool = True,
    checkpoint_every: int = 10,
    recalibrate: bool = False,
    calibration_rounds: int = 3,
    passes: int = 1,
) -> LatencyTable:
    """Measure ``space``'s op keys on ``device`` into ``path`` (default ``table_path(device, space)``).

    Every key is measured ``passes`` times, in round-robin passes over the keys, and keeps its fastest pass
    (:class:`Entry` records how many): a shared VM runs in phases, and an op timed once in a slow one stays slow
    in the table (exploratory, on a 2-core Xeon VM: 8 % of an ORT table's 550 entries 20 % or more apart between two
    passes, nearly all of them slower in the first; the fastest of two passes took the zoo's HGCNets from 6 to 7
    of 8 predicted within ±10 %). A complete table measured in fewer passes gets the missing ones (checkpointed
    as a partial table until they are done) and its overhead is fitted again.

    An existing file at ``path`` is resumed (``resume=True``: only keys it lacks are measured, entries for keys
    the space no longer produces are dropped with a warning, after its
    device, space, runtime and version, fingerprint, threads, dtype, batch and protocol are checked against
    this build, else :class:`TableMismatchError` naming the field) or replaced (``restart=True``); with
    neither it is an error. A table that is already complete is returned as it is, unless ``recalibrate``: then its
    entries are kept and only its overhead is measured and fitted again (after the overhead model changed, or to
    calibrate under the conditions the table will be used in). Then
    ``calibration_networks`` random architectures (seeded by ``seed``) are measured end to end to fit the
    overhead (0 leaves it uncalibrated), each ``calibration_rounds`` times round-robin (its fastest counts), and the
    complete table is saved and returned. The partial table is
    saved every ``checkpoint_every`` new entries and when the build stops on an exception or Ctrl-C;
    calibration is not checkpointed (an interrupted calibration reruns in full). The whole build holds the
    table's lock file: another build of it running raises ``common.files.LockHeldError`` before anything is
    measured.
    """
    if checkpoint_every < 1:
        raise InputError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if calibration_networks < 0:
        raise InputError(f"calibration_networks must be >= 0, got {calibration_networks}")
    _require_count("calibration_rounds", calibration_rounds)
    _require_count("passes", passes)
    target = Path(path) if path is not None else table_path(device.name, space.name)
    with exclusive_lock(table_lock_path(target), f"latency table {str(target)!r}"):
        return _build_locked(space, device, cfg, target, resume, restart, calibration_networks, seed, progress,
                             checkpoint_every, recalibrate, calibration_rounds, passes)


def _build_locked(space: SearchSpace, device: Device, cfg: BenchConfig, target: Path, resume: bool, restart: bool,
                  calibration_networks: int, seed: int, progress: bool, checkpoint_every: int,
                  recalibrate: bool = False, calibration_rounds: int = 3, passes: int = 1) -> LatencyTable:
    keys = op_keys(space)
    context = _context(space, device, cfg)
    saved = _saved_table(target, context, resume=resume, restart=restart)
    entries = dict(saved.entries) if saved is not None else {}
    stale = sorted(set(entries) - set(keys))
    if stale:
        # The space (or the walker) changed since these were measured: the space says which ops exist.
        warnings.warn(f"latency table {str(target)!r}: dropping {len(stale)} entries whose op keys space "
                      f"{space.name!r} no longer produces (e.g. {stale[0]}); the overhead is refitted", stacklevel=2)
        entries = {k: v for k, v in entries.items() if k in keys}
    created = saved.created if saved is not None else _now()
    unchanged = saved is not None and not stale and keys.keys() == entries.keys()
    if recalibrate and (saved is None or not calibration_networks):
        raise InputError(f"--recalibrate refits the overhead of an existing table with --calibration N > 0; "
                         f"{str(target)!r} " + ("does not exist" if saved is None else "would be left uncalibrated"))
    measured_enough = all(e.passes >= passes for e in entries.values())
    if unchanged and saved.complete and saved.overhead is not None and not recalibrate and measured_enough:
        return saved
    entries = _measure_keys(keys, entries, device, context, target, created, progress, checkpoint_every, passes)
    _warn_implausible(entries, target)
    overhead = None
    if calibration_networks:
        partial = context.table(entries, None, complete=False, created=created)
        try:
            overhead = calibrate_overhead(space, device, partial, cfg, calibration_networks, seed, progress,
                                          rounds=calibration_rounds)
        except BaseException:
            _save_progress(partial, target)  # the entries are safe even if calibration fails; a rerun recalibrates
            raise
    table = context.table(entries, overhead, complete=True, created=created)
    table.save(target)
    return table


def _warn_implausible(entries: Mapping[str, Entry], target: Path) -> None:
    """Say when entries look like interference rather than their op (:func:`latency_tables.table.implausible_entries`).

    They are kept: the builder cannot tell what they should have been, and a rebuild on a quiet machine can."""
    slow = implausible_entries(entries, DEFAULT_STATISTIC)
    if slow:
        key, ratio = slow[0]
        warnings.warn(f"latency table {str(target)!r}: {len(slow)} entr{'y' if len(slow) == 1 else 'ies'} take "
                      f"more than {IMPLAUSIBLE_FACTOR:g}x the median time per MAC of their op kind "
                      f"(worst {key}: {ratio:.0f}x): "
                      f"that is interference (another load on the measured CPU, scheduler slices), not the op; "
                      f"rebuild on a quiet machine with --restart", stacklevel=3)


def measure_call_ms(device: Device, cfg: BenchConfig, statistic: str) -> float:
    """The fixed cost of one runtime call on ``device``: ``statistic`` of a ReLU on one value, timed alone."""
    result = device.measure(nn.ReLU(), (cfg.batch_size, 1, 1, 1), cfg, _CALL_LABEL)
    _check_threads(result, cfg.threads, _CALL_LABEL)
    return float(getattr(result, statistic))


class _CalibrationNet(NamedTuple):
    """A calibration network, built and priced from the table before any network is measured."""

    label: str
    model: nn.Module
    input_shape: tuple[int, ...]
    ops: list[OpCost]
    values: list[float]  # each op's entry, on the table's statistic


def _require_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be an int >= 1, got {value!r}")


def calibrate_overhead(space: SearchSpace, device: Device, table: LatencyTable, cfg: BenchConfig,
                       networks: int, seed: int = 0, progress: bool = True, *, rounds: int = 3) -> Overhead:
    """Measure the runtime call cost and ``networks`` distinct random architectures of ``space`` end to end, and
    fit the overhead.

    Every op of a sampled network must be in ``table``: a key it lacks means the space's covering specs
    miss it, and is reported as such before anything is measured. Networks and entries are compared on the
    table's ``statistic``. In a space with HGC blocks every other network is measured with them fused
    (:func:`zoo.deploy.deploy_spec`), so that the overhead is fitted on the deployed form too; in a space with
    several input layouts (:func:`zoo.spaces.layout_variants`) the networks take each layout in turn, for the same
    reason. The networks are measured ``rounds`` times, round-robin, and each one's fastest round counts: a shared
    VM runs in phases (exploratory, on a 2-core Xeon VM: the same MobileNetV2 at 6.8 ms or at 10.9 ms from one second
    to the next), so one pass put each network in whatever phase it met and the fit followed the phases.
    Interference only ever adds time, so the fastest round is the one it touched least, as ``min_ms`` is within a
    round. From the 60 networks × 3 rounds that ``intel-xeon-f6m207-ort-t1/hgcnet_width`` keeps
    (``bench/lut_calibration.py``): fitted on each network's fastest round, 60 within ±10 % (worst 7.2 %); on its
    median round 59 (worst 11.5 %); on its first round alone, as one pass measured, 57 (worst 42 %).
    """
    _require_count("calibration rounds", rounds)
    rng = random.Random(seed)
    archs = sample_distinct(space, rng, networks, _MAX_SAMPLE_TRIES)
    variants = layout_variants(space)
    nets: list[_CalibrationNet] = []  # every network is checked before the first one is measured
    for i, arch in enumerate(archs):
        spec, input_size = variants[(i // 2) % len(variants)].to_spec(arch)
        fused = i % 2 == 1 and bool(fusable_blocks(spec))
        if fused:  # every other network of a space with HGC blocks runs deployed, so the fit covers both forms
            spec = deploy_spec(spec, "all")
        ops = list(zoo.iter_ops(spec, input_size))
        lacking = [op.key for op in ops if op.key not in table.entries]
        if lacking:
            raise LatencyTableError(f"architecture {arch!r} of space {space.name!r} has op key {lacking[0]!r} "
                                    f"that the space's covering specs do not produce ({len(lacking)} such keys)")
        label = f"{space.name}:{arch!r}" + (" fused" if fused else "")
        values = [table.entries[op.key].value(table.statistic) for op in ops]
        nets.append(_CalibrationNet(label, zoo.build_model(spec).eval(), (cfg.batch_size, *input_size), ops, values))
    call_ms = measure_call_ms(device, cfg, table.statistic)
    times: list[list[float]] = [[] for _ in nets]
    bar = tqdm(total=len(nets) * rounds, desc=f"{device.name}/{space.name} calibration", unit="net",
               file=sys.stderr, disable=not progress)
    with bar:
        for _ in range(rounds):
            for net, samples in zip(nets, times):
                result = device.measure(net.model, net.input_shape, cfg, net.label)
                _check_threads(result, cfg.threads, net.label)
                samples.append(float(getattr(result, table.statistic)))
                bar.update()
    kinds = [kind_sums(net.ops, net.values) for net in nets]
    # The two forms of an HGC block run at different efficiency inside a network: the HGC form's gets its own scale.
    own = (FUSABLE_KIND,) if any(FUSABLE_KIND in k for k in kinds) else ()
    return fit_overhead([min(t) for t in times], [sum(net.values) for net in nets], [len(net.ops) for net in nets],
                        call_ms, kind_ops=kinds, kinds=own, labels=[net.label for net in nets],
                        rounds_ms=times if rounds > 1 else None)


def fit_overhead(measured_ms: Sequence[float], ops_ms: Sequence[float], n_ops: Sequence[int],
                 call_ms: float = 0.0, *, kind_ops: Sequence[Mapping[str, tuple[int, float]]] | None = None,
                 kinds: Sequence[str] = (), labels: Sequence[str] | None = None,
                 rounds_ms: Sequence[Sequence[float]] | None = None) -> Overhead:
    """Fit ``measured − S = intercept + scale × S`` over networks, where ``S = ops − call_ms × n_ops``.

    With ``kinds`` (and each network's ``kind_ops``, ``{kind: (count, Σ entries)}``), each named kind gets a
    scale of its own on top: ``+ kind_scale × S_kind`` (``S_kind`` its ops' entries less a call each), fitted in
    the same least squares; a kind whose column adds nothing (absent everywhere, or collinear) is left out.
    Least squares on *relative* errors (each network's residual divided by its measured latency), fitted
    without networks whose relative residual lies more than 3 normal-scaled MADs from the fit (a calibration
    network caught by a burst of interference would otherwise tilt the line). Relative, because a prediction is
    judged relative to the network (±10 %): absolute least squares over networks of 1.5-15 ms is steered by the
    largest ones, and on this project's Zen 5 VM its XNNPACK fit (intercept 0.26 ms) overpredicted the 1.4 ms
    networks by 30 % while the 12 ms ones were within 5 %. With fewer than 3 networks, or when they all have the
    same ``S``, ``scale`` is 0 and the intercept is the median residual. With ``labels`` (one per network), the
    networks' measurements are kept in the overhead (``Overhead.networks``), with each network's per-round
    figures when ``rounds_ms`` gives them (``measured_ms`` is then their fastest).
    """
    if not (len(measured_ms) == len(ops_ms) == len(n_ops)):
        raise InputError(f"fit_overhead needs equally long inputs, got {len(measured_ms)}, {len(ops_ms)}, {len(n_ops)}")
    if not measured_ms:
        raise InputError("fit_overhead needs at least one measured network, got none")
    if not (math.isfinite(call_ms) and call_ms >= 0):
        raise InputError(f"fit_overhead: call_ms must be finite and >= 0, got {call_ms!r}")
    if kinds and (kind_ops is None or len(kind_ops) != len(measured_ms)):
        raise InputError("fit_overhead: kinds need one kind_ops mapping per network")
    if labels is not None and len(labels) != len(measured_ms):
        raise InputError(f"fit_overhead: {len(labels)} label(s) for {len(measured_ms)} network(s)")
    if rounds_ms is not None and len(rounds_ms) != len(measured_ms):
        raise InputError(f"fit_overhead: {len(rounds_ms)} rounds_ms for {len(measured_ms)} network(s)")
    records = tuple(CalibrationNetwork(label, float(m), int(c), float(o), (kind_ops or [{}] * len(labels))[i],
                                       tuple(rounds_ms[i]) if rounds_ms is not None else ())
                    for i, (label, m, c, o) in enumerate(zip(labels, measured_ms, n_ops, ops_ms))) if labels else ()
    net = np.asarray(ops_ms, dtype=np.float64) - call_ms * np.asarray(n_ops, dtype=np.float64)
    residual = np.asarray(measured_ms, dtype=np.float64) - net
    n = len(residual)
    call = f"call {call_ms:.4g} ms subtracted per op"
    columns = {kind: np.asarray([ms - call_ms * count for count, ms in (k.get(kind, (0, 0.0)) for k in kind_ops)])
               for kind in kinds} if kinds and kind_ops is not None else {}
    measured = np.asarray(measured_ms, dtype=np.float64)
    fitted = None
    if n >= _MIN_FIT_NETWORKS and np.ptp(net) > 0 and np.all(measured > 0):
        fitted = _robust_fit(net, columns, residual, 1.0 / measured)
    if fitted is not None:
        intercept, scale, own, kept, rms = fitted
        dropped = f", {n - kept} outlier(s) dropped" if kept < n else ""
        extra = "".join(f" + {kind}_scale x S_{kind}" for kind in own)
        note = (f"least squares on relative errors over {n} networks{dropped} ({call}): measured - S = intercept "
                f"+ scale x S{extra}, S = sum of entries - call x n_ops; RMS error {100 * rms:.3g} %")
        return Overhead(intercept, 0.0, n, note, scale=scale, call_ms=call_ms, kind_scales=own, networks=records)
    why = f"only {n} network(s)" if n < _MIN_FIT_NETWORKS else "every network has the same op sum"
    note = f"median of measured - S over {n} networks ({why}; {call}); scale fixed at 0"
    return Overhead(float(statistics.median(residual.tolist())), 0.0, n, note, call_ms=call_ms, networks=records)


def _robust_fit(x: np.ndarray, columns: Mapping[str, np.ndarray], y: np.ndarray, weights: np.ndarray
                ) -> tuple[float, float, dict[str, float], int, float] | None:
    """``(intercept, scale, {kind: scale}, points kept, weighted RMS)`` of y on [1, x, columns...] by least squares
    with each point's error multiplied by its weight, without outliers (:func:`_loo_outliers`, on weighted errors); a
    column that is all zero or leaves the design rank-deficient is dropped first. A negative intercept is held at 0
    and the scales refitted: a line through noisy calibration networks can cross below zero (measured here: -1.15
    ms over 30 HGCNet networks of 3-15 ms), which then predicts a 1.5 ms network 45 % too fast; what only whole
    networks pay is never negative."""
    usable: dict[str, np.ndarray] = {}
    for kind, column in columns.items():
        trial = np.stack([np.ones(len(x)), x, *usable.values(), column], axis=1)
        if np.any(column != 0) and np.linalg.matrix_rank(trial) == trial.shape[1]:
            usable[kind] = column
    design = np.stack([np.ones(len(x)), x, *usable.values()], axis=1)
    w_design, w_y = design * weights[:, None], y * weights
    keep = np.ones(len(x), dtype=bool)
    outliers = _loo_outliers(w_design, w_y)
    if outliers.any() and (~outliers).sum() >= max(_MIN_FIT_NETWORKS, design.shape[1] + 1) \
            and np.linalg.matrix_rank(design[~outliers]) == design.shape[1]:
        keep = ~outliers
    coef, _, rank, _ = np.linalg.lstsq(w_design[keep], w_y[keep], rcond=None)
    if rank < design.shape[1] or not np.all(np.isfinite(coef)):
        return None
    if coef[0] < 0:  # what only whole networks pay cannot be negative: hold it at 0 and refit the scales
        slopes, _, rank, _ = np.linalg.lstsq(w_design[keep][:, 1:], w_y[keep], rcond=None)
        if rank < design.shape[1] - 1 or not np.all(np.isfinite(slopes)):
            return None
        coef = np.concatenate([[0.0], slopes])
    intercept, scale = float(coef[0]), float(coef[1])
    own = {kind: float(c) for kind, c in zip(usable, coef[2:])}
    if scale <= -1 or any(scale + c <= -1 for c in own.values()):  # ops cannot run in less than no time
        return None
    rms = float(np.sqrt(np.mean((w_design[keep] @ coef - w_y[keep]) ** 2)))
    return intercept, scale, own, int(keep.sum()), rms


def _loo_outliers(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points whose leave-one-out error (the error of a fit without them) lies more than ``_OUTLIER_MADS``
    normal-scaled MADs from the median such error. Left out of its own fit, an interference burst shows its full
    size, where in a fit through all points it tilts the line towards itself and hides among the others."""
    n = len(y)
    if n <= design.shape[1] + 1:
        return np.zeros(n, dtype=bool)
    errors = np.zeros(n)
    for i in range(n):
        others = np.arange(n) != i
        coef, _, rank, _ = np.linalg.lstsq(design[others], y[others], rcond=None)
        if rank < design.shape[1]:
            return np.zeros(n, dtype=bool)
        errors[i] = y[i] - design[i] @ coef
    spread = np.abs(errors - np.median(errors))
    return spread > max(_OUTLIER_MADS * 1.4826 * float(np.median(spread)), _OUTLIER_FLOOR)


def _context(space: SearchSpace, device: Device, cfg: BenchConfig) -> _Context:
    info = device.describe()
    environment = info.environment
    if environment is not None and not isinstance(environment, Mapping):
        environment = environment.to_dict()
    sizes = sorted({tuple(int(d) for d in size) for _, size in space.covering_specs()})
    return _Context(device=device.name, space=space.name, runtime=info.runtime,
                    runtime_version=info.runtime_version, fingerprint=info.fingerprint,
                    environment=environment, cfg=cfg, input_sizes=tuple(sizes))  # type: ignore[arg-type]


def _saved_table(target: Path, context: _Context, *, resume: bool, restart: bool) -> LatencyTable | None:
    """The table to resume from, None to start afresh; refuses to resume a table measured differently."""
    if restart or not target.exists():
        return None
    if not resume:
        raise FileExistsError(f"latency table {str(target)!r} exists; pass resume=True to continue it "
                              f"or restart=True to measure it again from scratch")
    saved = LatencyTable.load(target)
    current = context.table({}, None, complete=False, created="")
    for name in ("device", "space", "runtime", "runtime_version", "fingerprint", "threads", "dtype",
                 "batch_size", "protocol"):
        was, now = getattr(saved, name), getattr(current, name)
        if name == "protocol":  # as JSON stores it: a pinned CPU tuple reads back as a list
            was, now = _as_json(was), _as_json(now)
        if was != now:
            if name == "protocol":
                was, now = _protocol_difference(was, now)
            raise TableMismatchError(f"cannot resume latency table {str(target)!r}: its {name} is {was!r} but "
                                     f"this build's is {now!r}; pass restart=True to discard its "
                                     f"{len(saved.entries)} entries and measure again")
    return saved


def _as_json(value: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(dict(value)))


def _protocol_difference(was: Mapping[str, Any], now: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = sorted(set(was) | set(now))
    differ = [n for n in names if was.get(n) != now.get(n)]
    return {n: was.get(n) for n in differ}, {n: now.get(n) for n in differ}


def _measure_keys(keys: Mapping[str, OpCost], entries: dict[str, Entry], device: Device, context: _Context,
                  target: Path, created: str, progress: bool, checkpoint_every: int, passes: int = 1
                  ) -> dict[str, Entry]:
    """Measure every key until it has ``passes`` passes (a key not in ``entries`` has none), pass after pass over
    the keys, keeping each key's fastest pass; checkpointing every ``checkpoint_every`` and on the way out."""
    unsaved = 0
    statistic = DEFAULT_STATISTIC  # the statistic every table is built with

    def checkpoint() -> None:
        nonlocal unsaved
        _save_progress(context.table(entries, None, complete=False, created=created), target)
        unsaved = 0

    done = sum(min(entries[k].passes, passes) for k in keys if k in entries)
    with tqdm(total=len(keys) * passes, initial=done, desc=f"{device.name}/{context.space}",
              unit="op", file=sys.stderr, disable=not progress) as bar:
        try:
            for current in range(1, passes + 1):
                for key in [k for k in keys if k not in entries or entries[k].passes < current]:
                    bar.set_postfix_str(f"pass {current}/{passes} {key}" if passes > 1 else key, refresh=False)
                    op = keys[key]
                    module, input_shape = op_module(op, batch_size=context.cfg.batch_size)
                    result = device.measure(module, input_shape, context.cfg, key)
                    _check_threads(result, context.cfg.threads, key)
                    new = Entry(median_ms=result.median_ms, n=result.n, p10_ms=result.p10_ms,
                                p90_ms=result.p90_ms, std_ms=result.std_ms, macs=op.macs,
                                params=op.params, kind=op.kind, min_ms=result.min_ms,
                                mean_ms=result.mean_ms, passes=current)
                    old = entries.get(key)
                    if old is not None and old.value(statistic) <= new.value(statistic):
                        new = replace(old, passes=current)  # the earlier pass stays: it was faster
                    entries[key] = new
                    unsaved += 1
                    bar.update()
                    if unsaved >= checkpoint_every:
                        checkpoint()
        except BaseException:
            # Ctrl-C, a dropped remote device, a module that will not export: keep what was measured.
            if unsaved:
                checkpoint()
            raise
    return entries


def _save_progress(partial: LatencyTable, target: Path) -> None:
    """Checkpoint ``partial`` unless the file already holds more: a complete table, or a superset of its entries
    (written by a build that did not hold the lock: another host, an older version); then warn instead."""
    try:
        on_disk = LatencyTable.load(target) if target.exists() else None
    except LatencyTableError:
        on_disk = None  # a corrupt file holds nothing worth keeping
    if on_disk is not None and _holds_more(on_disk, partial):
        state = "a complete table" if on_disk.complete else f"{len(on_disk.entries)} entries"
        warnings.warn(f"latency table {str(target)!r} already holds {state}; not replacing it with this build's "
                      f"checkpoint of {len(partial.entries)} entries", stacklevel=3)
        return
    partial.save(target)


def _holds_more(on_disk: LatencyTable, partial: LatencyTable) -> bool:
    """Whether the table on disk holds more than a checkpoint: more keys, or complete where the checkpoint does
    not add passes to the same keys (an extra pass over a complete table checkpoints over it)."""
    if set(on_disk.entries) > set(partial.entries):
        return True
    more_passes = set(on_disk.entries) <= set(partial.entries) and \
        sum(e.passes for e in partial.entries.values()) > sum(e.passes for e in on_disk.entries.values())
    return on_disk.complete and not more_passes


def _check_threads(result: LatencyResult, threads: int, label: str) -> None:
    """A device with its own thread count overrides the protocol's; the table must not be filed under the wrong one."""
    if result.threads != threads:
        raise TableMismatchError(f"device measured {label!r} with {result.threads} thread(s) but cfg.threads is "
                                 f"{threads}; pass a BenchConfig with threads={result.threads}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
