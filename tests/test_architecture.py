"""The package's shape, read from the source with ``ast`` (nothing is imported or run).

Why: the layering (Dagster above in ``defs/``, stage packages below, config flowing down, the test kit
outside the product) is what lets a newcomer change one stage without reading the others, and it erodes
one import at a time unless something checks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mmm_pipeline"
TESTKIT = "mmm_testkit"

#: Modules that may import Dagster: the definitions, the wiring in ``defs/`` and the run entry point.
DAGSTER_ALLOWED = ("mmm_pipeline.defs", "mmm_pipeline.definitions", "mmm_pipeline.runner")
#: Modules that see the whole project config; every stage function takes its own section.
PROJECT_CONFIG_ALLOWED = (
    "mmm_pipeline.defs", "mmm_pipeline.definitions", "mmm_pipeline.runner", "mmm_pipeline.cli",
    "mmm_pipeline.config",
)  # fmt: skip
#: Product modules that may import the test kit, each inside a function: the CLI's ``synthetic``
#: command writes a generated world into a project's landing folder.
TESTKIT_ALLOWED = {"mmm_pipeline.cli"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules ``name`` imports anywhere in its file (module level, in functions, under TYPE_CHECKING).

    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``; relative imports
    are resolved against the file's package.
    """
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return out


def imported_names(path: Path) -> set[str]:
    """Every name brought in by a ``from ... import name`` in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> every module it imports (of any package), for each module of ``package``."""
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    known = set(files)
    return {name: imports_of(path, name, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def within(name: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_stage_packages_import_downhill_only(graph):
    """Packages (ingest, features, model, cv, optimize, monitoring, ...) form no loop either, so each
    stage can be read with only the stages below it."""

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for module, deps in graph.items():
        packages.setdefault(package(module), set()).update(
            package(d) for d in deps if within(d, (PACKAGE,)) and package(d) != package(module)
        )
    assert cycles(packages) == []


def test_only_the_wiring_imports_dagster(graph):
    offenders = sorted(
        m for m, deps in graph.items()
        if not within(m, DAGSTER_ALLOWED) and any(within(d, ("dagster", "dagster_duckdb")) for d in deps)
    )  # fmt: skip
    assert offenders == []


def test_cli_reaches_dagster_only_through_runner_and_definitions(graph):
    deps = graph["mmm_pipeline.cli"]
    assert not any(within(d, ("dagster", "dagster_duckdb")) for d in deps)
    assert {d for d in deps if within(d, ("mmm_pipeline.defs",))} <= {"mmm_pipeline.defs.jobs"}


def test_only_the_top_sees_project_config():
    users = {
        name
        for path in sorted((ROOT / PACKAGE).rglob("*.py"))
        if "ProjectConfig" in imported_names(path)
        and not within(name := module_name(path), PROJECT_CONFIG_ALLOWED)
    }
    assert users == set(), "a stage module imports ProjectConfig"


def test_config_flows_downhill(graph):
    """Stage packages define their sections; only the top composes them, so none imports ``config``."""
    importers = {m for m, deps in graph.items() if "mmm_pipeline.config" in deps}
    allowed = {m for m in importers if within(m, PROJECT_CONFIG_ALLOWED)} | {"mmm_pipeline.scaffold"}
    assert importers - allowed == set()


def test_product_does_not_import_the_test_kit(graph):
    offenders = sorted(
        m for m, deps in graph.items()
        if m not in TESTKIT_ALLOWED and any(within(d, (TESTKIT,)) for d in deps)
    )  # fmt: skip
    assert offenders == []


def test_cycle_finder_sees_a_loop_through_a_function_level_import(tmp_path):
    """The checks above are only worth something if a planted loop fails them."""
    pkg = tmp_path / PACKAGE
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "__init__.py").write_text("")
    (pkg / "model" / "build.py").write_text("from mmm_pipeline.model.calibration import padded\n")
    (pkg / "model" / "calibration.py").write_text("def f():\n    from .insights import hdi\n")
    (pkg / "model" / "insights.py").write_text("from . import build\n")
    found = cycles(import_graph(tmp_path))
    loop = ["mmm_pipeline.model.build", "mmm_pipeline.model.calibration", "mmm_pipeline.model.insights"]
    assert found == [loop]
