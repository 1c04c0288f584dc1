"""NAS-Bench-Macro reproduced: networks trained here with the benchmark's own recipe against its recorded accuracy.

Each architecture is trained from scratch through the command users run (:func:`search.train.run_train`, what
``mzoo train nbmacro_<arch>`` does) with NAS-Bench-Macro's recipe (papers.md §4.2: SGD lr 0.1, momentum 0.9,
wd 5e-4, batch 256, 50 epochs cosine, crop 32 pad 4 + flip, CIFAR mean/std), evaluated on the CIFAR-10 test set
after every epoch. The recorded figure is the benchmark's: the best test top-1 over epochs, compared with the
mean ± std of the benchmark's 3 runs; a reproduction holds when it is within ±1.0 point of the mean. The last
epoch's weights are what is shipped (``zoo/weights/``); the table also scores them through
``zoo.create_model(name, pretrained=True)`` when they are registered, which must give the run's final figure.

    python bench/nbmacro_train.py [--archs 00000000,00000010,00000100] [--work /work/runs] [--collect] [--ship] [--no-write]

Runs resume from ``--work/nb_<arch>`` (the directories ``mzoo train ... -o`` writes), so the trainings can run
as separate, low-priority processes first (``mzoo train nbmacro_<arch> -o WORK/nb_<arch>``) and this script
with ``--collect`` only reads their results (a run whose directory is gone is read from the report it shipped
with in ``zoo/weights/``). ``--ship`` copies finished weights (and their report) to
``zoo/weights/nbmacro_<arch>.pth`` / ``.json`` and prints the sha256 that ``zoo/nbmacro.py``'s cfg pins.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import zoo  # noqa: E402
from bench._report import write_section  # noqa: E402
from common.environment import current_environment  # noqa: E402
from search.nasbench import NASBenchMacro  # noqa: E402
from search.train import TrainJob, load_job_data, nbmacro_recipe, run_train, score_top1  # noqa: E402
from zoo.pretrained import sha256_of  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[1] / "zoo" / "weights"
TOLERANCE = 1.0  # points of top-1 around the benchmark's mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="00000000,00000010,00000100", help="NAS-Bench-Macro strings (zoo models)")
    parser.add_argument("--work", default="/work/runs", help="the runs' directories are WORK/nb_<arch>")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--collect", action="store_true", help="only read finished runs, train nothing")
    parser.add_argument("--ship", action="store_true", help="copy the finished weights into zoo/weights/")
    parser.add_argument("--cache", help="decoded-image cache directory (default $MZOO_CACHE/data)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    bench = NASBenchMacro.load()
    recipe = nbmacro_recipe(args.epochs, args.seed, progress=not args.collect)
    rows = []
    for arch in archs:
        job = TrainJob(model=f"nbmacro_{arch}", train=recipe, cache_dir=args.cache)
        out = Path(args.work) / f"nb_{arch}"
        if args.collect:
            found = out / "report.json" if (out / "report.json").is_file() else WEIGHTS / f"nbmacro_{arch}.json"
            if not found.is_file():
                raise SystemExit(f"{out}: no finished run (report.json) and nothing shipped in {WEIGHTS}; train it "
                                 "first or leave out --collect")
            report = json.loads(found.read_text())  # a shipped run's report is the run's own (copied by --ship)
            differ = [f"{k}: {report['settings'].get(k)!r} != {v!r}" for k, v in job.settings().items()
                      if k != "input_size" and report["settings"].get(k) != v]  # input_size: filled in by the run
            if differ:
                raise SystemExit(f"{out} was trained with other settings (there != here): {'; '.join(differ)}")
        else:
            result = run_train(job, out)
            assert result is not None
            report = result.report
        if args.ship and (out / "weights.pth").is_file():
            ship(arch, out, report)
        rows.append(row(arch, out, report, bench, job))
    write(rows, args)


def ship(arch: str, out: Path, report: dict) -> None:
    """Copy a run's weights and report into zoo/weights/ and print the sha256 the zoo cfg pins."""
    WEIGHTS.mkdir(exist_ok=True)
    target = WEIGHTS / f"nbmacro_{arch}.pth"
    shutil.copyfile(out / "weights.pth", target)
    digest = sha256_of(target)
    if digest != report["sha256"]:
        raise SystemExit(f"{target}: sha256 {digest} differs from the run's report {report['sha256']}")
    target.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"shipped {target} sha256 {digest}")


def _wall_seconds(out: Path, report: dict) -> float:
    """Training wall time: the report's (summed over resumed runs), else run record → last checkpoint."""
    if "train_seconds" in report and report["train_seconds"] > 60:
        return float(report["train_seconds"])
    started = out / "run.json" if (out / "run.json").exists() else out / "train.json"  # (runs before run.json)
    return (out / "train.ckpt").stat().st_mtime - started.stat().st_mtime


