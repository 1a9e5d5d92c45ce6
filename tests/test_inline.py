"""The build's inlining of msgdefs' integers (host_tools/theca/board/inline.py): values
replaced, strings still looked up, no line number moved, msgdefs cut to what is used."""

from __future__ import annotations

import ast

from theca import paths
from theca.board import build, inline

MSGDEFS = '''from micropython import const
A = const(7)
BIG = 1890050370
A_FMT = "<II"
UNUSED = const(3)
'''

SRC = '''# a module
import msgdefs as md
from msgdefs import (  # (a comment with parentheses)
    A as _A,
    A_FMT,
)

_X = md.A  # an alias


def f(b):
    return md.A + _A + md.BIG, md.A_FMT, b.md.A
'''


def test_integers_are_inlined_strings_stay_and_lines_do_not_move():
    consts = inline.constants(MSGDEFS)
    assert consts == {"A": 7, "BIG": 1890050370, "UNUSED": 3}
    still: set[str] = set()
    out = inline.inline_module(SRC, consts, still)
    assert out.count("\n") == SRC.count("\n")
    assert "_X = const(7)  # an alias" in out
    assert "_A = const(7)" in out and "from msgdefs import A_FMT" in out
    assert "return 7 + _A + 1890050370, md.A_FMT, b.md.A" in out  # b.md.A is not msgdefs
    assert out.startswith("# a module\nfrom micropython import const; import msgdefs as md")
    before = {n.name: n.lineno for n in ast.walk(ast.parse(SRC)) if isinstance(n, ast.FunctionDef)}
    after = {n.name: n.lineno for n in ast.walk(ast.parse(out)) if isinstance(n, ast.FunctionDef)}
    assert before == after
    assert still == {"A_FMT"}
    slim = inline.slim_msgdefs(MSGDEFS, still)
    assert 'A_FMT = "<II"' in slim and "UNUSED" not in slim and "A = const" not in slim
    assert slim.count("\n") == MSGDEFS.count("\n")


def test_every_board_s_sources_stay_valid_and_line_for_line():
    for board in ("unix", "rp2_pico", "esp32"):
        for src, text in build.prepared(board).items():
            orig = src.read_text()
            assert text.count("\n") == orig.count("\n"), src
            ast.parse(text, str(src))
            if src.name != "msgdefs.py":
                # no integer of msgdefs is looked up at run time any more
                consts = inline.constants((paths.FIRMWARE / "msgdefs.py").read_text())
                names = {n.attr for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Attribute)
                         and isinstance(n.value, ast.Name) and n.value.id in ("md", "M", "msgdefs")}
                assert not names & set(consts), (src, names & set(consts))
