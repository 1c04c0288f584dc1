"""Latency predictor validation: predicted (table sum + calibrated overhead) vs measured end-to-end latency.

For each space with a table for the device, ≥100 random architectures (their own seed, never the
calibration draws) are predicted from the shipped tables and measured whole on this machine with the
tables' own protocol. Two more tables put the figures in context, from the same run: how well the machine
agrees with itself (the first ``--repeat`` architectures of each space measured again in a fresh session: no
predictor can beat that) and what the overhead model buys (three models cross-fitted on the validation points:
a constant, the schema-1 ``intercept + per_op × n_ops``, and the current ``intercept + (1 + scale) × (Σ − call ×
n_ops)``). Prints the tables, writes them to BENCHMARKS.md, the per-architecture points to
bench/results/lut_validation_<device>.json and a scatter plot to bench/figures/lut_validation_<device>.png.

    python bench/lut_validate.py [--device ort] [--spaces nbmacro,mctnas,...] [--archs 100] [--repeat 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench._report import write_section  # noqa: E402
from common.files import write_json_atomic  # noqa: E402
from latency_tables.measure import BenchConfig  # noqa: E402
from latency_tables.cli import run_validation  # noqa: E402
from latency_tables.table import TABLES_ENV, load_tables, tables_root  # noqa: E402
from latency_tables.validate import ValidationResult, prediction_metrics, sample_archs, scatter_plot  # noqa: E402
from zoo.spaces import get_space  # noqa: E402

ROOT = Path(__file__).resolve().parent
NN_METER_CPU = "nn-Meter reports 99.0 % within ±10 % on a mobile CPU (Pixel 4, TFLite); target here ≥ 95 %."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="ort", help="backend to measure on (ort, xnnpack, http://HOST:PORT)")
    parser.add_argument("--table-device", default=None, help="table directory (default: the backend's name)")
    parser.add_argument("--spaces", default="", help="comma-separated spaces (default: every table of the device)")
    parser.add_argument("--archs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20, help="architectures per space measured a second time")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    start = time.perf_counter()
    device, table_device, results = run_validation(args.device, args.table_device, args.spaces, args.archs)
    tables = {t.space: t for t in load_tables(table_device)}
    repeats = {r.space: remeasure(device, r, tables[r.space].protocol, args.repeat) for r in results}
    minutes = (time.perf_counter() - start) / 60
    info = device.describe()
    env = info.environment
    machine = (f"{env.cpu_model}, {env.logical_cores} logical cores, {env.os}; {info.runtime} "
               f"{info.runtime_version}; device fingerprint {info.fingerprint}")
    lines = ["| space | archs | within ±10 % | within ±5 % | Spearman ρ | mean abs % error | mean bias | "
             "measured range (ms) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r.metrics()
        meas = [p.measured_ms for p in r.points]
        lines.append(f"| {r.space} | {r.n} | {m['within_10']:.1%} | {m['within_5']:.1%} | {m['spearman']:.3f} "
                     f"| {m['mape']:.2%} | {m['bias']:+.2%} | {min(meas):.2f}–{max(meas):.2f} |")
    table = "\n".join(lines) + "\n\n" + repeat_table(repeats) + "\n\n" + ablation_table(results, tables)
    figure = ROOT / "figures" / f"lut_validation_{table_device}.png"
    points = ROOT / "results" / f"lut_validation_{table_device}.json"
    protocol = BenchConfig.from_dict(next(iter(tables.values())).protocol)
    calibration = sorted({t.overhead.n_networks for t in tables.values()})
    notes = (f"Tables: {tables_location(table_device)}. Each architecture is predicted from its walker ops' "
             "table minimums (the tables' statistic) and the table's overhead model, `intercept + (1 + scale) × "
             "(Σ entries − call × n_ops)`, whose call cost was measured and whose intercept and scale were fitted "
             f"on {'/'.join(map(str, calibration))} separate calibration networks at build time; it is measured "
             "end to end (export, fresh session, warm-up, runs until the median is stable) with the tables' protocol "
             f"(1 thread, pinned to CPU(s) {protocol.cpus}), compared on the minimum. 'Repeat' measures the first "
             "architectures of each space again in a fresh session: the machine's own agreement with itself. "
             "'Overhead models' refits each model on half of the validation points and scores it on the other "
             "half (and back), on the same measurements. "
             f"{NN_METER_CPU} Whole run: {minutes:.0f} min. Plot: `bench/figures/{figure.name}`; points: "
             f"`bench/results/{points.name}`.")
    print(f"\n{machine}\n\n{table}\n\n{notes}")
    if args.no_write:
        return
    scatter_plot(results, figure, title=f"Latency predictor on {table_device}")
    write_json_atomic(points, {"device": table_device, "machine": machine,
                               "results": [r.to_dict() for r in results],
                               "repeats": {space: pairs for space, pairs in repeats.items()}})
    write_section(f"lut-validation-{table_device}", f"Latency predictor validation on {table_device}",
                  f"{table}\n\n![predicted vs measured](bench/figures/{figure.name})\n\n{notes}\n", machine)


def tables_location(table_device: str) -> str:
    """Where the tables came from, as a reader can find them: the project's directory, or the override root."""
    root = tables_root().resolve()
    project = Path(__file__).resolve().parents[1]
    if root.is_relative_to(project):
        return f"`{(root / table_device).relative_to(project)}/`"
    return f"`{root / table_device}/` (${TABLES_ENV}; not shipped with the project)"


