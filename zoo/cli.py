"""The ``mzoo`` command line: list, info, export, bench, the end-to-end demo, and (from
:mod:`latency_tables.cli`) the latency commands ``lut``, ``predict`` and ``agent``.

Every user error (unknown model, missing or corrupt file, bad option) becomes one line on stderr
and exit status 2, never a traceback. Heavy imports (export, onnxruntime) happen per command.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn
from pathlib import Path

from . import costs, registry
from .pretrained import WeightsError

DEMO_MODELS = ("hgcnet_1x", "mobilenetv2_100")


def model_table(names: Sequence[str]) -> str:
    """The README's model table (Markdown), generated from the registry."""
    lines = ["| model | params | MACs | input | paper | notes |", "|---|---|---|---|---|---|"]
    for name in names:
        info = registry.model_info(name)
        cfg = info["pretrained_cfg"]
        size = "×".join(str(d) for d in info["input_size"][1:])
        lines.append(f"| {name} | {costs.format_count(info['params'])} | {costs.format_count(info['macs'])} "
                     f"| {size} | {cfg['paper_ids'] or ''} | {cfg['notes'] or ''} |")
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    names = registry.list_models(args.pattern or "", exclude=args.exclude or "")
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}")
    if args.markdown:
        print(model_table(names))
        return 0
    print(f"{'model':<24} {'params':>9} {'MACs':>9}  input")
    for name in names:
        info = registry.model_info(name)
        size = "x".join(str(d) for d in info["input_size"])
        print(f"{name:<24} {costs.format_count(info['params']):>9} {costs.format_count(info['macs']):>9}  {size}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    info = registry.model_info(args.name)
    if args.json:
        print(json.dumps(info, indent=2, default=list))
        return 0
    cfg = info["pretrained_cfg"]
    print(f"{args.name}  ({info['family']}, {info['module']})")
    print(f"  params {info['params']:,} ({costs.format_count(info['params'])}), "
          f"MACs {info['macs']:,} ({costs.format_count(info['macs'])}) at {tuple(info['input_size'])}; FLOPs = 2 x MACs")
    print(f"  input {tuple(cfg['input_size'])}, mean {tuple(cfg['mean'])}, std {tuple(cfg['std'])}, "
          f"crop {cfg['crop_pct']}, classes {cfg['num_classes']}")
    print(f"  weights: {cfg['file'] or cfg['url'] or 'none published'}")
    if cfg.get("paper_name"):
        print(f"  paper: {cfg['paper_name']} ({cfg['paper_ids']})")
    if args.ops:
        ops = list(costs.iter_ops(registry.get_arch_spec(args.name), info["input_size"]))
        name_w, key_w = max(len(o.name) for o in ops), max(len(o.key) for o in ops)
        print(f"  {'op':<{name_w}} {'key':<{key_w}} {'params':>9} {'MACs':>9}")
        for op in ops:
            print(f"  {op.name:<{name_w}} {op.key:<{key_w}} {costs.format_count(op.params):>9} "
                  f"{costs.format_count(op.macs):>9}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from export.formats import ExportOptions, export_all, export_formats, parse_formats
    from export.onnx import OnnxExportConfig
    from export.pipeline import resolve_model, resolve_spec

    formats = parse_formats(args.format)
    options = ExportOptions(images=args.images, calibration=args.calibration,
                            onnx=OnnxExportConfig(opset=args.opset))
    options = replace(options, coreml=replace(options.coreml, precision=args.coreml_precision,
                                              minimum_deployment_target=args.coreml_target,
                                              class_labels=_read_labels(args.class_labels)))
    if sum(bool(x) for x in (args.name and not args.all, args.all, args.spec)) != 1:
        raise ValueError("give exactly one of NAME, --all [PATTERN] or --spec FILE")
    if args.all and args.checkpoint:
        raise ValueError("--checkpoint names one model's weights; it cannot be used with --all (export that model "
                         "by name with --checkpoint, or register weights with --searched DIR)")
    if args.all:
        names = registry.list_models(args.name or "")
        if not names:
            raise ValueError(f"no model matches {args.name!r}")
        bar = tqdm(total=len(names) * len(formats), desc="export", unit="artefact", file=sys.stderr)

        def step(cell: object) -> None:
            bar.set_postfix_str(f"{cell.model} {cell.format}")  # type: ignore[attr-defined]
            bar.update(1)

        matrix = export_all(names, args.output, formats, options, resolve=resolve_model, on_cell=step)
        bar.close()
        counts = {s: sum(c.status == s for c in matrix.cells) for s in ("ok", "failed", "unsupported")}
        print(f"{len(names)} models x {len(formats)} formats: {counts['ok']} ok, {counts['failed']} failed, "
              f"{counts['unsupported']} unsupported (documented)")
        print(f"matrix: {Path(args.output) / 'compatibility.md'} and compatibility.json")
        for cell in matrix.failures:
            print(f"  FAILED {cell.model} {cell.format}: {cell.error}")
        return 1 if matrix.failures else 0
    if args.spec:
        resolved = resolve_spec(args.spec, args.checkpoint, name=args.name_as,
                                input_size=_input_size(args.input_size))
    else:
        resolved = resolve_model(args.name, checkpoint_path=args.checkpoint)
    for cell in export_formats(resolved, args.output, formats, options):
        print(f"{cell.path}  ({cell.format}, {cell.seconds:.1f} s)")
        print(f"  verified: {cell.verification}: {cell.summary}")
        if cell.report.get("calibration_source"):
            print(f"  calibrated on {cell.report['num_calibration']} inputs from {cell.report['calibration_source']}")
        for batch, (ort_err, eager_err) in sorted(cell.report.get("noise_floor", {}).items()):
            print(f"  batch {batch}: PyTorch fp32 itself is {eager_err:.2e} from a float64 run; "
                  f"ONNX Runtime is {ort_err:.2e} from it (accepted: within 2x PyTorch's own error)")
    return 0


def _read_labels(path: str | None) -> tuple[str, ...] | None:
    if path is None:
        return None
    labels = tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    if not labels:
        raise ValueError(f"class labels file {path!r} holds no labels (one per line expected)")
    return labels


def _input_size(side: int | None) -> tuple[int, int, int] | None:
    from export.parity import check_image_side

    return None if side is None else (3, check_image_side(side), side)


# A timed batch is allocated again for every run: 256 images of 224x224 are 150 MB per input copy already, and
# mobile latency is measured at batch 1.
MAX_BENCH_BATCH = 256


def _cmd_bench(args: argparse.Namespace) -> int:
    from export.latency import BenchConfig, measure_onnx

    cores = os.cpu_count() or 1
    if not 1 <= args.threads <= cores:
        raise ValueError(f"--threads must be between 1 and this machine's {cores} cores (more threads than cores "
                         f"time the scheduler, not the model), got {args.threads}")
    if not 1 <= args.batch <= MAX_BENCH_BATCH:
        raise ValueError(f"--batch must be between 1 and {MAX_BENCH_BATCH} (each run allocates the batch; phones run "
                         f"batch 1), got {args.batch}")
    if args.runs < 1:
        raise ValueError(f"--runs must be >= 1, got {args.runs}")
    result = measure_onnx(args.file, BenchConfig(threads=args.threads, runs=args.runs, batch_size=args.batch))
    if args.json:
        print(result.to_json(indent=2))
        return 0
    print(f"{args.file}: input {result.input_shape}, {result.threads} thread(s), n={result.n}")
    print(f"  median {result.median_ms:.3f} ms  p10 {result.p10_ms:.3f}  p90 {result.p90_ms:.3f}  "
          f"std {result.std_ms:.3f}  (first run {result.first_run_ms:.2f} ms, session {result.session_create_ms:.1f} ms)")
    print(f"  on {result.environment.cpu_model} ({result.environment.logical_cores} cores), "
          f"onnxruntime {result.environment.onnxruntime}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from export.latency import BenchConfig
    from export.pipeline import compare_models, format_table, nearest_baselines

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    out = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="mzoo-demo-"))
    bar = tqdm(total=len(names), desc="build, export, verify, measure", unit="model", file=sys.stderr)

    def step(name: str) -> None:
        bar.set_postfix_str(name)

    rows = compare_models(names, out, BenchConfig(threads=args.threads), progress=step)
    bar.update(len(names))
    bar.close()
    env = rows[0].ort.environment
    print(f"\nCPU latency, batch 1, {args.threads} thread(s), on {env.cpu_model} "
          f"(onnxruntime {env.onnxruntime}, torch {env.torch}); ONNX files in {out}\n")
    print(format_table(rows))
    for line in nearest_baselines(rows):
        print(f"\n{line}")
    for line in _predicted_lines(rows, args.threads):
        print(f"\n{line}")
    return 0


def _predicted_lines(rows: Sequence[Any], threads: int) -> list[str]:
    """Each zoo model's latency predicted from the shipped tables of this machine, beside its measured minimum."""
    from export.devices import local_device_name
    from latency_tables.predict import MissingKeysError, Predictor
    from latency_tables.table import NoTablesError

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
        try:
            p = predictor.predict(spec, registry.get_pretrained_cfg(row.name).input_size)
        except MissingKeysError as err:
            lines.append(f"{row.name}: not predictable from latency_tables/{device} ({len(err.keys)} op keys missing)")
            continue
        measured = getattr(row.ort, predictor.statistic)
        lines.append(f"{row.name} predicted from latency_tables/{device} (table {p.overhead_table}: {len(p.ops)} ops "
                     f"+ overhead): {p.total_ms:.2f} ms; measured above: {measured:.2f} ms "
                     f"({predictor.statistic.removesuffix('_ms')} over runs), error {p.total_ms / measured - 1:+.1%}")
    return lines


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line that says where the full usage is (not the whole usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mzoo: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mzoo", description="Mobile Zoo: models, verified export, latency.")
    parser.add_argument("--searched", action="append", default=[], metavar="DIR",
                        help="register the search result(s) in DIR as zoo models first (repeatable; also "
                             "$MZOO_SEARCHED, os.pathsep-separated)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models with params and MACs")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. 'hgcnet_*'")
    p.add_argument("--exclude", help="fnmatch pattern to leave out")
    p.add_argument("--markdown", action="store_true", help="print the README's model table")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="show a model's cfg, params and MACs")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--ops", action="store_true", help="also list the ops the cost walker sees")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("export", help="export models to verified ONNX (fp32/fp16/int8), Core ML and ExecuTorch",
                       description="Export and verify. NAME is a zoo model (or a timm name, random init); "
                                   "with --all it is an optional pattern over the zoo.")
    p.add_argument("name", nargs="?", help="a zoo model (or a timm model name), or with --all a pattern")
    p.add_argument("--all", action="store_true", help="every zoo model; writes compatibility.md/.json in -o")
    p.add_argument("--spec", help="an architecture spec JSON file (e.g. a search result) instead of a name")
    p.add_argument("--name", dest="name_as", help="artefact name for --spec (default: the file's stem)")
    p.add_argument("--input-size", type=int, help="image side for --spec (default 224 for 1000 classes, else 32)")
    p.add_argument("--format", default="onnx",
                   help="comma-separated: onnx, onnx-fp16, onnx-int8, coreml, pte (default onnx)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 17 or 18 (default 18)")
    p.add_argument("--checkpoint", help="local weights file to load before export")
    p.add_argument("--images", help="ImageFolder dir or .zip of real images for the fp16/int8 agreement check "
                                    "(default: ../shared/data CIFAR-10 test JPEGs)")
    p.add_argument("--calibration", help="ImageFolder dir or .zip for int8 calibration (default: random data, "
                                         "which is reported loudly)")
    p.add_argument("--coreml-precision", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--coreml-target", default="iOS16", help="Core ML minimum deployment target (default iOS16)")
    p.add_argument("--class-labels", help="text file, one class label per line, for the Core ML classifier")
    p.set_defaults(func=_cmd_export)

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
    p.set_defaults(func=_cmd_demo)

    from latency_tables.cli import add_commands
    from search.cli import add_commands as add_search_commands
    from search.prune_cli import add_commands as add_prune_commands
    from search.train_cli import add_commands as add_train_commands

    add_commands(sub)
    add_search_commands(sub)
    add_prune_commands(sub)
    add_train_commands(sub)
    return parser


# The library's errors give Python advice (its callers are Python); on the command line the same advice is a
# flag. Every phrase here occurs in a library message (tests/test_user_paths.py checks both directions).
CLI_ADVICE: dict[str, str] = {
    "pass checkpoint_path=": "pass --checkpoint FILE",
    "see zoo.list_models()": "see `mzoo list`",
    "(latency_tables.build.build_table) or pass interpolate=True": "(`mzoo lut build --space SPACE`) or pass "
                                                                   "--interpolate",
    "(latency_tables.build.build_table)": "(`mzoo lut build --space SPACE`)",
    "pass interpolate=True": "pass --interpolate",
    "pass restart=True": "pass --restart",
    "restart=True": "--restart",
}


def cli_message(message: str) -> str:
    """A library error's message in the command line's words (flags instead of keyword arguments)."""
    for python, flag in CLI_ADVICE.items():
        message = message.replace(python, flag)
    return message


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    # A user-facing warning (e.g. int8 calibrated on random data) is one line, not a source location.
    print(f"mzoo: warning: {cli_message(str(message))}", file=sys.stderr)


def _register_searched(directories: Sequence[str]) -> None:
    from zoo.searched import register_from_env

    register_from_env()
    register_from_env(os.pathsep.join(directories))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from export.errors import ExportError

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # restored when the block exits
            _register_searched(args.searched)
            return args.func(args)
    except BrokenPipeError:  # output piped into e.g. `head`: not an error
        sys.stderr.close()
        return 0
    # RuntimeError / UnpicklingError: torch's errors for a corrupt checkpoint given for a timm model.
    # LookupError: a latency table lacks ops of the model (the message names them).
    except (ValueError, TypeError, LookupError, OSError, RuntimeError, pickle.UnpicklingError, WeightsError,
            ExportError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"mzoo: error: {cli_message(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mzoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
