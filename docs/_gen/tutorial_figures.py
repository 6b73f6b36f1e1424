"""Make the tutorials' figures by running the tutorials themselves.

Each page ``docs/tutorials/<name>.md`` is a walk-through whose Python blocks save their figures
with ``fig.savefig("<file>.png")``. This script runs a page's blocks in order, in one fresh
namespace and a scratch working directory, exactly as printed (at the page's own sizes; the
``<!-- docs-run: replace ... -->`` directives that shrink the page for the test suite are not
applied, ``skip`` directives are honoured), and copies every PNG the page wrote to
``docs/tutorials/img/<name>/``. The page shows them as ``![...](img/<name>/<file>.png)``.

The figures are committed, so that ``mkdocs build --strict`` works in a fresh clone; ``make docs``
runs this script first. A page whose code (and this script, and tmx's version) is unchanged
since its figures were made is skipped: ``docs/tutorials/img/manifest.json`` holds one hash per
page. ``--force`` regenerates every page.

Usage (from the repository root; offline, about a minute per page on 2 cores):

    .venv/bin/python docs/_gen/tutorial_figures.py [--force] [measures flows ...]

Not part of the ``tmx`` package.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "tutorials"
IMG = PAGES / "img"
MANIFEST = IMG / "manifest.json"

sys.path.insert(0, str(ROOT))
from tests.docs_blocks import parse_page  # noqa: E402  (the one parser, shared with the docs test)

_IMAGE = re.compile(r"!\[[^\]]*\]\(img/(?P<page>[\w-]+)/(?P<file>[\w.-]+\.png)\)")


def python_blocks(text: str, name: str = "page") -> list[str]:
    """The page's Python blocks, in order, as printed: without those marked ``skip`` and
    without applying ``replace`` directives (``tests/docs_blocks.py`` parses them, as the docs
    test does)."""
    return [block.code for block in parse_page(text, name) if block.skip is None]


def referenced_images(name: str) -> set[str]:
    """The files of ``img/<name>/`` that the page ``name`` shows."""
    text = (PAGES / f"{name}.md").read_text(encoding="utf-8")
    return {m["file"] for m in _IMAGE.finditer(text) if m["page"] == name}


def page_hash(name: str) -> str:
    import tmx

    h = hashlib.sha256()
    for block in python_blocks((PAGES / f"{name}.md").read_text(encoding="utf-8"), name):
        h.update(block.encode())
    h.update(Path(__file__).read_bytes())
    h.update(tmx.__version__.encode())
    return h.hexdigest()


def run_page(name: str) -> dict[str, bytes]:
    """Run page ``name``'s blocks in a scratch directory; return the PNGs it wrote there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    page = PAGES / f"{name}.md"
    blocks = python_blocks(page.read_text(encoding="utf-8"), name)
    scratch = Path(tempfile.mkdtemp(prefix=f"tmx-tutorial-{name}-"))
    cwd, argv = Path.cwd(), sys.argv
    namespace: dict = {"__name__": "__main__", "__file__": str(page)}
    try:
        os.chdir(scratch)
        sys.argv = [str(page)]
        for block in blocks:
            exec(compile(block, str(page), "exec"), namespace)  # the page's own code
        plt.close("all")
        return {p.name: p.read_bytes() for p in sorted(scratch.glob("*.png"))}
    finally:
        os.chdir(cwd)
        sys.argv = argv
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", help="page names (default: every tutorial)")
    parser.add_argument("--force", action="store_true", help="regenerate unchanged pages too")
    args = parser.parse_args(argv)
    names = args.pages or sorted(p.stem for p in PAGES.glob("*.md"))
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    for name in names:
        if not (PAGES / f"{name}.md").exists():
            parser.error(f"no tutorial page docs/tutorials/{name}.md")
        wanted = referenced_images(name)
        out = IMG / name
        digest = page_hash(name)
        present = all((out / f).exists() for f in wanted)
        if not args.force and manifest.get(name) == digest and present:
            print(f"{name}: up to date ({len(wanted)} figures)")
            continue
        t0 = time.perf_counter()
        pngs = run_page(name)
        made = set(pngs)
        missing = wanted - made
        if missing:
            raise SystemExit(
                f"docs/tutorials/{name}.md shows {sorted(missing)} but its code did not write "
                f"them (it wrote {sorted(made)})"
            )
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for file in sorted(wanted):
            (out / file).write_bytes(pngs[file])
        manifest[name] = digest
        MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {len(wanted)} figures in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
