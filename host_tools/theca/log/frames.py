"""Whole batches of frames at once (numpy): their kinds, times, STATUS columns, and the
--type/--from/--to selection."""

from __future__ import annotations

import datetime as _dt

import numpy as np
import theca_protocol as tp
from theca_protocol import names as N

from theca.errors import BadInput
from theca.log import layout as L
from theca.log.devtime import EPOCH_UNIX, iso


def _np_dtype(fmt: str) -> np.dtype:
    # The struct format (itself derived from construct) as a packed numpy record.
    codes = {"B": "u1", "b": "i1", "H": "<u2", "h": "<i2", "I": "<u4", "i": "<i4"}
    out, k = [], 0
    num = ""
    for ch in fmt[1:]:
        if ch.isdigit():
            num += ch
            continue
        out.append((f"f{k}", f"S{num}" if ch == "s" else codes[ch]))
        num = ""
        k += 1
    return np.dtype(out)


_STATUS_DT = _np_dtype(L.STATUS.format)
_STATUS_COLS = tp.field_names(tp.Status)
assert _STATUS_DT.itemsize == L.STATUS.size
# --- frame kinds, columns and filters (vectorised) ------------------------------------------

#: The kinds of record a frame becomes (`kind` in every output format).
KINDS = ("device_info", "status", "event", "reply", "command", "unknown")
K_INFO, K_STATUS, K_EVENT, K_REPLY, K_COMMAND, K_UNKNOWN = range(len(KINDS))
_KIND_LUT = np.full(256, K_UNKNOWN, dtype=np.int8)
_KIND_LUT[tp.T_DEVICE_INFO] = K_INFO
_KIND_LUT[tp.T_STATUS] = K_STATUS
_KIND_LUT[tp.T_EVENT] = K_EVENT
_KIND_LUT[tp.T_REPLY] = K_REPLY
for _t in tp.COMMANDS:
    _KIND_LUT[_t] = K_COMMAND
_EXP_LEN = np.full(256, -1, dtype=np.int64)
for _t, _n in L.FIXED.items():
    _EXP_LEN[_t] = _n
_MIN_LEN = np.zeros(256, dtype=np.int64)
_MIN_LEN[tp.T_REPLY] = L.REPLY.size
for _t in tp.COMMANDS:
    _MIN_LEN[_t] = L.CMD_HEAD.size + tp.MAC_SIZE


def frame_kinds(a: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The kind (index into KINDS) of each frame, exactly as `Renderer.record` decides it.

    A frame of another version, a fixed-size payload of the wrong length or a
    payload too short for its type is `unknown`, as is an unknown type.
    """
    types = a[starts + 1]
    k = _KIND_LUT[types]
    plen = lens - (L.HDR_SIZE + L.CRC_SIZE)
    exp = _EXP_LEN[types]
    bad = (a[starts] != N.FRAME_VERSION) | ((exp >= 0) & (plen != exp)) | (plen < _MIN_LEN[types])
    k[bad] = K_UNKNOWN
    return k


def frame_times(a: np.ndarray, starts: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """The device time each record shows as `t`: an event's own time, else the header's."""
    tm = L.u32_at(a, starts + 4)
    ev = kinds == K_EVENT
    if ev.any():
        tm[ev] = L.u32_at(a, starts[ev] + L.HDR_SIZE)
    return tm


def status_columns(a: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    """STATUS frames at `starts` as columns in wire units: `time`, `seq` and every field.

    The field names and widths come from the construct definition (via the
    struct format); the arrays are copies, independent of the mapped file.
    """
    if not len(starts):
        out = {"time": np.zeros(0, np.int64), "seq": np.zeros(0, np.int64)}
        for k, name in enumerate(_STATUS_COLS):
            out[name] = np.zeros(0, _STATUS_DT[f"f{k}"])
        return out
    rows = a[starts[:, None] + np.arange(L.HDR_SIZE + L.STATUS.size)]
    out = {
        "time": rows[:, 4:8].copy().view("<u4")[:, 0].astype(np.int64),
        "seq": rows[:, 2].astype(np.int64) | rows[:, 3].astype(np.int64) << 8,
    }
    st = rows[:, L.HDR_SIZE:].copy().view(_STATUS_DT)[:, 0]
    for k, name in enumerate(_STATUS_COLS):
        out[name] = np.ascontiguousarray(st[f"f{k}"])
    return out


def parse_time(text: str, what: str) -> int:
    """An ISO-8601 time or date (UTC unless it says otherwise) as device time.

    BadInput naming `what` when it is not one.
    """
    s = text.strip()
    try:
        d = _dt.datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
    except ValueError:
        raise BadInput(
            f"{what}: {text!r} is not an ISO-8601 time such as 2026-01-03T10:00:00Z or 2026-01-03"
        ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.UTC)
    return int(d.timestamp()) - EPOCH_UNIX


class Selection:
    """Which frames to output: kinds (None: all) and a time range [t_from, t_to).

    Times are device times and compare with the time each record shows (`t`).
    """

    def __init__(self, kinds=None, t_from: int | None = None, t_to: int | None = None):
        self.kinds = None if kinds is None else frozenset(kinds)
        self.t_from = t_from
        self.t_to = t_to
        mask = np.ones(len(KINDS), dtype=bool)
        if self.kinds is not None:
            mask[:] = False
            for k in self.kinds:
                mask[KINDS.index(k)] = True
        self._kind_ok = mask

    @classmethod
    def from_args(cls, types: str | None, t_from: str | None, t_to: str | None) -> Selection:
        """From the command line's --type, --from and --to (BadInput on a bad value)."""
        kinds = None
        if types:
            kinds = [x.strip() for x in types.split(",") if x.strip()]
            bad = [k for k in kinds if k not in KINDS]
            if bad or not kinds:
                raise BadInput(
                    f"--type: unknown kind {', '.join(map(repr, bad)) or repr(types)}; "
                    f"choose from {', '.join(KINDS)} (comma-separated)"
                )
        f = parse_time(t_from, "--from") if t_from else None
        t = parse_time(t_to, "--to") if t_to else None
        if f is not None and t is not None and t <= f:
            raise BadInput(f"--to: {t_to} is not after --from {t_from}")
        return cls(kinds, f, t)

    @property
    def active(self) -> bool:
        """True when anything is filtered out."""
        return self.kinds is not None or self.t_from is not None or self.t_to is not None

    def apply(self, a: np.ndarray, starts: np.ndarray, lens: np.ndarray):
        """(selected, in_time_range, kinds) boolean/int arrays for a batch of frames."""
        kinds = frame_kinds(a, starts, lens)
        in_time = np.ones(len(starts), dtype=bool)
        if self.t_from is not None or self.t_to is not None:
            tm = frame_times(a, starts, kinds)
            if self.t_from is not None:
                in_time &= tm >= self.t_from
            if self.t_to is not None:
                in_time &= tm < self.t_to
        return in_time & self._kind_ok[kinds], in_time, kinds

    def describe(self) -> str:
        """The filter in words, for the summary."""
        parts = []
        if self.kinds is not None:
            parts.append("kinds " + ",".join(k for k in KINDS if k in self.kinds))
        if self.t_from is not None:
            parts.append("from " + iso(self.t_from))
        if self.t_to is not None:
            parts.append("to " + iso(self.t_to) + " (excluded)")
        return "; ".join(parts)


