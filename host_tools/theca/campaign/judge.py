"""The invariants every campaign run is judged by, from the twin's physical truth (what the
mechanism pumped, when, and what reached the catheter tip, in true time) and from what the
pump logged, never from what the pump believes alone. Each is a verdict column of
runs.parquet ("pass" or "fail") with figures beside it.

- tip_limits: every drug at the catheter tip within its daily and hourly hard limits in
  every true-time window (--truth's max_24h_ng, max_1h_ng).
- patient_boluses: the patient boluses the pump gave (its ACK to the scenario's request, at
  the request's true time) at most the prescription's max_per_day in any 24 h, each at least
  its lockout after the one before.
- volume: the reservoir's volume conserved (start + filled - aspirated = pumped + left),
  and the pump's belief about the reservoir never above the truth by more than a stroke.
- events: the event log numbered 1, 2, 3... with none missing and none given twice with
  other content (across power cuts).
- stops_alarmed: every stop of delivery longer than 5 minutes past the plan's slowest
  stroke interval, while the pump is powered and not suspended by a command, has an alarm.
- no_crash: the twin ended as planned (no traceback, no hang).
"""

from __future__ import annotations

from pathlib import Path

import theca_protocol as tp
from theca_protocol import names as N
from theca_protocol.storage import TruthRecord

from theca.inputs.scenario import Scenario
from theca.log.frames import parse_time

INVARIANTS = ("tip_limits", "patient_boluses", "volume", "events", "stops_alarmed", "no_crash")
STOP_GRACE_S = 300
_TRUTH = tp.compiled(TruthRecord)  # the twin's truth stream: true time, volume, tip
_OFF_KINDS = ("power_loss", "storage")


def _t(iso: str) -> int:
    # an ISO time of the log -> device seconds
    return parse_time(iso, "log time")


def judge(sc: Scenario, res: dict, tlog: Path, stream: bytes, lib, truth_doc: dict) -> dict:
    """{invariant: "pass"|"fail", figure: value, "why": ...} for one run."""
    from theca.log.records import records
    from theca.log.tlog import TlogError

    try:
        recs = list(records(tlog)) if tlog.exists() else []
    except TlogError:
        recs = []  # (a twin that died before its log began: no_crash says so)
    events = [r for r in recs if r.get("kind") == "event"]
    replies = {r["cmd_id"]: r for r in recs if r.get("kind") == "reply"}
    statuses = [r for r in recs if r.get("kind") == "status"]
    strokes = [(t, v) for t, v, _ in (_TRUTH.unpack_from(stream, o)
                                      for o in range(0, len(stream) - _TRUTH.size + 1, _TRUTH.size))]
    out: dict = {}
    why: list[str] = []
    _tips(truth_doc, lib, out, why)
    _boluses(sc, replies, out, why)
    _volume(sc, res["truth"] or {}, statuses, replies, out, why)
    _events(events, out, why)
    _stops(sc, replies, events, strokes, res["truth"] or {}, out, why)
    # commands the pump could not hear (sent while it was off): not failures, but the
    # pump's view of the world lacks them
    out["commands_unanswered"] = sum(1 for k, _ in _commands(sc) if k not in replies)
    crashed = res["returncode"] != 0 or "Traceback" in (res.get("stderr") or "")
    out["no_crash"] = "fail" if crashed else "pass"
    if crashed:
        tail = (res.get("stderr") or "").strip().splitlines()[-1:] or [f"exit {res['returncode']}"]
        why.append(f"no_crash: {tail[0][:200]}")
    out["why"] = "; ".join(why)
    return out


def _tips(doc: dict, lib, out: dict, why: list) -> None:
    day = hour = 0.0
    ok = True
    for name, row in (doc.get("tip") or {}).items():
        d = lib.find(name)
        if d is None:
            continue
        fd, fh = row["max_24h_ng"] / d.max_ng_day, row["max_1h_ng"] / d.max_ng_hour
        day, hour = max(day, fd), max(hour, fh)
        if fd > 1 or fh > 1:
            ok = False
            why.append(f"tip_limits: {name} {row['max_24h_ng'] / 1e6:.4g} mg in 24 h "
                       f"({fd:.0%} of its limit), {row['max_1h_ng'] / 1e6:.4g} mg in 1 h ({fh:.0%})")
    out["tip_limits"] = "pass" if ok else "fail"
    out["worst_24h_pct"] = round(day * 100, 2)
    out["worst_1h_pct"] = round(hour * 100, 2)


