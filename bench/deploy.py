"""HGCNets deployed under the none / all / auto plans beside MobileNetV2, on ONNX Runtime and ExecuTorch-XNNPACK.

Each HGCNet is exported as trained (plan ``none``), with every HGC layer folded into an exact dense convolution
(``all``, :func:`zoo.deploy.reparameterize`) and with the per-layer choice of each runtime's latency tables (``auto``:
this machine's ``ort`` tables for the ONNX Runtime column, its ``xnnpack`` tables for the ExecuTorch one; one network
when both choose alike). Every network is exported to ONNX and to ExecuTorch with the XNNPACK delegate, each verified
against eager PyTorch, the rewritten eager network first checked against the trained one
(:func:`export.deploy.eager_parity`). All artefacts, and the MobileNetV2 nearest in MACs to each HGCNet, are then
timed at batch 1 on one thread with the project's protocol, round-robin over several rounds so that drift hits
every row alike; each figure is the median over rounds of each round's fastest run (min_ms, the tables' statistic).
The repeat noise is the spread of those per-round figures. Prints the table and writes its section of BENCHMARKS.md.

    python bench/deploy.py [--models hgcnet_0_5x,hgcnet_1x,hgcnet_1_5x,hgcnet_2x] [--rounds 5] [--interpolate]
                           [--cpu ID] [--ort-tables DEVICE] [--xnnpack-tables DEVICE] [--no-pte] [--no-write]
    python bench/deploy.py --quick    # one model, one round, short protocol: a smoke run, never written
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

import zoo  # noqa: E402
from bench._report import write_section  # noqa: E402
from common.environment import current_environment  # noqa: E402
from export.deploy import eager_parity  # noqa: E402
from export.formats import ExportOptions, export_formats  # noqa: E402
from export.pipeline import ResolvedModel, resolve_model  # noqa: E402
from latency_tables.deploy import auto_plan  # noqa: E402
from latency_tables.devices import cpu_slug, local_device_name  # noqa: E402
from latency_tables.measure import BenchConfig, measure_onnx  # noqa: E402
from latency_tables.measure_pte import measure_pte  # noqa: E402
from latency_tables.predict import MissingKeysError, Predictor  # noqa: E402
from latency_tables.table import TABLES_ENV, NoTablesError, tables_root  # noqa: E402
from zoo.deploy import FUSED, deploy_spec, reparameterize, resolve_plan  # noqa: E402

DEFAULT_MODELS = ("hgcnet_0_5x", "hgcnet_1x", "hgcnet_1_5x", "hgcnet_2x")
BASELINES = ("mobilenetv2_050", "mobilenetv2_075", "mobilenetv2_100", "mobilenetv2_140")
RUNTIMES = {"ort": "ORT", "xnnpack": "XNNPACK"}
FULL = BenchConfig(threads=1, runs=50, warmup_min_seconds=0.5, min_seconds=1.0, max_seconds=10.0)
QUICK = BenchConfig(threads=1, warmup_runs=2, warmup_min_seconds=0.0, runs=5, min_seconds=0.0, max_seconds=2.0,
                    stable_rel_tol=None)


@dataclasses.dataclass
class Row:
    """One network: which model and plan it deploys, what it costs, and its timings per round and runtime."""

    model: str
    plan: str  # none | all | auto | auto[ort] | auto[xnnpack] | "-" (a baseline)
    choice: Mapping[str, str]
    resolved: ResolvedModel
    macs: int
    params: int
    artefacts: dict[str, str] = dataclasses.field(default_factory=dict)  # runtime -> path
    onnx_mb: float = float("nan")
    times: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {r: [] for r in RUNTIMES})
    predicted: dict[str, float | None] = dataclasses.field(default_factory=dict)

    def ms(self, runtime: str) -> float:
        return statistics.median(self.times[runtime]) if self.times[runtime] else float("nan")

    def noise(self, runtime: str) -> float:
        """Relative spread of the per-round figures: the repeat noise this row's numbers carry."""
        t = self.times[runtime]
        return (max(t) - min(t)) / statistics.median(t) if len(t) > 1 else float("nan")


