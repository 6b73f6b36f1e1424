"""Every Python code block of README.md and docs/**/*.md runs, in order, as a reader would.

One test per page (its id is the page's path). The page's ```` ```python ```` blocks run one
after the other in one namespace, so a block may use what an earlier block of the same page
defined. Blocks in other languages (``bash``, ``text``) are not run, nor pages without a
Python block (the API pages that hold only ``:::`` directives).

The fixture
-----------
Names that a page reads before it assigns them are taken from ``tests/docs_env.py``, small
stand-ins for what the reader is assumed to have: ``model`` (the untrained
``tmx.models.small_cnn((16, 16, 1))``), ``x`` and ``y`` (16 test digits, 16 × 16, and their
labels), ``data`` (``tmx.datasets.digits(16, normalize=False)``), ``tset`` (four quarter-turn
rotations) and ``cube`` (their activation cube, kept in memory). Each page runs in a fresh
namespace with ``__name__ == "__main__"``, in its own temporary working directory (files the
page writes land there), with Keras' dtype policy, dask's configuration and matplotlib's
figures restored afterwards.

Directives
----------
An HTML comment on the lines just above a block (blank lines allowed between) tells the
harness how to run it; it is invisible on the rendered page:

``<!-- docs-run: replace OLD NEW -->``
    Run the block with the text ``OLD`` replaced by ``NEW`` (shell quoting for text with
    spaces). It shrinks realistic sizes (``n=10_000`` → ``n=200``) so the page runs in
    seconds; ``OLD`` must occur in the block, so a stale directive fails the page.
``<!-- docs-run: skip (reason) -->``
    Do not run the block. The reason is required, and the number of skipped blocks is
    bounded by ``MAX_SKIPS``: a block that needs a GPU, a network or a user's file.

A block that is a snippet include of pymdownx.snippets (``--8<-- "examples/quickstart.py"``)
runs the included file, with the directives applied to its text.

Pages in ``PENDING`` are expected to fail for now (xfail, not run); set
``TMX_DOCS_RUN_PENDING=1`` to run them as ordinary tests.
"""

from __future__ import annotations

import ast
import copy
import os
import sys
import textwrap
from pathlib import Path

import matplotlib
import pytest

from tests import docs_env
from tests.docs_blocks import Block, parse_page

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]

#: Pages (or folders, ending in "/") whose code is being rewritten elsewhere: expected to fail
#: until then. Empty this set when they run.
PENDING: set[str] = set()

#: At most this many blocks may carry a ``skip`` directive, over all pages.
MAX_SKIPS = 3


def free_names(codes: list[str]) -> set[str]:
    """Names read by top-level statements before any earlier statement assigned them."""
    bound: set[str] = set()
    free: set[str] = set()
    for code in codes:
        for stmt in ast.parse(code).body:
            loads, stores = set(), set()
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name):
                    (loads if isinstance(node.ctx, ast.Load) else stores).add(node.id)
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    stores.add(node.name)
                elif isinstance(node, ast.alias):
                    stores.add((node.asname or node.name).split(".")[0])
            free |= loads - bound
            bound |= stores
    return free


def pages() -> list[str]:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p.relative_to(ROOT).as_posix() for p in paths if p.exists()]


def blocks_of(page: str) -> list[Block]:
    return parse_page((ROOT / page).read_text(encoding="utf-8"), page)


def _pending(page: str) -> bool:
    return any(page == p or (p.endswith("/") and page.startswith(p)) for p in PENDING)


def _params() -> list:
    run_pending = os.environ.get("TMX_DOCS_RUN_PENDING", "") not in ("", "0")
    params = []
    for page in pages():
        try:
            if not blocks_of(page):
                continue
        except ValueError:  # a malformed directive: the page's test reports it
            pass
        marks = []
        if _pending(page) and not run_pending:
            marks.append(pytest.mark.xfail(reason="pending: rewritten elsewhere", run=False))
        params.append(pytest.param(page, id=page, marks=marks))
    return params


