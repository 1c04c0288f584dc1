"""Width search on CIFAR-10 at a budget this machine can afford: BCNet vs the unilateral supernet vs uniform scaling.

Every method searches the same space (MobileNetV2-CIFAR's widths at --width-multiplier of the published ones, in
BCNet's 20 ratios, on 32×32 CIFAR-10 images) at the same MACs budget with the same supernet recipe, data and seed, through the command users run
(:func:`search.width.pipeline.run_width_search`): BCNet (bilateral, complementary training, prior-seeded evolution),
the unilateral supernet (leftmost channels only, everything else equal: the baseline BCNet argues against), CafeNet,
and uniform width scaling (every width at the largest common ratio within the budget, no search). Each found network
is then retrained from scratch with one recipe for --seeds seeds, and the searched ones are also
reported with their inherited weights (BN recalibrated) and after fine-tuning them. Search cost is CPU time
(process time, so other work on the machine does not inflate it). Last, the cost of a supernet step: a BCNet step
(its random / complement / full cycle) and a unilateral step against a plain step of the full network alone.

    python bench/width_search.py [--per-class 500] [--epochs 6] [--retrain-epochs 6] [--seeds 1] [--work DIR]

The searches resume from --work, so they can run as separate processes first (--phase search --methods ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import zoo  # noqa: E402
from bench._report import write_section  # noqa: E402
from common.environment import current_environment  # noqa: E402
from common.files import write_json_atomic  # noqa: E402
from search.engine import TrainConfig, Trainer, evaluate  # noqa: E402
from zoo.spaces.widths import BCNET_FRACTIONS, scaled_width  # noqa: E402
from search.width import BCNetConfig, BCNetTrainer, EvolutionConfig, WidthSupernet  # noqa: E402
from search.width.pipeline import WidthSearchConfig, load_data, make_space, run_width_search  # noqa: E402

ROOT = Path(__file__).resolve().parent
METHODS = ("bcnet", "unilateral", "cafenet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=500, help="training images per class (default 500)")
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--width-multiplier", type=float, default=0.3,
                        help="supernet full widths as a share of MobileNetV2-CIFAR's (default 0.3)")
    parser.add_argument("--budget", type=float, default=0.5, help="MACs budget as a share of the full network")
    parser.add_argument("--epochs", type=int, default=6, help="supernet epochs")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--retrain-epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=1, help="retraining seeds per network")
    parser.add_argument("--population", type=int, default=12)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--recalibration-batches", type=int, default=10)
    parser.add_argument("--methods", default=",".join(METHODS), help="searches to run in this process")
    parser.add_argument("--phase", choices=("search", "all"), default="all",
                        help="search: only the given methods' searches (to run several processes); all: "
                             "every search (resumed from --work), retraining, step costs and the report")
    parser.add_argument("--work", default="/tmp/mzoo-width-bench", help="checkpoints and results (resumable)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    base = WidthSearchConfig(model="mobilenetv2_cifar", max_macs=1, per_class=args.per_class,
                             test_per_class=args.test_per_class, width_multiplier=args.width_multiplier,
                             recalibration_batches=args.recalibration_batches)
    space = make_space(base, num_classes=10)
    full_macs = zoo.count(*space.to_spec(tuple(max(c) for c in space.choices()))).macs
    budget = int(args.budget * full_macs)
    supernet = TrainConfig(epochs=args.epochs, batch_size=64, lr=0.1, nesterov=True, weight_decay=5e-4, seed=0,
                           warmup_epochs=1, grad_clip_norm=5.0, progress=False)
    finetune = TrainConfig(epochs=args.finetune_epochs, batch_size=64, lr=0.02, nesterov=True, seed=0,
                           progress=False)
    evolution = EvolutionConfig(population=args.population, generations=args.generations,
                                topk=max(1, args.population // 5), mutations=args.population // 2,
                                crossovers=args.population // 2)
    work = Path(args.work)
    rows = {}
    for method in (args.methods.split(",") if args.phase == "search" else METHODS):
        config = dataclasses.replace(base, method=method, max_macs=budget, supernet=supernet, finetune=finetune,
                                     evolution=evolution)
        run = run_width_search(config, work / method, progress=True)
        rows[method] = {"spec": run.result.spec, "macs": run.result.macs, "params": run.result.params,
                        "score": run.result.score, "inherited": run.report["inherited_top1"],
                        "finetuned": run.report["finetuned_top1"], "cpu_s": cpu_seconds(work / method, run)}
        print(f"{method}: {({k: v for k, v in rows[method].items() if k != 'spec'})}", flush=True)
    if args.phase == "search":
        return
    uniform = space.to_spec(uniform_arch(space, budget))[0]
    cost = zoo.count(uniform, 32)
    rows["uniform"] = {"spec": uniform, "macs": cost.macs, "params": cost.params}
    data = load_data(base, 32)
    cache_path = work / "retrained.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for name, row in rows.items():
        for seed in range(args.seeds):
            key = f"{name}:{seed}:{args.retrain_epochs}"
            if key not in cache:
                cache[key] = retrain(row["spec"], data, args.retrain_epochs, seed)
                write_json_atomic(cache_path, cache)
        row["retrained"] = [cache[f"{name}:{seed}:{args.retrain_epochs}"] for seed in range(args.seeds)]
        print(f"{name}: retrained {row['retrained']}", flush=True)
    steps = step_costs(space, data["train"])
    minutes = (time.perf_counter() - start) / 60
    report(rows, steps, full_macs, budget, args, minutes)


def cpu_seconds(directory: Path, run) -> float:
    """The search's cost in CPU seconds: supernet training and search (as recorded when they ran)."""
    times = json.loads((directory / "report.json").read_text())
    return sum(float(times.get(k, 0.0)) for k in ("supernet_cpu_seconds", "search_cpu_seconds"))


