"""The README is the front door: its model table and set-up commands must match the project."""

from __future__ import annotations

import re
from pathlib import Path

import zoo

ROOT = Path(__file__).resolve().parents[1]


def test_model_table_matches_registry() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- model-table -->")[1].split("<!-- /model-table -->")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.strip().splitlines()[2:]]
    assert sorted(r[0] for r in rows) == sorted(zoo.list_models())
    for name, params, macs, size, _source in rows:
        info = zoo.model_info(name)
        assert params == zoo.format_count(info["params"]), name
        assert macs == zoo.format_count(info["macs"]), name
        assert size == "×".join(str(d) for d in info["input_size"][1:]), name


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make demo\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
