"""The export verbs of ``mzoo``: ``export`` a model (by name, ``--spec`` or ``--all``) to verified artefacts, and
``eval`` a model and its artefacts for accuracy on labelled images (:mod:`export.evaluate`).

``export --deploy none|all|auto [--device D]`` exports the re-parameterised network (:mod:`export.deploy`). The
plan is chosen by the ``deploy_planner`` the parser carries: ``auto`` and predicted latency need a device's
latency tables, a higher layer, so :mod:`latency_tables.cli` installs its planner on this verb's parser; without
it only ``none`` and ``all`` are known.

:func:`add_commands` adds it to the root parser of :mod:`mzoo.cli`, which turns every user error into one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common.errors import InputError
from zoo import registry


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
        raise InputError("give exactly one of NAME, --all [PATTERN] or --spec FILE")
    if args.all and args.checkpoint:
        raise InputError("--checkpoint names one model's weights; it cannot be used with --all (export that model "
                         "by name with --checkpoint, or register weights with --searched DIR)")
    planner = _deploy_planner(args)
    planner(args.deploy, None, (3, 224, 224), args.device)  # --deploy/--device checked before any model is built
    if args.all:
        from export.deploy import deploy

        names = registry.list_models(args.name or "")
        if not names:
            raise InputError(f"no model matches {args.name!r}")

        def resolve_deployed(name: str) -> Any:
            resolved = resolve_model(name)
            spec = getattr(resolved.model, "arch_spec", None)
            return deploy(resolved, planner(args.deploy, spec, resolved.input_size, args.device))

        bar = tqdm(total=len(names) * len(formats), desc="export", unit="artefact", file=sys.stderr)

        def step(cell: object) -> None:
            bar.set_postfix_str(f"{cell.model} {cell.format}")  # type: ignore[attr-defined]
            bar.update(1)

        matrix = export_all(names, args.output, formats, options, resolve=resolve_deployed, on_cell=step)
        bar.close()
        counts = {s: sum(c.status == s for c in matrix.cells) for s in ("ok", "failed", "unsupported")}
        print(f"{len(names)} models x {len(formats)} formats: {counts['ok']} ok, {counts['failed']} failed, "
              f"{counts['unsupported']} unsupported (documented)")
        print(f"matrix: {Path(args.output) / 'compatibility.md'} and compatibility.json")
        for cell in matrix.failures:
            print(f"  FAILED {cell.model} {cell.format}: {cell.error}")
        return 1 if matrix.failures else 0
    from export.deploy import deploy

    choice = planner(args.deploy, *_deploy_target(args), args.device)  # before the model is built or exported
    if args.spec:
        resolved = resolve_spec(args.spec, args.checkpoint, name=args.name_as,
                                input_size=_input_size(args.input_size))
    else:
        resolved = resolve_model(args.name, checkpoint_path=args.checkpoint)
    resolved = deploy(resolved, choice)
    print(_deploy_line(resolved.deploy or {}))
    for cell in export_formats(resolved, args.output, formats, options):
        print(f"{cell.path}  ({cell.format}, {cell.seconds:.1f} s)")
        print(f"  verified: {cell.verification}: {cell.summary}")
        record = cell.report.get("deploy") or {}
        if record.get("fused_blocks"):
            before, after = record["before"].get("file_size_bytes"), record["after"]["file_size_bytes"]
            print(f"  deployed network: {_mb(before)} -> {_mb(after)} MB; against the training-time network: max abs "
                  f"diff {_diff(record.get('artefact_max_abs_diff_vs_trained'))}")
        if cell.report.get("calibration_source"):
            print(f"  calibrated on {cell.report['num_calibration']} inputs from {cell.report['calibration_source']}")
        for batch, (ort_err, eager_err) in sorted(cell.report.get("noise_floor", {}).items()):
            print(f"  batch {batch}: PyTorch fp32 itself is {eager_err:.2e} from a float64 run; "
                  f"ONNX Runtime is {ort_err:.2e} from it (accepted: within 2x PyTorch's own error)")
    return 0


def _deploy_planner(args: argparse.Namespace) -> Any:
    """The planner the parser carries (``latency_tables.cli`` installs the one that reads latency tables), else
    export's own, which knows ``--deploy none|all`` only."""
    from export.deploy import plain_choice

    return getattr(args, "deploy_planner", None) or plain_choice


