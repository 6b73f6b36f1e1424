"""The package's own imports follow ARCHITECTURE.md (issue 18, item 4).

- Nothing inside ``tmx/`` imports the package root: no ``import tmx``, no ``from tmx import
  name`` nor ``from .. import name`` reaching the root for a name that is not a module (the
  root only re-exports; a submodule, ``from .. import _validate``, is fine).
- Imports sit at module top. A function-level import is of an optional dependency
  (``OPTIONAL``) or carries a comment on its line saying why (a cycle, a lazy TensorFlow).

The scan reads the files with ``ast`` (docstring examples are strings, not imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tmx"

#: Optional dependencies (pyproject's extras, and numba's fallback): imported where used.
OPTIONAL = {"numba", "pynndescent", "pyarrow", "umap", "pacmap", "distributed"}


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _package_of(path: Path) -> list[str]:
    """The package a file's relative imports start from (``tmx/a/b.py``, ``tmx/a/__init__.py``:
    ``["tmx", "a"]``)."""
    return list(path.relative_to(ROOT).parts[:-1])


def _root_imports(path: Path, tree: ast.AST) -> list[str]:
    """``import tmx`` / root names imported by ``path`` (not modules)."""
    bad = []
    package = _package_of(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [f"import {a.name}" for a in node.names if a.name == "tmx"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module != "tmx" or path == PACKAGE / "__init__.py":
                continue
            bad += [
                f"from {module} import {a.name}"
                for a in node.names
                if not _is_module(f"tmx.{a.name}")
            ]
    return bad


def _local_imports(source: str, tree: ast.Module) -> list[str]:
    """Function-level imports that are neither optional nor commented."""
    lines = source.splitlines()
    top = {id(node) for node in tree.body}
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in top:
            continue
        names = (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
        if all(n.split(".")[0] in OPTIONAL for n in names):
            continue
        if "#" in lines[node.lineno - 1]:
            continue
        bad.append(f"{node.lineno}: {lines[node.lineno - 1].strip()}")
    return bad


def _scan(check) -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        out += [f"{path.relative_to(ROOT)}: {x}" for x in check(path, source, tree)]
    return out


def test_no_module_imports_the_package_root() -> None:
    bad = _scan(lambda path, source, tree: _root_imports(path, tree))
    assert not bad, "imports of the package root (import the defining module):\n" + "\n".join(bad)


def test_function_level_imports_are_optional_or_say_why() -> None:
    bad = _scan(lambda path, source, tree: _local_imports(source, tree))
    assert not bad, "function-level imports (move to the top, or comment why):\n" + "\n".join(bad)


def test_the_scans_find_what_they_look_for() -> None:
    """The scans are not vacuous: each flags a planted example."""
    source = (
        "import numpy\n"
        "def f():\n"
        "    import tmx\n"
        "    from tmx import bootstrap\n"
        "    from tmx import store\n"
        "    import scipy\n"
        "    import numba\n"
        "    import json  # needed late, for a reason\n"
    )
    tree = ast.parse(source)
    fake = PACKAGE / "measures" / "planted.py"
    assert _root_imports(fake, tree) == ["import tmx", "from tmx import bootstrap"]
    relative = ast.parse("from .. import bootstrap, inspect\nfrom . import variance\n")
    assert _root_imports(fake, relative) == ["from tmx import bootstrap"]
    init = PACKAGE / "measures" / "__init__.py"  # "from .. import" of a subpackage's init
    assert _root_imports(init, ast.parse("from .. import __version__\n")) == [
        "from tmx import __version__"
    ]
    assert _local_imports(source, tree) == [
        "3: import tmx",
        "4: from tmx import bootstrap",
        "5: from tmx import store",
        "6: import scipy",
    ]
