"""Run under torchrun by tests/search/test_diffsearch.py: the differentiable searches with two CPU processes.

Each rank runs an EoiNAS search (indicator, pruning, latency term) and a Meta-Kernel search through
:mod:`search.diffsearch` and saves its own supernet state (α, live ops, indicator); the test checks that the
ranks agree and that rank 0 alone wrote the result files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from search.data import search_splits
from search.diffsearch import CostTarget, EoiNASStep, EvalNetConfig, run_eoinas, run_metakernel, search_recipe, train_recipe
from search.distributed import shutdown
from search.eoinas import DartsSupernet, EoiNASConfig


def main(argv: list[str]) -> int:
    data_dir, out = Path(argv[1]), Path(argv[2])
    data = search_splits(str(data_dir), 16, held_fraction=0.5)
    captured: dict[str, torch.Tensor] = {}
    step = EoiNASStep.__call__

    def capture(self: EoiNASStep, model: DartsSupernet, images: torch.Tensor, targets: torch.Tensor,
                ctx: object) -> object:
        metrics = step(self, model, images, targets, ctx)
        # After the last step, before the trainer's end-of-run record broadcasts rank 0's buffers.
        if ctx.step == self.total_steps - 1:  # type: ignore[attr-defined]
            captured.update({k: v.detach().clone() for k, v in model.state_dict().items()
                             if k.startswith(("alphas", "live", "importance", "edge_importance"))})
        return metrics

    EoiNASStep.__call__ = capture  # type: ignore[method-assign]
    result = run_eoinas(out / "eoinas", data, search=search_recipe(2, batch_size=2, progress=False),
                        eoinas=EoiNASConfig(final_ops=4), supernet_chs=4, supernet_layers=3,
                        cost=CostTarget("latency", 3.0, device="amd-epyc-f23m1-ort-t1"),
                        eval_net=EvalNetConfig(init_chs=4, layers=3), train=train_recipe(1, batch_size=2, progress=False))
    rank = dist.get_rank()
    run_metakernel(out / "metakernel", data, search=search_recipe(1, batch_size=2, progress=False), finetune=None)
    torch.save({"supernet": captured, "returned": result is not None}, out / f"eoinas_rank{rank}.pt")
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
