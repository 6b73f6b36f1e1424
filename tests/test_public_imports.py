"""Tests, benchmarks and examples use tmx through its public paths only (ARCHITECTURE.md:
"an underscore means this package only"; issue 18, item 4).

The scan (``ast``, no import of the files) fails on: an ``import``/``from … import`` of a tmx
module with a segment starting with "_" or of a name starting with "_"; an attribute chain
``tmx.a._b…``; a string that is a dotted private tmx path (``"tmx.flows._fit"``) given to a
call (``importlib``, ``monkeypatch``) or compared (a ``__module__``); and, through a name bound
to a tmx module (``from tmx import store as tstore``, ``import tmx.plot as tp``,
``mod = sys.modules["tmx.x"]``, ``importlib.import_module("tmx.x")``), an attribute
``alias._name`` or a private name given as a string with it (``monkeypatch.setattr(alias,
"_name", …)``, ``getattr(alias, "_name")``). Dunder names (``tmx.__version__``) are public.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("tests", "benchmarks", "examples")
_DOTTED = re.compile(r"tmx(\.\w+)+")

# (file relative to the repository root, the private path or name it uses): what could not be
# removed yet, each with the reason. Every entry is a debt; it is empty, keep it so.
ALLOWED: dict[tuple[str, str], str] = {}


def _private(segment: str) -> bool:
    return segment.startswith("_") and not (segment.startswith("__") and segment.endswith("__"))


def _chain(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` (``tmx.a.b``) is a module or package of the source tree."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _module_string(node: ast.AST) -> str | None:
    """The tmx module named by ``sys.modules["tmx.x"]`` or ``importlib.import_module("tmx.x")``."""
    key: ast.AST | None = None
    if isinstance(node, ast.Subscript) and _chain(node.value) == ["sys", "modules"]:
        key = node.slice
    elif isinstance(node, ast.Call) and _chain(node.func) in (
        ["importlib", "import_module"],
        ["import_module"],
    ):
        key = node.args[0] if node.args else None
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        if _DOTTED.fullmatch(key.value) or key.value == "tmx":
            return key.value
    return None


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Names bound to a tmx module anywhere in the file (scopes are not told apart) → module."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name.split(".")[0] == "tmx":
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "tmx":
                for alias in node.names:
                    dotted = f"{node.module}.{alias.name}"
                    if _is_module(dotted):
                        aliases[alias.asname or alias.name] = dotted
        elif isinstance(node, ast.Assign) and (module := _module_string(node.value)):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    aliases[target.id] = module
    aliases.pop("tmx", None)  # the package itself: its chains are followed below
    return aliases


_ATTR_CALLS = {"setattr", "getattr", "delattr", "hasattr"}


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, dotted path) of every private tmx name ``source`` imports or reaches."""
    found: list[tuple[int, str]] = []
    tree = ast.parse(source)
    aliases = _module_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "tmx" and any(_private(p) for p in parts):
                    found.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "tmx":
                continue
            if any(_private(p) for p in parts):
                found.append((node.lineno, node.module))
            found += [
                (node.lineno, f"{node.module}.{a.name}") for a in node.names if _private(a.name)
            ]
        elif isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and chain[0] in aliases:  # alias._c → tmx.module._c
                chain = [*aliases[chain[0]].split("."), *chain[1:]]
            # the outermost private segment of tmx.a.b._c.d is reported once, at _c
            if chain and chain[0] == "tmx" and _private(chain[-1]):
                if not any(_private(p) for p in chain[1:-1]):
                    found.append((node.lineno, ".".join(chain)))
        if isinstance(node, ast.Call):
            # setattr(alias, "_c", …), monkeypatch.setattr(alias, "_c", …), getattr(alias, "_c")
            func = _chain(node.func)
            if func and func[-1] in _ATTR_CALLS and len(node.args) >= 2:
                owner, name = node.args[0], node.args[1]
                if (
                    isinstance(owner, ast.Name)
                    and owner.id in aliases
                    and isinstance(name, ast.Constant)
                    and isinstance(name.value, str)
                    and _private(name.value)
                    # a private module is reported where it is imported
                    and not any(_private(p) for p in aliases[owner.id].split("."))
                ):
                    found.append((node.lineno, f"{aliases[owner.id]}.{name.value}"))
        if isinstance(node, ast.Call | ast.Compare):
            # a string given to a call (importlib, monkeypatch) or compared (a __module__)
            operands = (
                [*node.args, *(k.value for k in node.keywords)]
                if isinstance(node, ast.Call)
                else [node.left, *node.comparators]
            )
            for arg in operands:
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    continue
                if _DOTTED.fullmatch(arg.value) and any(_private(p) for p in arg.value.split(".")):
                    found.append((arg.lineno, arg.value))
    return sorted(found)


