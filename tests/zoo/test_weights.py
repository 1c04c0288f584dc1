"""Weight loading from local files: hash checks, clear errors, head and input adaptation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import zoo

NAME = "hgcnet_0_5x_cifar"


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path, str]:
    source = zoo.create_model(NAME).eval()
    for p in source.parameters():  # make the weights distinguishable from a fresh init
        p.data.add_(0.01)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    return source, path, hashlib.sha256(path.read_bytes()).hexdigest()


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_file_with_matching_hash_loads_exactly(saved) -> None:
    source, path, sha = saved
    model = zoo.create_model(NAME, pretrained=True, pretrained_cfg_overlay={"file": str(path), "sha256": sha}).eval()
    assert torch.equal(model(_x()), source(_x()))


def test_wrong_hash_is_refused(saved) -> None:
    _, path, _ = saved
    with pytest.raises(zoo.WeightsHashError, match="sha256"):
        zoo.create_model(NAME, pretrained=True, pretrained_cfg_overlay={"file": str(path), "sha256": "0" * 64})


def test_no_published_weights_is_a_clear_error() -> None:
    with pytest.raises(zoo.WeightsNotFoundError, match="no pretrained weights are published"):
        zoo.create_model(NAME, pretrained=True)


def test_missing_file_names_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MZOO_CACHE", str(tmp_path / "cache"))
    overlay = {"url": "https://example.invalid/weights/hgc.pth"}
    with pytest.raises(zoo.WeightsNotFoundError, match=r"cache/hgc\.pth.*nothing is downloaded"):
        zoo.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay)


def test_cache_dir_is_searched_by_url_basename(saved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, path, sha = saved
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "hgc.pth").write_bytes(path.read_bytes())
    monkeypatch.setenv("MZOO_CACHE", str(cache))
    overlay = {"url": "https://example.invalid/weights/hgc.pth", "sha256": sha}
    model = zoo.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay).eval()
    assert torch.equal(model(_x()), source(_x()))


def test_corrupt_file_is_a_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(zoo.WeightsLoadError, match="cannot read weights file"):
        zoo.create_model(NAME, checkpoint_path=bad)


def test_mismatched_architecture_is_a_load_error(saved) -> None:
    _, path, _ = saved
    with pytest.raises(zoo.WeightsLoadError, match="does not fit 'hgcnet_1x_cifar'"):
        zoo.create_model("hgcnet_1x_cifar", checkpoint_path=path)


def test_new_head_drops_classifier_and_keeps_the_rest(saved) -> None:
    source, path, _ = saved
    model = zoo.create_model(NAME, checkpoint_path=path, num_classes=3).eval()
    assert model(_x()).shape == (2, 3)
    with torch.inference_mode():
        assert torch.equal(model.forward_features(_x()), source.forward_features(_x()))


def test_one_channel_input_sums_rgb_filters(saved) -> None:
    source, path, _ = saved
    model = zoo.create_model(NAME, checkpoint_path=path, in_chans=1)
    torch.testing.assert_close(model.conv_stem.weight, source.conv_stem.weight.sum(1, keepdim=True))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_wrapped_checkpoint_dicts_load(saved, tmp_path: Path) -> None:
    source, _, _ = saved
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, wrapped)
    model = zoo.create_model(NAME, checkpoint_path=wrapped).eval()
    assert torch.equal(model(_x()), source(_x()))
