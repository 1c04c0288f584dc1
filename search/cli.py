"""The search commands of ``mzoo``: ``search width`` (BCNet, CafeNet, the unilateral baseline), and the groups
of :mod:`search.mcts_cli` (``search mcts``) and :mod:`search.diff_cli` (``search eoinas``, ``search metakernel``).

Owns argument parsing for the searches and turning their results into what a user reads; the work lives in
:mod:`search.width.pipeline`. :func:`add_commands` is called by :mod:`mzoo.cli`, which turns every user error
(``ValueError`` and friends) into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from common.errors import InputError


def _cmd_width(args: argparse.Namespace) -> int:
    import zoo
    from search.engine import TrainConfig
    from search.width import EvolutionConfig
    from search.width.pipeline import WidthSearchConfig, make_space, parse_latency, parse_macs, run_width_search

    if args.macs is None and args.latency is None:
        raise InputError("give a budget: --macs (e.g. 200M or 50%) and/or --latency (e.g. 5ms with --device)")
    if args.latency is not None and args.device is None:
        raise InputError("--latency needs --device (a device with latency tables; see `mzoo lut list`)")
    probe = WidthSearchConfig(model=args.model, method=args.method, max_macs=1, granularity=args.granularity,
                              data=args.data, input_size=args.input_size, width_multiplier=args.width_multiplier)
    space = make_space(probe, num_classes=10)
    full_spec, size = space.to_spec(tuple(max(c) for c in space.choices()))
    full_macs = zoo.count(full_spec, size).macs
    share = args.macs is not None and args.macs.strip().endswith("%")
    if share and parse_macs(args.macs, full_macs) > full_macs:
        raise InputError(f"--macs {args.macs!r} is more than the full network")
    supernet = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.wd,
                           warmup_epochs=args.warmup_epochs if args.warmup_epochs is not None
                           else min(1.0, args.epochs / 2), seed=args.seed, workers=args.workers,
                           nesterov=True)
    finetune = None if args.finetune_epochs == 0 else TrainConfig(
        epochs=args.finetune_epochs, batch_size=args.batch_size, lr=args.finetune_lr, weight_decay=args.wd,
        seed=args.seed, workers=args.workers, nesterov=True)
    config = WidthSearchConfig(
        model=args.model, method=args.method,
        # A share (50%) is resolved by the search against the network with the data's classifier.
        max_macs=parse_macs(args.macs, full_macs) if args.macs is not None and not share else None,
        macs_share=parse_macs(args.macs, full_macs) / full_macs if share else None,
        max_latency_ms=parse_latency(args.latency) if args.latency is not None else None,
        device=args.device, interpolate=args.interpolate, granularity=args.granularity,
        width_multiplier=args.width_multiplier, data=args.data,
        input_size=args.input_size, per_class=args.per_class, test_per_class=args.test_per_class,
        supernet=supernet, finetune=finetune,
        evolution=EvolutionConfig(population=args.population, generations=args.generations, seed=args.seed,
                                  topk=max(1, args.population // 5), mutations=args.population // 2,
                                  crossovers=args.population // 2),
        name=args.name)
    from search.rundir import claim, settings_of

    claim(args.output, "search width", settings_of(args))
    run = run_width_search(config, args.output, progress=not args.no_progress)
    if run is None:  # a torchrun worker other than rank 0: the search ran on rank 0
        return 0
    report = run.report
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(_summary(report, full_macs, run.directory))
    return 0


def _summary(report: dict[str, Any], full_macs: int, directory: Any) -> str:
    from zoo import format_count

    lines = [f"{report['name']}: {report['method']} on {report['space']}, {format_count(report['macs'])} MACs "
             f"({report['macs'] / full_macs:.0%} of the full network), {format_count(report['params'])} params"
             + (f", {report['latency_ms']:.2f} ms predicted on {report['device']}" if report.get("latency_ms") else ""),
             f"  search score {report['score']:.2f} % (held-out top-1, inherited weights)",
             f"  test top-1: {report['inherited_top1']:.2f} % inherited"
             + (f", {report['finetuned_top1']:.2f} % after fine-tuning" if "finetuned_top1" in report else ""),
             f"  files in {directory}: spec.json, weights.pth, report.json",
             f"  use it: mzoo --searched {directory} info {report['name']} | "
             f"mzoo export --spec {directory}/spec.json --checkpoint {directory}/weights.pth -o OUT"]
    return "\n".join(lines)


def add_commands(sub: Any) -> None:
    """Add the search package's verbs to the ``mzoo`` sub-command parser ``sub``: ``search`` (width, mcts, eoinas,
    metakernel), ``prune`` (dagger) and ``train``."""
    from search.width.options import GRANULARITIES, METHODS, MODELS

    from search.diff_cli import add_commands as add_diff_commands
    from search.mcts_cli import add_commands as add_mcts_commands
    from search.prune_cli import add_commands as add_prune_commands
    from search.train_cli import add_commands as add_train_commands

    search = sub.add_parser("search", help="architecture search: width (BCNet, CafeNet), mcts (MCT-NAS), "
                                                 "eoinas (EoiNAS / DARTS cells), metakernel (Meta Kernels)")
    ssub = search.add_subparsers(dest="search_command", required=True)
    p = ssub.add_parser("width", help="search per-layer widths under a MACs and/or latency budget",
                        description="Train a weight-sharing supernet of MODEL's widths, search it under the "
                                    "budget, fine-tune the result and write spec.json, weights.pth and "
                                    "report.json to -o (rerun the same command to resume).")
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--method", default="bcnet", choices=METHODS,
                   help="bcnet (default), unilateral (left channels only: the baseline), cafenet")
    p.add_argument("--macs", help="MACs budget: 200M, 1.5G, 300000, or a share of the full network like 50%%")
    p.add_argument("--latency", help="latency budget on --device, e.g. 5ms")
    p.add_argument("--device", help="a device with latency tables for the space (see `mzoo lut list`)")
    p.add_argument("--interpolate", action="store_true", help="interpolate op keys the device's tables lack")
    p.add_argument("--granularity", default="bcnet", choices=GRANULARITIES,
                   help="bcnet: 20 width ratios (default); coarse: quarters, as the shipped latency tables")
    p.add_argument("--width-multiplier", type=float, default=1.0,
                   help="supernet full widths as a share of the model's (e.g. 0.35 for a CPU-sized MobileNetV2-CIFAR)")
    p.add_argument("--data", default="cifar10", help="cifar10 (../shared/data, default) or an ImageFolder dir/.zip "
                                                     "with train and val (or test) splits")
    p.add_argument("--input-size", type=int, help="image side (default 32 for CIFAR-10, else the model's)")
    p.add_argument("--per-class", type=int, help="train on this many images per class (default all)")
    p.add_argument("--test-per-class", type=int, help="test on this many images per class (default all)")
    p.add_argument("--epochs", type=int, default=10, help="supernet epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="per-process batch (default 64)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--wd", type=float, default=5e-4, help="weight decay (default 5e-4)")
    p.add_argument("--warmup-epochs", type=float, help="linear lr warm-up (default 1 epoch, half of a shorter run)")
    p.add_argument("--finetune-epochs", type=int, default=5, help="fine-tune the result (0: skip; default 5)")
    p.add_argument("--finetune-lr", type=float, default=0.02)
    p.add_argument("--population", type=int, default=50,
                   help="evolution population (BCNet: 50; top-k, mutations and crossovers scale with it: 10, 25, 25)")
    p.add_argument("--generations", type=int, default=40, help="evolution generations (BCNet: 40)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="model name to register the result under (default <model>_<method>_<budget>)")
    p.add_argument("-o", "--output", required=True, help="directory for checkpoints and the result")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_width)
    add_mcts_commands(ssub)
    add_diff_commands(ssub)
    add_prune_commands(sub)
    add_train_commands(sub)
