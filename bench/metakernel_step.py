"""Memory and time of one Meta-Kernel search step: meta kernels + channel masks vs the DARTS-style sum of candidates.

The paper's central claim (papers.md §7.2): merging the candidate kernels {3, 5, 7} into one meta kernel and the
expansion ratios {3, 6} into one channel mask makes a differentiable search step cost about one network instead
of one per candidate. Both supernets are :class:`search.metakernel.MetaKernelSupernet` over the same space
(:class:`~zoo.spaces.MetaKernelSpace`, 15 layers × 6 candidates) and the same architecture parameters:
``mode="meta"`` (one widest block per layer) and ``mode="sum"`` (every (e, k) its own zoo block, outputs summed
with weights p_e·p_k). One step is a forward and a backward of the cross-entropy of a random CIFAR-sized batch
(10 classes) in training mode, reaching weights and architecture parameters. Memory: bytes of the distinct
storages autograd saves for the backward (``torch.autograd.graph.saved_tensors_hooks``; parameters' own storages
are not counted, so this is the activation memory of the step; deterministic), and the parameter count. Time:
median wall time of a step over ``--repeats``, the two modes interleaved after one warm-up step each. Writes the
BENCHMARKS.md section ``metakernel-step``.

    OMP_NUM_THREADS=1 taskset -c 1 python bench/metakernel_step.py [--quick] [--sizes 32,64] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench._report import write_section  # noqa: E402
from common.environment import current_environment  # noqa: E402
import zoo  # noqa: E402
from search.metakernel import MODES, MetaKernelSupernet, layer_plans  # noqa: E402
from zoo.spaces import MetaKernelSpace  # noqa: E402

CLASSES = 10


def step(net: MetaKernelSupernet, x: torch.Tensor, y: torch.Tensor) -> None:
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()


def saved_bytes(net: MetaKernelSupernet, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter storages one step saves for its backward."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()  # every saved tensor is alive until backward: pointers are unique
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(net, x, y)
    return sum(storages.values())


def forward_macs(size: int) -> dict[str, float]:
    """MACs per image of each supernet's forward, from the walker: the widest candidate (e6k7) in every layer for
    ``meta`` (the meta kernel and mask are negligible), every candidate for ``sum``."""
    space = MetaKernelSpace()
    layers = {plan.name for plan in layer_plans(space)}
    fixed, per_token = 0.0, {}
    for token in space.choices()[0]:
        spec = space.to_spec((token,) * len(layers))[0].replace(num_classes=CLASSES)
        ops = list(zoo.iter_ops(spec, (3, size, size)))
        fixed = float(sum(op.macs for op in ops if op.name not in layers))
        per_token[token] = float(sum(op.macs for op in ops if op.name in layers))
    return {"meta": fixed + per_token["e6k7"], "sum": fixed + sum(per_token.values())}


def measure(size: int, batch: int, repeats: int, seed: int) -> dict[str, dict[str, float]]:
    nets = {}
    for mode in MODES:
        torch.manual_seed(seed)
        nets[mode] = MetaKernelSupernet(MetaKernelSpace(), num_classes=CLASSES, mode=mode).train()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, CLASSES, (batch,), generator=g)
    out: dict[str, dict[str, float]] = {}
    for mode, net in nets.items():
        out[mode] = {"params": float(sum(p.numel() for p in net.weight_parameters())),
                     "saved_bytes": float(saved_bytes(net, x, y))}  # doubles as the warm-up step
    times: dict[str, list[float]] = {mode: [] for mode in nets}
    for _ in range(repeats):
        for mode, net in nets.items():
            start = time.perf_counter()
            step(net, x, y)
            times[mode].append(time.perf_counter() - start)
    macs = forward_macs(size)
    for mode in nets:
        out[mode]["macs"] = macs[mode]
        out[mode].update(median_s=statistics.median(times[mode]), min_s=min(times[mode]), max_s=max(times[mode]))
    return out


def table(results: dict[int, dict[str, dict[str, float]]], batch: int) -> str:
    rows = ["| input | supernet | weights | forward MACs / image | saved for backward "
            "| step time, median (min–max) |",
            "|---|---|---|---|---|---|"]
    names = {"meta": "meta kernels + channel mask", "sum": "sum over candidates (DARTS-style)"}
    for size, r in results.items():
        for mode in MODES:
            m = r[mode]
            rows.append(f"| {batch}×3×{size}×{size} | {names[mode]} | {m['params'] / 1e6:.2f}M | "
                        f"{m['macs'] / 1e6:.1f}M | {m['saved_bytes'] / 2 ** 20:.1f} MiB | {1e3 * m['median_s']:.0f} ms "
                        f"({1e3 * m['min_s']:.0f}–{1e3 * m['max_s']:.0f}) |")
        meta, summed = r["meta"], r["sum"]
        rows.append(f"| {batch}×3×{size}×{size} | **ratio sum / meta** | {summed['params'] / meta['params']:.2f}× "
                    f"| {summed['macs'] / meta['macs']:.2f}× "
                    f"| **{summed['saved_bytes'] / meta['saved_bytes']:.2f}×** | "
                    f"**{summed['median_s'] / meta['median_s']:.2f}×** |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,64", help="comma-separated input sizes (square)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per mode and size")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="32×32 only, 3 repeats (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating BENCHMARKS.md")
    args = parser.parse_args()
    sizes = [32] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    repeats = 3 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = {size: measure(size, args.batch, repeats, args.seed) for size in sizes}
    minutes = (time.perf_counter() - start) / 60
    env = current_environment()
    machine = (f"{env.cpu_model}, {env.logical_cores} logical cores, {env.os}; torch {env.torch}; "
               f"{args.threads} thread(s)")
    notes = (f"Space: `MetaKernelSpace()` (15 searchable layers, kernels {{3, 5, 7}} × expansions {{3, 6}}, SE and "
             f"swish; no identity candidate), {CLASSES} classes, random inputs and labels (seed {args.seed}), "
             f"training mode (batch-statistics BN), uniform architecture probabilities at T = 5, no Gumbel noise. "
             f"One step: forward, cross-entropy, backward to the weights and the architecture logits (no optimiser "
             f"update). 'Saved for backward': distinct storages packed by `torch.autograd.graph.saved_tensors_hooks` "
             f"during one step, parameters excluded (the meta kernel itself, a computed tensor, is counted); "
             f"'weights': the supernet's weight parameters. Time: {repeats} timed steps per mode after one "
             f"warm-up, modes interleaved; whole run {minutes:.1f} min. 'Forward MACs': the walker's "
             f"(`zoo.iter_ops`) MACs "
             f"per image of the widest candidate (e6k7) in every layer for the meta supernet, of all six candidates "
             f"for the sum supernet, shared stem/head once. The meta supernet computes and stores one widest block "
             f"per layer, the sum supernet all six candidate blocks, so its cost grows with the number of "
             f"candidates. CPU only; the paper's GPU-hour and accuracy claims are not tested.")
    text = table(results, args.batch)
    print(f"\n{machine}\n\n{text}\n\n{notes}")
    if not args.no_write:
        write_section("metakernel-step", "Meta-Kernel search step: meta kernels vs the sum over candidates "
                      "(memory, time)", f"{text}\n\n{notes}\n", machine)


if __name__ == "__main__":
    main()