def predictors(devices: Mapping[str, str], notes: list[str]) -> dict[str, Predictor | None]:
    """The predictor of each runtime's tables (``devices``: runtime -> table device), None where there are none."""
    out: dict[str, Predictor | None] = {}
    for runtime, device in devices.items():
        try:
            out[runtime] = Predictor.for_device(device)
        except NoTablesError:
            out[runtime] = None
            notes.append(f"no auto plan or prediction for {RUNTIMES[runtime]}: no {device} tables (`mzoo lut build "
                         f"--space hgcnet_width --device {runtime}` here, or --{runtime}-tables DEVICE).")
            continue
        notes.append(f"{RUNTIMES[runtime]}: auto plans and predictions from {device}'s tables in {tables_root()} "
                     f"(${TABLES_ENV} sets that root).")
        if device != local_device_name(runtime, 1):
            notes.append(f"{RUNTIMES[runtime]}: auto plans and predictions from {device}'s tables, not this "
                         "machine's: predicted vs measured compares two machines.")
    return out


def auto_plans(name: str, preds: Mapping[str, Predictor | None], interpolate: bool,
               notes: list[str]) -> dict[str, dict[str, str]]:
    """``{runtime: plan}`` for each runtime whose tables price both forms of ``name``'s HGC blocks."""
    spec, size = zoo.get_arch_spec(name), zoo.get_pretrained_cfg(name).input_size
    plans = {}
    for runtime, predictor in preds.items():
        if predictor is None:
            continue
        device = predictor.device
        try:
            plans[runtime] = auto_plan(spec, size, predictor, interpolate=interpolate)
        except MissingKeysError as err:
            notes.append(f"{name}: no auto plan for {RUNTIMES[runtime]}: the {device} tables lack {len(err.keys)} op "
                         f"keys (e.g. {err.keys[0]}); rebuild them with `mzoo lut build --space hgcnet_width` (both "
                         "forms), or pass --interpolate.")
    return plans


def hgcnet_rows(name: str, preds: Mapping[str, Predictor | None], interpolate: bool, notes: list[str]) -> list[Row]:
    """The none / all / auto networks of ``name``, each rewritten from the one trained network."""
    base = resolve_model(name)
    spec = base.model.arch_spec
    plans: list[tuple[str, dict[str, str]]] = [("none", resolve_plan(spec, "none")), ("all", resolve_plan(spec, "all"))]
    autos = auto_plans(name, preds, interpolate, notes)
    distinct = {tuple(sorted(p.items())) for p in autos.values()}
    for runtime, plan in autos.items():
        plans.append(("auto" if len(distinct) == 1 else f"auto[{runtime}]", plan))
        if len(distinct) == 1:
            break
    rows = []
    for label, plan in plans:
        model = base.model
        if any(form == FUSED for form in plan.values()):
            model = reparameterize(base.model, plan).eval()
            eager_parity(base.model, model, base.input_size)  # exact before anything is timed
        target = deploy_spec(spec, plan)
        cost = zoo.count(target, base.input_size)
        resolved = dataclasses.replace(base, name=f"{name}_{label.replace('[', '_').replace(']', '')}", model=model,
                                       arch_spec_json=target.to_json())
        rows.append(Row(name, label, plan, resolved, cost.macs, cost.params))
    return rows


def baseline_row(name: str) -> Row:
    resolved = resolve_model(name)
    cost = zoo.count_module(resolved.model, resolved.input_size)
    return Row(name, "-", {}, resolved, cost.macs, sum(p.numel() for p in resolved.model.parameters()))


