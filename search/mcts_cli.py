"""``mzoo search mcts``: MCT-NAS from the command line (supernet training + search, or the benchmark oracle).

Owns the argument parsing and the glue: data (CIFAR-10 from the shared folder, or an ImageFolder directory or
.zip with a ``train`` split; a class-balanced held-out part of it scores the candidates), MACs / latency
windows (:class:`search.budget.CostWindow`), the supernet run (:func:`search.mctnas.train_supernet`,
resumable from ``DIR/supernet.pth``), the search stage and the outputs: ``DIR/search.json`` (every scored
candidate) and the best network as ``DIR/spec.json``, ``DIR/weights.pth`` (its weights inherited from the
supernet) and ``DIR/report.json``. ``--oracle`` runs the NAS-Bench-Macro oracle search instead
(:func:`search.oracle.run_oracle_search`) and writes ``DIR/trace.json`` plus the best network's spec and
report (no weights: nothing was trained). :func:`add_commands` is given the ``search`` group's sub-parsers by
:mod:`mzoo.cli`, which turns every ``ValueError`` into one line ``mzoo: error: ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.errors import InputError
from search.budget import parse_count  # noqa: F401 (re-exported)

SPACES = ("nbmacro", "mctnas")

__all__ = ["add_commands", "parse_count"]


def _windows(args: argparse.Namespace) -> list[Any]:
    from search.budget import CostWindow

    windows = []
    if args.macs_min is not None or args.macs_max is not None:
        low = None if args.macs_min is None else parse_count(args.macs_min, "--macs-min")
        high = None if args.macs_max is None else parse_count(args.macs_max, "--macs-max")
        windows.append(CostWindow("macs", low, high))
    if args.latency_min is not None or args.latency_max is not None:
        for name in ("latency_min", "latency_max"):
            value = getattr(args, name)
            if value is not None and not value > 0:
                raise InputError(f"--{name.replace('_', '-')} must be a positive number of ms, got {value}")
        from latency_tables.choose import choose_device

        device = choose_device(args.device, args.space, args.tables)
        windows.append(CostWindow("latency", args.latency_min, args.latency_max, device=device, tables=args.tables))
    elif args.device is not None or args.tables is not None:
        raise InputError("--device/--tables choose the latency table of a --latency-min/--latency-max window; "
                         "give a latency bound")
    return windows


def _feasibility(space: Any, windows: list[Any]) -> Any:
    """Windows bound to ``space``, checked now (a missing table or an empty window fails before training)."""
    from latency_tables.table import NoTablesError
    from search.budget import CostModel

    probe = tuple(c[len(c) // 2] for c in space.choices())
    try:
        feasibility = CostModel.of_windows(space, windows)
        for i in range(len(windows)):
            feasibility.cost(i, probe)
    except (NoTablesError, LookupError) as err:
        raise InputError(f"the latency window cannot be predicted: {str(err).splitlines()[0]}") from None
    return feasibility


def _cmd_oracle(args: argparse.Namespace, windows: list[Any], out: Path) -> int:
    import zoo
    from search.oracle import run_oracle_search
    from zoo.searched import write_searched
    from zoo.nbmacro import nbmacro_spec

    if args.space != "nbmacro":
        raise InputError(f"--oracle needs a benchmark: only --space nbmacro has one, got {args.space!r}")
    trace = run_oracle_search("mcts", args.budget, args.seed, constraints=windows, progress=args.progress)
    trace.save(out / "trace.json")
    best = trace.best()
    if best is None:
        raise InputError("the oracle search made no query (no architecture satisfies the windows)")
    key, accuracy = best
    spec = nbmacro_spec(key)
    cost = zoo.count(spec, 32)
    write_searched(out, spec, {"method": "mct-nas-oracle", "space": "nbmacro", "arch": key,
                               "benchmark_accuracy": accuracy, "macs": cost.macs, "params": cost.params,
                               "queries": len(trace.queries), "reached": trace.reached,
                               "windows": [w.to_dict() for w in windows]}, extra_files={"trace": "trace.json"})
    print(f"oracle MCTS: best of {len(trace.queries)} queries {key} ({accuracy:.2f} % benchmark accuracy, "
          f"{cost.macs / 1e6:.1f}M MACs); {trace.feasible} feasible architectures")
    print(f"wrote {out / 'spec.json'}, {out / 'report.json'}, {out / 'trace.json'}")
    print(f"the benchmark holds accuracies, not weights: train the architecture, or export it untrained with "
          f"mzoo export --spec {out / 'spec.json'} -o EXPORT_DIR")
    return 0


def _cmd_mcts(args: argparse.Namespace) -> int:
    from common.files import prepare_directory
    from zoo.searched import is_valid_name

    out = Path(args.output)
    for name in ("epochs", "batch_size", "count", "budget", "bn_batches"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    windows = _windows(args)
    if args.name is not None and not is_valid_name(args.name):
        raise InputError(f"--name {args.name!r} must be lowercase letters, digits and '_' starting with a letter")
    prepare_directory(out)
    from search.rundir import claim, settings_of

    args.resuming = claim(out, "search mcts", settings_of(args))  # rerunning the same command resumes
    from search.engine import seed_everything

    seed_everything(args.seed)
    if args.oracle:
        return _cmd_oracle(args, windows, out)
    return _train_and_search(args, windows, out)


def _train_and_search(args: argparse.Namespace, windows: list[Any], out: Path) -> int:
    from common.files import write_json_atomic
    from search.engine import TrainConfig, seed_everything
    from search.mctnas import MCTNASConfig, SearchConfig, search_result, search_stage, train_supernet
    from search.oneshot import OneShotSupernet
    from zoo.spaces import get_space

    space = get_space(args.space)
    feasibility = _feasibility(space, windows)
    size = args.input_size or (32 if args.data == "cifar10" or args.space == "nbmacro" else space.to_spec(
        tuple(c[0] for c in space.choices()))[1][-1])
    from search.data import load_splits

    train, val, classes = load_splits(args.data, subset=args.subset, val_per_class=args.val_per_class,
                                      input_size=size, seed=args.seed, progress=args.progress)
    seed_everything(args.seed)  # the supernet's weights are a function of the seed, whatever loading the data drew
    supernet = OneShotSupernet(space, num_classes=classes, input_size=(3, size, size))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         progress=args.progress)
    mct, trainer = train_supernet(supernet, train, config, MCTNASConfig(), feasibility=feasibility if windows else None,
                                  checkpoint_path=out / "supernet.pth", resume=args.resuming)
    search = SearchConfig(count=args.count, batch_size=min(args.batch_size, len(train)), bn_batches=args.bn_batches,
                          eval_batch_size=args.batch_size, seed=args.seed, progress=args.progress)
    candidates = search_stage(supernet, mct.sampler, train, val, search,
                              feasibility=feasibility if windows else None)
    if not candidates:
        raise InputError("the search found no candidate inside the windows among the paths the training visited; "
                         "train longer or widen the windows")
    result = search_result(supernet, candidates, windows=windows, history=trainer.history,
                           device=args.device if any(w.metric == "latency" for w in windows) else None,
                           extra={"schedule": {"steps": mct.total_steps, "warmup_iters": mct.schedule.warmup_iters,
                                               "mct_start_iter": mct.schedule.mct_start_iter},
                                  "data": args.data, "train_images": len(train), "val_images": len(val),
                                  "name": args.name or f"{args.space}_mctnas"})
    paths = result.save(out)
    write_json_atomic(out / "search.json", {"space": args.space, "candidates": [c.to_dict() for c in candidates],
                                            "windows": [w.to_dict() for w in windows]})
    best = candidates[0]
    print(f"MCT-NAS on {args.space}: {mct.total_steps} supernet steps, {len(candidates)} candidates scored")
    print(f"best {' '.join(map(str, best.arch))}: top-1 {best.top1:.2f} % on {len(val)} held-out images, "
          f"{best.macs / 1e6:.1f}M MACs" + "".join(f", {k} {v:.4g}" for k, v in best.costs.items()
                                                      if k.startswith("latency")))
    print("wrote " + ", ".join(str(p) for p in paths.values()) + f", {out / 'search.json'}, {out / 'supernet.pth'}")
    print(f"use it: mzoo --searched {out} info {result.extra['name']} (weights inherited from the supernet: "
          "retrain or fine-tune before deploying)")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``mcts`` to the ``search`` group's sub-parsers (``mzoo search mcts ...``)."""
    p = sub.add_parser("mcts", help="MCT-NAS: one-shot supernet with MCTS sampling, then the tree search",
                       description="Train a one-shot supernet of a block-wise space with MCT-NAS' sampling (uniform, "
                                   "then MCTS) and search it; or, with --oracle, search NAS-Bench-Macro's oracle.")
    p.add_argument("--space", choices=SPACES, default="nbmacro", help="nbmacro (CIFAR, 3^8) or mctnas (ImageNet, 7^21)")
    p.add_argument("--data", default="cifar10",
                   help="'cifar10' (the shared JPEGs) or an ImageFolder directory/.zip with a train/ split")
    p.add_argument("--epochs", type=int, default=50, help="supernet epochs (the phases scale with the run)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--subset", type=int, help="training images per class (a class-balanced subset)")
    p.add_argument("--val-per-class", type=int, default=50, help="held-out training images per class for scoring")
    p.add_argument("--input-size", type=int, help="training image side (default 32 for CIFAR-10 and nbmacro)")
    p.add_argument("--macs-min", help="MACs window of the space's networks, e.g. 280M")
    p.add_argument("--macs-max", help="e.g. 380M")
    p.add_argument("--latency-min", type=float, help="latency window (ms) predicted from --device's table")
    p.add_argument("--latency-max", type=float)
    p.add_argument("--device", help="latency-table device with tables for --space (default: this machine's "
                                    "tables; see `mzoo lut list`)")
    p.add_argument("--tables", help="root folder of the latency tables (default: the shipped ones)")
    p.add_argument("--count", type=int, default=20, help="candidates the search scores (official: 20)")
    p.add_argument("--bn-batches", type=int, default=20, help="BN recalibration batches per candidate")
    p.add_argument("--oracle", action="store_true", help="search NAS-Bench-Macro's oracle instead of training")
    p.add_argument("--budget", type=int, default=100, help="--oracle: distinct benchmark queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="model name the result registers under (default <space>_mctnas)")
    p.add_argument("--resume", action="store_true",
                   help="accepted for compatibility: rerunning the same command in DIR resumes by itself")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=_cmd_mcts)
