"""The layout: the import graph, read from the code's own imports, has no circle; `core/` imports nothing above it;
`models.py` imports no module of the project and declares every table."""

from __future__ import annotations

import ast
from pathlib import Path

from serving import REPO

# Folders that are not the service's code: its tests, benchmarks, migrations scripts and the rest.
NOT_CODE = {"tests", "bench", "migrations", "clients", "docs", "deploy", "assets", "instance", "node_modules"}


def project_modules() -> dict[str, Path]:
    """Every module of the service by dotted name (a package by its own name); gunicorn.conf.py as `gunicorn.conf`."""
    modules = {}
    for path in REPO.rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if parts[0] in NOT_CODE or any(part.startswith(".") for part in parts):
            continue
        names = [*parts[:-1], path.name.removesuffix(".py")]
        if names[-1] == "__init__":
            names.pop()
        modules[".".join(names)] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that `path` imports, anywhere in it (at the top, in functions, under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from core import schema` imports the module core.schema; `from core.png import check_png`, core.png.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as the list of its modules, first repeated at the end; None when there is none."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[name] = "done"
        path.pop()
        return None

    for name in sorted(graph):
        if name not in state and (circle := visit(name)):
            return circle
    return None


def test_the_graph_reads_the_real_imports():
    graph = import_graph()
    assert {"main", "models", "core.db", "jobs.state", "badges.routes", "worker", "gunicorn.conf"} <= set(graph)
    assert {"core.db", "jobs.asking", "badges.credentials", "ops.serving"} <= graph["main"]
    assert graph["worker"] == {"main"}


def test_no_import_circle():
    assert find_circle(import_graph()) is None


def test_the_circle_finder_finds_one():
    """The check above can fail: the two circles of the old layout, and a longer one."""
    assert find_circle({"jobs": {"main"}, "main": {"jobs"}}) == ["jobs", "main", "jobs"]
    assert find_circle({"badges": {"pages", "models"}, "pages": {"badges"}, "models": set()}) == \
        ["badges", "pages", "badges"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


def upward_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """The modules of `core` that import a module of the project outside `core` and `models`, with those modules."""
    upward = {name: sorted(target for target in targets if target.partition(".")[0] not in ("core", "models"))
              for name, targets in graph.items() if name.partition(".")[0] == "core"}
    return {name: targets for name, targets in upward.items() if targets}


def test_core_imports_nothing_above_it():
    assert upward_imports(import_graph()) == {}


def test_the_upward_check_sees_an_upward_import():
    """The check above can fail: a ledger in core that imports the spend package, say."""
    graph = {"core.ledger": {"core.settings", "models", "spend.usage"}, "core.db": {"models"}, "main": {"core.db"}}
    assert upward_imports(graph) == {"core.ledger": ["spend.usage"]}


def test_models_imports_no_module_of_the_project():
    assert import_graph()["models"] == set()


def test_every_table_is_declared_in_models():
    declared = {name for name, path in project_modules().items()
                if "__tablename__" in path.read_text(encoding="utf-8")}
    assert declared == {"models"}
