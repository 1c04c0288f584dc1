"""Zoo models beside timm baselines: count, export and verify ONNX, then time ONNX Runtime and eager PyTorch with
one protocol (the demo's table and ``bench/latency.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import zoo
from export.pipeline import export_model, resolve_model
from latency_tables.measure import BenchConfig, LatencyResult, measure_onnx, measure_torch


@dataclass(frozen=True)
class ComparisonRow:
    """One model in a side-by-side table: costs, export parity, ORT and eager latency."""

    name: str
    source: str
    params: int
    macs: int
    max_abs_diff: float
    onnx_path: str
    ort: LatencyResult
    torch: LatencyResult

    @property
    def speedup(self) -> float:
        """Eager PyTorch median / ORT median (> 1: ONNX Runtime is faster)."""
        return self.torch.median_ms / self.ort.median_ms

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["ort"], data["torch"] = self.ort.to_dict(), self.torch.to_dict()
        data["speedup"] = self.speedup
        return data


def compare_models(names: Sequence[str], out_dir: str | os.PathLike, bench: BenchConfig = BenchConfig(),
                   progress: Callable[[str], None] | None = None) -> list[ComparisonRow]:
    """For each model: count, export + verify ONNX, measure ORT and eager latency (same protocol)."""
    rows = []
    for name in names:
        if progress:
            progress(name)
        resolved = resolve_model(name)
        cost = zoo.count_module(resolved.model, resolved.input_size)
        report = export_model(resolved, out_dir)
        ort_result = measure_onnx(report.path, bench)
        torch_result = measure_torch(resolved.model, resolved.input_size, bench, label=name)
        rows.append(ComparisonRow(name, resolved.source, cost.params, cost.macs,
                                  max(report.max_abs_diff.values()), report.path, ort_result, torch_result))
    return rows


def format_table(rows: Sequence[ComparisonRow]) -> str:
    """A Markdown table of comparison rows."""
    head = ("| model | source | params | MACs | ONNX max abs diff | ORT median ms (p10–p90) "
            "| ORT ms/GMAC | eager median ms (p10–p90) | eager/ORT |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.source} | {zoo.format_count(r.params)} | {zoo.format_count(r.macs)} "
            f"| {r.max_abs_diff:.1e} | {r.ort.median_ms:.2f} ({r.ort.p10_ms:.2f}–{r.ort.p90_ms:.2f}) "
            f"| {r.ort.median_ms / (r.macs / 1e9):.1f} "
            f"| {r.torch.median_ms:.2f} ({r.torch.p10_ms:.2f}–{r.torch.p90_ms:.2f}) | {r.speedup:.2f}× |")
    return "\n".join(lines)


def nearest_baselines(rows: Sequence[ComparisonRow]) -> list[str]:
    """For each zoo row, the timm row closest in MACs, as ratios: what 'similar MACs' costs in latency."""
    zoo_rows = [r for r in rows if r.source == "zoo"]
    timm_rows = [r for r in rows if r.source == "timm"]
    lines = []
    for r in zoo_rows if timm_rows else []:
        base = min(timm_rows, key=lambda b: abs(b.macs - r.macs))
        lines.append(f"{r.name} vs {base.name}: {r.macs / base.macs:.2f}× the MACs, "
                     f"{r.ort.median_ms / base.ort.median_ms:.2f}× the ORT latency, "
                     f"{r.torch.median_ms / base.torch.median_ms:.2f}× the eager latency")
    return lines
