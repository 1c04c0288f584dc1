"""How well each shipped table's overhead fits the calibration networks it was fitted on, and what the choices
of the fit (relative errors, each network's fastest round) buy, from the measurements the tables keep.

Reads every table whose overhead keeps its calibration networks (``Overhead.networks``); measures nothing, so
it runs on any machine and its figures are the tables' own. For each table: the shipped fit's relative error
on its networks (within ±10 %, worst, RMS), the spread of each network over its calibration rounds, and the
same networks refitted with ``latency_tables.build.fit_overhead`` from each network's fastest round (as
shipped), its median round, and its first round alone (what one pass would have measured), each on relative
errors, and from the fastest round by absolute least squares. A refit is judged in-sample: these are the
fit's own networks, not a validation (``bench/lut_validate.py`` measures held-out ones).

    python bench/lut_calibration.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench._report import write_section  # noqa: E402
from latency_tables.build import fit_overhead  # noqa: E402
from latency_tables.table import CalibrationNetwork, LatencyTable, Overhead, list_devices, load_tables  # noqa: E402


def relative_errors(overhead: Overhead, nets: Sequence[CalibrationNetwork], measured: Sequence[float]) -> np.ndarray:
    return np.array([(overhead.network_ms(n.n_ops, n.ops_ms, dict(n.kind_ops)) - m) / m
                     for n, m in zip(nets, measured)])


def summary(errors: np.ndarray) -> str:
    within = int((np.abs(errors) <= 0.10).sum())
    return (f"{within}/{len(errors)} | {100 * np.abs(errors).max():.1f} % | "
            f"{100 * np.sqrt(np.mean(errors ** 2)):.1f} %")


def absolute_fit(table: LatencyTable, nets: Sequence[CalibrationNetwork], measured: Sequence[float]) -> Overhead:
    """The fit before relative errors: least squares on ms, intercept held at >= 0, no outlier removal."""
    call = table.overhead.call_ms
    kinds = sorted(table.overhead.kind_scales)
    s = np.array([n.ops_ms - call * n.n_ops for n in nets])
    cols = [np.array([n.kind_ops.get(k, (0, 0.0))[1] - call * n.kind_ops.get(k, (0, 0.0))[0] for n in nets])
            for k in kinds]
    y = np.asarray(measured) - s
    design = np.stack([np.ones(len(s)), s, *cols], axis=1)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    if coef[0] < 0:
        coef = np.concatenate([[0.0], np.linalg.lstsq(design[:, 1:], y, rcond=None)[0]])
    return Overhead(float(coef[0]), 0.0, len(nets), "absolute", scale=float(coef[1]), call_ms=call,
                    kind_scales=dict(zip(kinds, map(float, coef[2:]))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    rows, spreads, machines = [], [], []
    for device in list_devices():
        for table in load_tables(device):
            nets = table.overhead.networks if table.overhead is not None else ()
            if not nets:
                continue
            name = f"{device}/{table.space}"
            env = table.environment or {}
            machines.append(f"{device}: {env.get('cpu_model', '?')} ({env.get('cpu_id', '?')})")
            fastest = [n.measured_ms for n in nets]
            rows.append(f"| {name} | shipped fit | {summary(relative_errors(table.overhead, nets, fastest))} |")
            rounds = [n.rounds_ms for n in nets]
            if all(len(r) > 1 for r in rounds):
                spread = [(max(r) - min(r)) / min(r) for r in rounds]
                spreads.append(f"| {name} | {len(rounds[0])} | {100 * statistics.median(spread):.0f} % | "
                               f"{100 * float(np.percentile(spread, 90)):.0f} % | {100 * max(spread):.0f} % |")
                kinds = [dict(n.kind_ops) for n in nets]
                own = tuple(sorted(table.overhead.kind_scales))
                figures: dict[str, Callable[[Sequence[float]], float]] = {
                    "fastest round": min, "median round": statistics.median, "first round only": lambda r: r[0]}
                for label, pick in figures.items():
                    measured = [float(pick(r)) for r in rounds]
                    refit = fit_overhead(measured, [n.ops_ms for n in nets], [n.n_ops for n in nets],
                                         table.overhead.call_ms, kind_ops=kinds, kinds=own)
                    rows.append(f"| {name} | refit, relative, {label} | "
                                f"{summary(relative_errors(refit, nets, measured))} |")
                rows.append(f"| {name} | refit, absolute, fastest round | "
                            f"{summary(relative_errors(absolute_fit(table, nets, fastest), nets, fastest))} |")
    if not rows:
        print("no shipped table keeps its calibration networks")
        return
    text = "\n".join(["| table | fit | within ±10 % | worst | RMS |", "|---|---|---|---|---|", *rows])
    if spreads:
        text += "\n\n" + "\n".join(["| table | rounds | median spread | p90 spread | worst spread |",
                                    "|---|---|---|---|---|", *spreads])
    text += ("\n\nRelative error of each fit on the calibration networks it was fitted on (in-sample); spread: "
             "(slowest - fastest round) / fastest round of one network. Nothing is measured: the figures are read "
             "from each table's `overhead.networks`, measured where the table was built.")
    print(text)
    if not args.no_write:
        write_section("lut-calibration", "Latency-table calibration fits, from the networks the tables keep",
                      text + "\n", "; ".join(machines) + " (read from the tables)")


if __name__ == "__main__":
    main()
