"""The import graph keeps its shape: no cycles, the engine knows nothing of the app.

The graph is read from the sources with ``ast``, imports inside functions included (a cycle
hidden in a function is still a cycle: it only fails later, at the first call). An edge goes
to the module an import names: ``from engine import fast`` is an edge to ``engine.fast``,
``from engine import load_model`` one to the package ``engine``. Importing a submodule runs its
package's ``__init__`` too, but that is not counted as an edge of the importer (it would make
every package that re-exports its parts a cycle).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "app")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported_names(path: Path, name: str, modules) -> set[str]:
    """Every dotted module name `path` imports, anywhere in the file (relative ones resolved);
    `from pkg import x` names ``pkg.x`` when that is one of `modules`, else ``pkg``."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (names that are not modules are dropped)."""
    modules = project_modules()
    return {name: {m for m in imported_names(path, name, modules) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_reader_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "engine"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from engine import b\n")
    (pkg / "b.py").write_text("from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import engine.a\n")
    (tmp_path / "app").mkdir()
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    graph = import_graph()
    assert graph["engine.a"] == {"engine.b"}
    assert graph["engine.b"] == {"engine.sub.c"}
    assert find_cycle(graph) == ["engine.a", "engine.b", "engine.sub.c", "engine.a"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_engine_imports_nothing_of_the_app():
    offenders = {name: sorted(m for m in deps if m.split(".")[0] == "app")
                 for name, deps in import_graph().items() if name.split(".")[0] == "engine"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_qt_widgets_only_in_the_window_and_the_widgets():
    """Controllers, the document, the engine thread and the server stay usable without widgets."""
    allowed = ("app.window", "app.widgets")
    offenders = sorted(name for name, path in project_modules().items()
                       if "PySide6.QtWidgets" in imported_names(path, name, {}) and not name.startswith(allowed))
    assert offenders == []


def test_imports_are_absolute():
    relative = sorted(f"{name}:{node.lineno}" for name, path in project_modules().items()
                      for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                      if isinstance(node, ast.ImportFrom) and node.level)
    assert relative == []


MAX_WINDOW_LINES = 350
MAX_METHOD_LINES = 30


def test_the_main_window_only_wires():
    """The window builds and connects; the work is in controllers, the document and widgets."""
    path = ROOT / "app" / "window" / "mainwindow.py"
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_WINDOW_LINES
    window = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef) and node.name == "MainWindow")
    long = {node.name: node.end_lineno - node.lineno + 1 for node in window.body
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > MAX_METHOD_LINES}
    assert long == {}
