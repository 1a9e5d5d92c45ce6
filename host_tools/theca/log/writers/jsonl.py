"""`--format jsonl`: one JSON object per frame, every field (the format of interface.md)."""

from __future__ import annotations

import numpy as np
from theca_protocol import names as N

from theca.log import fields as F
from theca.log.devtime import D2, FRAC, iso, iso_many, iso_matrix
from theca.log.frames import Selection, status_columns
from theca.log.records import Renderer, dumps_str, to_json
from theca.log.stats import Summary
from theca.log.tlog import Tlog
from theca.log.writers.base import Out, Writer, batches, fast_lines

# --- STATUS lines assembled as bytes, a run of same-shaped lines at a time ----------------
#
# A long log's STATUS frames change little from one to the next: the digit counts of their
# numbers and their names (mode, alarms, drug) stay the same for thousands of frames. Such a
# run of lines has one layout, so it is built as one uint8 matrix, a column slice per field,
# and written out whole: no Python per line. Lines of a run shorter than _MIN_RUN (values
# whose digit counts flicker) go through the per-line formatter below; both give the same
# text (a test compares them, and both with the generic record formatter).

_P10 = np.array([10**k for k in range(1, 20)], dtype=np.uint64)
_MIN_RUN = 64


def _ndigits(v: np.ndarray) -> np.ndarray:
    """Decimal digits of non-negative integers."""
    return 1 + np.searchsorted(_P10, v.astype(np.uint64), side="right")


def _cat(codes: np.ndarray, name) -> tuple[np.ndarray, list[bytes]]:
    """A column of codes as (index, table of distinct texts): name(code) once per code."""
    u, inv = np.unique(codes, return_inverse=True)
    return inv.astype(np.int64), [name(c).encode() for c in u.tolist()]