def _commands(sc: Scenario):
    from theca.twin.simulate import scenario_commands

    return list(enumerate(scenario_commands(sc), 1))


def _rx_at(sc: Scenario, replies: dict, t: int):
    # the prescription in force at true time t: the last one programmed and acknowledged
    rx = sc.prescription
    for k, (_name, ev) in _commands(sc):
        if ev is not None and ev.action == "program" and ev.at <= t:
            rep = replies.get(k)
            if rep is not None and rep.get("result") == "ack":
                rx = ev.prescription
    return rx


def _boluses(sc: Scenario, replies: dict, out: dict, why: list) -> None:
    given = [ev.at for k, (name, ev) in _commands(sc)
             if ev is not None and ev.action == "patient_bolus"
             and (replies.get(k) or {}).get("result") == "ack"]
    ok = True
    for i, t in enumerate(given):
        rx = _rx_at(sc, replies, t)
        pb = rx.pb if rx is not None else None
        if pb is None:
            ok = False
            why.append(f"patient_boluses: one given at {_iso(t)} with none prescribed")
            continue
        if i and t - given[i - 1] < pb.lockout_s:
            ok = False
            why.append(f"patient_boluses: {_iso(t)} only {t - given[i - 1]} s after the last "
                       f"(lockout {pb.lockout_s} s)")
        n = sum(1 for g in given[: i + 1] if g > t - 86400)
        if n > pb.max_per_day:
            ok = False
            why.append(f"patient_boluses: {n} in the 24 h to {_iso(t)} (at most {pb.max_per_day})")
    out["patient_boluses"] = "pass" if ok else "fail"
    out["boluses_given"] = len(given)


def _lost_refill(sc: Scenario, replies: dict) -> bool:
    # a refill the clinician made while the pump could not hear it (off: a power cut):
    # the pump cannot know of it, and a clinician would have been told and tried again
    return any(ev is not None and ev.action == "refill" and k not in replies
               for k, (_name, ev) in _commands(sc))


def _volume(sc: Scenario, phys: dict, statuses: list, replies: dict, out: dict,
            why: list) -> None:
    if not phys:
        out["volume"] = "fail"
        why.append("volume: no truth (the twin did not end)")
        return
    start = sc.reservoir_nl
    lhs = start + phys.get("filled_nl", 0) - phys.get("aspirated_nl", 0)
    rhs = phys["pumped_nl"] + phys["reservoir_nl"]
    ok = lhs == rhs
    if not ok:
        why.append(f"volume: {lhs} nL in, {rhs} nL pumped and left")
    over = 0
    if statuses and not _lost_refill(sc, replies):
        belief = round(statuses[-1]["reservoir_ul"] * 1000)
        over = belief - phys["reservoir_nl"]
        if over > sc.stroke_nl:
            ok = False
            why.append(f"volume: the pump believes {belief} nL left, the reservoir holds "
                       f"{phys['reservoir_nl']} nL")
    out["volume"] = "pass" if ok else "fail"
    out["reservoir_over_truth_nl"] = over
    out["pumped_ul"] = phys["pumped_nl"] / 1000


def _events(events: list, out: dict, why: list) -> None:
    seen: dict[int, dict] = {}
    ok = True
    for e in events:
        n = e["event_seq"]
        body = {k: v for k, v in e.items() if k not in ("seq", "kind")}
        if n in seen and seen[n] != body:
            ok = False
            why.append(f"events: #{n} given twice with other content ({seen[n]['event']}, "
                       f"{body['event']})")
        seen.setdefault(n, body)
    if seen:
        missing = sorted(set(range(1, max(seen) + 1)) - set(seen))
        if missing:
            ok = False
            why.append(f"events: {len(missing)} number(s) missing, first #{missing[0]}")
    out["events"] = "pass" if ok else "fail"
    out["events_logged"] = len(seen)


