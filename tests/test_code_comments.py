"""Code comments say why in a sentence or two: measurements and their history live in the docs' tables
(docs/engine.md, "Defaults and how they were chosen"), which a comment can name."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "legato_core"
MAX_LINES = 6


def comment_blocks(source: str) -> list[tuple[int, int]]:
    """(first line, length) of every run of comments on consecutive lines, trailing comments included."""
    lines = sorted({tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                    if tok.type == tokenize.COMMENT})
    blocks: list[tuple[int, int]] = []
    for line in lines:
        if blocks and blocks[-1][0] + blocks[-1][1] == line:
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + 1)
        else:
            blocks.append((line, 1))
    return blocks


def long_docstrings(source: str) -> list[tuple[str, int]]:
    """Functions and classes whose docstring runs over MAX_LINES lines."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc and len(doc.strip().splitlines()) > MAX_LINES:
                out.append((node.name, node.lineno))
    return out


def test_comment_blocks_are_counted_with_their_trailing_first_line():
    source = "x = 1  # a\n# b\n\n# c\ny = 2\n"
    assert comment_blocks(source) == [(1, 2), (4, 1)]


def test_no_comment_in_the_library_is_longer_than_six_lines():
    too_long = [f"{path.relative_to(PACKAGE.parent)}:{first} ({n} lines)"
                for path in sorted(PACKAGE.rglob("*.py"))
                for first, n in comment_blocks(path.read_text()) if n > MAX_LINES]
    assert too_long == []


def test_no_function_or_class_docstring_in_the_library_is_longer_than_six_lines():
    too_long = [f"{path.relative_to(PACKAGE.parent)}:{line} {name}"
                for path in sorted(PACKAGE.rglob("*.py")) for name, line in long_docstrings(path.read_text())]
    assert too_long == []