def uniform_arch(space, budget: int) -> tuple[int, ...]:
    """Every width at the largest common ratio of BCNet's list whose network fits ``budget``."""
    full = tuple(max(c) for c in space.choices())
    for fraction in sorted(BCNET_FRACTIONS, reverse=True):
        arch = tuple(scaled_width(w, fraction) for w in full)
        if zoo.count(*space.to_spec(arch)).macs <= budget:
            return arch
    raise ValueError(f"no uniform ratio fits {budget} MACs")


def retrain(spec, data, epochs: int, seed: int) -> float:
    """Test top-1 of ``spec`` trained from scratch (random init, seeded) with one recipe for every method."""
    torch.manual_seed(seed)
    model = zoo.build_model(spec)
    config = TrainConfig(epochs=epochs, batch_size=64, lr=0.1, nesterov=True, weight_decay=5e-4, seed=seed,
                         progress=False)
    Trainer(model, config, data["train"]).fit()
    return float(evaluate(model, torch.utils.data.DataLoader(data["test"], batch_size=200))[0])


def step_costs(space, train, steps: int = 30) -> dict[str, float]:
    """CPU seconds per optimizer step at batch 64: BCNet's cycle, the unilateral step, the full network alone."""
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = [b for _, b in zip(range(steps), loader)]
    out = {}
    for name in ("full", "bcnet", "unilateral"):
        torch.manual_seed(0)
        supernet = WidthSupernet(space)
        step = None if name == "full" else BCNetTrainer(supernet, BCNetConfig(sides=("left", "right") if name == "bcnet"
                                                                               else ("left",))).step_fn
        config = TrainConfig(steps=steps, batch_size=64, progress=False)
        cpu = time.process_time()
        trainer = Trainer(supernet, config, _Fixed(batches), **({"step_fn": step} if step else {}))
        trainer.fit()
        out[name] = (time.process_time() - cpu) / steps
    return out


