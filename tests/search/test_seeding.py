"""One seed, one result: a search or training run seeds every generator before it creates anything random, so two
runs with the same seed write the same files whatever the process drew before them (issue #20: the width search
built its supernet before the trainer seeded, and two runs with one ``--seed`` found different networks)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from search.dagger import RunConfig, run_dagger
from search.engine import TrainConfig
from search.width import EvolutionConfig
from search.width.pipeline import WidthSearchConfig, run_width_search
from tests.search.ddp_worker import make_image_folder

TIMING_FIELDS = {"supernet_seconds", "supernet_cpu_seconds", "search_seconds", "search_cpu_seconds",
                 "finetune_seconds", "finetune_cpu_seconds"}


def _disturb(seed: int) -> None:
    """Leave the global generators as another process (or earlier work in this one) would."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    make_image_folder(root, classes=4, per_class=10, size=32, split="train")
    make_image_folder(root, classes=4, per_class=2, size=32, split="val", seed=1)
    return root


def test_two_width_searches_with_one_seed_write_identical_files(images: Path, tmp_path: Path) -> None:
    config = WidthSearchConfig(
        model="mobilenetv2", macs_share=0.5, data=str(images), input_size=32, width_multiplier=0.25,
        supernet=TrainConfig(epochs=1, batch_size=8, seed=3, progress=False),
        finetune=TrainConfig(epochs=1, batch_size=8, seed=3, progress=False),
        evolution=EvolutionConfig(population=4, generations=1, seed=3, topk=1, mutations=2, crossovers=2),
        recalibration_batches=1)
    runs = []
    for disturbance in (1, 2):
        _disturb(disturbance)
        out = tmp_path / f"run{disturbance}"
        run_width_search(config, out, progress=False)
        report = json.loads((out / "report.json").read_text())
        runs.append(({k: v for k, v in report.items() if k not in TIMING_FIELDS}, (out / "spec.json").read_bytes(),
                     torch.load(out / "weights.pth"), (out / "search_state.json").read_bytes()))
    (report_a, spec_a, weights_a, state_a), (report_b, spec_b, weights_b, state_b) = runs
    assert report_a == report_b and spec_a == spec_b and state_a == state_b
    assert _same_weights(weights_a, weights_b)


def test_two_prunings_with_one_seed_give_the_same_network() -> None:
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(8, 3, 32, 32, generator=gen), torch.arange(8) % 4)
    recipe = TrainConfig(epochs=1, batch_size=8, seed=5, progress=False)
    config = RunConfig(pretrain=recipe, dagger=recipe, finetune=recipe, bn_batches=1)
    models = []
    for disturbance in (1, 2):
        _disturb(disturbance)
        result = run_dagger("mobilenetv2_cifar", "50%", data, data, config, num_classes=4, device="cpu")
        models.append(result.model.state_dict())
    assert _same_weights(*models)