def row(arch: str, out: Path, report: dict, bench: NASBenchMacro, job: TrainJob) -> dict:
    record = bench.record(arch)
    name = f"nbmacro_{arch}"
    shipped = None
    cfg = zoo.get_pretrained_cfg(name)
    if cfg.file and Path(cfg.file).is_file() and cfg.sha256 == report["sha256"]:
        test = load_job_data(job, 32)["test"]
        shipped = score_top1(zoo.create_model(name, pretrained=True).eval(), test)
    wall = _wall_seconds(out, report)
    images = report["steps"] * report["config"]["batch_size"]
    return {"arch": arch, "params": report["params"], "macs": report["macs"], "mean": record.mean_acc,
            "std": record.std, "runs": record.test_acc, "best": report["best_top1"], "best_epoch": report["best_epoch"],
            "final": report["final_top1"], "shipped": shipped, "minutes": wall / 60, "img_s": images / wall,
            "sha256": report["sha256"]}


# Runs whose report times only their last resumed segment: the earlier segments were stopped before the run wrote
# its timings (nbmacro_00000010 trained epochs 1-26 in one session and 27-50 in the next).
PARTLY_TIMED: dict[str, tuple[int, int]] = {"00000010": (27, 50)}  # arch -> (first, last) epoch timed


def _wall_cell(r: dict) -> str:
    if r["arch"] not in PARTLY_TIMED:
        return f"{r['minutes']:.0f} min ({r['img_s']:.0f})"
    first, last = PARTLY_TIMED[r["arch"]]
    return f"{r['minutes']:.0f} min for epochs {first}-{last} ({r['minutes'] / (last - first + 1):.1f} min/epoch)"


def write(rows: list[dict], args: argparse.Namespace) -> None:
    env = current_environment()
    machine = (f"{env.cpu_model} ({env.cpu_id}), {env.logical_cores} logical cores, {env.os}; torch {env.torch}; "
               "each run one process of 1 or 2 threads, some side by side at nice 19, some resumed across sessions, "
               "on a machine shared with other work: wall times compare only roughly")
    lines = ["| model | params | MACs | benchmark mean ± std (3 runs) | here: best top-1 (epoch) | Δ best − mean "
             "| within ±1.0 | final-epoch top-1 | shipped weights via `pretrained=True` | training wall (img/s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = r["best"] - r["mean"]
        shipped = f"{r['shipped']:.2f} %" if r["shipped"] is not None else "not shipped"
        lines.append(f"| nbmacro_{r['arch']} | {zoo.format_count(r['params'])} | {zoo.format_count(r['macs'])} | "
                     f"{r['mean']:.2f} ± {r['std']:.2f} % | {r['best']:.2f} % ({r['best_epoch']}) | {delta:+.2f} | "
                     f"{'yes' if abs(delta) <= TOLERANCE else '**no**'} | {r['final']:.2f} % | {shipped} | "
                     f"{_wall_cell(r)} |")
    notes = (
        "Recipe (papers.md §4.2, NAS-Bench-Macro's own): SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 256, "
        f"{args.epochs} epochs, cosine to 0 over the run, random crop 32 with 4 px zero padding + horizontal flip, "
        f"CIFAR mean/std; seed {args.seed}; one run per architecture (the benchmark has 3). The images are the "
        "shared CIFAR-10 JPEGs (mean abs pixel error 5.8/255 against the originals), decoded once into a uint8 "
        "tensor cache. Differences from the benchmark's script: the last partial batch of an epoch is dropped "
        "(195 steps of 256, theirs 196) and the cosine steps per iteration, not per epoch. 'Best' is the best "
        f"test top-1 over the {args.epochs} per-epoch evaluations (the benchmark's figure, a maximum over epochs, "
        "so optimistic); the weights shipped in `zoo/weights/` are the final epoch's, not the best one's, and "
        "the 'shipped weights' column re-scores them through `zoo.create_model(name, pretrained=True)` on the "
        "10,000 test images. Training wall time includes the per-epoch evaluation; img/s is training images over "
        "that wall time, on a 2-core machine shared with other jobs.")
    body = "\n".join(lines) + "\n\n" + notes
    print(f"\n{machine}\n\n{body}")
    if not args.no_write:
        write_section("nbmacro-train", "NAS-Bench-Macro reproduced: CIFAR-10 networks trained with the benchmark's "
                      "recipe", body, machine)


if __name__ == "__main__":
    main()