class _Fixed(torch.utils.data.Dataset):
    """The same pre-drawn batches' images, one by one (so every measured step sees the same data)."""

    def __init__(self, batches) -> None:
        self.items = [(x, int(y)) for images, targets in batches for x, y in zip(images, targets)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def plot(rows, full_macs: int, budget: int, path: Path) -> None:
    """Test top-1 against MACs: retrained (mean ± sd over seeds) for every method, inherited and fine-tuned too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.files import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    for i, (name, r) in enumerate(rows.items()):
        macs = r["macs"] / 1e6
        color = f"C{i}"
        sd = statistics.stdev(r["retrained"]) if len(r["retrained"]) > 1 else 0.0
        ax.errorbar([macs], [statistics.mean(r["retrained"])], yerr=[sd], fmt="o", color=color, capsize=3,
                    label=f"{name}: retrained")
        if "finetuned" in r:
            ax.scatter([macs], [r["finetuned"]], marker="^", color=color, label=f"{name}: fine-tuned")
            ax.scatter([macs], [r["inherited"]], marker="x", color=color, label=f"{name}: inherited")
    ax.axvline(budget / 1e6, color="0.6", lw=1, ls="--", label="budget")
    ax.set_xlabel(f"MACs (M) at 32×32; full network {full_macs / 1e6:.2f}M")
    ax.set_ylabel("CIFAR-10 test top-1 (%)")
    ax.set_title("Width search at one MACs budget")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


def report(rows, steps, full_macs: int, budget: int, args, minutes: float) -> None:
    env = current_environment()
    machine = (f"{env.cpu_model} ({env.cpu_id}), {env.logical_cores} logical cores, {env.os}; torch {env.torch}; "
               "one process, 1 thread")
    lines = ["| method | MACs | params | search score (held-out top-1) | test top-1, inherited | after fine-tuning "
             f"| retrained from scratch ({args.seeds} seeds) | search cost (CPU min) |", "|---|---|---|---|---|---|---|---|"]
    for name in (*METHODS, "uniform"):
        r = rows[name]
        retrained = r["retrained"]
        spread = f" ± {statistics.stdev(retrained):.2f}" if len(retrained) > 1 else ""
        searched = "score" in r
        lines.append(f"| {name} | {zoo.format_count(r['macs'])} ({r['macs'] / full_macs:.0%}) | "
                     f"{zoo.format_count(r['params'])} | " + (f"{r['score']:.2f} % | {r['inherited']:.2f} % | "
                                                               f"{r['finetuned']:.2f} % | " if searched else "– | – | – | ")
                     + f"{statistics.mean(retrained):.2f}{spread} % | "
                     + (f"{r['cpu_s'] / 60:.1f} |" if searched else "0 |"))
    step_line = (f"Supernet step cost (CPU s per step, batch 64, mean of 30): full network alone {steps['full']:.3f}, "
                 f"BCNet (random/complement/full cycle) {steps['bcnet']:.3f} ({steps['bcnet'] / steps['full']:.2f}×), "
                 f"unilateral {steps['unilateral']:.3f} ({steps['unilateral'] / steps['full']:.2f}×).")
    notes = (f"Space: MobileNetV2-CIFAR (stride-1 stem, 32×32 CIFAR-10 images) with every width at "
             f"{args.width_multiplier:g}× the published one (full network {zoo.format_count(full_macs)} MACs; at 1× it "
             f"costs 296.5M, beyond this CPU's budget for six trainings), its 52-entry width list in BCNet's 20 "
             f"ratios (25 tied positions); budget {args.budget:.0%} = {zoo.format_count(budget)} MACs. Uniform "
             "scaling takes the largest common ratio that fits, hence its lower MACs. Data: "
             f"{args.per_class} training images per class ({10 * args.per_class:,} in all, 10 % of them held out to "
             f"score candidates), {args.test_per_class} test images per class. Supernets: {args.epochs} epochs, "
             "SGD 0.1 nesterov, 1-epoch warm-up then cosine, gradient norm clipped at 5, batch 64, seed 0; evolution: "
             f"population {args.population}, {args.generations} generations; candidates scored after BN "
             f"recalibration on {args.recalibration_batches} training batches. Fine-tuning: {args.finetune_epochs} "
             f"epochs at lr 0.02 from the inherited weights. Retraining: {args.retrain_epochs} epochs from random "
             "init, SGD 0.1 nesterov, cosine, per seed. Search cost = supernet training + search (CPU time of the "
             "process that ran each phase, from the run's timings.json). At this scale (minutes of training on a "
             "few thousand images) differences of a point or two are within the retraining seeds' spread; the "
             "table shows the pipeline end to end, not the paper's ImageNet gains. Wall time of this invocation "
             f"(searches already in --work are resumed, not rerun): {minutes:.0f} min.")
    figure = ROOT / "figures" / "width_search.png"
    body = ("\n".join(lines) + "\n\n" + step_line + f"\n\n![accuracy against MACs](bench/figures/{figure.name})\n\n"
            + notes)
    print(f"\n{machine}\n\n{body}")
    if not args.no_write:
        plot(rows, full_macs, budget, figure)
        write_section("width-search", "Width search on CIFAR-10: BCNet vs unilateral supernet vs CafeNet vs uniform "
                      "scaling", body, machine)


if __name__ == "__main__":
    main()
