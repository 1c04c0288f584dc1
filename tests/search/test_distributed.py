"""Two CPU processes under torchrun train in lock-step and match one process with the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from search.distributed import DistInfo, all_reduce_mean, average_gradients, env_info, sync_buffers
from tests.search import ddp_worker


def _launch_two_ranks(root: Path) -> tuple[Path, Path]:
    data = ddp_worker.make_image_folder(root / "data")
    out = root / "out"
    out.mkdir()
    ddp_worker.run_torchrun(Path(ddp_worker.__file__), str(data), str(out), timeout=240)
    return data, out


def _load(out: Path, mode: str, rank: int) -> dict:
    return torch.load(out / f"{mode}_rank{rank}.pt", weights_only=True)


def _initial() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return ddp_worker.TinyNet().state_dict()


def _check_equals_one_process_with_the_global_batch(data: Path, out: Path, mode: str) -> None:
    ranks = [_load(out, mode, r) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    for name, value in ranks[0]["params"].items():  # averaged gradients: bit-identical on both ranks
        assert torch.equal(value, ranks[1]["params"][name]), f"{mode}: {name} differs between ranks"
    initial = _initial()
    single, log = ddp_worker.train(data, batch_size=8, mode=mode)  # 2 × the per-process batch, same data order
    assert not torch.equal(single.state_dict()["features.0.weight"], initial["features.0.weight"])
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["params"][name], value, rtol=1e-5, atol=1e-6, msg=f"{mode}: {name}")
    if mode == "two_pass":
        # Both ranks drew the same heads at every step, and agree with one process; the global mean loss is
        # the single process's loss over the whole batch.
        assert ranks[0]["log"] == ranks[1]["log"]
        assert [entry[:3] for entry in ranks[0]["log"]] == [entry[:3] for entry in log]
        for (_, _, _, dist_loss), (_, _, _, one_loss) in zip(ranks[0]["log"], log):
            assert dist_loss == pytest.approx(one_loss, rel=1e-5)
        assert len({entry[1:3] for entry in log}) > 1  # the heads really changed between steps


def _check_a_parameter_only_one_rank_touched_stays_in_sync(out: Path) -> None:
    ranks = [_load(out, "uneven", r) for r in (0, 1)]
    initial = _initial()
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), f"uneven: {name} differs between ranks"
    assert not torch.equal(ranks[0]["params"]["heads.2.weight"], initial["heads.2.weight"])  # rank 0's gradient, halved
    assert torch.equal(ranks[0]["params"]["heads.1.weight"], initial["heads.1.weight"])  # nobody's: untouched


def _check_resume_is_exact(out: Path) -> None:
    straight = _load(out, "default", 0)["params"]
    for rank in (0, 1):
        resumed = _load(out, "resume", rank)["params"]
        for name, value in straight.items():
            assert torch.equal(resumed[name], value), f"resume, rank {rank}: {name}"
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == 2 and len(checkpoint["rng"]) == 2


def test_two_cpu_processes_under_torchrun(tmp_path: Path) -> None:
    """One launch (process start-up is most of the time), every check: (a) the ranks end bit-identical,
    (b) equal to one process with the global batch and the same data order, (c) also with two backward
    passes per step and heads from ctx.rng, and with a parameter only one rank reached; a crash after a
    checkpoint resumes to the straight run's weights exactly."""
    data, out = _launch_two_ranks(tmp_path)
    for mode in ("default", "two_pass"):
        _check_equals_one_process_with_the_global_batch(data, out, mode)
    _check_a_parameter_only_one_rank_touched_stays_in_sync(out)
    _check_resume_is_exact(out)


def test_env_info_reads_torchrun_variables() -> None:
    assert env_info({}) == DistInfo(0, 1, 0)
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}
    assert env_info(env) == DistInfo(1, 2, 1)
    with pytest.raises(ValueError, match="RANK='x'"):
        env_info({**env, "RANK": "x"})
    with pytest.raises(ValueError, match="RANK=2"):
        env_info({**env, "RANK": "2"})
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        env_info({k: v for k, v in env.items() if k != "MASTER_ADDR"})


def test_collectives_are_no_ops_in_one_process() -> None:
    assert not (dist.is_available() and dist.is_initialized())
    layer = torch.nn.BatchNorm1d(2)
    layer(torch.randn(4, 2)).sum().backward()
    grad = layer.weight.grad.clone()
    assert average_gradients(layer.parameters(), [1.5, 2.0]) == [1.5, 2.0]
    assert torch.equal(layer.weight.grad, grad)
    assert all_reduce_mean([3.0], torch.device("cpu")) == [3.0]
    before = layer.running_mean.clone()
    sync_buffers(layer)
    assert torch.equal(layer.running_mean, before)