def test_the_scan_finds_every_form() -> None:
    source = (
        "import tmx._batching\n"
        "from tmx.flows._fit import fit\n"
        "from tmx.flows import _latent\n"
        "from tmx.measures.bootstrap import _support_constant\n"
        "import tmx\n"
        "tmx.measures._common.is_lazy(x)\n"
        "monkeypatch.setattr('tmx.transforms._set.x', 1)\n"
        "if f.__module__ == 'tmx.flows._fit': pass\n"
        "doctest(importlib.import_module('tmx.transforms._apply'))\n"
        # public: no finding
        "from tmx.flows import fit, transform\n"
        "from tmx import __version__\n"
        "tmx.__version__, tmx.flows.fit, tmx.measures.bootstrap\n"
        "from . import _helpers\n"
        "'a sentence about tmx.flows._fit'\n"
        # through a name bound to a tmx module
        "from tmx import store as tstore\n"
        "from tmx.measures import distance as dist\n"
        "import tmx.introspect.iua as iua_mod\n"
        "mod = sys.modules['tmx.introspect.familiarity']\n"
        "eq = importlib.import_module('tmx.measures.equivariance')\n"
        "tstore._save(cube, path)\n"
        "dist._cuts.x\n"
        "monkeypatch.setattr(iua_mod, '_NUMPY_CHUNK', 4)\n"
        "m.setattr(mod, '_NUMPY_CHUNK', 4)\n"
        "getattr(eq, '_MAX_OPERATOR_PIXELS')\n"
        # public: no finding (a function is no module; public and dunder names)
        "from tmx.measures.distance import normalized_distance as nd\n"
        "nd._private_attribute_of_a_function, tstore.DONE_NAME, dist.__name__\n"
        "monkeypatch.setattr(dist, 'GRAM_BYTES', 1)\n"
    )
    assert private_uses(source) == [
        (1, "tmx._batching"),
        (2, "tmx.flows._fit"),
        (3, "tmx.flows._latent"),
        (4, "tmx.measures.bootstrap._support_constant"),
        (6, "tmx.measures._common"),
        (7, "tmx.transforms._set.x"),
        (8, "tmx.flows._fit"),
        (9, "tmx.transforms._apply"),
        (20, "tmx.store._save"),
        (21, "tmx.measures.distance._cuts"),
        (22, "tmx.introspect.iua._NUMPY_CHUNK"),
        (23, "tmx.introspect.familiarity._NUMPY_CHUNK"),
        (24, "tmx.measures.equivariance._MAX_OPERATOR_PIXELS"),
    ]


def test_tests_benchmarks_and_examples_use_public_paths_only() -> None:
    seen: set[tuple[str, str]] = set()
    offending: list[str] = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                continue  # hidden folders: virtual environments (benchmarks/.venv-*), caches
            for line, name in private_uses(path.read_text(encoding="utf-8")):
                if (rel, name) in ALLOWED:
                    seen.add((rel, name))
                else:
                    offending.append(f"{rel}:{line}: {name}")
    assert not offending, "private tmx names (use the public path):\n" + "\n".join(offending)
    stale = sorted(set(ALLOWED) - seen)
    assert not stale, f"allow-list entries no longer needed (remove them): {stale}"