def remeasure(device, result: ValidationResult, protocol, count: int) -> list[tuple[float, float]]:
    """(first, second) measurement of the first ``count`` architectures of ``result``, the second in a new session."""
    import zoo

    space = get_space(result.space)
    cfg = BenchConfig.from_dict(protocol)
    pairs = []
    for arch, point in zip(sample_archs(space, result.n), result.points[:count]):
        spec, size = space.to_spec(arch)
        again = device.measure(zoo.build_model(spec).eval(), (1, *size), cfg, f"{space.name}:repeat")
        pairs.append((point.measured_ms, float(getattr(again, result.statistic))))
    return pairs


def repeat_table(repeats: dict[str, list[tuple[float, float]]]) -> str:
    lines = ["**Repeat: the same architecture measured twice, fresh sessions**", "",
             "| space | archs | second within ±10 % of first | within ±5 % | median abs difference |",
             "|---|---|---|---|---|"]
    for space, pairs in repeats.items():
        if len(pairs) < 2:
            continue
        first, second = zip(*pairs)
        m = prediction_metrics(second, first)
        diff = float(np.median(np.abs(np.asarray(second) / np.asarray(first) - 1)))
        lines.append(f"| {space} | {len(pairs)} | {m['within_10']:.1%} | {m['within_5']:.1%} | {diff:.2%} |")
    return "\n".join(lines)


def ablation_table(results: list[ValidationResult], tables: dict) -> str:
    """Within-±10 % of three overhead models, each fitted on one half of a space's points and scored on the other."""
    lines = ["**Overhead models, cross-fitted on the validation points (share within ±10 % / ±5 %)**", "",
             "| space | constant | intercept + per_op × n_ops (schema 1) | intercept + (1 + scale) × (Σ − call × n) |",
             "|---|---|---|---|"]
    for r in results:
        meas = np.array([p.measured_ms for p in r.points])
        ops = np.array([p.ops_ms for p in r.points])
        n = np.array([p.n_ops for p in r.points], dtype=float)
        net = ops - tables[r.space].overhead.call_ms * n
        cells = []
        for model in (_constant, _per_op, _scaled):
            predicted = np.empty_like(meas)
            halves = [np.arange(len(meas)) % 2 == k for k in (0, 1)]
            for fit, score in (halves, halves[::-1]):
                predicted[score] = model(ops[fit], n[fit], net[fit], meas[fit])(ops[score], n[score], net[score])
            m = prediction_metrics(predicted.tolist(), meas.tolist())
            cells.append(f"{m['within_10']:.0%} / {m['within_5']:.0%}")
        lines.append(f"| {r.space} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _constant(ops, n, net, meas):
    c = float(np.median(meas - ops))
    return lambda o, k, s: o + c


def _per_op(ops, n, net, meas):
    if np.ptp(n) == 0:  # every network has the same op count: the schema-1 builder fell back to a constant
        return _constant(ops, n, net, meas)
    (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(n), n], 1), meas - ops, rcond=None)
    return lambda o, k, s: o + a + b * k


def _scaled(ops, n, net, meas):
    (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(net), net], 1), meas - net, rcond=None)
    return lambda o, k, s: a + (1 + b) * s


if __name__ == "__main__":
    main()
