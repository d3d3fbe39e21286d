"""The house rules of the layout: who may import whom, and functions that fit on a screen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("main", "agent", "nnetwork")


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _project_files() -> dict[str, Path]:
    files = {name: ROOT / f"{name}.py" for name in TOP_LEVEL}
    files.update({_module_name(p): p for p in sorted((ROOT / "dqnkit").rglob("*.py"))})
    return files


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that ``name`` imports anywhere in its file (lazy imports in functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from dqnkit import cli" and "from dqnkit.cli import option" both import the module dqnkit.cli.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # "dqnkit.cli.x" -> "dqnkit.cli"
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    files = _project_files()
    return {name: _imports(name, path, set(files)) for name, path in files.items()}


def test_the_walk_finds_the_package_and_its_imports() -> None:
    graph = _graph()
    assert {"dqnkit.cli", "dqnkit.run.files", "dqnkit.run.hooks", "dqnkit.run.folder"} <= set(graph)
    assert {"dqnkit.cli", "dqnkit.run.hooks", "dqnkit.run.folder", "dqnkit.report.videos"} <= graph["main"]
    assert {"dqnkit.report.logs", "dqnkit.report.filming", "dqnkit.run.checkpoints"} <= graph["dqnkit.run.session"]
    assert "agent" in graph["dqnkit.learn"] and "nnetwork" in graph["agent"]
    assert {"dqnkit.learn.options", "dqnkit.learn.twin"} <= graph["dqnkit.learn"]


def test_the_package_shows_its_parts() -> None:
    """Folders a reader can name: the learning code, a run, what it reports, the tuner."""
    folders = {p.name for p in (ROOT / "dqnkit").iterdir() if (p / "__init__.py").exists()}
    assert folders == {"learn", "run", "report", "tune"}
    assert not list((ROOT / "dqnkit").glob("tuning*.py")), "the tuner's modules live in dqnkit/tune/"


def test_no_module_of_the_code_is_over_300_lines() -> None:
    modules = [ROOT / f"{name}.py" for name in TOP_LEVEL] + sorted((ROOT / "dqnkit").rglob("*.py"))
    long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in modules if (n := len(p.read_text().splitlines())) > 300]
    assert not long, long


def test_nothing_in_the_package_imports_main() -> None:
    offenders = sorted(name for name, imported in _graph().items() if name.startswith("dqnkit") and "main" in imported)
    assert not offenders, f"these dqnkit modules import main.py: {offenders}"


@pytest.mark.parametrize("core", ["agent", "nnetwork"])
def test_the_core_imports_nothing_from_the_package(core: str) -> None:
    imported = sorted(m for m in _graph()[core] if m.split(".")[0] == "dqnkit")
    assert not imported, f"{core}.py imports {imported}"


def test_no_import_cycles() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_class_in_the_package_is_over_150_lines() -> None:
    """One service, one small class: the run's plumbing is hooks, not one object that holds it all."""
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted((ROOT / "dqnkit").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 150
    ]
    assert not long, long


def test_functions_fit_on_a_screen() -> None:
    hidden = [p for p in ROOT.rglob("*.py") if any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    files = sorted(set(ROOT.rglob("*.py")) - set(hidden))  # not the virtual environments
    assert ROOT / "agent.py" in files and ROOT / "benchmarks" / "speed.py" in files
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in files
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, long
