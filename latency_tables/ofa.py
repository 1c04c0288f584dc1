"""Importing Once-for-All's Samsung Note10 latency lookup tables as this project's ``ofa_mbv3`` table.

OFA (Cai et al., ICLR 2020; mit-han-lab/once-for-all, MIT) publishes one YAML per input resolution
(``<res>_lookup_table.yaml``, 160…224 step 4) for its MobileNetV3 w1.2 space, each entry ``{count, mean,
std}`` in ms under keys of its own syntax (``Conv-input:…``, ``expanded_conv-input:…-expand:<hidden>-
kernel:k-stride:s-idskip:0/1-se:0/1-hs:0/1``, ``Conv_1``, ``AvgPool2D``, ``Conv_2``, ``Logits``). This module
owns the mapping from our side: it walks covering :func:`zoo.ofa.ofa_mbv3_spec` subnets at every resolution
with :func:`zoo.iter_ops`, renders each op in OFA's syntax (:func:`ofa_key`; the inverse direction is
ambiguous) and looks it up, so the table it writes is keyed on our own :attr:`zoo.OpCost.key`. An op of ours
that OFA did not measure is an error; OFA entries nothing maps to are counted. Because our keys carry the
op's shapes but not the network's resolution, an op whose shapes occur at several resolutions (the
classifier at all 17, late stages at several) was measured separately in several files: its entry pools
those runs (count-weighted mean, pooled std), and the table's notes give how far the files disagree.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import product
from pathlib import Path

import yaml

import zoo
from zoo.costs import GLOBAL_POOL_KIND, PRE_LOGITS_KINDS, OpCost
from zoo.mbconv import hidden_chs
from zoo.ofa import EXPANDS, KERNELS, OFA_SE, ofa_mbv3_uniform_spec
from zoo.spec import ArchSpec

from .table import Entry, LatencyTable, LatencyTableError, Overhead, table_path

OFA_DEVICE = "samsung-note10-ofa"
OFA_SPACE = "ofa_mbv3"
OFA_SOURCE = "imported:once-for-all note10"
OFA_DATA_DIR = "ofa-note10-lut"  # below common.images.shared_data_dir()
_FILE = re.compile(r"^(\d+)_lookup_table\.yaml$")
_HWC = r"(\d+)x(\d+)x(\d+)"
_KEY_FORMS = (
    re.compile(rf"^(Conv|Conv_1|Conv_2|AvgPool2D)-input:{_HWC}-output:{_HWC}$"),
    re.compile(rf"^Logits-input:{_HWC}-output:(\d+)$"),
    re.compile(rf"^expanded_conv-input:{_HWC}-output:{_HWC}-expand:(\d+)-kernel:(\d+)-stride:(\d+)"
               r"-idskip:[01]-se:[01]-hs:[01]$"),
)


class OfaImportError(LatencyTableError):
    """OFA's tables are missing or malformed, or an op of ours has no entry in them."""


@dataclass(frozen=True)
class OfaEntry:
    """One OFA lookup-table entry: how many runs were timed, their mean and standard deviation (ms)."""

    count: int
    mean_ms: float
    std_ms: float


@dataclass(frozen=True)
class OfaImport:
    """A converted table and what the conversion saw.

    ``unused`` lists ``(resolution, OFA key)`` pairs that no op of ours maps to; ``pooled`` counts our keys
    whose entry pools measurements from several resolution files, and ``max_spread`` is the largest
    ``(max − min) / min`` of the OFA means so pooled.
    """

    table: LatencyTable
    unused: tuple[tuple[int, str], ...]
    pooled: int
    max_spread: float


