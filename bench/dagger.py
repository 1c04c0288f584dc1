"""DAGGER vs L1-norm filter pruning vs uniform width scaling at the same MACs, on CIFAR-10 (small, on one CPU core).

For each model (default MobileNetV2 in BCNet's CIFAR layout): train the full network briefly on a class-balanced
CIFAR-10 subset (the "pretrained" network: no pretrained weights exist), then prune it to the MACs target three
ways from the same weights: DAGGER (:mod:`search.dagger`: gates from the weights, joint training with the MACs
regulariser, the highest-gated filters kept, gates folded into BatchNorm), the data-agnostic L1-norm criterion
(filters ranked by their weights' L1 norm relative to their layer, one global ranking) and uniform width scaling
(every layer keeps its leftmost channels, all layers shrinking together). Every pruned network inherits the kept
filters' weights, reaches the target within the selection's tolerance, and is fine-tuned with the same recipe
and seed. Reports held-out top-1 (before and after fine-tuning), MACs, params and the ONNX Runtime latency at
32×32 (batch 1, one thread, measured on this machine pinned to CPU 0: the shipped ``mobilenetv2_width`` table
holds ImageNet-layout op keys only, so CIFAR-layout networks are measured, not predicted). Writes the
BENCHMARKS.md section ``dagger``, ``bench/results/dagger.json`` and ``bench/figures/dagger_widths.png`` (other
``--models`` than the default: ``dagger-<models>``, with the figure and results named after them).

    python bench/dagger.py [--models mobilenetv2_cifar[,resnet50]] [--macs 50%] [--per-class 150] [--no-write]

Run it pinned to one core (``taskset -c 0`` with ``OMP_NUM_THREADS=1``); the defaults take about 40 min there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import zoo  # noqa: E402
from bench._report import write_section  # noqa: E402
from latency_tables.devices import get_device  # noqa: E402
from common.environment import current_environment  # noqa: E402
from common.files import prepare_directory, publish, save_figure, temporary_path, write_json_atomic  # noqa: E402
from latency_tables.measure import BenchConfig  # noqa: E402
from search.dagger import DaggerConfig, RunConfig, parse_macs, pretrain, prunable_space, run_dagger  # noqa: E402
from search.data import balanced_subset, cifar10, cifar_eval_transform  # noqa: E402
from search.engine import TrainConfig, evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parent
DEFAULT_MODELS = "mobilenetv2_cifar"
METHODS = {"dagger": "DAGGER (gates + MACs regulariser)", "l1": "L1-norm filter pruning",
           "uniform": "uniform width scaling"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated: mobilenetv2_cifar, resnet50, "
                                                                  "hgcnet_cifar (each set of models its own section)")
    parser.add_argument("--macs", default="50%", help="MACs target (a percentage of the full network or a count)")
    parser.add_argument("--per-class", type=int, default=120, help="training images per class (CIFAR-10 train)")
    parser.add_argument("--val-per-class", type=int, default=50, help="held-out images per class (CIFAR-10 test)")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--dagger-epochs", type=int, default=1)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05, help="pretraining lr")
    parser.add_argument("--finetune-lr", type=float, default=0.02, help="lr of the joint DAGGER phase and fine-tuning")
    parser.add_argument("--lam", type=float, default=2.0)
    parser.add_argument("--dagger-lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained-dir", type=Path, default=None,
                        help="reuse DIR/<model>.pth as the pretrained network if it exists, else train and save it there")
    parser.add_argument("--no-latency", action="store_true", help="skip the ORT latency measurements")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md, figure, results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    progress = not args.no_progress
    train = balanced_subset(cifar10("train"), args.per_class, seed=args.seed).with_cache(progress)
    val = balanced_subset(cifar10("test", cifar_eval_transform()), args.val_per_class, seed=args.seed).with_cache(progress)
    recipe = dict(batch_size=args.batch_size, seed=args.seed, progress=progress)
    config = RunConfig(pretrain=TrainConfig(epochs=args.pretrain_epochs, lr=args.lr, warmup_epochs=1.0,
                                                 grad_clip_norm=5.0, **recipe),
                       dagger=TrainConfig(epochs=args.dagger_epochs, lr=args.finetune_lr, **recipe),
                       finetune=TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, **recipe),
                       method=DaggerConfig(lam=args.lam, dagger_lr=args.dagger_lr))
    results: dict[str, dict] = {}
    for model in [m for m in args.models.split(",") if m]:
        results[model] = run_model(model, args, config, train, val)
    minutes = (time.perf_counter() - start) / 60
    env = current_environment()
    machine = f"{env.cpu_model}, {env.logical_cores} logical cores, {env.os}; torch {env.torch}; one core"
    text = "\n\n".join(f"**{model}** (target {args.macs} of {r['full']['macs'] / 1e6:.1f}M MACs)\n\n{table(r)}"
                       for model, r in results.items())
    notes = notes_text(args, config, results, len(train), len(val), minutes)
    print(f"\n{machine}\n\n{text}\n\n{notes}")
    if args.no_write:
        return
    # The default run owns the section "dagger"; runs of other models get their own section, figure and results.
    suffix = "" if args.models == DEFAULT_MODELS else "-" + args.models.replace(",", "-")
    figure = ROOT / "figures" / f"dagger_widths{suffix.replace('-', '_')}.png"
    write_json_atomic(ROOT / "results" / f"dagger{suffix.replace('-', '_')}.json",
                      {"machine": machine, "args": vars(args), "results": results})
    plot(results, figure)
    write_section(f"dagger{suffix}", f"DAGGER vs L1-norm pruning vs uniform width scaling on CIFAR-10, same MACs "
                  f"({args.models})", f"{text}\n\n![kept width per layer](bench/figures/{figure.name})\n\n{notes}\n",
                  machine)


def latency(model: torch.nn.Module, skip: bool) -> dict | None:
    if skip:
        return None
    result = get_device("ort", threads=1).measure(model.eval(), (1, 3, 32, 32), BenchConfig(cpus=(0,)))
    return {"median_ms": result.median_ms, "p10_ms": result.p10_ms, "p90_ms": result.p90_ms}


def run_model(name: str, args: argparse.Namespace, config: RunConfig, train, val) -> dict:  # noqa: ANN001
    space = prunable_space(name)
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    saved = args.pretrained_dir / f"{name}.pth" if args.pretrained_dir is not None else None
    if saved is not None and saved.is_file():
        model = zoo.build_model(space.to_spec(tuple(max(c) for c in space.choices()))[0])
        model.load_state_dict(torch.load(saved, weights_only=True))
        history = [{"loaded_from": str(saved)}]
    else:
        model, history = pretrain(space, train, config.pretrain)
        if saved is not None:
            prepare_directory(saved.parent)
            with temporary_path(saved) as tmp:
                torch.save(model.state_dict(), tmp)
                publish(tmp, saved)
    loader = DataLoader(val, batch_size=args.batch_size)
    top1, _ = evaluate(model.eval(), loader)
    full_spec = model.arch_spec
    cost = zoo.count(full_spec, 32)
    out = {"full": {"top1": top1, "macs": cost.macs, "params": cost.params, "latency": latency(model, args.no_latency),
                    "pretrain_s": time.perf_counter() - t0, "history": history},
           "target_macs": parse_macs(args.macs, cost.macs), "methods": {}}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for method in METHODS:
        t1 = time.perf_counter()
        result = run_dagger(name, args.macs, train, val, config, weights=weights, scores=method)
        report = result.report()
        out["methods"][method] = {
            "top1": result.score, "top1_before_finetune": report["pruned_top1_before_finetune"], "macs": result.macs,
            "params": result.params, "widths": list(result.arch), "full_widths": [max(c) for c in space.choices()],
            "latency": latency(result.model, args.no_latency), "seconds": time.perf_counter() - t1,
            "history": report["history"]}
    return out


def table(r: dict) -> str:
    lines = ["| network | MACs | params | top-1 pruned (BN re-estimated) | top-1 fine-tuned | ORT latency ms, 32×32 "
             "(p10–p90) |",
             "|---|---|---|---|---|---|"]

    def lat(x: dict | None) -> str:
        return "—" if x is None else f"{x['median_ms']:.3f} ({x['p10_ms']:.3f}–{x['p90_ms']:.3f})"

    full = r["full"]
    lines.append(f"| full network (pretrained) | {full['macs'] / 1e6:.1f}M | {full['params'] / 1e6:.3f}M | "
                 f"{full['top1']:.2f} % | — | {lat(full['latency'])} |")
    for method, m in r["methods"].items():
        lines.append(f"| {METHODS[method]} | {m['macs'] / 1e6:.1f}M ({m['macs'] / full['macs']:.1%}) | "
                     f"{m['params'] / 1e6:.3f}M | {m['top1_before_finetune']:.2f} % | {m['top1']:.2f} % | "
                     f"{lat(m['latency'])} |")
    return "\n".join(lines)


def notes_text(args: argparse.Namespace, config: RunConfig, results: dict, n_train: int, n_val: int,
               minutes: float) -> str:
    method = config.method
    timing = "; ".join(f"{model}: pretraining (or loading) {r['full']['pretrain_s'] / 60:.1f} min, "
                       + ", ".join(f"{m} {v['seconds'] / 60:.1f} min" for m, v in r["methods"].items())
                       for model, r in results.items())
    dagger_end = {model: r["methods"]["dagger"]["history"] for model, r in results.items()}
    soft = "; ".join(f"{model}: soft MACs at {next((h['train_macs_ratio'] for h in reversed(hist) if 'train_macs_ratio' in h), float('nan')):.1%} "
                     f"of the full network at the end of the joint phase" for model, hist in dagger_end.items())
    return (
        f"Data: {n_train} CIFAR-10 training images ({args.per_class} per class, seed {args.seed}; pad-crop-flip) for "
        f"every training phase, {n_val} CIFAR-10 test images ({args.val_per_class} per class) held out for top-1. "
        f"Pretraining from scratch: {args.pretrain_epochs} epochs, SGD lr {args.lr} (1-epoch warm-up, cosine, "
        f"gradient norm clipped at 5), "
        f"momentum 0.9, wd 5e-4, batch {args.batch_size}. DAGGER: {args.dagger_epochs} joint epoch(s) of the network "
        f"(SGD lr {args.finetune_lr}, cosine) and the Dagger (Adam lr {method.dagger_lr}) on CE + {method.lam}·"
        f"|MACs(gates)/target − 1|, gates starting at sigmoid({method.init_logit}); {soft}. Every pruned network "
        f"has its BatchNorm statistics re-estimated on {config.bn_batches} training batches (the full network's no "
        f"longer fit its narrower layers) before it is scored; all three methods then fine-tune for {args.finetune_epochs} epoch(s) with the same recipe and seed (SGD lr {args.finetune_lr}, "
        f"cosine); DAGGER's joint phase is extra training of the gated network that the baselines do not get "
        f"(it is part of the method). Pruned MACs are the walker's count of the saved spec (`zoo.count`), "
        f"at most the target and within {method.tolerance:.0%} below it. Latency: the network exported to ONNX "
        f"and timed in a fresh ONNX Runtime session, batch 1, one thread, pinned to CPU 0, protocol of "
        f"`latency_tables.measure.BenchConfig` (median until stable); ResNet-50 runs its ImageNet layout at 32×32. "
        f"Times: {timing}; whole run {minutes:.1f} min on one core.\n\n"
        "What this can and cannot show: the 'pretrained' network is far from converged (a few epochs on a small "
        "subset), so accuracy differences of a point or two between the pruning methods are within the noise "
        "of one seed and a few hundred held-out images; the paper's claims (ImageNet, fully trained networks, "
        "long fine-tuning) are not tested here. What it does show: all three methods reach the same MACs from "
        "the same weights through the same code path; how far each pruned network falls before fine-tuning "
        "(what the ranking preserved); and that equal MACs need not mean equal latency, because the methods "
        "remove MACs in different layers (figure: kept width per gene; in the CIFAR layout the first rows run at "
        "32×32, where a channel costs the most time)."
    )


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(12, 3.6 * len(results)), squeeze=False)
    for ax, (model, r) in zip(axes[:, 0], results.items()):
        for method, m in r["methods"].items():
            ratio = [w / f for w, f in zip(m["widths"], m["full_widths"])]
            ax.plot(range(len(ratio)), ratio, marker="o", ms=3, label=f"{METHODS[method]} ({m['top1']:.1f} %)")
        ax.set(xlabel="gene (tied width), input to output", ylabel="kept fraction of the width", ylim=(0, 1.05),
               title=f"{model}: widths kept at {next(iter(r['methods'].values()))['macs'] / r['full']['macs']:.0%} MACs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
