"""Build-time inlining of the protocol's integer constants into the compiled firmware.

firmware/msgdefs.py (generated from protocol/theca_protocol) is the firmware's one source
of every code, size and bound. MicroPython inlines a `const()` only inside the module
that defines it: every `md.NAME` elsewhere is a global lookup at run time, and every
name msgdefs defines costs a slot in its globals and a qstr, in RAM, for the life of
the board. So the build does what a C compiler does with a header: in the sources it
compiles (never in the repository), an integer constant of msgdefs is replaced by its
value, `from msgdefs import A as B` of an integer becomes `B = const(value)`, and the
msgdefs it compiles keeps only what is still looked up (strings, tables). Line numbers
do not move, so a traceback points at the line in the repository.

Source runs (the MicroPython unit tests, `--source`) use msgdefs as it is: the same
values, looked up instead of inlined.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

#: `NAME = const(123)` lines of msgdefs, and `NAME = 1234567890` (beyond a small int).
_CONST = re.compile(r"^([A-Z][A-Z0-9_]*) = (?:const\((-?\d+)\)|(-?\d+)\b)", re.M)
_DEF = re.compile(r"^([A-Z][A-Z0-9_]*) = ", re.M)
_MODULE_ALIASES = ("md", "M", "msgdefs")


def constants(msgdefs_text: str) -> dict[str, int]:
    """The integer constants msgdefs defines, by name."""
    return {m.group(1): int(m.group(2) or m.group(3)) for m in _CONST.finditer(msgdefs_text)}


def _inline_attributes(text: str, consts: dict[str, int], still: set[str]) -> str:
    # md.NAME -> value, token by token (strings and comments are never touched)
    toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    lines = text.splitlines(keepends=True)
    edits = []  # (row, col_start, col_end, replacement), all on one line
    for i in range(len(toks) - 2):
        a, dot, b = toks[i], toks[i + 1], toks[i + 2]
        if (a.type == tokenize.NAME and a.string in _MODULE_ALIASES and dot.string == "."
                and b.type == tokenize.NAME and a.start[0] == b.end[0]):
            if i and toks[i - 1].string == ".":
                continue  # x.md.NAME: another object's attribute
            if b.string in consts:
                edits.append((a.start[0], a.start[1], b.end[1], str(consts[b.string])))
            else:
                still.add(b.string)
    for row, c0, c1, rep in sorted(edits, reverse=True):
        s = lines[row - 1]
        lines[row - 1] = s[:c0] + rep + s[c1:]
    return "".join(lines)


def _inline_from_imports(text: str, consts: dict[str, int], still: set[str]) -> str:
    # `from msgdefs import (A as B, C)`: integers become const() definitions, the rest
    # stays an import; the statement keeps its number of lines
    lines = text.splitlines(keepends=True)
    for node in reversed(ast.parse(text).body):
        if not (isinstance(node, ast.ImportFrom) and node.module == "msgdefs"):
            continue
        defs, kept = [], []
        for a in node.names:
            alias = a.asname or a.name
            if a.name in consts:
                v = consts[a.name]
                # const() takes small ints only; a bigger one is a plain global
                defs.append(f"{alias} = const({v})" if -(1 << 30) <= v < (1 << 30)
                            else f"{alias} = {v}")
            else:
                kept.append(a.name + (f" as {a.asname}" if a.asname else ""))
                still.add(a.name)
        stmts = defs + ([f"from msgdefs import {', '.join(kept)}"] if kept else [])
        n = (node.end_lineno or node.lineno) - node.lineno + 1
        lines[node.lineno - 1 : node.lineno - 1 + n] = ["; ".join(stmts or ["pass"]) + "\n"] + ["\n"] * (n - 1)
    return "".join(lines)


_ALIAS = re.compile(r"^(_?[A-Z][A-Z0-9_]*) = (?:md|M|msgdefs)\.([A-Z][A-Z0-9_]*)[ \t]*(#.*)?$",
                    re.M)


def _const_aliases(text: str, consts: dict[str, int]) -> str:
    # `_HDR = M.HDR_SIZE` at module level becomes `_HDR = const(8)`: inlined where the
    # module uses it (a global lookup on every use otherwise, in hot paths too)
    def rep(m: re.Match) -> str:
        v = consts.get(m.group(2))
        if v is None or not -(1 << 30) <= v < (1 << 30):
            return m.group(0)
        return f"{m.group(1)} = const({v})" + (f"  {m.group(3)}" if m.group(3) else "")

    return _ALIAS.sub(rep, text)


def inline_module(text: str, consts: dict[str, int], still: set[str]) -> str:
    """A firmware or board module with msgdefs' integers inlined; the names it still
    looks up in msgdefs are added to `still`."""
    text = _const_aliases(text, consts)
    text = _inline_from_imports(text, consts, still)
    text = _inline_attributes(text, consts, still)
    if "const(" in text and not re.search(r"^from micropython import .*\bconst\b", text, re.M):
        # const() of the new definitions: MicroPython's own, imported on the first line
        # of the module's code so that no line number moves
        text = _prepend_to_first_statement(text, "from micropython import const; ")
    return text


def _prepend_to_first_statement(text: str, stmt: str) -> str:
    lines = text.splitlines(keepends=True)
    toks = tokenize.generate_tokens(io.StringIO(text).readline)
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENCODING)
    for tok in toks:
        if tok.type in skip:
            continue
        if tok.type == tokenize.STRING and tok.start[1] == 0:
            # a module docstring: the statement goes on the line after it
            row = tok.end[0]
            lines[row - 1] = lines[row - 1].rstrip("\n") + "; " + stmt.rstrip("; ") + "\n"
            return "".join(lines)
        row = tok.start[0]
        lines[row - 1] = stmt + lines[row - 1]
        return "".join(lines)
    return stmt + text


def slim_msgdefs(text: str, still: set[str]) -> str:
    """msgdefs with only the names some module still looks up (the integers are inlined
    where they are used); dropped lines stay as blank lines."""
    out = []
    for line in text.splitlines(keepends=True):
        m = _DEF.match(line)
        if m and m.group(1) not in still:
            out.append("\n")
        else:
            out.append(line)
    return "".join(out)
