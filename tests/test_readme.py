"""The README is the front door: its model table and set-up commands must match the project."""

from __future__ import annotations

import re
from pathlib import Path

import zoo
from zoo.cli import model_table

ROOT = Path(__file__).resolve().parents[1]


def test_model_table_is_generated_from_the_registry() -> None:
    """Regenerate with `mzoo list --markdown` between the model-table markers."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- model-table -->\n")[1].split("<!-- /model-table -->")[0]
    assert table.strip() == model_table(zoo.list_models())


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make demo\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
