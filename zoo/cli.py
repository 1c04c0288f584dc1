"""The zoo's verbs of ``mzoo``: ``list`` and ``info`` (and the README's model table).

:func:`add_commands` adds them to the root parser of :mod:`mzoo.cli`, which turns every user error into one line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.jsonfile import read_json_object
from zoo import costs, registry


# Top-1 measured with `mzoo eval` on the weights `pretrained=True` loads (bench/eval_formats.py writes it).
ACCURACY_FILE = Path(__file__).resolve().parent / "data" / "accuracy.json"


def measured_accuracy() -> dict[str, dict[str, Any]]:
    """Per model with weights: the measured fp32 ``top1`` / ``top5`` (percent), the ``data`` and ``images``."""
    return dict(read_json_object(ACCURACY_FILE, "measured accuracy file", InputError)["models"])


def model_table(names: Sequence[str]) -> str:
    """The README's model table (Markdown), generated from the registry and the measured accuracies."""
    accuracy = measured_accuracy()
    lines = ["| model | params | MACs | input | top-1 (weights, measured) | paper | notes |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        info = registry.model_info(name)
        cfg = info["pretrained_cfg"]
        size = "×".join(str(d) for d in info["input_size"][1:])
        top1 = (f"{accuracy[name]['top1']:.2f} % ({accuracy[name]['data']}, {accuracy[name]['images']:,} images)"
                if name in accuracy else "no weights" if not cfg["file"] else "not measured")
        lines.append(f"| {name} | {costs.format_count(info['params'])} | {costs.format_count(info['macs'])} "
                     f"| {size} | {top1} | {cfg['paper_ids'] or ''} | {cfg['notes'] or ''} |")
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    names = registry.list_models(args.pattern or "", exclude=args.exclude or "")
    if not names:
        raise InputError(f"no model matches {args.pattern!r}")
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


def add_commands(sub: Any) -> None:
    """Add ``list`` and ``info`` to the ``mzoo`` sub-command parser ``sub``."""
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
