"""``mzoo prune dagger``: prune a CIFAR-trained network to a MACs target with DAGGER, fine-tune it, save it.

Owns the argument parsing and the glue around :mod:`search.dagger`: the network (``--model``, one of
:data:`search.dagger.PRUNABLE`), its weights (``--checkpoint``: a state dict of the full zoo model, a
``{"state_dict": ...}`` file or a search-engine checkpoint; without it the network is first trained on the
data and saved as ``DIR/pretrained.pth``, since no pretrained weights exist), the data (CIFAR-10 from the
shared folder or an ImageFolder directory/.zip with a ``train`` split, a held-out part of which scores the
result), the three recipes (pretraining, joint Dagger training, fine-tuning) and the outputs
``DIR/spec.json``, ``DIR/weights.pth`` and ``DIR/report.json`` (the width searches' layout), which
``mzoo export --spec DIR/spec.json --checkpoint DIR/weights.pth`` ships. :func:`add_commands` is given the
top-level sub-parsers by :mod:`mzoo.cli` and adds ``prune`` with its ``dagger`` command; every ``ValueError``
becomes one line ``mzoo: error: ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.errors import InputError

__all__ = ["add_commands", "read_weights"]


def read_weights(path: str) -> dict[str, Any]:
    """A full model's state dict from ``path`` (a state dict, ``{"state_dict": ...}`` or an engine checkpoint)."""
    from zoo.pretrained import WeightsError, read_state_dict

    file = Path(path)
    if not file.is_file():
        raise InputError(f"--checkpoint {path!r} does not exist")
    try:
        return dict(read_state_dict(file))
    except WeightsError as err:
        raise InputError(f"--checkpoint {path!r}: {str(err).splitlines()[0]}") from None


def _cmd_dagger(args: argparse.Namespace) -> int:
    import torch

    import zoo
    from common.files import prepare_directory, publish, temporary_path
    from search.dagger import PRUNABLE, DaggerConfig, RunConfig, parse_macs, pretrain, prunable_space, run_dagger
    from search.engine import TrainConfig, seed_everything
    from search.data import load_splits
    from zoo.searched import is_valid_name

    if args.model not in PRUNABLE:
        raise InputError(f"unknown --model {args.model!r}; known: {', '.join(PRUNABLE)}")
    for name in ("epochs", "dagger_epochs", "pretrain_epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    method = DaggerConfig(lam=args.lam, divisor=args.divisor, penalty=args.penalty)
    seed_everything(args.seed)  # before anything random; pretrain and run_dagger seed again before their models
    out = Path(args.output)
    train, val, classes = load_splits(args.data, subset=args.subset, val_per_class=args.val_per_class,
                                      input_size=32, seed=args.seed, progress=args.progress)
    space = prunable_space(args.model, classes)
    full_macs = zoo.count(*space.to_spec(tuple(max(c) for c in space.choices()))).macs
    target = parse_macs(args.macs, full_macs)  # refuse a bad target before any training
    name = args.name or f"{args.model}_{args.scores}_{round(100 * target / full_macs)}"
    if not is_valid_name(name):
        raise InputError(f"--name {name!r} must be lowercase letters, digits and '_' starting with a letter")
    prepare_directory(out)
    from search.rundir import claim, settings_of

    claim(out, "prune dagger", settings_of(args))
    recipe = dict(batch_size=args.batch_size, seed=args.seed, progress=args.progress)
    config = RunConfig(pretrain=TrainConfig(epochs=args.pretrain_epochs, lr=args.lr, **recipe),
                       dagger=TrainConfig(epochs=args.dagger_epochs, lr=args.finetune_lr, **recipe),
                       finetune=TrainConfig(epochs=args.epochs, lr=args.finetune_lr, **recipe), method=method)
    if args.checkpoint:
        weights = read_weights(args.checkpoint)
    else:
        model, _ = pretrain(space, train, config.pretrain, eval_data=val)
        weights = model.state_dict()
        with temporary_path(out / "pretrained.pth") as tmp:
            torch.save({k: v.detach().cpu() for k, v in weights.items()}, tmp)
            publish(tmp, out / "pretrained.pth")
        print(f"pretrained {args.model} for {args.pretrain_epochs} epochs: {out / 'pretrained.pth'}")
    try:
        zoo.build_model(space.to_spec(tuple(max(c) for c in space.choices()))[0]).load_state_dict(weights)
    except RuntimeError as err:
        raise InputError(f"--checkpoint {args.checkpoint!r} does not fit {args.model}: "
                         f"{str(err).splitlines()[0]}") from None
    result = run_dagger(args.model, target, train, val, config, weights=weights, scores=args.scores,
                        num_classes=classes)
    result.extra["name"] = name
    paths = result.save(out)
    extra = result.report()
    print(f"{args.scores} pruning of {args.model}: {result.macs / 1e6:.2f}M MACs ({result.macs / full_macs:.1%} of "
          f"{full_macs / 1e6:.1f}M; target {target / 1e6:.2f}M), {result.params / 1e6:.3f}M params")
    print(f"top-1 on {len(val)} held-out images: full {extra['full_top1']:.2f} %, pruned "
          f"{extra['pruned_top1_before_finetune']:.2f} % before and {result.score:.2f} % after fine-tuning")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    print(f"use it: mzoo --searched {out} info {name} | mzoo --searched {out} export {name} -o EXPORT_DIR")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``prune`` (with ``dagger``) to the top-level sub-parsers (``mzoo prune dagger ...``)."""
    group = sub.add_parser("prune", help="filter pruning to a MACs target (DAGGER)",
                           description="Prune a trained network's filters to a MACs target.")
    commands = group.add_subparsers(dest="prune_command", required=True)
    p = commands.add_parser("dagger", help="data-agnostic filter gating, then pruning to a channel list",
                            description="DAGGER: gates from the weights and a MACs regulariser, then the kept filters "
                                        "as a zoo spec with inherited weights, fine-tuned.")
    p.add_argument("--model", required=True, help="mobilenetv2_cifar, resnet50 (ImageNet layout at 32×32) or "
                                                  "hgcnet_cifar")
    p.add_argument("--macs", required=True, help="target: a percentage of the full network (50%%) or a count (40M)")
    p.add_argument("--checkpoint", help="weights of the full network (default: train it first on --data)")
    p.add_argument("--data", default="cifar10", help="'cifar10' or an ImageFolder directory/.zip with a train/ split")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs")
    p.add_argument("--dagger-epochs", type=int, default=2, help="joint network + Dagger epochs")
    p.add_argument("--pretrain-epochs", type=int, default=10, help="epochs of pretraining without --checkpoint")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1, help="pretraining lr")
    p.add_argument("--finetune-lr", type=float, default=0.01, help="lr of the Dagger training and the fine-tuning")
    p.add_argument("--subset", type=int, help="training images per class (a class-balanced subset)")
    p.add_argument("--val-per-class", type=int, default=50, help="held-out training images per class")
    p.add_argument("--lam", type=float, default=2.0, help="weight of the MACs regulariser")
    p.add_argument("--penalty", choices=("abs", "square"), default="abs")
    p.add_argument("--divisor", type=int, help="pruned widths are multiples of this (default: 8 HGCNet, else 1)")
    p.add_argument("--scores", choices=("dagger", "l1", "uniform"), default="dagger",
                   help="filter ranking: DAGGER's gates, or the L1-norm / uniform-width baselines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="model name the result registers under (default <model>_<scores>_<MACs %%>)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=_cmd_dagger)
