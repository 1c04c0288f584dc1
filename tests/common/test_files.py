"""``common.files.save_figure``: a PNG published atomically, the figure closed whatever happens."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from common.files import save_figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def test_save_figure_publishes_a_png_and_closes_the_figure(tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "plot.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in path.parent.iterdir()] == ["plot.png"]


def test_a_failed_save_leaves_nothing_and_closes_the_figure(tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, r"$\badcommand$")  # mathtext fails at draw time, inside savefig
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path / "plot.png")
    assert not plt.fignum_exists(fig.number)
    assert list(tmp_path.iterdir()) == []