def _true_time(events: list, phys: dict):
    # device time -> true time: the offset moves only at a logged clock change; checked
    # against the twin's own offset at the end (None: the log does not account for it)
    changes = []
    off = 0
    for e in sorted(events, key=lambda e: e["event_seq"]):
        if e["event"] == "time_changed":
            off += _t(e["new_time"]) - _t(e["old_time"])
            changes.append((e["event_seq"], off))
    if phys and phys.get("rtc_offset", 0) != off:
        return None
    by_seq = dict()
    cur = 0
    for e in sorted(events, key=lambda e: e["event_seq"]):
        if changes and changes[0][0] <= e["event_seq"]:
            cur = changes.pop(0)[1]
        by_seq[e["event_seq"]] = _t(e["t"]) - cur
    return by_seq


def _stops(sc: Scenario, replies: dict, events: list, strokes: list, phys: dict, out: dict,
           why: list) -> None:
    interval = _slowest_interval(sc)
    limit = interval + STOP_GRACE_S
    exempt = [(f.at, f.at + (f.duration_s or 0)) for f in sc.faults if f.kind in _OFF_KINDS]
    exempt += _suspensions(sc, replies)
    true_t = _true_time(events, phys)
    alarms: list[tuple[int, int]] = []  # (true time raised, cleared or end)
    if true_t is not None:
        open_: dict[str, int] = {}
        for e in sorted(events, key=lambda e: e["event_seq"]):
            name = e.get("alarm")
            if e["event"] == "alarm_raised" and name in N.CRITICAL_ALARMS | {"suspended_too_long"}:
                open_.setdefault(name, true_t[e["event_seq"]])
            elif e["event"] == "alarm_cleared" and name in open_:
                alarms.append((open_.pop(name), true_t[e["event_seq"]]))
        alarms += [(t0, sc.end) for t0 in open_.values()]
    times = [sc.start] + [t for t, v in strokes if v] + [sc.end]
    worst = 0
    ok = True
    for a, b in zip(times, times[1:], strict=False):
        if b - a <= limit:
            continue
        unexplained = _outside(a, b, exempt)
        if unexplained <= limit:
            continue
        if true_t is None:
            alarmed = any(e["event"] == "alarm_raised" for e in events)
        else:
            # raised within the limit of the stop's start, its time off or suspended
            # not counted (a pump that boots into a stall finds it at its first strokes)
            late = a + (b - a - unexplained) + limit + 60
            alarmed = any(r <= late and c >= a for r, c in alarms)
        if not alarmed:
            worst = max(worst, unexplained)
            ok = False
    if not ok:
        why.append(f"stops_alarmed: delivery stopped {worst} s with no alarm (the plan's "
                   f"slowest stroke comes every {interval} s)")
    out["stops_alarmed"] = "pass" if ok else "fail"
    out["longest_unalarmed_stop_s"] = worst


def _outside(a: int, b: int, spans: list[tuple[int, int]]) -> int:
    # seconds of [a, b) outside every span
    left = b - a
    for s, e in spans:
        lo, hi = max(a, s), min(b, e)
        if hi > lo:
            left -= hi - lo
    return max(left, 0)


def _suspensions(sc: Scenario, replies: dict) -> list[tuple[int, int]]:
    # suspended by a command (suspend .. resume, mri prepare .. check), in true time
    out = []
    since = None
    for k, (_name, ev) in _commands(sc):
        if ev is None or (replies.get(k) or {}).get("result") != "ack":
            continue
        if ev.action in ("suspend", "mri_prepare") and since is None:
            since = ev.at
        elif ev.action in ("resume", "mri_check") and since is not None:
            out.append((since, ev.at))
            since = None
    if since is not None:
        out.append((since, sc.end))
    return out


def _slowest_interval(sc: Scenario) -> int:
    # the longest the plan waits between strokes: the slowest basal step of any
    # prescription of the scenario (a stroke of stroke_nl at that volume rate)
    slow = None
    rxs = [sc.prescription] + [e.prescription for e in sc.events if e.action == "program"
                               and e.prescription is not None]
    for rx in rxs:
        for s in rx.steps:
            nl_day = s.rate_ng_day * 1_000_000 // max(rx.conc_ng_ml, 1)
            slow = nl_day if slow is None else min(slow, nl_day)
    if not slow:
        return 86400
    return -(-sc.stroke_nl * 86400 // slow)


def _iso(t: int) -> str:
    from theca.log.devtime import iso

    return iso(t)
