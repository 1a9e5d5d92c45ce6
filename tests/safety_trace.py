"""Traceability: SAFETY.md's requirement -> test table, generated from the tests.

Each test names the requirements it proves with a comment `# REQ: SR-XXX-NN` in its
body. `python tests/safety_trace.py` rewrites the generated part of SAFETY.md;
tests/test_safety.py fails when SAFETY.md is stale, when a requirement has no test,
or when a test names a requirement SAFETY.md does not define.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAFETY = ROOT / "SAFETY.md"
BEGIN = "<!-- BEGIN GENERATED: python tests/safety_trace.py -->"
END = "<!-- END GENERATED -->"
TAG = re.compile(r"#\s*REQ:\s*(SR-[A-Z]+-\d+)")
DEF = re.compile(r"^\|\s*(SR-[A-Z]+-\d+)\s*\|", re.M)


def tagged_tests() -> dict[str, list[str]]:
    """requirement id -> ["tests/file.py::test_name", ...]"""
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        src = path.read_text()
        if "REQ:" not in src:
            continue
        lines = src.splitlines()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                body = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                for req in TAG.findall(body):
                    out.setdefault(req, []).append(f"{path.relative_to(ROOT)}::{node.name}")
    return out


def defined() -> list[str]:
    """Requirement ids SAFETY.md defines (its requirements table, above the generated part)."""
    text = SAFETY.read_text().split(BEGIN)[0]
    return DEF.findall(text)


def render() -> str:
    tags = tagged_tests()
    rows = ["| requirement | tests that prove it |", "|---|---|"]
    for req in defined():
        tests = tags.get(req, [])
        cell = "<br>".join(f"`{t}`" for t in tests) if tests else "**NO TEST**"
        rows.append(f"| {req} | {cell} |")
    return BEGIN + "\n" + "\n".join(rows) + "\n" + END


def updated() -> str:
    text = SAFETY.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + render() + tail


if __name__ == "__main__":
    SAFETY.write_text(updated())
    print(f"wrote {SAFETY}")
    sys.exit(0)