def _deploy_target(args: argparse.Namespace) -> tuple[Any, tuple[int, int, int]]:
    """(spec or None, input size) of the one model being exported, read without building it."""
    if args.spec:
        from zoo import spec_from_json

        try:
            spec = spec_from_json(Path(args.spec).read_text())
        except OSError as err:
            raise InputError(f"cannot read spec file {args.spec!r}: {err.strerror or err}") from err
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"{args.spec!r} is not a valid architecture spec: {str(err).splitlines()[0]}") from err
        side = args.input_size or (224 if spec.num_classes == 1000 else 32)
        return spec, (spec.in_chans, side, side)
    if registry.is_model(args.name):
        return registry.get_arch_spec(args.name), tuple(registry.get_pretrained_cfg(args.name).input_size)
    return None, (3, 224, 224)  # a timm model: nothing to rewrite


def _deploy_line(record: dict[str, Any]) -> str:
    """One line: the plan applied, why, its cost before and after, and the predicted latency."""
    from zoo import format_count

    mode = record.get("mode", "none")
    text = f"deploy {mode}"
    if record.get("hgc_blocks"):
        text += f": {record['fused_blocks']} of {record['hgc_blocks']} HGC blocks fused"
    if record.get("reason"):
        text += f" ({record['reason']})"
    before, after = record.get("before", {}), record.get("after", {})
    if before and after:
        text += (f"; MACs {format_count(before['macs'])} -> {format_count(after['macs'])}, params "
                 f"{format_count(before['params'])} -> {format_count(after['params'])}")
    if record.get("predicted_ms") is not None:
        text += f"; predicted {record['predicted_ms']:.3f} ms on {record['device']}"
        if record.get("predicted_trained_ms") is not None and record.get("fused_blocks"):
            text += f" (as trained {record['predicted_trained_ms']:.3f} ms)"
    elif record.get("prediction_note"):
        text += f"; {record['prediction_note']}"
    return text


def _mb(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:.2f}"


def _diff(value: float | None) -> str:
    return "checked eager only (format does not run here)" if value is None else f"{value:.1e}"


