"""The house: every import points down a floor (or stays in its room), and no module imports itself back.

Floors, ground first: ``config`` (the plan schema, settings, layout) < ``data`` < ``models`` < ``serving`` <
``monitoring`` < ``pipeline`` (the roof: CLI, flows, stages, schedules). ``bench/`` stands outside and may use
any of them. Imports inside functions count too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("config", "data", "models", "serving", "monitoring", "pipeline")


def imports_of(path: Path) -> set[str]:
    """The project modules ``path`` imports (absolute names; relative imports resolved)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in FLOORS}


def module_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (only names that are modules)."""
    files = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for floor in FLOORS
        for path in (ROOT / floor).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = set()
        for name in imports_of(path):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def test_every_import_points_down_a_floor() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in module_graph().items()
        for target in targets
        if FLOORS.index(target.split(".")[0]) > FLOORS.index(module.split(".")[0])
    ]

    assert upward == []


def test_no_module_imports_itself_back() -> None:
    graph = module_graph()
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            module, trail = stack.pop()
            for target in graph.get(module, ()):
                if target == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*trail, target]))

    assert cycles == []


def test_the_ground_imports_no_room() -> None:
    graph = module_graph()

    assert {target for module in graph if module.startswith("config") for target in graph[module]} <= {
        module for module in graph if module.startswith("config")
    }