def run_blocks(blocks: list[Block]) -> list[Block]:
    """Run the blocks in order in one namespace; return the skipped ones.

    While a block runs, ``sys.argv`` is ``[its file]`` (the page, or the included script), as
    when a reader runs it; an included script also gets its ``__file__``.
    """
    runnable = [b for b in blocks if b.skip is None]
    sources = [b.source() for b in runnable]
    ns = docs_env.namespace(free_names([code for code, _, _ in sources]))
    argv = sys.argv
    try:
        for block, (code, filename, first) in zip(runnable, sources, strict=True):
            tree = ast.parse(code, filename)
            ast.increment_lineno(tree, first - 1)
            sys.argv = [filename]
            if filename != str(ROOT / block.page):
                ns["__file__"] = filename
            exec(compile(tree, filename, "exec"), ns)  # the documentation's own code
            ns.pop("__file__", None)
    finally:
        sys.argv = argv
    return [b for b in blocks if b.skip is not None]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """One cache of trained models for the session (``trained_small_cnn`` trains once)."""
    return tmp_path_factory.mktemp("tmx-cache")


@pytest.fixture
def clean_state(tmp_path, monkeypatch, model_cache):
    """A temporary working directory and model cache; global state restored after the page."""
    import dask
    import keras
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMX_CACHE_DIR", str(model_cache))
    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    config = copy.deepcopy(dask.config.config)
    yield tmp_path
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)
    dask.config.update(dask.config.config, config)  # keys added meanwhile (by imports) stay
    plt.close("all")


@pytest.mark.parametrize("page", _params())
def test_page_runs(page, clean_state):
    run_blocks(blocks_of(page))


def test_skips_are_few_and_have_reasons():
    skipped = [b for page in pages() for b in blocks_of(page) if b.skip is not None]
    assert all(b.skip for b in skipped)
    assert len(skipped) <= MAX_SKIPS, [f"{b.page}:{b.line} ({b.skip})" for b in skipped]


def test_harness_runs_in_order_and_fails_on_a_failing_block():
    page = textwrap.dedent(
        """
        ```python
        a = 2
        ```
        text
        <!-- docs-run: replace "a * 3" "a * 5" -->

        ```python
        b = a * 3
        ```
        <!-- docs-run: skip (needs a GPU) -->
        ```python
        raise RuntimeError("skipped")
        ```
        ```bash
        exit 1
        ```
        """
    )
    blocks = parse_page(page, "page.md")
    assert [b.skip for b in blocks] == [None, None, "needs a GPU"]
    assert blocks[1].replace == [("a * 3", "a * 5")]
    assert len(run_blocks(blocks)) == 1
    ns = docs_env.namespace(["model", "undefined_name"])
    assert "model" in ns and "undefined_name" not in ns and ns["__name__"] == "__main__"
    # the replaced value is what ran: b == 10, so a block asserting otherwise fails
    failing = parse_page(page.replace("raise", "assert b == 10\nraise", 1), "page.md")
    failing[2].skip = None
    with pytest.raises(RuntimeError, match="skipped"):
        run_blocks(failing)
    with pytest.raises(AssertionError):
        run_blocks(parse_page("```python\nb = 3\nassert b == 10\n```\n", "page.md"))


def test_directive_errors():
    with pytest.raises(ValueError, match="stale"):
        parse_page('<!-- docs-run: replace "x" "y" -->\n```python\na = 1\n```\n', "p.md")[
            0
        ].source()
    with pytest.raises(ValueError, match="unknown docs-run directive"):
        parse_page("<!-- docs-run: skip -->\n```python\na = 1\n```\n", "p.md")
    with pytest.raises(ValueError, match="not just above"):
        parse_page("<!-- docs-run: skip (x) -->\ntext\n```python\na = 1\n```\n", "p.md")


def test_free_names():
    codes = ["import tmx\ncube = tmx.activations(model, x)\n", "nv = f(cube, y)\ncube = g(cube)"]
    assert free_names(codes) == {"model", "x", "f", "y", "g"}