def nearest(macs: int, baselines: Sequence[Row]) -> Row:
    return min(baselines, key=lambda b: abs(b.macs - macs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="HGCNets (zoo names)")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help="MobileNetV2s (timm names); each HGCNet is compared with the one nearest in MACs")
    parser.add_argument("--rounds", type=int, default=5, help="round-robin repetitions; the median is reported")
    parser.add_argument("--interpolate", action="store_true",
                        help="price ops the tables lack by interpolation (flagged in the notes)")
    for runtime, label in RUNTIMES.items():
        parser.add_argument(f"--{runtime}-tables", metavar="DEVICE", default=local_device_name(runtime, 1),
                            help=f"latency tables of the {label} auto plan and predictions (default: this machine's)")
    parser.add_argument("--cpu", type=int, default=None,
                        help="pin every measurement to this CPU id, as the tables' protocol pins theirs (default: "
                             "unpinned); on a shared VM the scheduler moving the process is most of the repeat noise")
    parser.add_argument("--no-pte", action="store_true", help="ONNX Runtime only")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the first model, one round, a short protocol; never written to BENCHMARKS.md")
    args = parser.parse_args()
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    hgcnets = [n for n in args.models.split(",") if n]
    unknown = [n for n in hgcnets if not zoo.is_model(n)]
    if not hgcnets or unknown:
        raise SystemExit(f"--models must name zoo HGCNets, got {unknown or args.models!r}")
    if args.cpu is not None and args.cpu not in os.sched_getaffinity(0):
        raise SystemExit(f"--cpu {args.cpu}: this process may use CPUs {sorted(os.sched_getaffinity(0))} only")
    if args.quick:
        hgcnets, args.rounds = hgcnets[:1], 1
    cfg = dataclasses.replace(QUICK if args.quick else FULL, cpus=None if args.cpu is None else (args.cpu,))
    runtimes = ["ort"] if args.no_pte else list(RUNTIMES)
    formats = ",".join("onnx" if r == "ort" else "pte" for r in runtimes)

    notes: list[str] = []
    preds = predictors({r: getattr(args, f"{r}_tables") for r in runtimes}, notes)
    baselines = [baseline_row(n) for n in args.baselines.split(",") if n]
    rows: list[Row] = []
    for name in tqdm(hgcnets, desc="build + rewrite", unit="model", file=sys.stderr):
        rows += hgcnet_rows(name, preds, args.interpolate, notes)
    wanted = {nearest(r.macs, baselines).model for r in rows if r.plan == "none"}
    rows += [b for b in baselines if b.model in wanted]
    with tempfile.TemporaryDirectory(prefix="mzoo-deploy-") as out:
        for row in tqdm(rows, desc="export + verify", unit="network", file=sys.stderr):
            cells = {c.format: c for c in export_formats(row.resolved, out, formats, ExportOptions())}
            row.artefacts = {r: cells["onnx" if r == "ort" else "pte"].path for r in runtimes}
            row.onnx_mb = Path(cells["onnx"].path).stat().st_size / 1e6
        for _ in tqdm(range(args.rounds), desc="measure rounds", file=sys.stderr):
            for row in rows:
                for runtime, path in row.artefacts.items():
                    measure = measure_onnx if runtime == "ort" else measure_pte
                    row.times[runtime].append(measure(path, cfg).min_ms)
    for row in rows:
        for runtime, predictor in preds.items():
            row.predicted[runtime] = _predict(row, predictor, args.interpolate)
    table = format_table(rows, baselines, runtimes)
    summary = goals(rows, baselines, runtimes)
    e = current_environment()
    machine = (f"{e.cpu_model} ({e.cpu_id}), {e.logical_cores} logical cores, {e.os}; onnxruntime {e.onnxruntime}, "
               f"torch {e.torch}")
    text = "\n\n".join(part for part in (table, "\n".join(f"- {s}" for s in summary),
                                          "\n".join(f"- {n}" for n in notes), _protocol(args, cfg)) if part)
    print(f"\n{machine}\n\n{text}")
    if args.quick or args.no_write:
        print("\n(not written to BENCHMARKS.md: " + ("--quick is a smoke run)" if args.quick else "--no-write)"))
        return
    slug = cpu_slug(e.cpu_model, e.cpu_id)  # one section per CPU model: the trade-off is the device's
    write_section(f"deploy-{slug}", f"Deploy-time re-parameterisation on {slug}: HGCNets under none / all / auto "
                  f"beside MobileNetV2", text + "\n", machine)


def _predict(row: Row, predictor: Predictor | None, interpolate: bool) -> float | None:
    if predictor is None or row.plan == "-":
        return None
    spec = zoo.get_arch_spec(row.model)
    try:
        return predictor.predict(deploy_spec(spec, row.choice), row.resolved.input_size,
                                 interpolate=interpolate).total_ms
    except MissingKeysError:
        return None


