"""Latency predictor validation: predicted (table sum + calibrated overhead) vs measured end-to-end latency.

For each space with a table for the device, ≥100 random architectures (their own seed, never the
calibration draws) are predicted from the shipped tables and measured whole on this machine with the
tables' own protocol. Prints the table, writes it to BENCHMARKS.md, the per-architecture points to
bench/results/lut_validation_<device>.json and a scatter plot to bench/figures/lut_validation_<device>.png.

    python bench/lut_validate.py [--device ort] [--spaces nbmacro,mctnas,...] [--archs 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import write_section  # noqa: E402
from export.files import write_json_atomic  # noqa: E402
from latency_tables.cli import run_validation  # noqa: E402
from latency_tables.validate import scatter_plot  # noqa: E402

ROOT = Path(__file__).resolve().parent
NN_METER_CPU = "nn-Meter reports 99.0 % within ±10 % on a mobile CPU (Pixel 4, TFLite); target here ≥ 95 %."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="ort", help="backend to measure on (ort, xnnpack, http://HOST:PORT)")
    parser.add_argument("--table-device", default=None, help="table directory (default: the backend's name)")
    parser.add_argument("--spaces", default="", help="comma-separated spaces (default: every table of the device)")
    parser.add_argument("--archs", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    start = time.perf_counter()
    device, table_device, results = run_validation(args.device, args.table_device, args.spaces, args.archs)
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
    table = "\n".join(lines)
    figure = ROOT / "figures" / f"lut_validation_{table_device}.png"
    points = ROOT / "results" / f"lut_validation_{table_device}.json"
    notes = (f"Tables: `latency_tables/{table_device}/`. Each architecture is predicted as the sum of its "
             "walker ops' table medians plus the table's calibrated overhead (intercept + per-op term fitted "
             "on separate calibration networks at build time), and measured end to end (export, fresh "
             "session, warm-up, runs until the median is stable) with the tables' protocol. "
             f"{NN_METER_CPU} Whole run: {minutes:.0f} min. Plot: `bench/figures/{figure.name}`; points: "
             f"`bench/results/{points.name}`.")
    print(f"\n{machine}\n\n{table}\n\n{notes}")
    if args.no_write:
        return
    scatter_plot(results, figure, title=f"Latency predictor on {table_device}")
    write_json_atomic(points, {"device": table_device, "machine": machine,
                               "results": [r.to_dict() for r in results]})
    write_section(f"lut-validation-{table_device}", f"Latency predictor validation on {table_device}",
                  f"{table}\n\n![predicted vs measured](bench/figures/{figure.name})\n\n{notes}\n", machine)


if __name__ == "__main__":
    main()
