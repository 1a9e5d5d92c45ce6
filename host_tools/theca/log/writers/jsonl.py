"""`--format jsonl`: one JSON object per frame, every field (the format of interface.md)."""

from __future__ import annotations

import numpy as np
from theca_protocol import names as N

from theca.log.frames import _D2, _FRAC, Selection, _iso_many, _iso_matrix, status_columns
from theca.log.records import Renderer, _dumps_str, to_json
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
        m[:, 1:21] = _iso_matrix(t)
    return is_set, m


_NULL = b"null"


def _status_segments(r: Renderer, col: dict[str, np.ndarray]) -> list[tuple]:
    """The layout of a STATUS line, in to_json's key order: ("c", text), ("i", ints),
    ("f", 0..999 as 3 digits), ("x", fixed-width bytes), ("n", set, bytes or null), or
    ("k", codes, table)."""
    res = col["reservoir_nl"].astype(np.int64)
    rate = col["rate_nl_day"].astype(np.int64)
    dnl = col["delivered_nl"].astype(np.int64)
    times = _iso_matrix(col["time"])
    modes = _cat(col["mode"], lambda m: N.MODES.get(m, f"mode_{m}"))
    alarms = _cat(col["alarms"], lambda m: to_json(N.alarm_names(m)))
    drugs = _cat(col["drug"], lambda d: "null" if (dn := r._drug(d)) is None else _dumps_str(dn))
    eta_set, eta = _null_or_iso(col["low_eta"])
    due_set, due = _null_or_iso(col["refill_due"])

    def i(name: str) -> tuple:
        return ("i", col[name].astype(np.int64))

    return [
        ("c", '{"kind":"status","t":"'), ("x", times), ("c", '","seq":'), i("seq"),
        ("c", ',"mode":"'), ("k", *modes), ("c", '","reservoir_ul":'), ("i", res // 1000),
        ("c", "."), ("f", res % 1000), ("c", ',"delivered_ul":'),
        ("i", col["delivered_ul"].astype(np.int64) + dnl // 1000), ("c", "."), ("f", dnl % 1000),
        ("c", ',"rate_ul_per_day":'), ("i", rate // 1000), ("c", "."), ("f", rate % 1000),
        ("c", ',"alarms":'), ("k", *alarms), ("c", ',"low_reservoir_eta":'), ("n", eta_set, eta),
        ("c", ',"step":'), i("step"), ("c", ',"drug":'), ("k", *drugs), ("c", ',"conc_ng_ml":'),
        i("conc_ng_ml"), ("c", ',"battery_days":'), i("battery_days"),
        ("c", ',"rolling_24h_ng":'), i("rolling_ng"), ("c", ',"boluses_24h":'), i("boluses_24h"),
        ("c", ',"flags":'), i("flags"), ("c", ',"acked":'), i("acked"), ("c", ',"rx_crc":'),
        i("rx_crc"), ("c", ',"refill_due":'), ("n", due_set, due), ("c", ',"heap_free":'),
        i("heap_free"), ("c", ',"heap_total":'), i("heap_total"), ("c", "}\n"),
    ]


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
        m[:, j : j + 2] = _D2[x // 10 ** (v + (v & 1) - 2 - j) % 100]
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


def _status_tail(r: Renderer, tl: tuple) -> str:
    # the STATUS fields that change rarely, as jsonl text
    step, drug, conc, batt, rolling, nb, flags, acked, rxcrc, ds = tl
    dn = r._drug(drug)
    return (
        f'"step":{step},"drug":{"null" if dn is None else _dumps_str(dn)},'
        f'"conc_ng_ml":{conc},"battery_days":{batt},"rolling_24h_ng":{rolling},'
        f'"boluses_24h":{nb},"flags":{flags},"acked":{acked},"rx_crc":{rxcrc},'
        f'"refill_due":{ds}'
    )


def _status_lines(r: Renderer, a: np.ndarray, starts: np.ndarray) -> list[str]:
    """jsonl lines of STATUS frames at `starts`, fields gathered column-wise with numpy
    and formatted line by line (short runs, and the reference for _status_text).

    Must equal to_json(r.record(frame)) exactly (a test checks), only faster.
    """
    col = status_columns(a, starts)
    seq = col["seq"].tolist()
    times = _iso_many(col["time"])
    eta = col["low_eta"]
    eta_s = _iso_many(eta)
    eta_s = [f'"{x}"' if e else "null" for x, e in zip(eta_s, eta.tolist(), strict=True)]
    res = col["reservoir_nl"].astype(np.int64)
    rate = col["rate_nl_day"].astype(np.int64)
    due = col["refill_due"]
    due_s = [f'"{x}"' if e else "null" for x, e in zip(_iso_many(due), due.tolist(), strict=True)]
    heap = zip(col["heap_free"].tolist(), col["heap_total"].tolist(), strict=True)
    head = zip(
        times, seq, col["mode"].tolist(), (res // 1000).tolist(), (res % 1000).tolist(),
        (col["delivered_ul"].astype(np.int64) + col["delivered_nl"] // 1000).tolist(),
        (col["delivered_nl"] % 1000).tolist(), (rate // 1000).tolist(),
        (rate % 1000).tolist(), col["alarms"].tolist(), eta_s, strict=True,
    )
    # The tail fields change rarely: format each distinct combination once.
    tails = list(zip(
        col["step"].tolist(), col["drug"].tolist(), col["conc_ng_ml"].tolist(),
        col["battery_days"].tolist(), col["rolling_ng"].tolist(), col["boluses_24h"].tolist(),
        col["flags"].tolist(), col["acked"].tolist(), col["rx_crc"].tolist(), due_s,
        strict=True,
    ))
    tail_cache: dict[tuple, str] = {}
    mode_cache: dict[int, str] = {}
    alarm_cache: dict[int, str] = {}
    out = []
    for (t, sq, mode, rq, rr, dul, dnl, aq, ar, alarms, es), tl, (hf, ht) in zip(
            head, tails, heap, strict=True):
        ts = tail_cache.get(tl)
        if ts is None:
            ts = _status_tail(r, tl)
            if len(tail_cache) < 4096:
                tail_cache[tl] = ts
        ms = mode_cache.get(mode)
        if ms is None:
            ms = mode_cache[mode] = N.MODES.get(mode, f"mode_{mode}")
        al = alarm_cache.get(alarms)
        if al is None:
            al = alarm_cache[alarms] = to_json(N.alarm_names(alarms))
        out.append(
            f'{{"kind":"status","t":"{t}","seq":{sq},"mode":"{ms}",'
            f'"reservoir_ul":{rq}.{_FRAC[rr]},"delivered_ul":{dul}.{_FRAC[dnl]},'
            f'"rate_ul_per_day":{aq}.{_FRAC[ar]},"alarms":{al},"low_reservoir_eta":{es},{ts},'
            f'"heap_free":{hf},"heap_total":{ht}}}'
        )
    return out



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
