"""The packages are layers and imports run one way (STYLE.md §13): the import-linter contract in setup.cfg holds,
and no import loop is left but the one documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "zoo", "export", "latency_tables", "search", "mzoo")
# zoo.registry <-> zoo.mobile_zoo: the timm bridge. Registering a zoo model also registers it with timm
# (mobile_zoo), and timm's entry calls back into the zoo's registry; zoo/registry.py says why at the late import.
ALLOWED_LOOPS = [{"zoo.mobile_zoo", "zoo.registry"}]


def lint_imports(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(script), "--config", str(config), "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_the_layers_contract_holds() -> None:
    done = lint_imports(ROOT / "setup.cfg", ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_the_contract_names_an_upward_import(tmp_path: Path) -> None:
    """The same kind of contract on two small packages, the lower importing the higher: lint-imports refuses it
    and names the import (so the check above can fail)."""
    for name, body in (("low", "import high.mod\n"), ("high", "")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
        (tmp_path / name / "mod.py").write_text(body)
    (tmp_path / "setup.cfg").write_text("[importlinter]\nroot_packages =\n    low\n    high\n\n"
                                        "[importlinter:contract:layers]\nname = layers\ntype = layers\n"
                                        "layers =\n    high\n    low\n")
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    assert "low.mod -> high.mod" in done.stdout


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """The import loops of ``graph``: its strongly connected components of more than one module (Tarjan)."""
    modules = sorted(graph.modules)
    edges = {m: sorted(n for n in graph.find_modules_directly_imported_by(m) if n in graph.modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in modules:
        if module not in index:
            visit(module)
    return loops


def test_no_import_loops_but_the_documented_one() -> None:
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert sorted(map(sorted, strongly_connected(graph))) == sorted(map(sorted, ALLOWED_LOOPS))


@pytest.mark.parametrize("edges, loops", [({"a": ["b"], "b": ["a"], "c": ["a"]}, [{"a", "b"}]),
                                          ({"a": ["b"], "b": ["c"], "c": []}, [])])
def test_the_loop_finder_finds_loops(edges: dict[str, list[str]], loops: list[set[str]]) -> None:
    class Graph:
        modules = set(edges)

        @staticmethod
        def find_modules_directly_imported_by(module: str) -> set[str]:
            return set(edges[module])

    assert strongly_connected(Graph()) == loops  # type: ignore[arg-type]
