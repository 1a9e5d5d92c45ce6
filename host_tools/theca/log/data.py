"""A whole log in memory, column-wise, for the report and the trumpet."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from theca.log import layout as L
from theca.log.frames import K_EVENT, K_INFO, K_STATUS, frame_kinds, status_columns
from theca.log.records import Renderer
from theca.log.stats import Summary
from theca.log.tlog import Tlog

# --- a whole log in memory, for report and trumpet ---------------------------------------------


class LogData(NamedTuple):
    """A decoded log: STATUS frames as columns, events and device infos as records.

    `status` holds numpy arrays in file order (see `status_columns`, plus
    `delivered_total_nl`); each event record has `time` (device time) beside
    its ISO `t`; `summary` is `Summary.result()`.
    """

    path: str
    status: dict
    events: list
    infos: list
    summary: dict


def read_log(path) -> LogData:
    """Read a whole .tlog for analysis (TlogError if it is not one)."""
    r = Renderer()
    with Tlog(path) as t:
        s = Summary(t)
        a = s.a
        data = t.data
        parts, events, infos = [], [], []
        for b in t.batches():
            s.add(b.starts, b.lengths)
            kinds = frame_kinds(a, b.starts, b.lengths)
            st = b.starts[kinds == K_STATUS]
            if len(st):
                parts.append(status_columns(a, st))
            for i in np.flatnonzero((kinds == K_EVENT) | (kinds == K_INFO)).tolist():
                off, n = int(b.starts[i]), int(b.lengths[i])
                rec = r.record(data[off : off + n])
                if kinds[i] == K_EVENT:
                    rec["time"] = L.EVENT.unpack_from(data, off + L.HDR_SIZE)[0]
                    events.append(rec)
                else:
                    infos.append(rec)
        s.anomalies = list(t.anomalies)
        summary = s.result()
        del s, a, data
    if parts:
        col = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    else:
        col = status_columns(np.zeros(0, np.uint8), np.zeros(0, np.int64))
    col["delivered_total_nl"] = col["delivered_ul"].astype(np.int64) * 1000 + col["delivered_nl"]
    return LogData(str(path), col, events, infos, summary)


# --- command line --------------------------------------------------------------------------


