r"""The Python blocks of a Markdown page and their ``docs-run`` directives: one parser for the
docs test (``tests/test_docs_run.py``, which documents the directives) and the tutorials'
figure generator (``docs/_gen/tutorial_figures.py``).

Fenced blocks (```` ``` ```` or ``~~~``, indented too, as in admonitions) whose language is
Python; the directives on the lines just above a block (blank lines allowed between) are
``<!-- docs-run: replace OLD NEW -->`` and ``<!-- docs-run: skip (reason) -->``.

Examples
--------
>>> page = "<!-- docs-run: replace 100 2 -->\n```python\nn = 100\n```\n\n```bash\nls\n```\n"
>>> [(b.line, b.code, b.replace) for b in parse_page(page, "p.md")]
[(3, 'n = 100', [('100', '2')])]
"""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-run:\s*(?P<body>.*?)\s*-->\s*$")
_SNIPPET = re.compile(r"""^\s*--8<--\s+["'](?P<path>[^"']+)["']\s*$""")
_PYTHON = {"python", "py", "python3"}


@dataclass
class Block:
    """One fenced Python block of a page."""

    page: str
    line: int  # 1-based line of the block's first code line
    code: str
    skip: str | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)

    def source(self) -> tuple[str, str, int]:
        """``(code, filename, first line)`` to run: snippet includes expanded, directives
        applied."""
        lines = self.code.splitlines()
        snippets = [_SNIPPET.match(s) for s in lines]
        if lines and all(snippets):
            paths = [m["path"] for m in snippets if m]
            code = "\n".join((ROOT / p).read_text(encoding="utf-8") for p in paths)
            filename, first = (str(ROOT / paths[0]), 1) if len(paths) == 1 else (self.page, 1)
        else:
            code = "\n".join(
                (ROOT / m["path"]).read_text(encoding="utf-8") if m else s
                for s, m in zip(lines, snippets, strict=True)
            )
            filename, first = str(ROOT / self.page), self.line
        for old, new in self.replace:
            if old not in code:
                raise ValueError(
                    f"{self.page}:{self.line}: docs-run directive `replace {old!r} {new!r}` "
                    "is stale: the block does not contain that text"
                )
            code = code.replace(old, new)
        return code, filename, first


def parse_page(text: str, page: str) -> list[Block]:
    """The Python blocks of a Markdown page, with their directives.

    Raises ``ValueError`` for an unknown or malformed directive, a skip without a reason, or
    a directive that is not just above a Python block.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    used: set[int] = set()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        lang = info.split()[0].strip("{.}").lower() if info else ""
        j = i + 1
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if lang in _PYTHON:
            body = [s[len(indent) :] if s.startswith(indent) else s for s in lines[i + 1 : j]]
            block = Block(page, i + 2, textwrap.dedent("\n".join(body)))
            k = i - 1
            while k >= 0 and (not lines[k].strip() or _DIRECTIVE.match(lines[k])):
                d = _DIRECTIVE.match(lines[k])
                if d:
                    _apply_directive(block, d["body"], f"{page}:{k + 1}")
                    used.add(k)
                k -= 1
            block.replace.reverse()  # in the order they are written
            blocks.append(block)
        i = j + 1
    for k, s in enumerate(lines):
        if _DIRECTIVE.match(s) and k not in used:
            raise ValueError(f"{page}:{k + 1}: docs-run directive not just above a Python block")
    return blocks


def _apply_directive(block: Block, body: str, where: str) -> None:
    skip = re.fullmatch(r"skip\s*\((?P<reason>.*\S.*)\)", body)
    if skip:
        block.skip = skip["reason"].strip()
        return
    try:
        words = shlex.split(body)
    except ValueError as e:
        raise ValueError(f"{where}: malformed docs-run directive {body!r}: {e}") from None
    if len(words) == 3 and words[0] == "replace" and words[1]:
        block.replace.append((words[1], words[2]))
        return
    raise ValueError(
        f"{where}: unknown docs-run directive {body!r}; expected `replace OLD NEW` or "
        "`skip (reason)`"
    )