def _cmd_inspect(args: argparse.Namespace) -> int:
    """The deployability report of an artefact: ops by type, what the delegate took, partitions, layout ops, and with
    ``--profile`` each op's measured share of latency."""
    import json

    from export.inspection import inspect_artefact

    for option, value in (("--runs", args.runs), ("--threads", args.threads)):
        if value < 1:
            raise InputError(f"{option} must be a positive number, got {value}")
    inspection = inspect_artefact(args.artefact, profile_runs=args.runs if args.profile else 0, threads=args.threads)
    print(json.dumps(inspection.to_dict(), indent=2) if args.json else inspection.to_text(), end="" if not args.json
          else "\n")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    """Check every argument, then export, run every format on the same images and print the accuracy table."""
    import json

    from tqdm import tqdm

    from common.files import check_writable, prepare_directory
    from export import evaluate as ev
    from export.formats import ExportOptions, check_image_sources, parse_formats
    from export.pipeline import resolve_model

    artefact = _artefact_argument(args.target)
    if artefact and args.formats is not None:
        raise InputError("--formats exports NAME to those formats; an artefact path is evaluated as it is "
                         "(give the model name to export and evaluate formats)")
    if artefact and args.output:
        raise InputError("-o keeps artefacts exported by eval; with an artefact path nothing is exported")
    formats = () if artefact else parse_formats(args.formats or ",".join(ev.DEFAULT_EVAL_FORMATS))
    cfg = ev.EvalConfig(limit=args.limit, seed=args.seed, threads=args.threads, crop_pct=args.crop_pct,
                        split=args.split)
    source = ev.data_source(args.data)
    calibration = args.calibration or ev.default_calibration()
    if calibration and "onnx-int8" in formats:
        _check_calibration(calibration, source)
    check_image_sources(formats, ExportOptions(calibration=calibration))
    if args.markdown:
        check_writable(args.markdown, "--markdown")
    if args.output:
        prepare_directory(Path(args.output))
    fmt = ev.artefact_format(artefact) if artefact else None
    if fmt == "coreml":
        raise InputError(f"{artefact!r}: Core ML packages predict only on macOS; this machine cannot run it")
    name = ev.artefact_metadata(artefact, fmt).get("model_name") if artefact else args.target
    if artefact and not name:
        raise InputError(f"artefact {args.target!r} does not say which model it was exported from "
                         "(no model_name in its metadata)")
    resolved = resolve_model(name, checkpoint_path=args.checkpoint)
    eval_set = ev.open_eval_set(source, resolved, cfg)
    ev.label_mapping(ev.num_outputs(resolved), eval_set.classes)  # refuse data the model cannot be scored on
    options = ExportOptions(calibration=calibration)
    bars: dict[str, tqdm] = {}
    totals = {"export": sum(f != "coreml" for f in formats), "images": len(eval_set)}
    units = {"export": "format", "images": "img"}

    def progress(stage: str, amount: int) -> None:
        if stage not in bars:  # opened on first use, so that the image rate does not include the exports
            for bar in bars.values():
                bar.close()
            bars[stage] = tqdm(total=totals[stage], desc=f"{stage} {resolved.name}", unit=units[stage],
                               file=sys.stderr)
        bars[stage].update(amount)

    report = ev.evaluate(resolved, eval_set, formats, options=options, artefacts=[artefact] if artefact else [],
                         out_dir=args.output, cfg=cfg, on_progress=progress)
    for bar in bars.values():
        bar.close()
    markdown = report.to_markdown()
    if args.markdown:
        from common.files import write_text_atomic

        write_text_atomic(Path(args.markdown), markdown)
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else markdown, end="" if not args.json
          else "\n")
    return 1 if any(r.status == "failed" for r in report.rows) else 0


def _artefact_argument(target: str) -> str | None:
    """``target`` if it names an artefact file (by its suffix), else None (a model name)."""
    if target.endswith((".onnx", ".pte", ".mlpackage", ".mlpackage/")):
        if not Path(target).exists():
            raise InputError(f"artefact {target!r} does not exist")
        return target.rstrip("/")
    return None


def _check_calibration(calibration: str, source: Path) -> None:
    from export.evaluate import is_shared_cifar10

    if Path(calibration).resolve() == source.resolve() and not is_shared_cifar10(source):
        raise InputError(f"--calibration {calibration!r} is the evaluation data: int8 would be calibrated on the "
                         "images it is scored on; give a separate folder")


def _read_labels(path: str | None) -> tuple[str, ...] | None:
    if path is None:
        return None
    labels = tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    if not labels:
        raise InputError(f"class labels file {path!r} holds no labels (one per line expected)")
    return labels


def _input_size(side: int | None) -> tuple[int, int, int] | None:
    from export.parity import check_image_side

    return None if side is None else (3, check_image_side(side), side)


