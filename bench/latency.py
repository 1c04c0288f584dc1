"""Latency of zoo models and timm baselines on this CPU: ONNX Runtime vs eager PyTorch, side by side.

Every model is built (random init), counted, exported to ONNX and verified, then measured with the
same protocol (fixed threads, time-based warm-up, repeated runs, median and p10/p90) in ONNX Runtime
and in eager PyTorch, in one run so ratios are comparable on a noisy machine. Prints the table and
writes it to BENCHMARKS.md.

    python bench/latency.py [--models a,b,...] [--threads 1] [--runs 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from bench._report import write_section  # noqa: E402
from latency_tables.measure import BenchConfig  # noqa: E402
from latency_tables.compare import compare_models, format_table, nearest_baselines  # noqa: E402

DEFAULT_MODELS = ("hgcnet_0_5x", "hgcnet_1x", "hgcnet_1_5x", "hgcnet_2x", "mctnas_c", "bcnet_mobilenetv2_150m",
                  "mobilenetv2_050", "mobilenetv2_100", "mobilenetv3_large_100", "efficientnet_b0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    cfg = BenchConfig(threads=args.threads, runs=args.runs, warmup_min_seconds=1.0, min_seconds=2.0)
    with tempfile.TemporaryDirectory(prefix="mzoo-bench-") as out:
        bar = tqdm(names, desc="export + measure", unit="model", file=sys.stderr)
        rows = compare_models(names, out, cfg, progress=lambda n: (bar.set_postfix_str(n), bar.update(1)))
        bar.close()
    env = rows[0].ort.environment
    machine = (f"{env.cpu_model}, {env.logical_cores} logical cores, {env.os}; torch {env.torch}, "
               f"onnxruntime {env.onnxruntime}, onnx {env.onnx}")
    table = format_table(rows)
    ratios = "\n".join(f"- {line}" for line in nearest_baselines(rows))
    if ratios:
        table += ("\n\nEach zoo model against the timm baseline nearest in MACs (same run):\n\n" + ratios)
    notes = (f"Batch 1, input at each model's cfg size (224×224), {args.threads} intra-op thread(s), "
             f"≥{cfg.runs} timed runs after ≥{cfg.warmup_min_seconds:g} s warm-up; ORT at ORT_ENABLE_ALL. "
             "Random-init weights with BatchNorm statistics calibrated on random inputs, so outputs are "
             "unit-scale and the parity figure means something (latency does not depend on weights). "
             "'ONNX max abs diff' is the "
             "export verification against eager PyTorch (worst of batch 1 and 3). MACs are "
             "multiply-accumulates of conv + linear layers; FLOPs = 2 × MACs. Medians of "
             "different rows are comparable only within this one run.")
    print(f"\n{machine}\n\n{table}\n\n{notes}")
    if not args.no_write:
        write_section("latency", "CPU latency: zoo models vs timm baselines, ONNX Runtime vs eager PyTorch",
                      f"{table}\n\n{notes}\n", machine)


if __name__ == "__main__":
    main()
