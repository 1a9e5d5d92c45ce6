"""Derived views of the construct definitions: struct formats and the fingerprint.

The fast paths (host decoder, firmware) use `struct` formats; they come from
walking the construct objects here, never from a second hand-written table,
so they cannot drift. The schema fingerprint is a CRC-32 of a canonical text
of every layout: any change of a field's name, type, order, or a type id
changes it.
"""

from __future__ import annotations

import re
import struct
import zlib

from construct import (
    Array,
    Bytes,
    Const,
    Default,
    FixedSized,
    FormatField,
    GreedyBytes,
    IfThenElse,
    Rebuild,
    Renamed,
    StringEncoded,
    Struct,
)

from .messages import AUX_STRUCTS, MESSAGE_LIST

_FMT_NAMES = {
    "B": "u8",
    "b": "i8",
    "H": "u16",
    "h": "i16",
    "L": "u32",
    "I": "u32",
    "l": "i32",
    "i": "i32",
    "Q": "u64",
    "q": "i64",
}
# construct spells u32 as 'L'; 'I' reads better next to MicroPython code.
_FMT_NORMAL = {"L": "I", "l": "i"}


def _fmt_char(ff: FormatField) -> str:
    if not ff.fmtstr.startswith("<"):
        raise TypeError(f"not little-endian: {ff.fmtstr}")
    c = ff.fmtstr[1:]
    return _FMT_NORMAL.get(c, c)


def unwrap(sc):
    """The construct under a field's name and documentation (`"name" / u8 * "doc"` is a
    Renamed around a Renamed)."""
    while isinstance(sc, Renamed):
        sc = sc.subcon
    return sc


def describe(sc) -> str:
    """Canonical text of a construct, used for the fingerprint and the spec (a field's
    documentation is not part of it)."""
    if isinstance(sc, Renamed):
        return f"{sc.name}:{describe(unwrap(sc))}"
    if isinstance(sc, Struct):
        return "(" + ",".join(describe(s) for s in sc.subcons) + ")"
    if isinstance(sc, FormatField):
        return _FMT_NAMES[sc.fmtstr[1:]]
    if isinstance(sc, Const):
        v = sc.value
        return f"const[{v.hex() if isinstance(v, bytes) else v}]"
    if isinstance(sc, StringEncoded) and isinstance(sc.subcon, FixedSized):
        return f"str[{sc.subcon.length}]"
    if isinstance(sc, Bytes):
        return f"bytes[{sc.length}]"
    if sc is GreedyBytes:
        return "bytes[*]"
    if type(sc).__name__ == "AllButLast":
        return f"bytes[*-{sc.n}]"
    if isinstance(sc, (Rebuild, Default)):
        return describe(sc.subcon)
    if isinstance(sc, IfThenElse):
        # a field from a version on (`If(this.version >= 3, ...)`): its condition kept
        cond = re.sub(r"this\['(\w+)'\]", r"\1", str(sc.condfunc))
        return f"if[{cond}]{describe(sc.thensubcon)}"
    if isinstance(sc, Array):
        # str(this.n) is "this['n']"; keep only the field name.
        count = re.sub(r"^this\['(\w+)'\]$", r"\1", str(sc.count))
        return f"array[{count}]{describe(sc.subcon)}"
    raise TypeError(f"no canonical form for {sc!r}")


def _field_code(sc) -> str:
    if isinstance(sc, FormatField):
        return _fmt_char(sc)
    if isinstance(sc, (Rebuild, Default)):
        return _field_code(sc.subcon)
    if isinstance(sc, Const):
        return _field_code(sc.subcon)
    if isinstance(sc, StringEncoded) and isinstance(sc.subcon, FixedSized):
        return f"{sc.subcon.length}s"
    if isinstance(sc, Bytes) and isinstance(sc.length, int):
        return f"{sc.length}s"
    raise TypeError(f"not fixed-size: {sc!r}")


def fixed_format(st: Struct) -> str:
    """The struct format ('<...') of a fixed-size Struct; TypeError if it is not fixed."""
    return "<" + "".join(_field_code(unwrap(s)) for s in st.subcons)


def field_names(st: Struct) -> tuple[str, ...]:
    """Field names of a Struct, in wire order."""
    return tuple(s.name for s in st.subcons)


def is_fixed(st) -> bool:
    """True if `st` is a Struct of fixed-size fields only."""
    if not isinstance(st, Struct):
        return False
    try:
        fixed_format(st)
    except TypeError:
        return False
    return True


def compiled(st: Struct) -> struct.Struct:
    """A struct.Struct for a fixed-size construct Struct (sizes checked equal)."""
    s = struct.Struct(fixed_format(st))
    if s.size != st.sizeof():
        raise AssertionError(f"struct size {s.size} != construct size {st.sizeof()}")
    return s


def canonical_text() -> str:
    """The text the schema fingerprint is the CRC-32 of: every layout, one a line."""
    lines = []
    for name in sorted(AUX_STRUCTS):
        lines.append(f"{name} {describe(AUX_STRUCTS[name])}")
    for m in sorted(MESSAGE_LIST, key=lambda m: m.type):
        line = f"0x{m.type:02x} {m.name} {m.direction} {describe(m.payload)}"
        if m.reply is not None:
            line += f" reply {describe(m.reply)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def fingerprint() -> int:
    """CRC-32 of `canonical_text()` (u32)."""
    return zlib.crc32(canonical_text().encode("ascii"))


#: The schema fingerprint this package speaks.
SCHEMA: int = fingerprint()
