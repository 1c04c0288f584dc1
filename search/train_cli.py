"""The ``mzoo train`` command: train a zoo model or a spec file from scratch with the training engine.

Owns argument parsing and the summary a user reads; the work is :func:`search.train.run_train`. Defaults are
NAS-Bench-Macro's recipe (SGD 0.1, momentum 0.9, wd 5e-4, batch 256, 50 epochs cosine). Every input is
checked before any data is read (:func:`search.train.check_job`); rerunning the same command in the same
``-o`` resumes, other settings are refused naming them. :func:`add_commands` is called by :mod:`mzoo.cli`,
which turns user errors into one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from common.errors import InputError


def _cmd_train(args: argparse.Namespace) -> int:
    from search.engine import TrainConfig
    from search.train import TrainJob, check_job, run_train

    if (args.name_or_none is None) == (args.spec is None):
        raise InputError("give exactly one of NAME (a zoo model) or --spec FILE")
    if args.epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {args.epochs}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    recipe = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                         weight_decay=args.wd, warmup_epochs=args.warmup_epochs,
                         label_smoothing=args.label_smoothing, seed=args.seed, workers=args.workers,
                         eval_batch_size=args.eval_batch_size, progress=not args.no_progress)
    job = TrainJob(model=args.name_or_none, spec_file=args.spec, data=args.data, train=recipe,
                   input_size=args.input_size, per_class=args.per_class, test_per_class=args.test_per_class,
                   name=args.name, cache_dir=args.cache, init=args.init)
    check_job(job, args.output)  # before any image is read
    result = run_train(job, args.output, progress=not args.no_progress)
    if result is None:  # a torchrun worker other than rank 0
        return 0
    report = result.report
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(_summary(report, result.directory))
    return 0


def _summary(report: dict[str, Any], directory: Any) -> str:
    from zoo import format_count

    return "\n".join([
        f"{report['name']}: {report['epochs']} epochs ({report['steps']} steps), {format_count(report['params'])} "
        f"params, {format_count(report['macs'])} MACs",
        f"  test top-1: {report['final_top1']:.2f} % final, {report['best_top1']:.2f} % best (epoch "
        f"{report['best_epoch']})",
        f"  files in {directory}: spec.json, weights.pth (sha256 {report['sha256'][:12]}…), report.json",
        f"  use it: mzoo --searched {directory} info {report['name']} | "
        f"mzoo export --spec {directory}/spec.json --checkpoint {directory}/weights.pth -o OUT"])


def add_commands(sub: Any) -> None:
    """Add ``train`` to the ``mzoo`` sub-command parser ``sub``."""
    p = sub.add_parser("train", help="train a zoo model or a spec from scratch (NAS-Bench-Macro's recipe by default)",
                       description="Train NAME (a zoo model) or --spec FILE on --data with the training engine, "
                                   "evaluate on the test split every epoch, and write spec.json, weights.pth and "
                                   "report.json to -o (`mzoo --searched DIR` registers them). Rerun the same "
                                   "command to resume; works under torchrun.")
    p.add_argument("name_or_none", nargs="?", metavar="NAME", help="a zoo model, e.g. nbmacro_00000000")
    p.add_argument("--spec", help="an architecture spec JSON file instead of NAME")
    p.add_argument("--data", default="cifar10", help="cifar10 (../shared/data, default) or an ImageFolder dir/.zip "
                                                     "with train and val (or test) splits")
    p.add_argument("-o", "--output", required=True, help="directory for the checkpoint and the result")
    p.add_argument("--epochs", type=int, default=50, help="default 50")
    p.add_argument("--batch-size", type=int, default=256, help="per process (default 256)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", type=float, default=5e-4, help="weight decay (default 5e-4)")
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", choices=("zoo", "pytorch"), default="zoo",
                   help="initial weights: the zoo's (timm-style fan-out normal, default) or PyTorch's layer defaults "
                        "(what NAS-Bench-Macro's training script uses)")
    p.add_argument("--input-size", type=int, help="image side (default: the model's; 32 for a 10-class spec)")
    p.add_argument("--per-class", type=int, help="train on this many images per class (default all)")
    p.add_argument("--test-per-class", type=int, help="test on this many images per class (default all)")
    p.add_argument("--name", help="name the result registers as (default <model>_<data>)")
    p.add_argument("--cache", help="where decoded images are kept (default $MZOO_CACHE/data)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    p.add_argument("--eval-batch-size", type=int, default=500)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)
