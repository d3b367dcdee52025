"""The layer contract and the import graph of harness/ (docs/design.md): the import-linter
contract in pyproject.toml holds, and no module imports itself back through others."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent


def lint_imports() -> subprocess.CompletedProcess[str]:
    binary = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert binary is not None, "lint-imports is not installed (pip install -e .[dev])"
    return subprocess.run(
        [binary, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def test_layer_contract_is_kept() -> None:
    done = lint_imports()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_layer_contract_catches_an_upward_import(tmp_path: Path) -> None:
    """The contract is not vacuous: a core module importing the CLI breaks it."""
    probe = REPO / "harness" / "core" / "_layer_probe.py"
    probe.write_text("from harness.cli import app  # noqa: F401\n")
    try:
        done = lint_imports()
    finally:
        probe.unlink()
    assert done.returncode != 0
    assert "harness.core._layer_probe -> harness.cli" in done.stdout


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    """Run-time imports only (type-only ones are not cycles); a package's __init__ counts as
    the module it is."""
    graph = grimp.build_graph("harness", exclude_type_checking_imports=True, cache_dir=None)
    modules = graph.modules
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    assert strongly_connected(edges) == []


@pytest.mark.parametrize(
    ("graph", "cycles"),
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_cycle_finder(graph: dict[str, set[str]], cycles: list[list[str]]) -> None:
    assert strongly_connected(graph) == cycles
