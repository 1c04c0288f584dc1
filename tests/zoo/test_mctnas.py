"""MCT-NAS-A/B/C reproduce the published counts (papers.md §4.5) and the space parses strictly."""

from __future__ import annotations

import pytest

import zoo
from zoo.mctnas import MCTNAS_A, mctnas_spec

# (MACs rounded to 0.1M, params rounded to 1K) as published/computed in papers.md §4.5.
PUBLISHED = {"mctnas_a": (441.6e6, 8.449e6), "mctnas_b": (327.2e6, 6.408e6), "mctnas_c": (280.3e6, 4.953e6)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_macs_and_params(name: str) -> None:
    macs, params = PUBLISHED[name]
    info = zoo.model_info(name)
    assert round(info["macs"] / 1e5) == round(macs / 1e5)
    assert round(info["params"] / 1e3) == round(params / 1e3)


def test_searched_blocks_have_se_and_hswish_and_identities_are_free() -> None:
    spec = mctnas_spec(MCTNAS_A)
    searched = [b for b in spec.blocks][1:]
    assert all(b.se is not None and b.act == "hswish" for b in searched)
    model = zoo.create_model("mctnas_b")
    identities = [m for m in model.modules() if type(m).__name__ == "SkipOp"]
    assert len(identities) == 3 and all(sum(p.numel() for p in m.parameters()) == 0 for m in identities)


@pytest.mark.parametrize("tokens, message", [("e6k3 " * 20, "21 layer tokens"), ("e4k3 " * 21, "e4k3"),
                                             ("e6k9 " * 21, "e6k9")])
def test_bad_tokens_are_named(tokens: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mctnas_spec(tokens)
