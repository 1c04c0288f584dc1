"""search.oneshot: the block-wise one-shot supernet; every path is exactly its zoo model, weights included."""

from __future__ import annotations

import copy
import random

import pytest
import torch

import zoo
from search.oneshot import ChoiceLayer, OneShotSupernet, batch_statistics
from zoo.spaces import MCTNASSpace, NBMacroSpace
from zoo.mctnas import MCTNAS_A, mctnas_spec
from zoo.nbmacro import nbmacro_spec


@pytest.fixture(scope="module")
def nbmacro() -> OneShotSupernet:
    torch.manual_seed(0)
    return OneShotSupernet(NBMacroSpace())


def _x(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_layers_are_the_spaces_positions_with_one_zoo_block_per_op(nbmacro: OneShotSupernet) -> None:
    layers = [m for m in nbmacro.net.modules() if isinstance(m, ChoiceLayer)]
    assert len(layers) == 8 == len(nbmacro.positions)
    # op 0 at a stride-1, same-width position is a true identity: no weights; at a stage start a 1x1 conv + BN.
    kinds = [[type(c).__name__ for c in layer.candidates] for layer in layers]
    assert all(k == ["SkipOp", "InvertedResidual", "InvertedResidual"] for k in kinds)
    assert sum(p.numel() for p in layers[1].candidates[0].parameters()) == 0
    assert sum(p.numel() for p in layers[0].candidates[0].parameters()) > 0


@pytest.mark.parametrize("string", ["22212220", "00000000", "22222222", "10201021"])
def test_extracted_path_is_the_zoo_model_and_computes_the_same(nbmacro: OneShotSupernet, string: str) -> None:
    arch = tuple(int(c) for c in string)
    sub = nbmacro.subnet(arch)
    assert sub.arch_spec == nbmacro_spec(string)
    assert list(sub.state_dict()) == list(zoo.build_model(nbmacro_spec(string)).state_dict())
    x = _x()
    for train in (False, True):
        ref = copy.deepcopy(nbmacro).train(train)
        model = copy.deepcopy(sub).train(train)
        torch.testing.assert_close(model(x), ref(x, arch), rtol=0, atol=0)


def test_subnet_holds_copies_of_the_paths_weights(nbmacro: OneShotSupernet) -> None:
    sup = copy.deepcopy(nbmacro)
    arch = (2, 1, 2, 0, 1, 2, 1, 1)
    layer = sup.net.blocks[sup.positions[0][0]][sup.positions[0][1]]
    with torch.no_grad():
        layer.candidates[2].conv_pw.weight.mul_(3.0)
        layer.candidates[1].conv_pw.weight.zero_()  # another op of the same layer: must not matter
    sub = sup.subnet(arch)
    assert torch.equal(sub.blocks[0][0].conv_pw.weight, layer.candidates[2].conv_pw.weight)
    sub.blocks[0][0].conv_pw.weight.data.zero_()  # a copy: the supernet keeps its weights
    assert layer.candidates[2].conv_pw.weight.abs().sum() > 0


def test_training_touches_only_the_path(nbmacro: OneShotSupernet) -> None:
    sup = copy.deepcopy(nbmacro).train()
    path = (1, 2, 0, 1, 1, 2, 0, 2)
    before = {k: v.clone() for k, v in sup.state_dict().items() if "running_mean" in k}
    sup.forward_path(_x(), path).sum().backward()
    for i, (s, b) in enumerate(sup.positions):
        for op, cand in enumerate(sup.net.blocks[s][b].candidates):
            grads = [p.grad for p in cand.parameters()]
            assert all((g is not None) == (op == path[i]) for g in grads), (i, op)
    changed = [k for k, v in sup.state_dict().items() if "running_mean" in k and not torch.equal(v, before[k])]
    assert changed
    for key in changed:
        parts = key.split(".")  # net.blocks.<s>.<b>.candidates.<op>....
        if parts[4:5] == ["candidates"]:
            layer = sup.positions.index((int(parts[2]), int(parts[3])))
            assert int(parts[5]) == path[layer], key


def test_batch_statistics_keeps_running_stats_and_uses_the_batch(nbmacro: OneShotSupernet) -> None:
    sup = copy.deepcopy(nbmacro).eval()
    state = {k: v.clone() for k, v in sup.state_dict().items()}
    arch = (2, 2, 2, 1, 2, 2, 2, 0)
    with torch.no_grad(), batch_statistics(sup):
        out = sup(_x(4), arch)
    assert not sup.training
    assert all(torch.equal(v, state[k]) for k, v in sup.state_dict().items())
    with torch.no_grad():
        reference = copy.deepcopy(nbmacro).train()(_x(4), arch)
        assert torch.allclose(out, reference, atol=1e-5)
        assert not torch.allclose(out, sup(_x(4), arch), atol=1e-3)  # eval mode uses the running statistics


def test_bad_archs_and_paths_name_the_space(nbmacro: OneShotSupernet) -> None:
    with pytest.raises(ValueError, match="nbmacro"):
        nbmacro(_x(), (3, 0, 0, 0, 0, 0, 0, 0))
    with pytest.raises(ValueError, match="nbmacro: a path is 8 op indices"):
        nbmacro.forward_path(_x(), (0, 1))
    assert nbmacro.arch_of(nbmacro.path_of((2, 1, 0, 2, 1, 0, 2, 1))) == (2, 1, 0, 2, 1, 0, 2, 1)


def test_mctnas_space_supernet_on_cifar_extracts_mctnas_a() -> None:
    torch.manual_seed(0)
    sup = OneShotSupernet(MCTNASSpace(), num_classes=10, input_size=(3, 32, 32))
    assert len(sup.positions) == 21 and sup.input_size == (3, 32, 32)
    assert all(len(sup.net.blocks[s][b].candidates) == 7 for s, b in sup.positions)
    arch = tuple(MCTNAS_A.split())
    sub = sup.subnet(arch).eval()
    assert sub.arch_spec == mctnas_spec(MCTNAS_A, num_classes=10)
    assert zoo.count(sub.arch_spec, 224).macs == zoo.count(zoo.get_arch_spec("mctnas_a"), 224).macs - 1280 * 990
    x = _x(1)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), sup.eval()(x, arch), rtol=0, atol=0)
    other = MCTNASSpace().sample(random.Random(3))
    with torch.no_grad():
        torch.testing.assert_close(sup.subnet(other).eval()(x), sup(x, other), rtol=0, atol=0)
