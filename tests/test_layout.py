"""The library's layout: districts that follow the pipeline, each importing only from below.

A newcomer finds a step by its folder (data < model < evaluation < serving); these tests keep
the folders honest as code moves: an import upward, a cycle, Prefect in the library, or a
module that loads the Trainer without training fails here with the import that did it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

LIBRARY = ROOT / "linklm"
DISTRICTS = ("data", "model", "evaluation", "serving")  # each imports only from those before it
TOP = (
    "config",
    "errors",
    "atomic",
    "schema",
    "store",
)  # shared by every district, import none of them


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in a file, lazy ones too."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from linklm.data import schema` imports the module linklm.schema
            for alias in node.names:
                found.append((f"{node.module}.{alias.name}", node.lineno, id(node) in top))
    return found


MODULES = {_module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def _linklm_module(name: str) -> str | None:
    """The library module an import names (a module, or the module holding an imported name)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in DISTRICTS:
        return 1 + DISTRICTS.index(parts[1])
    return 0  # linklm itself and the shared modules at the top


def test_every_module_lives_in_a_district_or_is_shared():
    loose = [
        name
        for name in MODULES
        if name.count(".") == 1 and name.split(".")[1] not in (*TOP, *DISTRICTS)
    ]
    assert not loose, f"modules outside the districts: {loose}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_from_its_district_and_below(module):
    upward = []
    for name, line, _ in _imports(MODULES[module]):
        assert not name.startswith("prefect"), f"{module}:{line} imports Prefect"
        target = _linklm_module(name)
        if target is None:
            continue
        if _rank(target) > _rank(module) or (
            _rank(module) == 0 and module != "linklm" and _rank(target) > 0
        ):
            upward.append(f"line {line}: {target}")
    assert not upward, f"{module} imports from above its district: {upward}"


def test_no_import_cycle_and_only_training_code_loads_training():
    graph = {
        module: {
            target
            for name, _, _ in _imports(path)
            if (target := _linklm_module(name)) and target != module
        }
        for module, path in MODULES.items()
    }
    importers = sorted(m for m, deps in graph.items() if "linklm.model.training" in deps)
    assert importers == [], f"library modules that import training: {importers}"

    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, module, dep]))
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
