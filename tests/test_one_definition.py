"""One definition of the protocol: no module outside protocol/ (and the file generated from
it, firmware/msgdefs.py) keeps its own copy of a layout, a code table or a protocol
constant. Grep-level, on the product's code: firmware/, boards/ and host_tools/.

Tests are not checked: they build frames by hand on purpose, as an oracle independent of
the definition they test.

What counts as a copy:
- a struct format literal ("<II", or any string given to struct.pack/unpack/Struct);
- a dict literal that pairs codes with the protocol's names (an ALARMS, MODES... copy),
  or a sequence of the NACK field names;
- a number only the protocol defines: the epoch, the SET_TIME bounds, the .tlog record
  mark, the geometry defaults, a message type id written in hex.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "protocol"))

from theca_protocol import messages as M  # noqa: E402
from theca_protocol import names as N  # noqa: E402

SCOPE = ("firmware", "boards", "host_tools")
GENERATED = {ROOT / "firmware" / "msgdefs.py"}

_STRUCT_FNS = {"pack", "pack_into", "unpack", "unpack_from", "calcsize", "iter_unpack", "Struct"}
_FORMAT = re.compile(r"^[<>=!@]?(?:\d*[xcbB?hHiIlLqQnNefdspP])+$")
_PREFIXED = re.compile(r"^[<>=!@](?:\d*[xcbB?hHiIlLqQnNefdspP])+$")
_TABLES = {name: t for name, t in N.TABLES.items()} | {"INVALID": dict(enumerate(N.INVALID_FIELDS, 1))}
#: Numbers only the protocol (or protocol/theca_protocol) defines.
_NUMBERS = {
    N.EPOCH_UNIX: "EPOCH_UNIX",
    N.UTC_MAX: "UTC_MAX",
    N.DEFAULT_CAPACITY_NL: "DEFAULT_CAPACITY_NL",
    N.MAX_CAPACITY_NL: "MAX_CAPACITY_NL",
    N.DEFAULT_CATHETER_NL: "DEFAULT_CATHETER_NL",
    N.DEFAULT_LOW_RESERVOIR_NL: "DEFAULT_LOW_RESERVOIR_NL",
    N.MAX_RATE_BOUND_NL_H: "MAX_RATE_BOUND_NL_H",
    M.MAX_FRAME: "MAX_FRAME",
}
#: Message type ids of commands and REPLY, and the .tlog mark: written in hex, a copy.
_HEX_CODES = {t for t in M.MESSAGES if t >= 0x40} | {M.TLOG_MARK}


def product_files() -> list[Path]:
    out = []
    for d in SCOPE:
        out += [p for p in (ROOT / d).rglob("*.py") if p not in GENERATED]
    return sorted(out)


def _is_struct_call(node: ast.Call) -> bool:
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr in _STRUCT_FNS
            and isinstance(f.value, ast.Name) and f.value.id == "struct")


def _table_copy(node: ast.Dict) -> str | None:
    pairs = []
    for k, v in zip(node.keys, node.values, strict=True):
        if isinstance(k, ast.Constant) and isinstance(v, ast.Constant):
            pairs.append((k.value, v.value))
    for name, table in _TABLES.items():
        hits = sum(1 for a, b in pairs if table.get(a) == b or (isinstance(a, str) and table.get(b) == a))
        if hits >= 3:
            return name
    return None


def _field_list_copy(node: ast.Tuple | ast.List) -> bool:
    vals = [e.value for e in node.elts if isinstance(e, ast.Constant)]
    return len(vals) >= 4 and all(isinstance(v, str) and v in N.INVALID_FIELDS for v in vals)


def copies_in(text: str) -> list[tuple[int, str]]:
    """(line, what) for every copy of a protocol definition in Python source `text`."""
    found: list[tuple[int, str]] = []
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_struct_call(node) and node.args:
            a = node.args[0]
            if isinstance(a, ast.Constant) and isinstance(a.value, str):
                found.append((node.lineno, f"struct format literal {a.value!r}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _PREFIXED.match(node.value) and _FORMAT.match(node.value):
                found.append((node.lineno, f"struct format literal {node.value!r}"))
        elif isinstance(node, ast.Constant) and type(node.value) is int and node.value in _NUMBERS:
            found.append((node.lineno, f"{node.value} is the protocol's {_NUMBERS[node.value]}"))
        elif isinstance(node, ast.Constant) and node.value == M.TLOG_MAGIC:
            found.append((node.lineno, "the .tlog magic"))
        elif isinstance(node, ast.Dict):
            t = _table_copy(node)
            if t:
                found.append((node.lineno, f"a copy of the code table {t}"))
        elif isinstance(node, (ast.Tuple, ast.List)) and _field_list_copy(node):
            found.append((node.lineno, "a copy of INVALID_FIELDS"))
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if (tok.type == tokenize.NUMBER and tok.string[:2].lower() == "0x"
                and int(tok.string, 16) in _HEX_CODES):
            found.append((tok.start[0], f"{tok.string}: a message type id or the .tlog mark"))
    # a line is reported once, whatever found it
    seen, out = set(), []
    for line, what in sorted(found):
        if line not in seen:
            seen.add(line)
            out.append((line, what))
    return out


def test_no_copy_of_the_protocol_outside_its_definition():
    bad = []
    for p in product_files():
        for line, what in copies_in(p.read_text()):
            bad.append(f"{p.relative_to(ROOT)}:{line}: {what}")
    assert not bad, "copies of protocol definitions (use theca_protocol / msgdefs):\n" + "\n".join(bad)


def test_the_checker_finds_each_kind_of_copy():
    # each kind of copy the rule names, in a module it has never seen
    src = '''
import struct
HEAD = "<IBI"
def f(b):
    return struct.unpack_from("I", b, 4)
ALARM_BITS = {"low_reservoir": 0, "empty_reservoir": 1, "motor_stall": 2}
MODES = {0: "stopped", 1: "running", 2: "suspended"}
FIELDS = ("length", "version", "n_steps", "n_timed")
EPOCH = 1577836800
CAP = 20_000_000
def is_cmd(t):
    return 0x40 <= t < 0x80
MAGIC = b"THECALOG"
'''
    found = dict(copies_in(src))
    assert set(found) == {3, 5, 6, 7, 8, 9, 10, 12, 13}, found
    assert "format" in found[3] and "format" in found[5]
    assert "ALARMS" in found[6] and "MODES" in found[7] and "INVALID_FIELDS" in found[8]
    assert "EPOCH_UNIX" in found[9] and "DEFAULT_CAPACITY_NL" in found[10]


def test_what_is_not_a_copy():
    # numpy dtypes, ordinary words and numbers, and names used through the definition
    src = '''
import numpy as np
import msgdefs as md
a = np.zeros(3, dtype="<u4")
b = {"B": "u1", "H": "u2"}
DAY = 86400
x = struct.unpack_from(md.EVENT_FMT, buf, 0)
y = "<unknown>"
'''
    assert copies_in(src) == []