def add_commands(sub: Any) -> None:
    """Add ``export`` to the ``mzoo`` sub-command parser ``sub``."""
    p = sub.add_parser("export", help="export models to verified ONNX (fp32/fp16/int8), Core ML and ExecuTorch",
                       description="Export and verify. NAME is a zoo model (or a timm name, random init); "
                                   "with --all it is an optional pattern over the zoo.")
    p.add_argument("name", nargs="?", help="a zoo model (or a timm model name), or with --all a pattern")
    p.add_argument("--all", action="store_true", help="every zoo model; writes compatibility.md/.json in -o")
    p.add_argument("--spec", help="an architecture spec JSON file (e.g. a search result) instead of a name")
    p.add_argument("--name", dest="name_as", help="artefact name for --spec (default: the file's stem)")
    p.add_argument("--input-size", type=int, help="image side for --spec (default 224 for 1000 classes, else 32)")
    p.add_argument("--format", default="onnx",
                   help="comma-separated: onnx, onnx-fp16, onnx-int8, coreml, pte, litert, litert-fp16, "
                        "litert-int8-dynamic, litert-int8, ncnn (the last five need the android extra; default onnx)")
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
    p.add_argument("--deploy", choices=("none", "all", "auto"),
                   help="export the re-parameterised network: HGC layers fused into exact dense convs (all), per "
                        "layer from --device's latency tables (auto), or as trained (none). Default: auto with "
                        "--device, else none. The plan is written into each artefact's report and metadata")
    p.add_argument("--device", help="target device whose latency tables choose the auto plan and predict latency "
                                    "(see `mzoo lut list`; $MZOO_LATENCY_TABLES sets the tables root)")
    # `mzoo` replaces this with the planner that reads latency tables (latency_tables.cli; export may not import it).
    p.set_defaults(func=_cmd_export, deploy_planner=None)

    p = sub.add_parser("inspect", help="what an artefact asks of its runtime: ops by type, ops the delegate took and "
                                       "left (with the module or position each came from), partitions, layout ops; "
                                       "--profile: each op's measured share of latency",
                       description="Deployability report of a .tflite, .onnx or .pte file or an ncnn package "
                                   "(NAME.ncnn/). --profile runs the artefact and times each op where the runtime can "
                                   "(ONNX Runtime's profiler, ExecuTorch's ETDump); LiteRT's and ncnn's Python "
                                   "bindings have no per-op timer, and the report says so.")
    p.add_argument("artefact", help="a .tflite, .onnx or .pte file, or an ncnn package directory / .param file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--profile", action="store_true", help="run the artefact and report each op's measured share of "
                                                          "latency (by op, op type, block and where it ran)")
    p.add_argument("--runs", type=int, default=20, help="timed runs for --profile, after one warm-up run "
                                                                  "(default 20; each op's median is reported)")
    p.add_argument("--threads", type=int, default=1,
                   help="ONNX Runtime intra-op threads for --profile and its graph rewrites (default 1); ExecuTorch "
                        "profiles on its own thread pool as it is")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("eval", help="top-1/top-5 of a model and of each exported format, each in its own runtime",
                       description="Accuracy of NAME in eager PyTorch fp32 and of every format exported from it (or "
                                   "of one ARTEFACT file), each run in its own runtime on the same preprocessed "
                                   "images, with the drop against PyTorch fp32 in points. An ImageNet model on "
                                   "CIFAR-10 is scored by mapped top-1 (zoo/data/imagenet_to_cifar10.json).")
    p.add_argument("target", metavar="NAME|ARTEFACT", help="a zoo (or timm) model name, or an exported .onnx/.pte file")
    p.add_argument("--data", default="cifar10",
                   help="'cifar10' (the shared CIFAR-10 JPEGs, test split; default), or an ImageFolder DIR or ZIP")
    p.add_argument("--split", help="folder of --data to evaluate (default: its test/ or val/ folder if it has one, "
                                   "else all of it)")
    p.add_argument("--formats", help="comma-separated: onnx, onnx-fp16, onnx-int8, coreml, pte (default: all; "
                                     "coreml is listed as needing macOS)")
    p.add_argument("--limit", type=int, help="evaluate N images, class-balanced and seeded (default: every image)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit subset (default 0)")
    p.add_argument("--calibration", help="ImageFolder DIR or .zip for int8 calibration (default: the shared CIFAR-10 "
                                         "train split; random data if that is absent, which is reported loudly)")
    p.add_argument("--checkpoint", help="local weights file for NAME (or the one an artefact was exported with)")
    p.add_argument("--crop-pct", type=float, help="centre-crop fraction (default: the model's; 1.0 on the shared "
                                                  "32x32 CIFAR-10 photos, which are scaled up whole)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default 0: its own)")
    p.add_argument("-o", "--output", help="keep the exported artefacts here, exported as `mzoo export` does (gates "
                                          "enforced); default: a temporary directory, gates measured not enforced")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the Markdown table")
    p.add_argument("--markdown", metavar="FILE", help="also write the Markdown table to FILE")
    p.set_defaults(func=_cmd_eval)
