# Property-test driver, called from tests/test_properties.py through MPWorker: runs the
# real pump core on a fake board and reports what a property checker needs to know.
import struct

import msgdefs as md
from fakehw import HW, Host, reply, rx_blob

import pump as P

NO_MIX = bytes(md.MIX_BYTES)  # (a fill of one drug)

_LIB = None
T0 = 189_388_800


def _lib():
    global _LIB
    if _LIB is None:
        _LIB = P.load_druglib("firmware/druglib.json")
    return _LIB


def _pb(p, h, tq, q, out):
    rr = reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT, t=tq), tq))
    if rr[2] == 0:
        out["pb_starts"].append(tq)
    else:
        out["denied"].append([tq, rr[3]])


def _cb(p, h, tq, q, out):
    p.command(h.cmd(md.T_CLINICIAN_BOLUS, struct.pack(md.CLINICIAN_BOLUS_FMT, q[2], q[3]), t=tq), tq)


def _refill(p, h, tq, q, out):
    # a refill visit: emptied (the pump's reservoir aspirated), then q[2] filled; the
    # pump is brought up to tq first, so the residual is what it holds at the refill
    p.tick(tq)
    residual = p.delivery.reservoir_nl
    body = struct.pack(md.REFILL_FMT, q[2], q[3], residual, 0, NO_MIX)
    rr = reply(p.command(h.cmd(md.T_REFILL, body, t=tq), tq))
    if rr[2] == 0:
        out["fills_nl"] += q[2] - residual


# request kind -> what it does to the pump (and records in the case's result)
_REQUESTS = {
    "pb": _pb,
    "cb": _cb,
    "refill": _refill,
    "suspend": lambda p, h, tq, q, out: p.command(h.cmd(md.T_SUSPEND, struct.pack(md.SUSPEND_FMT, 0), t=tq), tq),
    "resume": lambda p, h, tq, q, out: p.command(h.cmd(md.T_RESUME, t=tq), tq),
}


def run_case(case):
    """case: {"steps": [[start_min, ng_day]...], "conc": ng/mL, "drug": id,
    "timed": [[start_min, dur_s, dose_ng]...], "pb": [dose_ng, dur_s, lockout_s, max] or None,
    "reservoir_nl": n, "stroke_nl": n, "days": n, "requests": [[t_offset_s, kind, arg...]...]}
    kinds: "pb" patient bolus, "cb" clinician bolus (dose_ng, dur_s), "refill" (nl, conc),
    "suspend", "resume".
    Returns the pump's acceptance, the strokes (each time with the drug its strokes
    carried, exactly, in ng x 1e6: nL x ng/mL), the bolus starts, and the invariant
    checks made along the way."""
    hw = HW(T0, case["reservoir_nl"], case.get("stroke_nl", 250))
    hw.telemetry.keep = False
    p = P.Pump(hw, T0, _lib())
    h = Host()
    blob = rx_blob(steps=case["steps"], conc=case["conc"], drug=case["drug"],
                   timed=case.get("timed", ()), pb=case.get("pb"))
    r = reply(p.command(h.cmd(md.T_PROGRAM, blob, t=T0), T0))
    out = {"accepted": r[2] == 0, "nack": r[2], "strokes": [], "pb_starts": [],
           "fills_nl": case["reservoir_nl"], "monotonic": True, "conserved": True,
           "limit_ng": _lib()[case["drug"]]["max_ng_day"], "ng_per_stroke": [],
           "denied": []}
    if r[2] != 0:
        return out
    reqs = sorted(case.get("requests", []), key=lambda q: q[0])
    end = T0 + case["days"] * 86400
    t = T0
    i = 0
    last_delivered = 0
    strokes = out["strokes"]
    ngs = out["ng_per_stroke"]
    while t < end:
        nxt_req = T0 + reqs[i][0] if i < len(reqs) else end
        before = hw.motor.strokes
        hw.clock.t = t
        nxt = p.tick(t)
        n = hw.motor.strokes - before
        if n:
            strokes.append(t)
            ngs.append(n * p.delivery.stroke_nl * p.plan.drug_conc())
        d = p.delivery.delivered_ul * 1000 + p.delivery.delivered_nl
        if d < last_delivered:
            out["monotonic"] = False
        last_delivered = d
        if d + p.delivery.reservoir_nl != out["fills_nl"]:
            out["conserved"] = False
        if nxt_req <= nxt and i < len(reqs):
            q = reqs[i]
            i += 1
            tq = T0 + q[0]
            if tq < t:
                tq = t
            hw.clock.t = tq
            before = hw.motor.strokes
            _REQUESTS[q[1]](p, h, tq, q, out)
            n = hw.motor.strokes - before
            if n:
                strokes.append(tq)
                ngs.append(n * p.delivery.stroke_nl * p.plan.drug_conc())
            t = tq
        else:
            t = nxt if nxt < end else end
    out["delivered_nl"] = p.delivery.delivered_ul * 1000 + p.delivery.delivered_nl
    out["reservoir_nl"] = p.delivery.reservoir_nl
    out["stroke_count"] = hw.motor.strokes
    out["lockout_s"] = case["pb"][2] if case.get("pb") else 0
    return out
