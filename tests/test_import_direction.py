"""Imports go one way between the top-level packages, lowest first:

    robaudit.models  <-  robaudit (science)  <-  robaudit.frontend  <-  robaudit.backend  <-  robaudit.worker
        <-  robaudit.launch

A package may import itself and the packages before it, never one after it. Every import counts,
including those inside functions, and so do the module names handed to other processes as
strings: `python -m MODULE`, `celery -A MODULE` and Celery's `include=[...]`. No code imports the
bare names the card's folders had before they were installed under robaudit (`models`, `backend`,
...), and there is no cycle between the packages.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first; where each package's files are in the checkout.
LAYERS = ["robaudit.models", "robaudit", "robaudit.frontend", "robaudit.backend", "robaudit.worker",
          "robaudit.launch"]
SOURCES = {"robaudit.models": "models", "robaudit": "robaudit", "robaudit.frontend": "frontend",
           "robaudit.backend": "backend", "robaudit.worker": "worker", "robaudit.launch": "launch"}
BARE_NAMES = {"models", "backend", "worker", "frontend", "launch"}
# Checked for bare names too: everything else in the checkout that is Python.
OTHER_CODE = ["tests", "benchmarks", "scripts"]


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    name: str            # the module named, absolute
    importer: str | None  # the package the importing file belongs to (None outside the packages)

    def __str__(self) -> str:
        where = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{where}:{self.line}: {self.name}"


def python_files(folder: Path) -> list[Path]:
    """The .py files under ``folder``, not following symlinks (robaudit/ links to the other packages)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        found += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return sorted(found)


def module_name(path: Path, folder: Path, package: str) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _strings(nodes: list[ast.expr]) -> list[str | None]:
    return [n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None for n in nodes]


def named_modules(tree: ast.AST, module: str | None = None, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) for every import statement anywhere in ``tree`` (relative ones resolved against
    ``module``), every `"-m", MODULE` and `"-A", MODULE` pair of string constants, and every
    string in an `include=[...]` keyword."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if module is None:
                    continue   # a relative import outside the packages (tests): never a bare name
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            if base:
                found.append((node.lineno, base))
            # `from robaudit import backend` imports the subpackage robaudit.backend.
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name)
                      for alias in node.names if alias.name != "*"]
        elif isinstance(node, (ast.List, ast.Tuple, ast.Call)):
            values = _strings(node.elts if isinstance(node, (ast.List, ast.Tuple)) else node.args)
            found += [(node.lineno, name) for flag, name in zip(values, values[1:])
                      if flag in ("-m", "-A") and name]
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "include" and isinstance(kw.value, (ast.List, ast.Tuple)):
                        found += [(node.lineno, name) for name in _strings(kw.value.elts) if name]
    return found


def scan(sources: dict[str, Path], others: list[Path] = ()) -> list[Import]:
    """Every module named in the packages' files (``sources``: package -> folder) and in ``others``."""
    imports = []
    for package, folder in sources.items():
        for path in python_files(folder):
            module = module_name(path, folder, package)
            tree = ast.parse(path.read_text(), str(path))
            imports += [Import(path, line, name, package)
                        for line, name in named_modules(tree, module, path.name == "__init__.py")]
    for folder in others:
        for path in python_files(folder):
            imports += [Import(path, line, name, None)
                        for line, name in named_modules(ast.parse(path.read_text(), str(path)))]
    return imports


def owner(name: str, packages: list[str]) -> str | None:
    """The package a module belongs to: the longest package name it is in; None for other modules."""
    inside = [p for p in packages if name == p or name.startswith(p + ".")]
    return max(inside, key=len) if inside else None


def against_the_order(imports: list[Import], layers: list[str]) -> list[str]:
    """One line per offending statement (``from a import b`` names both a and a.b)."""
    bad: dict[tuple[Path, int], str] = {}
    for imp in imports:
        target = owner(imp.name, layers)
        if imp.importer is not None and target is not None and layers.index(target) > layers.index(imp.importer):
            bad.setdefault((imp.path, imp.line), f"{imp}  ({imp.importer} must not import {target})")
    return list(bad.values())


def bare_names(imports: list[Import], names: set[str]) -> list[str]:
    bad = {(imp.path, imp.line): str(imp) for imp in reversed(imports) if imp.name.split(".")[0] in names}
    return sorted(bad.values())


def package_graph(imports: list[Import], packages: list[str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {p: set() for p in packages}
    for imp in imports:
        target = owner(imp.name, packages)
        if imp.importer is not None and target is not None and target != imp.importer:
            graph[imp.importer].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return sorted(found)


# The checkout --------------------------------------------------------------------------------
def _checkout() -> list[Import]:
    return scan({p: ROOT / folder for p, folder in SOURCES.items()}, [ROOT / d for d in OTHER_CODE])


def test_no_package_imports_one_after_it():
    imports = _checkout()
    # The scan sees what it must: imports inside functions, `-m` and `-A` strings, include=[...].
    names = {imp.name for imp in imports}
    assert {"robaudit.worker.runner", "robaudit.models.validate", "robaudit.worker.celery_app",
            "robaudit.worker.tasks"} <= names
    assert against_the_order(imports, LAYERS) == []


def test_no_code_imports_the_bare_folder_names():
    assert bare_names(_checkout(), BARE_NAMES) == []


def test_no_cycle_between_the_packages():
    graph = package_graph(_checkout(), LAYERS)
    assert "robaudit.worker" in graph["robaudit.launch"] and "robaudit.frontend" in graph["robaudit.backend"]
    assert cycles(graph) == []


# The checker itself, on a tiny tree ---------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"low": tmp_path / "low", "high": tmp_path / "high"}


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    sources = _tree(tmp_path, {
        "low/__init__.py": "",
        "low/core.py": "def later():\n    from high.app import run\n    return run\n",
        "high/__init__.py": "",
        "high/app.py": "from low import core\n\ndef run():\n    return core\n",
    })
    imports = scan(sources)
    assert cycles(package_graph(imports, ["low", "high"])) == [["high", "low"]]
    assert against_the_order(imports, ["low", "high"]) == [
        f"{Import(tmp_path / 'low' / 'core.py', 2, 'high.app', 'low')}  (low must not import high)"]


def test_checker_reads_process_strings_and_relative_imports(tmp_path):
    sources = _tree(tmp_path, {
        "low/__init__.py": "",
        "low/spawn.py": ("import subprocess, sys\n"
                         "subprocess.run([sys.executable, '-m', 'high.tool'])\n"
                         "argv = ['celery', '-A', 'high.app', 'worker']\n"
                         "app = make(include=['high.tasks'])\n"),
        "high/__init__.py": "",
        "high/app.py": "from . import tasks\nfrom .. import low\n",
        "high/tasks.py": "import worker.tasks\n",
    })
    imports = scan(sources)
    assert sorted((imp.line, imp.name) for imp in imports if imp.importer == "low" and imp.name.startswith("high")) == [
        (2, "high.tool"), (3, "high.app"), (4, "high.tasks")]
    assert {"high.tasks", "low"} <= {imp.name for imp in imports if imp.importer == "high"}
    assert cycles(package_graph(imports, ["low", "high"])) == [["high", "low"]]
    assert bare_names(imports, {"worker"}) == [str(Import(tmp_path / "high" / "tasks.py", 1, "worker.tasks", "high"))]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