def format_table(rows: Sequence[Row], baselines: Sequence[Row], runtimes: Sequence[str]) -> str:
    head = "| network | plan | fused | MACs | params | ONNX MB |"
    rule = "|---|---|---|---|---|---|"
    for r in runtimes:
        head += f" {RUNTIMES[r]} ms | vs none | vs MBV2 | predicted |"
        rule += "---|---|---|---|"
    lines = [head, rule]
    by_key = {(row.model, row.plan): row for row in rows}
    for row in rows:
        none = by_key.get((row.model, "none"))
        base = nearest(none.macs, baselines) if none is not None else None
        fused = f"{sum(f == FUSED for f in row.choice.values())}/{len(row.choice)}" if row.choice else "-"
        line = (f"| {row.model} | {row.plan} | {fused} | {zoo.format_count(row.macs)} | {zoo.format_count(row.params)} "
                f"| {row.onnx_mb:.2f} |")
        for r in runtimes:
            ms = row.ms(r)
            vs_none = f"{ms / none.ms(r):.2f}×" if none is not None else "-"
            vs_base = f"{ms / base.ms(r):.2f}× {base.model}" if base is not None else "-"
            predicted = row.predicted.get(r)
            line += f" {ms:.3f} | {vs_none} | {vs_base} | {'-' if predicted is None else f'{predicted:.3f}'} |"
        lines.append(line)
    return "\n".join(lines)


def goals(rows: Sequence[Row], baselines: Sequence[Row], runtimes: Sequence[str]) -> list[str]:
    """The issue's goals, as measured: auto vs MobileNetV2, auto vs the better of none/all, predicted vs measured."""
    out = []
    by_model: dict[str, dict[str, Row]] = {}
    for row in rows:
        if row.plan != "-":
            by_model.setdefault(row.model, {})[row.plan] = row
    for model, plans in by_model.items():
        base = nearest(plans["none"].macs, baselines)
        for r in runtimes:
            auto = plans.get("auto") or plans.get(f"auto[{r}]")
            if auto is None:
                continue
            best = min((plans["none"], plans["all"]), key=lambda p: p.ms(r))
            noise = max(p.noise(r) for p in (auto, best))
            out.append(f"{model} auto on {RUNTIMES[r]}: {auto.ms(r) / base.ms(r):.2f}× {base.model} (goal ≤ 1.05×); "
                       f"{auto.ms(r) / best.ms(r) - 1:+.1%} vs the better of none/all ({best.plan}; repeat noise "
                       f"{noise:.1%})")
    for row in rows:
        for r in runtimes:
            predicted = row.predicted.get(r)
            if predicted is not None and row.times[r]:
                out.append(f"{row.model} {row.plan} on {RUNTIMES[r]}: predicted {predicted:.3f} ms vs measured "
                           f"{row.ms(r):.3f} ms ({predicted / row.ms(r) - 1:+.1%}; goal within ±10 %)")
    return out


def _protocol(args: argparse.Namespace, cfg: BenchConfig) -> str:
    return ("Batch 1, one thread, random-init weights with BatchNorm calibrated on random inputs (latency does not "
            f"depend on weights). Protocol: `BenchConfig` with runs ≥ {cfg.runs}, warm-up ≥ "
            f"{cfg.warmup_min_seconds:g} s, "
            f"{'pinned to CPU ' + str(cfg.cpus[0]) if cfg.cpus else 'not pinned'}; each figure is the median over "
            f"{args.rounds} round-robin round(s) of each "
            "round's fastest run (min_ms), all rows in one run. `fused` is how many HGC blocks the plan folds into "
            "one dense 1×1 convolution (exact: the rewritten eager network is checked against the trained one to "
            "1e-5, and each artefact against its eager network by the exporter). `vs MBV2` divides by the "
            "MobileNetV2 nearest in MACs to the HGCNet; `predicted` is the sum of this machine's latency-table "
            f"entries plus the fitted overhead{' (missing ops interpolated)' if args.interpolate else ''}. MACs and "
            "params: the cost walker for HGCNets, forward hooks for the timm MobileNetV2s.")


if __name__ == "__main__":
    main()