def _null_or_iso(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # (is set, '"ISO"' as an (n, 22) matrix): 0 is no time (JSON null)
    is_set = (t != 0).astype(np.int64)
    m = np.empty((len(t), 22), np.uint8)
    if is_set.any():  # most logs have no low-reservoir horizon or refill date for long
        m[:, 0] = m[:, 21] = ord('"')
        m[:, 1:21] = iso_matrix(t)
    return is_set, m


_NULL = b"null"


def _status_segments(r: Renderer, col: dict[str, np.ndarray]) -> list[tuple]:
    """The layout of a STATUS line, in the field model's order (to_json's key order):
    ("c", text), ("i", ints), ("f", 0..999 as 3 digits), ("x", fixed-width bytes),
    ("n", set, bytes or null), or ("k", codes, table)."""
    segs: list[tuple] = [("c", '{"kind":"status","t":"'), ("x", iso_matrix(col["time"])),
                         ("c", '","seq":'), ("i", col["seq"].astype(np.int64))]
    for f in F.STATUS_FIELDS:
        segs.append(("c", f',"{f.name}":'))
        segs += _field_segments(r, f, col)
    segs.append(("c", "}\n"))
    return segs


def _milli(f: F.Field, col: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    # a milli field as (whole, thousandths), int64 columns
    v = col[f.raw[0]].astype(np.int64)
    if f.kind == "milli2":
        nl = col[f.raw[1]].astype(np.int64)
        return v + nl // 1000, nl % 1000
    return v // 1000, v % 1000


def _names(r: Renderer, f: F.Field):
    # a code-like field's value as JSON text, from its raw code
    if f.kind == "code":
        return lambda c: dumps_str(F.code_name(f, c))
    if f.kind == "alarm_mask":
        return lambda m: to_json(N.alarm_names(m))
    return lambda d: "null" if (dn := r.drug_name(d)) is None else dumps_str(dn)


def _field_segments(r: Renderer, f: F.Field, col: dict[str, np.ndarray]) -> list[tuple]:
    x = col[f.raw[0]]
    if f.kind == "int":
        return [("i", x.astype(np.int64))]
    if f.kind in ("milli", "milli2"):
        q, rr = _milli(f, col)
        return [("i", q), ("c", "."), ("f", rr)]
    if f.kind == "time":
        return [("n", *_null_or_iso(x))]
    return [("k", *_cat(x, _names(r, f)))]


def _layout_cuts(segs: list[tuple], n: int) -> np.ndarray:
    # where a line's layout differs from the line before: a number's digit count, a name
    cut = np.zeros(max(n - 1, 0), bool)
    for s in segs:
        if s[0] == "i":
            k = _ndigits(s[1])
        elif s[0] in "kn":
            k = s[1]
        else:
            continue
        cut |= k[1:] != k[:-1]
    return np.flatnonzero(cut) + 1


def _digit_matrix(x: np.ndarray, v: int) -> np.ndarray:
    """v decimal digits of each of x (all under 10**v) as an (m, v) matrix of ASCII, two
    digits at a time from a table."""
    m = np.empty((len(x), v + (v & 1)), np.uint8)
    for j in range(0, v + (v & 1), 2):  # an odd count starts with a pair whose first is 0
        m[:, j : j + 2] = D2[x // 10 ** (v + (v & 1) - 2 - j) % 100]
    return m[:, v & 1 :]


def _run_bytes(segs: list[tuple], a: int, b: int) -> bytes:
    """Lines a..b, which share one layout, as bytes: what is the same in every line of the
    run (text, names, nulls, numbers that do not change) is joined into one constant, so
    only the fields that change are written column by column."""
    m = b - a
    parts: list[tuple[int, bytes | np.ndarray]] = []  # (column, text) or (column, matrix)
    const = bytearray()
    w = 0

    def put(v) -> None:
        nonlocal w, const
        if const:
            parts.append((w, bytes(const)))
            w += len(const)
            const = bytearray()
        if v is not None:
            parts.append((w, v))
            w += v.shape[1]

    for s in segs:
        kind = s[0]
        if kind == "c":
            const += s[1].encode()
        elif kind == "k":
            const += s[2][int(s[1][a])]
        elif kind == "n" and not s[1][a]:
            const += _NULL
        elif kind in "if":
            x = s[1][a:b]
            v = 3 if kind == "f" else int(_ndigits(x[:1])[0])
            if x[0] == x[-1] and (x == x[0]).all():
                const += f"{int(x[0]):0{v}d}".encode()
            else:
                put(_digit_matrix(x, v))
        else:  # "x", or a set "n": fixed-width bytes per line
            put(s[2 if kind == "n" else 1][a:b])
    put(None)
    out = np.empty((m, w), np.uint8)
    for c, p in parts:
        if isinstance(p, bytes):
            out[:, c : c + len(p)] = np.frombuffer(p, np.uint8)
        else:
            out[:, c : c + p.shape[1]] = p
    return out.tobytes()


def _status_text(r: Renderer, a: np.ndarray, starts: np.ndarray, min_run: int = _MIN_RUN) -> str:
    """The jsonl lines of STATUS frames at `starts`, each ended by a newline: runs of at
    least `min_run` same-shaped lines as matrices, the rest line by line."""
    col = status_columns(a, starts)
    n = len(starts)
    segs = _status_segments(r, col)
    cut = _layout_cuts(segs, n)
    bounds = [0, *cut.tolist(), n]
    out: list[str] = []
    slow: list[int] = []  # pending short runs: (first, end) pairs, formatted together

    def flush_slow() -> None:
        if slow:
            idx = np.concatenate([np.arange(x, y) for x, y in zip(slow[::2], slow[1::2],
                                                                   strict=True)])
            out.append("".join(x + "\n" for x in _status_lines(r, a, starts[idx])))
            slow.clear()

    for x, y in zip(bounds, bounds[1:], strict=False):
        if y - x >= min_run:
            flush_slow()
            out.append(_run_bytes(segs, x, y).decode("ascii"))
        else:
            slow += (x, y)
    flush_slow()
    return "".join(out)


def _texts(x: np.ndarray, text) -> list[str]:
    # text(v) of every value of column x: a column that does not change in the run (most
    # fields of most runs) is formatted once, a code column once per distinct code
    if not len(x):
        return []
    if (x == x[0]).all():
        return [text(x[0].item())] * len(x)
    return [text(v) for v in x.tolist()]


def _field_texts(r: Renderer, f: F.Field, col: dict[str, np.ndarray]) -> list[str]:
    # field `f` of every line as JSON text
    x = col[f.raw[0]]
    if f.kind == "int":
        return _texts(x, str)
    if f.kind in ("milli", "milli2"):
        q, rr = _milli(f, col)
        return _texts(q * 1000 + rr, lambda v: f"{v // 1000}.{FRAC[v % 1000]}")
    if f.kind == "time":
        return _texts(x, lambda t: f'"{iso(t)}"' if t else "null")
    inv, table = _cat(x, _names(r, f))  # each distinct code named once
    names = [t.decode() for t in table]
    return [names[i] for i in inv.tolist()]


#: A STATUS line with its fields' texts in the model's order (str.format, one call a line).
_LINE = ('{{"kind":"status","t":"{}","seq":{}'
         + "".join(f',"{f.name}":{{}}' for f in F.STATUS_FIELDS) + "}}")


def _status_lines(r: Renderer, a: np.ndarray, starts: np.ndarray) -> list[str]:
    """jsonl lines of STATUS frames at `starts`, fields gathered column-wise with numpy
    and formatted field by field (short runs, and the reference for _status_text).

    Must equal to_json(r.record(frame)) exactly (a test checks), only faster.
    """
    col = status_columns(a, starts)
    cols = [iso_many(col["time"]), col["seq"].tolist()]
    cols += [_field_texts(r, f, col) for f in F.STATUS_FIELDS]
    fmt = _LINE.format
    return [fmt(*row) for row in zip(*cols, strict=True)]


def write_jsonl(t: Tlog, stream, summary: Summary, sel: Selection | None = None) -> int:
    """Write every (selected) frame of `t` to `stream` as a JSON line."""
    r = Renderer()
    a = summary.a
    out = Out(stream)
    n = 0
    for b in batches(t, summary, sel):
        n += fast_lines(t, a, b, lambda st: _status_lines(r, a, st), to_json, r, out,
                        lambda st: _status_text(r, a, st))
    out.flush()
    return n


WRITER = Writer("jsonl", "jsonl (one JSON object per frame)", False, write_jsonl)
