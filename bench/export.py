"""Export cost and CPU latency of every deployable format, side by side, for a few zoo models.

For each model: export (and verify) ONNX fp32, ONNX fp16, ONNX int8 (QDQ, per-channel, calibrated on
CIFAR-10 JPEGs), Core ML (conversion + structural check; Core ML cannot run on Linux) and ExecuTorch with
the XNNPACK delegate, timing each export; then measure batch-1 latency of ORT fp32 / fp16 / int8,
ExecuTorch-XNNPACK and eager PyTorch under one protocol in the same run, so the ratios are comparable on a
noisy machine. Prints the tables and writes them to BENCHMARKS.md.

    python bench/export.py [--models a,b,...] [--threads 1] [--runs 50] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from bench._report import write_section  # noqa: E402
from latency_tables.measure_pte import measure_pte  # noqa: E402
from export.formats import FORMATS, ExportOptions, export_formats  # noqa: E402
from common.images import default_image_source  # noqa: E402
from latency_tables.measure import BenchConfig, LatencyResult, measure_onnx, measure_torch  # noqa: E402
from export.pipeline import resolve_model  # noqa: E402

DEFAULT_MODELS = ("hgcnet_1x", "mctnas_c", "bcnet_mobilenetv2_150m", "bcnet_resnet50_1g")
RUNTIMES = ("ORT fp32", "ORT fp16", "ORT int8", "ExecuTorch XNNPACK", "eager PyTorch")


def measure_all(name: str, out: Path, options: ExportOptions, cfg: BenchConfig) -> tuple[dict, dict, dict]:
    """(export seconds by format, latency by runtime, parity summary by format) for one model."""
    resolved = resolve_model(name)
    cells = {c.format: c for c in export_formats(resolved, out, tuple(FORMATS), options)}
    seconds = {f: c.seconds for f, c in cells.items()}
    parity = {f: c.summary for f, c in cells.items()}
    latency: dict[str, LatencyResult] = {
        "ORT fp32": measure_onnx(cells["onnx"].path, cfg),
        "ORT fp16": measure_onnx(cells["onnx-fp16"].path, cfg),
        "ORT int8": measure_onnx(cells["onnx-int8"].path, cfg),
        "ExecuTorch XNNPACK": measure_pte(cells["pte"].path, cfg),
        "eager PyTorch": measure_torch(resolved.model, resolved.input_size, cfg, label=name),
    }
    return seconds, latency, parity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    source = default_image_source()
    if source is None:
        sys.exit("bench/export.py needs the CIFAR-10 JPEGs (set MZOO_SHARED_DATA to the shared data folder)")
    options = ExportOptions(images=str(source), calibration=str(source))
    cfg = BenchConfig(threads=args.threads, runs=args.runs, warmup_min_seconds=1.0, min_seconds=2.0)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mzoo-bench-export-") as out:
        for name in tqdm(names, desc="export + measure", unit="model", file=sys.stderr):
            rows[name] = measure_all(name, Path(out), options, cfg)

    env = next(iter(rows.values()))[1]["ORT fp32"].environment
    machine = (f"{env.cpu_model}, {env.logical_cores} logical cores, {env.os}; torch {env.torch}, "
               f"onnxruntime {env.onnxruntime}, onnx {env.onnx}")
    fmts = list(FORMATS)
    export_table = ["| model | " + " | ".join(f"{f} export s" for f in fmts) + " |", "|---|" + "---|" * len(fmts)]
    parity_table = ["| model | " + " | ".join(fmts) + " |", "|---|" + "---|" * len(fmts)]
    latency_table = ["| model | " + " | ".join(f"{r} ms" for r in RUNTIMES)
                     + " | fp16/fp32 | int8/fp32 | XNNPACK/ORT fp32 | eager/ORT fp32 |",
                     "|---|" + "---|" * (len(RUNTIMES) + 4)]
    for name, (seconds, latency, parity) in rows.items():
        export_table.append(f"| {name} | " + " | ".join(f"{seconds[f]:.1f}" for f in fmts) + " |")
        parity_table.append(f"| {name} | " + " | ".join(parity[f] for f in fmts) + " |")
        med = {r: latency[r].median_ms for r in RUNTIMES}
        base = med["ORT fp32"]
        latency_table.append(
            f"| {name} | " + " | ".join(f"{med[r]:.2f} ({latency[r].p10_ms:.2f}–{latency[r].p90_ms:.2f})"
                                        for r in RUNTIMES)
            + f" | {med['ORT fp16'] / base:.2f}× | {med['ORT int8'] / base:.2f}× "
              f"| {med['ExecuTorch XNNPACK'] / base:.2f}× | {med['eager PyTorch'] / base:.2f}× |")
    notes = (f"Batch 1 at each model's cfg size, {args.threads} intra-op thread(s) for ORT and PyTorch, "
             f"≥{cfg.runs} timed runs after ≥{cfg.warmup_min_seconds:g} s warm-up, median (p10–p90). ORT at "
             "ORT_ENABLE_ALL on the CPU provider. int8 is static QDQ with per-channel weights, calibrated on "
             f"CIFAR-10 training JPEGs; fp16 and int8 agreement is measured on CIFAR-10 test JPEGs ({source.name}). "
             "Random-init weights with BatchNorm statistics calibrated on random inputs (no trained weights "
             "exist), so agreement figures measure the conversion, not accuracy. Core ML has no latency column: "
             "Core ML runs only on Apple hardware, and the export is checked structurally here. Ratios < 1 are "
             "faster than ORT fp32; rows are comparable only within this one run.")
    body = ("**Export time (s, includes verification)**\n\n" + "\n".join(export_table)
            + "\n\n**Latency, median ms (p10–p90), and ratios to ORT fp32**\n\n" + "\n".join(latency_table)
            + "\n\n**Parity of each artefact, as its exporter verified it**\n\n" + "\n".join(parity_table)
            + f"\n\n{notes}\n")
    print(f"\n{machine}\n\n{body}")
    if not args.no_write:
        write_section("export", "Export formats: export time and CPU latency, ORT fp32/fp16/int8 vs ExecuTorch "
                                "XNNPACK vs eager PyTorch", body, machine)


if __name__ == "__main__":
    main()
