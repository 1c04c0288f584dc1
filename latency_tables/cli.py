"""The latency commands of ``mzoo``: ``bench`` (time an ONNX file), ``demo`` (the main job: build, export, verify
and time models side by side), ``lut list|build|validate|import-ofa``, ``predict`` and ``agent``.

Owns argument parsing and the glue between spaces, devices, tables and the predictor; the work itself
lives in :mod:`latency_tables.build`, :mod:`latency_tables.predict`, :mod:`latency_tables.validate`,
:mod:`latency_tables.ofa`, :mod:`latency_tables.devices` and :mod:`latency_tables.agent`. :func:`add_commands` is
called by :mod:`mzoo.cli`, which turns every user error into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.errors import InputError
from zoo import registry

DEMO_MODELS = ("hgcnet_1x", "mobilenetv2_100")

def table_protocol(threads: int, quick: bool = False, cpus: tuple[int, ...] | None = None) -> Any:
    """The protocol tables are built with (and validation measures with, read back from the table).

    Ops are short, so warm-up and timing are short too, but runs continue until the median is stable
    (within 1 %) or 10 s pass; ``quick`` is for smoke runs only. ``cpus`` pins the measuring process.
    """
    from latency_tables.measure import BenchConfig

    if quick:
        return BenchConfig(threads=threads, warmup_runs=2, warmup_min_seconds=0.0, runs=5, min_seconds=0.0,
                           max_seconds=2.0, stable_rel_tol=0.0, cpus=cpus)
    return BenchConfig(threads=threads, warmup_runs=10, warmup_min_seconds=0.3, runs=40, min_seconds=0.6,
                       max_seconds=10.0, stable_rel_tol=0.01, cooldown_seconds=0.05, cpus=cpus)


def parse_cpus(text: str | None) -> tuple[int, ...] | None:
    """``"1"`` or ``"0,2"`` as a tuple of CPU ids; None for None or an empty string."""
    if not text:
        return None
    try:
        cpus = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise InputError(f"--cpus must be comma-separated CPU ids such as 1 or 0,2, got {text!r}") from None
    if any(c < 0 for c in cpus):
        raise InputError(f"--cpus must be CPU ids >= 0, got {text!r}")
    return cpus


def _root(args: argparse.Namespace) -> Path | None:
    return Path(args.root) if getattr(args, "root", None) else None


def _spaces(text: str) -> list[str]:
    from zoo.spaces import list_spaces

    names = [s for s in text.split(",") if s] if text else []
    known = list_spaces()
    unknown = [s for s in names if s not in known]
    if unknown:
        raise InputError(f"unknown space(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def _cmd_lut_list(args: argparse.Namespace) -> int:
    from latency_tables.table import list_devices, load_tables

    devices = list_devices(_root(args))
    if not devices:
        print("no latency tables; build one with `mzoo lut build --space SPACE`")
        return 0
    print(f"{'device':<26} {'space':<22} {'entries':>7}  {'runtime':<20} {'threads':>7}  status")
    for device in devices:
        for table in load_tables(device, _root(args)):
            status = "complete" if table.complete else "PARTIAL (resume with mzoo lut build)"
            print(f"{device:<26} {table.space:<22} {len(table.entries):>7}  {table.runtime:<20} "
                  f"{table.threads if table.threads is not None else '-':>7}  {status}")
    return 0


def _cmd_lut_build(args: argparse.Namespace) -> int:
    from latency_tables.devices import get_device
    from latency_tables.build import build_table
    from latency_tables.table import table_path
    from zoo.spaces import get_space

    if args.calibration_rounds < 1:
        raise InputError(f"--calibration-rounds must be >= 1, got {args.calibration_rounds}")
    if args.passes < 1:
        raise InputError(f"--passes must be >= 1, got {args.passes}")
    device = get_device(args.device, threads=args.threads, token=args.token)
    name = args.name or device.name
    for space_name in _spaces(args.space):
        path = table_path(name, space_name, _root(args))
        cfg = table_protocol(args.threads, args.quick, parse_cpus(args.cpus))
        table = build_table(get_space(space_name), device, cfg=cfg,
                            path=path, resume=not args.restart, restart=args.restart,
                            calibration_networks=args.calibration, seed=args.seed, progress=True,
                            recalibrate=args.recalibrate, calibration_rounds=args.calibration_rounds,
                            passes=args.passes)
        overhead = table.overhead
        print(f"{path}: {len(table.entries)} op entries on {name}"
              + (f"; a network = {overhead.intercept_ms:.4f} ms + {1 + overhead.scale:.3f} x (sum of entries - "
                 f"{overhead.call_ms:.4f} ms per op)"
                 + "".join(f", {k} ops x {1 + overhead.scale + v:.3f}" for k, v in overhead.kind_scales.items())
                 + f" (fitted on {overhead.n_networks} networks)" if overhead else ""))
    return 0


def run_validation(device_spec: str, table_device: str | None, spaces: str, archs: int,
                   threads: int = 1, token: str | None = None, interpolate: bool = False,
                   root: Path | None = None) -> tuple[Any, str, list[Any]]:
    """Validate the predictor of ``table_device`` (default: the backend's own name) against measurements."""
    from latency_tables.devices import get_device
    from latency_tables.measure import BenchConfig
    from latency_tables.predict import Predictor
    from latency_tables.table import load_tables
    from latency_tables.validate import validate
    from zoo.spaces import get_space

    from latency_tables.validate import check_same_machine

    device = get_device(device_spec, threads=threads, token=token)
    table_device = table_device or device.name
    tables = {t.space: t for t in load_tables(table_device, root)}
    names = _spaces(spaces) or sorted(tables)
    missing = [s for s in names if s not in tables]
    if missing:
        raise InputError(f"no table for space(s) {', '.join(missing)} on device {table_device!r}; "
                         f"build with `mzoo lut build --space {missing[0]}`")
    info = device.describe()
    for name in names:
        check_same_machine(tables[name], info)
    predictor = Predictor(list(tables.values()))
    results = []
    for name in names:
        cfg = BenchConfig(**tables[name].protocol)
        results.append(validate(get_space(name), device, predictor, cfg, n_archs=archs, interpolate=interpolate))
    return device, table_device, results


def _cmd_lut_validate(args: argparse.Namespace) -> int:
    from common.files import check_writable
    from latency_tables.validate import scatter_plot

    for flag, target in (("--plot", args.plot), ("--json", args.json)):
        if target:  # checked before minutes of measuring, not after
            check_writable(target, flag)
    _, table_device, results = run_validation(args.device, args.table_device, args.space, args.archs,
                                              args.threads, args.token, args.interpolate, _root(args))
    print(f"{'space':<22} {'archs':>5} {'±10%':>7} {'±5%':>7} {'rho':>6} {'MAPE':>7}")
    for r in results:
        m = r.metrics()
        print(f"{r.space:<22} {r.n:>5} {m['within_10']:>7.1%} {m['within_5']:>7.1%} {m['spearman']:>6.3f} "
              f"{m['mape']:>7.2%}")
    if args.plot:
        print(f"plot: {scatter_plot(results, args.plot, title=f'Latency predictor on {table_device}')}")
    if args.json:
        from common.files import write_json_atomic

        write_json_atomic(Path(args.json), {"device": table_device, "results": [r.to_dict() for r in results]})
    return 0


def _cmd_lut_import_ofa(args: argparse.Namespace) -> int:
    from common.images import shared_data_dir
    from latency_tables.ofa import OFA_DATA_DIR, OFA_SPACE, convert_ofa_tables
    from latency_tables.table import table_path

    converted = convert_ofa_tables(Path(args.src) if args.src else shared_data_dir() / OFA_DATA_DIR, device=args.name)
    path = converted.table.save(table_path(args.name, OFA_SPACE, _root(args)))
    print(f"wrote {path}: {len(converted.table.entries)} keys over {len(converted.table.input_sizes)} resolutions; "
          f"{converted.pooled} measured at several resolutions and pooled (max spread "
          f"{100 * converted.max_spread:.1f} %); {len(converted.unused)} OFA entries unused")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from latency_tables.predict import MissingKeysError, Predictor

    from latency_tables.choose import choose_device

    from latency_tables.deploy import auto_plan
    from zoo.deploy import FUSED, deploy_spec, resolve_plan

    spec, input_size = _predict_target(args)
    requested = args.deploy  # None: auto, as `mzoo export --device` does, unless the tables lack the fused form
    plan = resolve_plan(spec, requested) if requested not in (None, "auto") else None  # fails before any table
    args.device = choose_device(args.device, args.space, _root(args))
    predictor = Predictor.for_device(args.device, _root(args))
    mode, note = requested or "auto", ""
    if mode == "auto":
        try:
            plan = auto_plan(spec, input_size, predictor, interpolate=args.interpolate)
        except MissingKeysError as err:
            if requested:
                raise InputError(f"--deploy auto: device {args.device!r}'s latency tables lack {len(err.keys)} op "
                                 f"key(s) of this network's HGC or fused form (e.g. {err.keys[0]}): measure them "
                                 f"with `mzoo lut build --space SPACE`, or give --deploy none|all") from None
            mode, plan = "none", resolve_plan(spec, "none")
            note = (f"; deploy none: the tables lack {len(err.keys)} key(s) of the fused form (e.g. {err.keys[0]}), "
                    f"so auto cannot choose (`mzoo lut build --space SPACE` measures them)")
    prediction = predictor.predict(deploy_spec(spec, plan), input_size, interpolate=args.interpolate,
                                   space=args.space)
    if args.json:
        print(json.dumps(_prediction_dict(prediction) | {"deploy": mode, "deploy_plan": plan}, indent=2,
                         default=str))
        return 0
    label = args.name or args.spec
    fused = sum(form == FUSED for form in plan.values())
    if plan and not note:
        note = (f", deploy {mode}{'' if requested else ' (default)'}: {fused} of {len(plan)} HGC blocks fused")
    print(f"{label} at {'x'.join(map(str, input_size))} on {args.device}{note}: {prediction.total_ms:.3f} ms "
          f"(ops {prediction.ops_ms:.3f} + overhead {prediction.overhead_ms:.3f})")
    if prediction.interpolated_keys:
        print(f"  {len(prediction.interpolated_keys)} op(s) interpolated, not measured: "
              f"{', '.join(prediction.interpolated_keys[:3])}{' ...' if len(prediction.interpolated_keys) > 3 else ''}")
    if args.ops:
        for op in prediction.ops:
            print(f"  {op.name:<22} {op.ms:>8.4f} ms  {op.key}{'  (interpolated)' if op.interpolated else ''}")
    return 0


def _predict_target(args: argparse.Namespace) -> tuple[Any, tuple[int, int, int]]:
    from zoo import get_arch_spec, get_pretrained_cfg, spec_from_json

    from export.parity import check_image_side

    if bool(args.name) == bool(args.spec):
        raise InputError("give a zoo model NAME or --spec FILE (exactly one)")
    if args.input_size is not None:
        check_image_side(args.input_size)
    if args.spec:
        spec = spec_from_json(Path(args.spec).read_text())
        side = args.input_size or (224 if spec.num_classes == 1000 else 32)
        return spec, (spec.in_chans, side, side)
    spec, size = get_arch_spec(args.name), tuple(get_pretrained_cfg(args.name).input_size)
    if args.input_size is not None:
        size = (size[0], args.input_size, args.input_size)
    return spec, size  # type: ignore[return-value]


def _prediction_dict(prediction: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(prediction) if is_dataclass(prediction) else dict(vars(prediction))


# A timed batch is allocated again for every run: 256 images of 224x224 are 150 MB per input copy already, and
# mobile latency is measured at batch 1.
MAX_BENCH_BATCH = 256


def _cmd_bench(args: argparse.Namespace) -> int:
    from latency_tables.measure import BenchConfig, measure_onnx

    cores = os.cpu_count() or 1
    if not 1 <= args.threads <= cores:
        raise InputError(f"--threads must be between 1 and this machine's {cores} cores (more threads than cores "
                         f"time the scheduler, not the model), got {args.threads}")
    if not 1 <= args.batch <= MAX_BENCH_BATCH:
        raise InputError(f"--batch must be between 1 and {MAX_BENCH_BATCH} (each run allocates the batch; phones run "
                         f"batch 1), got {args.batch}")
    if args.runs < 1:
        raise InputError(f"--runs must be >= 1, got {args.runs}")
    result = measure_onnx(args.file, BenchConfig(threads=args.threads, runs=args.runs, batch_size=args.batch))
    if args.json:
        print(result.to_json(indent=2))
        return 0
    print(f"{args.file}: input {result.input_shape}, {result.threads} thread(s), n={result.n}")
    print(f"  median {result.median_ms:.3f} ms  p10 {result.p10_ms:.3f}  p90 {result.p90_ms:.3f}  "
          f"std {result.std_ms:.3f}  (first run {result.first_run_ms:.2f} ms, "
          f"session {result.session_create_ms:.1f} ms)")
    print(f"  on {result.environment.cpu_model} ({result.environment.logical_cores} cores), "
          f"onnxruntime {result.environment.onnxruntime}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from latency_tables.measure import BenchConfig
    from export.deploy import check_mode
    from latency_tables.compare import compare_models, format_table, nearest_baselines

    check_mode(args.deploy)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for name in names:
        _check_known(name)
    out = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="mzoo-demo-"))
    bar = tqdm(total=len(names), desc="build, export, verify, measure", unit="model", file=sys.stderr)

    def step(name: str) -> None:
        bar.set_postfix_str(name)

    notes: list[str] = []
    rows = compare_models(names, out, BenchConfig(threads=args.threads), progress=step, deploy_mode=args.deploy,
                          notes=notes)
    bar.update(len(names))
    bar.close()
    env = rows[0].ort.environment
    print(f"\nCPU latency, batch 1, {args.threads} thread(s), on {env.cpu_model} "
          f"(onnxruntime {env.onnxruntime}, torch {env.torch}); ONNX files in {out}\n")
    print(format_table(rows))
    for line in notes + nearest_baselines(rows):
        print(f"\n{line}")
    for line in _predicted_lines(rows, args.threads):
        print(f"\n{line}")
    return 0


def _check_known(name: str) -> None:
    """``InputError`` naming ``--models`` for a name neither the zoo nor timm knows, before any work."""
    import timm

    if not (registry.is_model(name) or timm.is_model(name)):
        raise InputError(f"--models: unknown model {name!r} (neither a zoo model, see `mzoo list`, nor a timm model)")


def _table_protocol(protocol: Any) -> Any:
    """A table's measurement protocol as a BenchConfig, unpinned where this process may not use its CPUs."""
    from latency_tables.measure import BenchConfig

    cfg = dict(protocol)
    if cfg.get("cpus") and not set(cfg["cpus"]) <= os.sched_getaffinity(0):
        cfg["cpus"] = None
    return BenchConfig(**cfg)


def _predicted_lines(rows: Sequence[Any], threads: int) -> list[str]:
    """Each zoo row's latency predicted from this machine's tables, beside its ONNX file measured again with the
    tables' own protocol (pinned, its statistic): the demo's own timing is unpinned and one session, which on a
    shared machine differs from the table's by more than the predictor's error."""
    from latency_tables.devices import local_device_name
    from latency_tables.measure import measure_onnx
    from latency_tables.predict import MissingKeysError, Predictor
    from latency_tables.table import NoTablesError
    from zoo.deploy import deploy_spec

    device = local_device_name("ort", threads)
    try:
        predictor = Predictor.for_device(device)
    except NoTablesError:
        return [f"No latency tables for this machine ({device}); `mzoo lut build --space SPACE` makes them."]
    lines = []
    for row in rows:
        if row.source != "zoo":
            continue
        spec = registry.get_arch_spec(row.name)
        if row.deploy is not None:
            spec = deploy_spec(spec, row.deploy.blocks)
        try:
            p = predictor.predict(spec, registry.get_pretrained_cfg(row.name).input_size)
        except MissingKeysError as err:
            lines.append(f"{row.label}: not predictable from latency_tables/{device} ({len(err.keys)} op keys "
                         "missing)")
            continue
        table = next(t for t in predictor.tables if t.space == p.overhead_table) if p.overhead_table else \
            predictor.tables[0]
        measured = getattr(measure_onnx(row.onnx_path, _table_protocol(table.protocol)), predictor.statistic)
        stat = predictor.statistic.removesuffix("_ms")
        lines.append(f"{row.label} predicted from latency_tables/{device} (table {p.overhead_table}: {len(p.ops)} "
                     f"ops + overhead): {p.total_ms:.2f} ms; measured with the table's protocol: {measured:.2f} ms "
                     f"({stat} over runs), error {p.total_ms / measured - 1:+.1%}")
    return lines


def _cmd_agent(args: argparse.Namespace) -> int:
    from latency_tables.agent import run_agent  # here: the server imports the runtimes it measures with

    return run_agent(args)


def _export_deploy_choice(requested: str | None, spec: Any, input_size: tuple[int, int, int],
                          device: str | None) -> Any:
    """The planner of ``mzoo export --deploy/--device``: the auto plan and predictions from the device's tables."""
    from latency_tables.deploy import export_choice

    return export_choice(requested, spec, input_size, device)


def add_commands(sub: Any) -> None:
    """Add ``lut``, ``predict`` and ``agent`` to the ``mzoo`` sub-command parser ``sub``, and give ``export`` (added
    before, by :mod:`export.cli`, which may not import this package) the deploy planner that reads latency tables."""
    from latency_tables.agent_config import add_agent_arguments

    export = getattr(sub, "choices", {}).get("export")
    if export is not None:
        export.set_defaults(deploy_planner=_export_deploy_choice)

    p = sub.add_parser("bench", help="measure an ONNX file's latency on this CPU with ONNX Runtime")
    p.add_argument("file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="the main job: build, count, export, verify and time models side by side")
    p.add_argument("--models", default=",".join(DEMO_MODELS), help=f"comma-separated (default {','.join(DEMO_MODELS)})")
    p.add_argument("-o", "--output", help="where to keep the ONNX files (default: a temporary directory)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--deploy", default="auto", help="also show each HGC network deployed: auto (the plan this "
                   "machine's latency tables choose; all where they cannot), all (every HGC layer fused), or none")
    p.set_defaults(func=_cmd_demo)

    lut = sub.add_parser("lut", help="latency lookup tables: list, build, validate, import OFA's Note10 tables")
    lsub = lut.add_subparsers(dest="lut_command", required=True)

    p = lsub.add_parser("list", help="list the latency tables of every device")
    _root_arg(p)
    p.set_defaults(func=_cmd_lut_list)

    p = lsub.add_parser("build", help="measure every op of a search space on a device into a table (resumable)")
    p.add_argument("--space", required=True, help="comma-separated search spaces (see `mzoo lut spaces`)")
    _device_args(p)
    p.add_argument("--name", help="table directory name (default: the device's name, e.g. amd-epyc-f23m1-ort-t1)")
    p.add_argument("--restart", action="store_true", help="discard a partial table instead of resuming it")
    p.add_argument("--recalibrate", action="store_true",
                   help="keep a table's entries; measure its calibration networks again and refit the overhead")
    p.add_argument("--calibration", type=int, default=20, help="networks measured to fit the overhead (default 20)")
    p.add_argument("--passes", type=int, default=1,
                   help="measure every op this many times, round-robin, keeping its fastest (default 1; 2 on a "
                        "shared VM whose speed comes in phases); a complete table gets the missing passes")
    p.add_argument("--calibration-rounds", type=int, default=3,
                   help="round-robin passes over the calibration networks, each one's fastest counts (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration networks (default 0)")
    p.add_argument("--quick", action="store_true", help="a short protocol, for smoke tests only")
    p.add_argument("--cpus", help="pin the measurements to these CPU ids, e.g. 1 or 0,2 (recorded in the protocol)")
    _root_arg(p)
    p.set_defaults(func=_cmd_lut_build)

    p = lsub.add_parser("validate", help="predicted vs measured latency of random architectures of each space")
    p.add_argument("--space", default="", help="comma-separated spaces (default: every table of the device)")
    _device_args(p)
    p.add_argument("--table-device", help="tables to validate (default: the device's own name)")
    p.add_argument("--archs", type=int, default=100, help="random architectures per space (default 100)")
    p.add_argument("--interpolate", action="store_true", help="interpolate ops missing from the table")
    p.add_argument("--plot", help="write a predicted-vs-measured scatter plot PNG here")
    p.add_argument("--json", help="write every point and the metrics as JSON here")
    _root_arg(p)
    p.set_defaults(func=_cmd_lut_validate)

    p = lsub.add_parser("spaces", help="list the search spaces tables can be built for")
    p.set_defaults(func=_cmd_lut_spaces)

    p = lsub.add_parser("import-ofa", help="import Once-for-All's Samsung Note10 tables (MobileNetV3 space)")
    p.add_argument("--src", help="directory of <res>_lookup_table.yaml (default: <shared data>/ofa-note10-lut)")
    p.add_argument("--name", default="samsung-note10-ofa", help="device name to import as")
    _root_arg(p)
    p.set_defaults(func=_cmd_lut_import_ofa)

    p = sub.add_parser("predict", help="predict a model's latency on a device from its latency tables")
    p.add_argument("name", nargs="?", help="a zoo model")
    p.add_argument("--spec", help="an architecture spec JSON file instead of a name")
    p.add_argument("--device", help="table directory, e.g. amd-epyc-f23m1-ort-t1 or samsung-note10-ofa (default: this "
                                    "machine's tables; see `mzoo lut list`)")
    p.add_argument("--input-size", type=int, help="image side (default: the model's)")
    p.add_argument("--interpolate", action="store_true", help="interpolate ops missing from the tables (flagged)")
    p.add_argument("--space", help="take the overhead from this space's table (default: the best-covering one)")
    p.add_argument("--ops", action="store_true", help="show every op's entry")
    p.add_argument("--json", action="store_true", help="print the whole prediction as JSON")
    p.add_argument("--deploy", choices=("none", "all", "auto"),
                   help="predict the deployed network: HGC layers fused into dense convs (all), per layer from the "
                        "device's tables (auto, the default, as `mzoo export --device`; none when the tables lack "
                        "the fused form, with a note), or as trained (none)")
    _root_arg(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("agent", help="serve latency measurements on this machine to a remote `mzoo` (token-protected)")
    add_agent_arguments(p)
    p.set_defaults(func=_cmd_agent)


def _cmd_lut_spaces(args: argparse.Namespace) -> int:
    from zoo.spaces import get_space, list_spaces, op_keys

    for name in list_spaces():
        space = get_space(name)
        print(f"{name:<24} {len(op_keys(space)):>5} op keys  {(type(space).__doc__ or '').strip().splitlines()[0]}")
    return 0


def _device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="ort", help="ort (local ONNX Runtime CPU), xnnpack (local ExecuTorch), "
                                                   "litert (local LiteRT/XNNPACK), ncnn (local ncnn; both need the "
                                                   "android extra), or http://HOST:PORT[/ort|/xnnpack] (a running "
                                                   "`mzoo agent`)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--token", help="agent token for a remote device (default: $MZOO_AGENT_TOKEN)")


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="tables root (default: the project's latency_tables/, or $MZOO_LATENCY_TABLES)")

