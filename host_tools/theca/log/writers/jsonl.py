"""`--format jsonl`: one JSON object per frame, every field (the format of interface.md)."""

from __future__ import annotations

import numpy as np
from theca_protocol import names as N

from theca.log.frames import _FRAC, Selection, _iso_many, status_columns
from theca.log.records import Renderer, _dumps_str, to_json
from theca.log.stats import Summary
from theca.log.tlog import Tlog
from theca.log.writers.base import Out, Writer, batches, fast_lines


def _status_lines(r: Renderer, a: np.ndarray, starts: np.ndarray) -> list[str]:
    """jsonl lines of STATUS frames at `starts`, fields gathered column-wise with numpy.

    The common case on a long log; must equal to_json(r.record(frame)) exactly
    (a test checks), only faster.
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
            step, drug, conc, batt, rolling, nb, flags, acked, rxcrc, ds = tl
            dn = r._drug(drug)
            ts = (
                f'"step":{step},"drug":{"null" if dn is None else _dumps_str(dn)},'
                f'"conc_ng_ml":{conc},"battery_days":{batt},"rolling_24h_ng":{rolling},'
                f'"boluses_24h":{nb},"flags":{flags},"acked":{acked},"rx_crc":{rxcrc},'
                f'"refill_due":{ds}'
            )
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
        n += fast_lines(t, a, b, lambda st: _status_lines(r, a, st), to_json, r, out)
    out.flush()
    return n


WRITER = Writer("jsonl", "jsonl (one JSON object per frame)", False, write_jsonl)
