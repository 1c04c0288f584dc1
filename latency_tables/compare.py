"""Zoo models beside timm baselines: count, export and verify ONNX, then time ONNX Runtime and eager PyTorch with
one protocol (the demo's table and ``bench/latency.py``).

A zoo network with HGC blocks is also shown deployed (``deploy`` other than ``"none"``): re-parameterised by
:mod:`zoo.deploy` with the plan ``auto`` chooses from this machine's latency tables, or, where this machine has no
tables that price it, every HGC layer fused (``all``), and the row says which.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import zoo
from common.errors import InputError
from export.deploy import DeployChoice, check_artefact, check_mode, deploy
from export.onnx import OnnxExportConfig
from export.pipeline import export_model, resolve_model
from latency_tables.deploy import export_choice
from latency_tables.devices import local_device_name
from latency_tables.measure import BenchConfig, LatencyResult, measure_onnx, measure_torch
from latency_tables.table import NoTablesError
from zoo.deploy import fusable_blocks

DEPLOYED_DIR = "deployed"  # under the output directory: the deployed networks' ONNX files (same names)


@dataclass(frozen=True)
class ComparisonRow:
    """One model in a side-by-side table: costs, export parity, ORT and eager latency.

    ``deploy`` is the plan a deployed row's network was rewritten by (None: the network as trained); its
    ``max_abs_diff`` is against the training-time network, as the exporter checks it.
    """

    name: str
    source: str
    params: int
    macs: int
    max_abs_diff: float
    onnx_path: str
    ort: LatencyResult
    torch: LatencyResult
    deploy: DeployChoice | None = None

    @property
    def label(self) -> str:
        """The row's name in tables: the model, and for a deployed row its plan and how many HGC blocks it fuses."""
        if self.deploy is None:
            return self.name
        return f"{self.name} deployed ({self.deploy.mode}: {self.deploy.fused}/{len(self.deploy.blocks)} fused)"

    @property
    def speedup(self) -> float:
        """Eager PyTorch median / ORT median (> 1: ONNX Runtime is faster)."""
        return self.torch.median_ms / self.ort.median_ms

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["ort"], data["torch"] = self.ort.to_dict(), self.torch.to_dict()
        data["speedup"] = self.speedup
        data["deploy"] = self.deploy.to_dict() if self.deploy is not None else None
        return data


def deploy_choice(mode: str, spec: Any, input_size: Sequence[int]) -> tuple[DeployChoice | None, str]:
    """The plan a zoo network is shown deployed with, and a note when ``auto`` fell back to ``all``.

    None when ``mode`` is ``"none"`` or the network has no HGC block to fuse. ``auto`` reads this machine's
    latency tables; where there are none, or they lack a key of the network, every HGC layer is fused and the
    note says why (fusion is exact, so the deployed row is still the same function).
    """
    check_mode(mode)
    if mode == "none" or not fusable_blocks(spec):
        return None, ""
    size = tuple(input_size)
    if mode == "all":
        return export_choice("all", spec, size, None), ""
    try:
        return export_choice("auto", spec, size, None), ""
    except NoTablesError:
        why = (f"this machine ({local_device_name('ort', 1)}) has no latency tables; `mzoo lut build --space "
               "hgcnet_width` makes them")
    except InputError as err:
        why = str(err).split(": ", 1)[-1]  # without the export verb's flag prefix, which the demo does not have
    return export_choice("all", spec, size, None), f"no auto plan ({why}); deployed with every HGC layer fused"


def compare_models(names: Sequence[str], out_dir: str | os.PathLike, bench: BenchConfig = BenchConfig(),
                   progress: Callable[[str], None] | None = None, deploy_mode: str = "none",
                   notes: list[str] | None = None) -> list[ComparisonRow]:
    """For each model: count, export + verify ONNX, measure ORT and eager latency (same protocol).

    With ``deploy_mode`` ``auto`` or ``all``, each zoo network with HGC blocks gets a second row, deployed by
    :func:`deploy_choice` (its ONNX file under ``out_dir/deployed``); fallback notes are appended to ``notes``.
    """
    rows = []
    for name in names:
        if progress:
            progress(name)
        resolved = resolve_model(name)
        variants: list[tuple[Any, DeployChoice | None, Path]] = [(resolved, None, Path(out_dir))]
        spec = getattr(resolved.model, "arch_spec", None)
        if resolved.source == "zoo" and spec is not None:
            choice, note = deploy_choice(deploy_mode, spec, resolved.input_size)
            if note and notes is not None:
                notes.append(f"{name}: {note}")
            if choice is not None:
                variants.append((deploy(resolved, choice), choice, Path(out_dir) / DEPLOYED_DIR))
        for variant, choice, where in variants:
            where.mkdir(parents=True, exist_ok=True)
            cost = zoo.count_module(variant.model, variant.input_size)
            report = export_model(variant, where)
            diff = max(report.max_abs_diff.values())
            if choice is not None:  # the deployed file against the training-time network, as `mzoo export` checks it
                diff = max(diff, check_artefact(Path(report.path), "onnx", variant, OnnxExportConfig().atol) or 0.0)
            ort_result = measure_onnx(report.path, bench)
            torch_result = measure_torch(variant.model, variant.input_size, bench, label=name)
            rows.append(ComparisonRow(name, variant.source, cost.params, cost.macs, diff, report.path, ort_result,
                                      torch_result, choice))
    return rows


def format_table(rows: Sequence[ComparisonRow]) -> str:
    """A Markdown table of comparison rows."""
    head = ("| model | source | params | MACs | ONNX max abs diff | ORT median ms (p10–p90) "
            "| ORT ms/GMAC | eager median ms (p10–p90) | eager/ORT |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.source} | {zoo.format_count(r.params)} | {zoo.format_count(r.macs)} "
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
        lines.append(f"{r.label} vs {base.name}: {r.macs / base.macs:.2f}× the MACs, "
                     f"{r.ort.median_ms / base.ort.median_ms:.2f}× the ORT latency, "
                     f"{r.torch.median_ms / base.torch.median_ms:.2f}× the eager latency")
    return lines