def read_ofa_tables(src_dir: str | Path) -> dict[int, dict[str, OfaEntry]]:
    """Every ``<res>_lookup_table.yaml`` of ``src_dir``: resolution → OFA key → entry.

    Raises :class:`OfaImportError` naming a missing directory, a directory without tables, a file that is
    not a YAML mapping, an entry without a valid count/mean/std, or a key of a form OFA does not write.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise OfaImportError(f"OFA lookup-table directory {str(src)!r} does not exist")
    files = sorted((int(m.group(1)), p) for p in src.iterdir() if (m := _FILE.match(p.name)))
    if not files:
        raise OfaImportError(f"no <res>_lookup_table.yaml files in {str(src)!r}")
    return {res: _read_file(path, res) for res, path in files}


def _read_file(path: Path, res: int) -> dict[str, OfaEntry]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise OfaImportError(f"cannot read OFA lookup table {str(path)!r}: {err}") from None
    if not isinstance(data, dict) or not data:
        raise OfaImportError(f"OFA lookup table {str(path)!r} is not a non-empty mapping of keys to entries")
    entries = {}
    for key, value in data.items():
        if not isinstance(key, str) or not any(form.match(key) for form in _KEY_FORMS):
            raise OfaImportError(f"OFA lookup table {str(path)!r}: cannot parse key {key!r}")
        if key.startswith("Conv-input:") and not key.startswith(f"Conv-input:{res}x{res}x"):
            raise OfaImportError(f"OFA lookup table {str(path)!r} is named for resolution {res} but holds stem key {key!r}")
        entries[key] = _entry(path, key, value)
    return entries


def _entry(path: Path, key: str, value: object) -> OfaEntry:
    bad = f"OFA lookup table {str(path)!r}: entry {key!r} needs count (int >= 1), mean and std (finite, >= 0)"
    if not isinstance(value, dict) or not {"count", "mean", "std"} <= set(value):
        raise OfaImportError(f"{bad}, got {value!r}")
    count, mean, std = value["count"], value["mean"], value["std"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise OfaImportError(f"{bad}, got count {count!r}")
    for number in (mean, std):
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) or number < 0:
            raise OfaImportError(f"{bad}, got mean {mean!r} and std {std!r}")
    return OfaEntry(count, float(mean), float(std))


def ofa_key(op: OpCost) -> str:
    """``op`` in OFA's lookup-table syntax; raises :class:`OfaImportError` for an op OFA's format cannot name."""
    io = f"input:{op.in_hw[0]}x{op.in_hw[1]}x{op.in_chs}-output:{op.out_hw[0]}x{op.out_hw[1]}x{op.out_chs}"
    block = op.block
    if op.kind == "conv" and op.name == "stem" and op.act == "hswish" and op.groups == 1:
        return f"Conv-{io}"
    if op.kind in ("ir", "ds") and block is not None and op.act in ("relu", "hswish") and op.groups == 1 \
            and block.se in (None, OFA_SE) and block.residual:
        mid = op.in_chs if op.kind == "ds" else hidden_chs(op.in_chs, block)
        skip = int(op.stride == 1 and op.in_chs == op.out_chs)
        return (f"expanded_conv-{io}-expand:{mid}-kernel:{op.kernel}-stride:{op.stride}-idskip:{skip}"
                f"-se:{int(block.se is not None)}-hs:{int(op.act == 'hswish')}")
    if op.kind == "conv" and op.name != "stem" and op.kernel == 1 and op.stride == 1 and op.groups == 1 \
            and op.act == "hswish":
        return f"Conv_1-{io}"
    if op.kind == GLOBAL_POOL_KIND:
        return f"AvgPool2D-{io}"
    if op.kind == PRE_LOGITS_KINDS[False] and op.act == "hswish":
        return f"Conv_2-{io}"
    if op.kind == "linear":
        return f"Logits-input:1x1x{op.in_chs}-output:{op.out_chs}"
    raise OfaImportError(f"op {op.name!r} ({op.key}) has no counterpart in OFA's lookup-table format")


def covering_specs() -> Iterator[ArchSpec]:
    """Subnets whose ops together hold every op key of the space at a resolution.

    One (kernel, expand) pair in every slot at depth 4 gives every block position with that pair; the
    9 pairs give all of them (a stage's first block always sees the previous stage's fixed width).
    """
    for kernel, expand in product(KERNELS, EXPANDS):
        yield ofa_mbv3_uniform_spec(kernel, expand)


def convert_ofa_tables(src_dir: str | Path, *, device: str = OFA_DEVICE) -> OfaImport:
    """Convert OFA's tables in ``src_dir`` into one ``ofa_mbv3`` table (nothing is written).

    Raises :class:`OfaImportError` when an op of ours has no OFA entry at a resolution (naming the first
    few), besides the reading errors of :func:`read_ofa_tables`.
    """
    ofa = read_ofa_tables(src_dir)
    runs: dict[str, list[OfaEntry]] = {}
    ops: dict[str, OpCost] = {}
    used: set[tuple[int, str]] = set()
    missing: list[str] = []
    for res, entries in ofa.items():
        seen: set[str] = set()
        for spec in covering_specs():
            for op in zoo.iter_ops(spec, (3, res, res)):
                if op.key in seen:
                    continue
                seen.add(op.key)
                key = ofa_key(op)
                if key not in entries:
                    missing.append(f"{op.key} (OFA {key} at {res})")
                    continue
                used.add((res, key))
                ops.setdefault(op.key, op)
                runs.setdefault(op.key, []).append(entries[key])
    if missing:
        shown = "; ".join(missing[:3]) + ("; ..." if len(missing) > 3 else "")
        raise OfaImportError(f"{len(missing)} op(s) of ours have no entry in the OFA tables of {str(src_dir)!r}: {shown}")
    unused = tuple(sorted((res, key) for res, entries in ofa.items() for key in entries if (res, key) not in used))
    spreads = [(max(e.mean_ms for e in r) - min(e.mean_ms for e in r)) / min(e.mean_ms for e in r)
               for r in runs.values() if len(r) > 1]
    table_entries = {key: _pooled(runs[key], ops[key]) for key in sorted(runs)}
    table = LatencyTable(
        device=device, space=OFA_SPACE, source=OFA_SOURCE, runtime="unknown", runtime_version=None, threads=None,
        dtype="unknown", batch_size=1,
        protocol={"statistic": "mean", "resolution_files": [f"{res}_lookup_table.yaml" for res in ofa],
                  "pooling": "count-weighted mean and pooled std over the resolution files measuring a key",
                  "sha256": _digest(Path(src_dir), ofa)},
        environment=None, fingerprint=None, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        input_sizes=tuple((3, res, res) for res in ofa), entries=table_entries,
        overhead=Overhead(0.0, 0.0, 0, note="OFA sums the entries with no overhead"), complete=True,
        notes=_notes(len(spreads), max(spreads, default=0.0), len(unused)), statistic="mean_ms")
    return OfaImport(table, unused, len(spreads), max(spreads, default=0.0))


def _pooled(runs: Sequence[OfaEntry], op: OpCost) -> Entry:
    n = sum(r.count for r in runs)
    mean = sum(r.count * r.mean_ms for r in runs) / n
    # Pooled population variance: within-file spread plus the spread of the file means around the pooled mean.
    var = sum(r.count * (r.std_ms ** 2 + (r.mean_ms - mean) ** 2) for r in runs) / n
    return Entry(median_ms=mean, n=n, std_ms=math.sqrt(var), macs=op.macs, params=op.params, kind=op.kind,
                 mean_ms=mean)


def _digest(src: Path, ofa: dict[int, dict[str, OfaEntry]]) -> str:
    sha = hashlib.sha256()
    for res in ofa:
        sha.update((src / f"{res}_lookup_table.yaml").read_bytes())
    return sha.hexdigest()


def _notes(pooled: int, spread: float, unused: int) -> str:
    return (
        "Imported from Once-for-All's Samsung Note10 lookup tables (mit-han-lab/once-for-all, MIT), one file per "
        "resolution. OFA stores the count, mean and std of its timed runs, not percentiles: median_ms holds "
        "OFA's mean, std_ms its std, p10/p90 are absent; OFA does not state runtime, threads or dtype. "
        f"{pooled} keys were measured in several resolution files and pool those runs (count-weighted mean, "
        f"pooled std); the files' means of one key differ by at most {100 * spread:.1f} %. OFA sums entries with "
        "no per-network overhead; its AvgPool2D and Conv_2 entries price the global_pool and pre_logits ops. "
        f"{unused} OFA entries map to no op of ours.")


def import_ofa_tables(src_dir: str | Path, *, device: str = OFA_DEVICE, root: Path | None = None) -> LatencyTable:
    """Convert OFA's tables in ``src_dir`` and write ``<root>/<device>/ofa_mbv3.json`` atomically; returns the table."""
    converted = convert_ofa_tables(src_dir, device=device)
    converted.table.save(table_path(device, OFA_SPACE, root))
    return converted.table

