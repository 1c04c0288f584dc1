"""The README is the front door: its model table and set-up commands must match the project."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import zoo
from zoo.cli import model_table

ROOT = Path(__file__).resolve().parents[1]


def test_model_table_is_generated_from_the_registry() -> None:
    """Regenerate with `mzoo list --markdown` between the model-table markers."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- model-table -->\n")[1].split("<!-- /model-table -->")[0]
    # Built-in models only: a test may have registered a search result in this process.
    assert table.strip() == model_table([n for n in zoo.list_models() if zoo.model_info(n)["module"] != "zoo.searched"])


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make demo\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _python_example() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Use it from Python\n\n```python\n")[1].split("```")[0]


def test_the_python_examples_files_exist_before_it_runs() -> None:
    # Every path the example reads is real, so a user copying it gets no failure minutes into a run.
    for path in re.findall(r'"(\.\./[^"]+)"', _python_example()):
        assert (ROOT / path).exists(), path


@pytest.mark.slow
def test_the_python_example_runs_as_written(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    out = ROOT / "out"
    existed = out.exists()
    try:
        done = subprocess.run([sys.executable, "-c", _python_example()], cwd=ROOT, capture_output=True, text=True,
                              timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)


def test_every_model_with_weights_has_its_measured_accuracy_and_no_other() -> None:
    """The model table's top-1 column comes from zoo/data/accuracy.json: one measured figure per model that
    `pretrained=True` loads, none for a model without weights."""
    from zoo.cli import measured_accuracy

    accuracy = measured_accuracy()
    # Built-in models only: a test may have registered a search result (with weights) in this process.
    built_in = {n for n in zoo.list_models(pretrained=True) if zoo.model_info(n)["module"] != "zoo.searched"}
    assert set(accuracy) == built_in
    assert all(0 < row["top1"] <= row["top5"] <= 100 and row["images"] >= 1000 for row in accuracy.values())
