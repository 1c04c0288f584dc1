"""Which statistic should a latency table sum? Minimum, median, mean and p10 compared on the same measurements.

For each space, every op key is measured once (fresh, with the table protocol) and random networks are
measured end to end in the same run; each statistic's table sum plus an intercept fitted on the first
networks predicts the rest, compared with the same statistic of the whole network: the evidence behind
:data:`latency_tables.table.DEFAULT_STATISTIC`. Prints the table and writes it to BENCHMARKS.md.

    python bench/lut_statistic.py [--spaces nbmacro,mctnas] [--networks 60] [--calibration 10]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench._report import write_section  # noqa: E402
from export.devices import get_device  # noqa: E402
from latency_tables.cli import table_protocol  # noqa: E402
from latency_tables.table import STATISTICS  # noqa: E402
from latency_tables.validate import prediction_metrics  # noqa: E402
from search.spaces import get_space, op_keys  # noqa: E402
from zoo import build_model, iter_ops  # noqa: E402
from zoo.ops import op_module  # noqa: E402


def compare(space_name: str, device, cfg, networks: int, calibration: int, seed: int) -> list[str]:
    space = get_space(space_name)
    entries = {}
    for key, op in tqdm(op_keys(space).items(), desc=f"{space_name} ops", unit="op", file=sys.stderr):
        result = device.measure(*op_module(op), cfg, key)
        entries[key] = {s: getattr(result, s) for s in STATISTICS}
    rng, rows = random.Random(seed), []
    for _ in tqdm(range(networks + calibration), desc=f"{space_name} networks", unit="net", file=sys.stderr):
        spec, size = space.to_spec(space.sample(rng))
        ops = list(iter_ops(spec, size))
        result = device.measure(build_model(spec).eval(), (1, *size), cfg, space_name)
        rows.append(({s: sum(entries[o.key][s] for o in ops) for s in STATISTICS},
                     {s: getattr(result, s) for s in STATISTICS}))
    fit, held = rows[:calibration], rows[calibration:]
    lines = []
    for s in STATISTICS:
        intercept = float(np.median([m[s] - p[s] for p, m in fit]))
        m = prediction_metrics([p[s] + intercept for p, _ in held], [m[s] for _, m in held])
        lines.append(f"| {space_name} | {s.removesuffix('_ms')} | {len(held)} | {m['within_10']:.1%} | "
                     f"{m['within_5']:.1%} | {m['spearman']:.3f} | {m['mape']:.2%} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", default="nbmacro,mctnas")
    parser.add_argument("--networks", type=int, default=60, help="held-out networks per space")
    parser.add_argument("--calibration", type=int, default=10, help="networks the intercept is fitted on")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    device = get_device("ort", threads=1)
    cfg = table_protocol(1)
    lines = ["| space | statistic | held-out nets | within ±10 % | within ±5 % | Spearman ρ | mean abs % error |",
             "|---|---|---|---|---|---|---|"]
    for name in [s for s in args.spaces.split(",") if s]:
        lines += compare(name, device, cfg, args.networks, args.calibration, args.seed)
    info = device.describe()
    env = info.environment
    machine = (f"{env.cpu_model}, {env.logical_cores} logical cores, {env.os}; {info.runtime} "
               f"{info.runtime_version}; fingerprint {info.fingerprint}")
    table = "\n".join(lines)
    notes = ("Every op and network measured once in this run with the table protocol (1 thread, warm-up, ≥40 runs "
             "and ≥0.6 s, until the median is stable within 1 % or 10 s). Each statistic predicts a network as "
             f"the sum of its ops' statistic plus the median residual of the first {args.calibration} networks, "
             "and is scored against the same statistic of the whole network. On this shared 2-core VM other "
             "tenants only ever add time, which argues for the minimum, but whole sessions also run in slow "
             "phases, so which statistic wins changes from run to run here.")
    print(f"\n{machine}\n\n{table}\n\n{notes}")
    if not args.no_write:
        write_section("lut-statistic", "Latency tables: which per-op statistic predicts whole networks",
                      f"{table}\n\n{notes}\n", machine)


if __name__ == "__main__":
    main()
