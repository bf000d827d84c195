"""The project's modules import each other without cycles (module-, function-level and
``TYPE_CHECKING`` imports all count: a cycle hidden inside a function or behind a type
annotation is still a cycle), the library's internal imports sit at the top of the module,
where the dependency graph can be read, and no module of the viewer grows past a readable
size."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mammo_core", "app")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (``a.b.c`` -> ``a.b`` if ``c`` is an
    attribute), or None for third-party names."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, bool, int]]:
    """(imported project module, inside a function?, line) for every import in ``path``,
    those under ``if TYPE_CHECKING:`` included (a type-only dependency is still a dependency)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            func = in_func or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    target = _resolve(alias.name, known)
                    if target:
                        found.append((target, func, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative
                    base = module.split(".") if is_pkg else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                for alias in child.names:
                    target = _resolve(f"{prefix}.{alias.name}", known) or _resolve(prefix, known)
                    if target:
                        found.append((target, func, child.lineno))
            visit(child, func)

    visit(tree, False)
    return [(t, f, ln) for t, f, ln in found if t != module]


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, bool, int]]]]:
    known = _modules()
    detail = {m: _imports(m, p, known) for m, p in known.items()}
    graph = {m: {t for t, _f, _ln in imps} for m, imps in detail.items()}
    return graph, detail


def _parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted. Importing a
    package's own parent package (``a.b`` -> ``a``) is not counted: Python runs the parent's
    ``__init__`` first anyway."""
    edges = {m: {t for t in ts if t not in _parents(m)} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return sorted(out)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e.f": {"e"}, "e": {"e.f"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_the_parser_sees_every_kind_of_import(tmp_path):
    (tmp_path / "pkg").mkdir()
    a = tmp_path / "pkg" / "a.py"
    a.write_text("import os\n"
                 "from typing import TYPE_CHECKING\n"
                 "from pkg import b\n"
                 "from .c import thing\n"
                 "if TYPE_CHECKING:\n"
                 "    from pkg.d import T\n"
                 "def f():\n"
                 "    import pkg.d\n"
                 "    return pkg.d\n")
    known = {"pkg": tmp_path / "pkg" / "__init__.py", "pkg.a": a, "pkg.b": a, "pkg.c": a,
             "pkg.d": a}
    assert _imports("pkg.a", a, known) == [("pkg.b", False, 3), ("pkg.c", False, 4),
                                           ("pkg.d", False, 6), ("pkg.d", True, 8)]
    graph, _ = _graph()
    assert "mammo_core.predictions" in graph["mammo_core.session"]


def test_no_import_cycles():
    graph, _ = _graph()
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_project_modules_are_imported_at_the_top():
    """Only heavy third-party libraries are imported lazily; the project's own modules are all
    light, so importing them inside a function would only hide the dependency graph."""
    _, detail = _graph()
    inside = [f"{m}:{ln} imports {t}" for m, imps in sorted(detail.items())
              for t, in_func, ln in imps if in_func]
    assert inside == []


APP_MAX_LINES = 700
MAIN_WINDOW_MAX_LINES = 499


def test_viewer_modules_stay_readable():
    """No file of the viewer over 700 lines; the main window, which only composes the tabs,
    under 500."""
    sizes = {p.relative_to(REPO).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in sorted((REPO / "app").rglob("*.py"))}
    assert {p: n for p, n in sizes.items() if n > APP_MAX_LINES} == {}
    assert sizes["app/main_window.py"] <= MAIN_WINDOW_MAX_LINES
