"""The runtimes side by side: ONNX Runtime, ExecuTorch-XNNPACK, LiteRT-XNNPACK and ncnn on the same networks.

For each model (zoo models and timm baselines), one run: export to ONNX, ``.pte`` (XNNPACK), ``.tflite`` and ncnn
through ``export.formats`` (each verified against eager PyTorch before it is written; the table gives each file's
parity and export time), then time every artefact at batch 1 on one thread with the project's protocol
(``latency_tables.measure``: ``measure_onnx``, ``measure_pte``, ``measure_litert``, ``measure_ncnn``),
round-robin over ``--rounds`` so drift hits every column alike. Each figure is the median over rounds of each
round's fastest run (min_ms, the latency tables' statistic); each runtime's ratio is to the fastest of the four on
that model. ncnn runs with its own defaults (fp16 storage and arithmetic where the CPU has them), as an app would.
The issue's goal: LiteRT within 1.2x of ExecuTorch-XNNPACK on every model (both run XNNPACK kernels; a larger gap
means the conversion added work, which the LiteRT report's op list shows). Prints the table and writes its section
of BENCHMARKS.md.

    python bench/android_runtimes.py [--models nbmacro_22212220,mobilenetv2_100,hgcnet_1x,...] [--rounds 3]
                                     [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from bench._report import write_section  # noqa: E402
from common.environment import current_environment  # noqa: E402
from export.formats import export_formats  # noqa: E402
from export.pipeline import resolve_model  # noqa: E402
from latency_tables.measure import BenchConfig, measure_onnx  # noqa: E402
from latency_tables.measure_android import measure_litert, measure_ncnn  # noqa: E402
from latency_tables.measure_pte import measure_pte  # noqa: E402

# No timm ResNet: random-init, its last BatchNorm of every residual branch is zero (timm's zero_init_last), and
# LiteRT's converter folds those branches away (resnet18: 4 of 20 convs left, 1.9 ms against ORT's 17 ms, outputs
# equal), so the runtimes would not be running the same work.
DEFAULT_MODELS = ("nbmacro_22212220", "mctnas_a", "hgcnet_1x", "hgcnet_0_5x", "mobilenetv2_100",
                  "mobilenetv3_large_100")
RUNTIMES = {"onnx": ("ORT", measure_onnx), "pte": ("ExecuTorch-XNNPACK", measure_pte),
            "litert": ("LiteRT-XNNPACK", measure_litert), "ncnn": ("ncnn", measure_ncnn)}
GOAL = 1.2  # LiteRT over ExecuTorch-XNNPACK


def parity(cell: object) -> str:
    report = getattr(cell, "report", {}) or {}
    diff = report.get("max_abs_diff")
    if isinstance(diff, dict):
        diff = max(diff.values()) if diff else None
    elif isinstance(diff, (list, tuple)):
        diff = max(diff) if diff else None
    return f"{diff:.1e}" if isinstance(diff, (int, float)) else "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--rounds", type=int, default=3, help="round-robin repetitions; the median is reported")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    models = [m for m in args.models.split(",") if m]
    resolved = [resolve_model(m) for m in models]  # an unknown name fails here, before any export
    cfg = BenchConfig(threads=1, sessions=1)
    rows: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="mzoo-bench-runtimes-") as tmp:
        for r in tqdm(resolved, desc="export", unit="model", file=sys.stderr):
            cells = export_formats(r, Path(tmp) / r.name, list(RUNTIMES), keep_going=True)
            rows[r.name] = {"cells": {c.format: c for c in cells}, "times": {f: [] for f in RUNTIMES}}
        jobs = [(name, fmt) for name in rows for fmt in RUNTIMES if rows[name]["cells"][fmt].status == "ok"]
        for _ in tqdm(range(args.rounds), desc="rounds", unit="round", file=sys.stderr):
            for name, fmt in jobs:
                result = RUNTIMES[fmt][1](rows[name]["cells"][fmt].path, cfg)
                rows[name]["times"][fmt].append(result.min_ms)
    header = ("| model | " + " | ".join(f"{label} ms (×fastest)" for label, _ in RUNTIMES.values())
              + " | LiteRT / ExecuTorch | export s (onnx / pte / litert / ncnn) | parity (max abs diff) |")
    lines = [header, "|" + "---|" * (len(RUNTIMES) + 4)]
    verdicts = []
    for name, row in rows.items():
        ms = {f: statistics.median(t) for f, t in row["times"].items() if t}
        fastest = min(ms.values()) if ms else float("nan")
        cells = row["cells"]
        timing = [f"{ms[f]:.2f} ({ms[f] / fastest:.2f})" if f in ms else f"failed: {cells[f].error[:60]}"
                  for f in RUNTIMES]
        ratio = ms["litert"] / ms["pte"] if {"litert", "pte"} <= set(ms) else None
        verdicts.append((name, ratio))
        seconds = " / ".join(f"{cells[f].seconds:.0f}" for f in RUNTIMES)
        diffs = " / ".join(parity(cells[f]) if cells[f].status == "ok" else "—" for f in RUNTIMES)
        lines.append(f"| {name} | " + " | ".join(timing) + f" | {'—' if ratio is None else f'{ratio:.2f}'} | "
                     f"{seconds} | {diffs} |")
    met = [n for n, ratio in verdicts if ratio is not None and ratio <= GOAL]
    missed = [f"{n} ({ratio:.2f})" for n, ratio in verdicts if ratio is not None and ratio > GOAL]
    env = current_environment()
    machine = (f"{env.cpu_model} ({env.cpu_id}), {env.logical_cores} logical cores, {env.os}; torch {env.torch}, "
               f"onnxruntime {env.onnxruntime}, executorch {env.executorch}; one thread per runtime, batch 1")
    body = ("\n".join(lines) + "\n\n"
            f"Each figure: the median over {args.rounds} round-robin rounds of each round's fastest run (min_ms); "
            "(×fastest) is the ratio to the fastest runtime on that model. Export seconds include each format's "
            "verification; parity is each file's max abs difference from eager PyTorch on seeded inputs. "
            f"Goal (issue #21): LiteRT within {GOAL}× of ExecuTorch-XNNPACK: met on {len(met)} of "
            f"{len(verdicts)}" + (f"; missed on {', '.join(missed)}." if missed else ".") + "\n")
    print(f"\n{machine}\n\n{body}")
    if not args.no_write:
        write_section("android-runtimes", "Runtimes side by side: ORT, ExecuTorch-XNNPACK, LiteRT-XNNPACK, ncnn",
                      body, machine)


if __name__ == "__main__":
    main()
