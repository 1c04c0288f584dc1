"""The export verb of ``mzoo``: ``export`` a model (by name, ``--spec`` or ``--all``) to verified artefacts.

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
    if args.all:
        names = registry.list_models(args.name or "")
        if not names:
            raise InputError(f"no model matches {args.name!r}")
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
