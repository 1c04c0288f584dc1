"""``mzoo search eoinas`` and ``mzoo search metakernel``: the differentiable searches from the command line.

Owns argument parsing, the checks that fail before any training (budgets, devices, names, data), and what a
user reads at the end; the work lives in :mod:`search.diffsearch`. :func:`add_commands` is given the ``search``
group's sub-parsers by :mod:`search.cli`; :mod:`mzoo.cli` turns every ``ValueError`` into one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from common.errors import InputError


__all__ = ["add_commands"]


def _check_common(args: argparse.Namespace) -> None:
    from zoo.searched import is_valid_name

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.train_epochs < 0:
        raise InputError(f"--train-epochs must be >= 0, got {args.train_epochs}")
    if args.name is not None and not is_valid_name(args.name):
        raise InputError(f"--name {args.name!r} must be lowercase letters, digits and '_' starting with a letter")


def _cost(args: argparse.Namespace) -> Any:
    """The cost term of the architecture loss from --macs-target / --latency-target (at most one)."""
    from search.budget import CostTarget
    from search.budget import parse_count

    if args.macs_target is not None and args.latency_target is not None:
        raise InputError("give one of --macs-target and --latency-target, not both")
    if args.macs_target is not None:
        return CostTarget("macs", parse_count(args.macs_target, "--macs-target"), args.cost_weight)
    if args.latency_target is not None:
        if not args.latency_target > 0:
            raise InputError(f"--latency-target must be a positive number of ms, got {args.latency_target}")
        from latency_tables.choose import choose_device

        device = choose_device(args.device, args.space_name, args.tables)
        return CostTarget("latency", args.latency_target, args.cost_weight, device=device, tables=args.tables)
    if args.device is not None or args.tables is not None:
        raise InputError("--device/--tables choose the latency table of --latency-target; give a target")
    return None


def _data(args: argparse.Namespace, size: int, held_transform: str) -> dict[str, Any]:
    from search.data import search_splits

    for flag, value in (("--per-class", args.per_class), ("--test-per-class", args.test_per_class)):
        if value is not None and value < 2:
            raise InputError(f"{flag} must be >= 2, got {value}")
    return search_splits(args.data, size, per_class=args.per_class, test_per_class=args.test_per_class,
                         held_fraction=0.5, held_transform=held_transform)


def _print_result(result: Any, args: argparse.Namespace, summary: Any) -> int:
    """Print the report (``--json``: all of it but the history) or its summary; torchrun workers other than
    rank 0 have no result and print nothing."""
    if result is None:
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in result.report.items() if k != "history"}, indent=2, default=str))
    else:
        print(summary(result.report, args.output))
    return 0


def _use_lines(report: dict[str, Any], out: str) -> list[str]:
    return [f"  files in {out}: spec.json, weights.pth, report.json",
            f"  use it: mzoo --searched {out} info {report['name']} | "
            f"mzoo --searched {out} export {report['name']} -o EXPORT_DIR"]


def _cmd_eoinas(args: argparse.Namespace) -> int:
    from search.differentiable import ArchConfig
    from search.diffsearch import EvalNetConfig, run_eoinas, search_recipe, train_recipe
    from search.eoinas import CellCostModel, EoiNASConfig

    _check_common(args)
    cost = _cost(args)
    if cost is not None:  # a missing table fails now, not after the search
        CellCostModel(cost.metric, device=cost.device, tables=cost.tables)
    eoinas = EoiNASConfig(selection=args.selection, half_life_epochs=args.half_life_epochs,
                          prune_start=args.prune_start, prune_end=args.prune_end, final_ops=args.final_ops)
    eval_net = EvalNetConfig(stem=args.stem, init_chs=args.init_chs or (36 if args.stem == "cifar" else 48),
                             layers=args.layers or (20 if args.stem == "cifar" else 14),
                             drop_path_rate=args.drop_path)
    search = search_recipe(args.epochs, args.batch_size, args.seed, progress=args.progress, workers=args.workers)
    arch = ArchConfig(lr=args.arch_lr, order=args.order)
    train = None if args.train_epochs == 0 else train_recipe(args.train_epochs, args.train_batch_size,
                                                             args.train_lr, args.seed, progress=args.progress)
    from search.rundir import claim, settings_of

    claim(args.output, "search eoinas", settings_of(args))  # rerunning the same command resumes
    data = _data(args, args.input_size, "train")
    result = run_eoinas(args.output, data, search=search, arch=arch, eoinas=eoinas, supernet_chs=args.supernet_chs,
                        supernet_layers=args.supernet_layers, cost=cost, eval_net=eval_net, train=train,
                        name=args.name)
    return _print_result(result, args, _eoinas_summary)


def _cmd_metakernel(args: argparse.Namespace) -> int:
    from search.differentiable import ArchConfig
    from search.diffsearch import (MetaKernelOptions, metakernel_cost_model, run_metakernel, search_recipe,
                                   train_recipe)
    from search.metakernel import MODES
    from zoo.spaces import MetaKernelSpace

    _check_common(args)
    if args.mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {args.mode!r}")
    for flag, value in (("--temperature", args.temperature), ("--temperature-decay", args.temperature_decay)):
        if not value > 0:
            raise InputError(f"{flag} must be > 0, got {value}")
    cost = _cost(args)
    if cost is not None:  # a missing table (or key) fails now, not after the search
        metakernel_cost_model(MetaKernelSpace(identity=args.identity), cost)
    options = MetaKernelOptions(mode=args.mode, identity=args.identity, gumbel=args.gumbel,
                                temperature=args.temperature, temperature_decay=args.temperature_decay)
    search = dataclasses.replace(search_recipe(args.epochs, args.batch_size, args.seed, progress=args.progress,
                                               workers=args.workers), lr=args.lr, min_lr=0.0, weight_decay=args.wd)
    finetune = None if args.train_epochs == 0 else dataclasses.replace(
        train_recipe(args.train_epochs, args.batch_size, args.train_lr, args.seed, progress=args.progress),
        weight_decay=args.wd, workers=args.workers)
    from search.rundir import claim, settings_of

    claim(args.output, "search metakernel", settings_of(args))  # rerunning the same command resumes
    data = _data(args, args.input_size, "train")
    result = run_metakernel(args.output, data, search=search, arch=ArchConfig(lr=args.arch_lr), options=options,
                            cost=cost, finetune=finetune, name=args.name)
    return _print_result(result, args, _metakernel_summary)


def _metakernel_summary(report: dict[str, Any], out: str) -> str:
    from zoo import format_count

    costs = report["space_costs"]
    lines = [f"{report['name']}: Meta-Kernel search ({report['config']['options']['mode']} supernet), "
             f"{report['supernet']['steps']} supernet steps",
             f"  layers: {report['tokens']}",
             f"  in the space (224x224, 1000 classes): {format_count(costs['macs'])} MACs"
             + (f", {costs['latency_ms']:.2f} ms predicted on {report['config']['cost']['device']}"
                if "latency_ms" in costs else ""),
             f"  this network: {format_count(report['macs'])} MACs, {format_count(report['params'])} params at "
             f"{report['input_size'][1]}x{report['input_size'][2]}; weights {report['weights']}",
             f"  test top-1 {report['test_top1']:.2f} %", *_use_lines(report, out)]
    return "\n".join(lines)


def _genotype_text(genotype: dict[str, Any]) -> str:
    def cell(edges: list[list[Any]]) -> str:
        return " ".join(f"{op}<-{src}" for op, src in edges)

    return f"normal: {cell(genotype['normal'])}\n    reduce: {cell(genotype['reduce'])}"


def _eoinas_summary(report: dict[str, Any], out: str) -> str:
    from zoo import format_count

    sup = report["supernet"]
    lines = [f"{report['name']}: {report['selection']} search of the DARTS cell space, {sup['steps']} supernet steps "
             f"(C={sup['init_chs']}, {sup['layers']} cells), {len(sup['pruning_events'])} pruning events",
             f"    {_genotype_text(report['genotype'])}",
             f"  evaluation network: {format_count(report['macs'])} MACs, {format_count(report['params'])} params at "
             f"{report['input_size'][1]}x{report['input_size'][2]}"]
    if "latency" in report["space_costs"]:
        lines.append(f"  predicted {report['space_costs']['latency'][report['selection']]:.2f} ms for the search-scale "
                     f"network on {report['config']['cost']['device']}")
    if "test_top1" in report:
        lines.append(f"  test top-1 {report['test_top1']:.2f} % after {report['config']['train']['epochs']} epochs")
        lines += _use_lines(report, out)
    else:
        lines.append(f"  files in {out}: spec.json, report.json (not trained: --train-epochs 0, so no weights.pth "
                     f"and nothing to register; export it untrained with mzoo export --spec {out}/spec.json)")
    return "\n".join(lines)


def _common_args(p: argparse.ArgumentParser, epochs: int) -> None:
    p.add_argument("--data", default="cifar10", help="'cifar10' (the shared JPEGs) or an ImageFolder directory/.zip "
                                                     "with train and val (or test) splits")
    p.add_argument("--per-class", type=int, help="use this many training images per class (default all)")
    p.add_argument("--test-per-class", type=int, help="test on this many images per class (default all)")
    p.add_argument("--epochs", type=int, default=epochs, help=f"supernet search epochs (default {epochs})")
    p.add_argument("--batch-size", type=int, default=64, help="search batch per process (default 64)")
    p.add_argument("--arch-lr", type=float, default=3e-4, help="Adam lr of the architecture parameters (DARTS: 3e-4)")
    p.add_argument("--macs-target", help="expected-MACs target of the searched space's networks, e.g. 40M")
    p.add_argument("--latency-target", type=float, help="expected-latency target (ms) from --device's table")
    p.add_argument("--cost-weight", type=float, default=0.5, help="weight of |E[cost]/target - 1| (default 0.5)")
    p.add_argument("--device", help="latency-table device (default: this machine's tables; `mzoo lut list`)")
    p.add_argument("--tables", help="root folder of the latency tables (default: the shipped ones)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("-o", "--output", required=True, help="output directory (rerun the same command to resume)")


def add_commands(sub: Any) -> None:
    """Add ``eoinas`` and ``metakernel`` to the ``search`` group's sub-parsers."""
    from search.choices import EOINAS_SELECTIONS as SELECTIONS
    from search.choices import ORDERS

    p = sub.add_parser("eoinas", help="EoiNAS (or DARTS) cell search, then train the derived NetworkCIFAR/ImageNet",
                       description="Search the DARTS cell space with a bilevel supernet (α on half the training "
                                   "images), EoiNAS' operation-importance indicator and gradual operation pruning "
                                   "(--selection darts: plain DARTS), build the genotype as DARTS' evaluation "
                                   "network, train it, and write spec.json, weights.pth and report.json to -o.")
    _common_args(p, epochs=50)
    p.add_argument("--selection", choices=SELECTIONS, default="eoinas",
                   help="eoinas: indicator + gradual pruning (default); darts: softmax(α), no pruning")
    p.add_argument("--order", choices=ORDERS, default="first", help="bilevel approximation (DARTS: first, second)")
    p.add_argument("--input-size", type=int, default=32, help="image side of the search and training (default 32)")
    p.add_argument("--supernet-chs", type=int, default=16, help="search network C (DARTS: 16)")
    p.add_argument("--supernet-layers", type=int, default=8, help="search network cells (DARTS: 8)")
    p.add_argument("--half-life-epochs", type=float, default=1.0, help="indicator moving-average half-life")
    p.add_argument("--prune-start", type=float, default=0.25, help="first pruning event, fraction of the run")
    p.add_argument("--prune-end", type=float, default=0.85, help="last pruning event, fraction of the run")
    p.add_argument("--final-ops", type=int, default=1, help="live ops per edge after the last event (default 1)")
    p.add_argument("--stem", choices=("cifar", "imagenet"), default="cifar",
                   help="evaluation network: cifar (NetworkCIFAR) or imagenet (NetworkImageNet, mobile setting)")
    p.add_argument("--init-chs", type=int, help="evaluation network C (default 36 CIFAR, 48 ImageNet)")
    p.add_argument("--layers", type=int, help="evaluation network cells (default 20 CIFAR, 14 ImageNet)")
    p.add_argument("--drop-path", type=float, default=0.0, help="drop-path rate while training it (DARTS: 0.2)")
    p.add_argument("--train-epochs", type=int, default=20,
                   help="train the derived network for this many epochs (DARTS: 600; 0: write the spec only)")
    p.add_argument("--train-batch-size", type=int, default=96)
    p.add_argument("--train-lr", type=float, default=0.025)
    p.add_argument("--name", help="model name to register the result under (default eoinas_<stem>)")
    p.set_defaults(func=_cmd_eoinas, space_name="darts")

    p = sub.add_parser("metakernel", help="Meta-Kernel search: kernels 3/5/7 and expansions 3/6 merged per layer",
                       description="Search the Meta-Kernel space (MobileNetV2-style, SE and swish) with a supernet "
                                   "whose candidate kernels and expansion ratios are merged into one meta kernel "
                                   "and one channel mask per layer, bilevel (α on half the training images), "
                                   "optionally towards a MACs or latency target; the most probable architecture "
                                   "inherits the supernet's weights, is fine-tuned, and spec.json, weights.pth and "
                                   "report.json are written to -o.")
    _common_args(p, epochs=20)
    p.add_argument("--mode", default="meta", help="meta (merged kernels, default) or sum (DARTS-style weighted sum "
                                                  "of every candidate's output: the baseline)")
    p.add_argument("--identity", action="store_true", help="add skip as a candidate (no latency table covers it)")
    p.add_argument("--gumbel", action="store_true", help="Gumbel noise on the architecture logits in training")
    p.add_argument("--temperature", type=float, default=5.0, help="initial softmax temperature (default 5.0)")
    p.add_argument("--temperature-decay", type=float, default=0.965, help="per-epoch temperature factor")
    p.add_argument("--input-size", type=int, default=32, help="image side of search and training (default 32)")
    p.add_argument("--lr", type=float, default=0.05, help="weights' SGD lr during the search (default 0.05)")
    p.add_argument("--wd", type=float, default=4e-5, help="weight decay (default 4e-5, MobileNet-style)")
    p.add_argument("--train-epochs", type=int, default=5,
                   help="fine-tune the derived network (inherited weights) this many epochs (0: BN re-estimated only)")
    p.add_argument("--train-lr", type=float, default=0.02)
    p.add_argument("--name", help="model name to register the result under (default metakernel_cifar / metakernel)")
    p.set_defaults(func=_cmd_metakernel, space_name="metakernel")
