# The catheter and priming (firmware/catheter.py, Pump._account) and the refill date
# (Pump._update_refill_due), under MicroPython, with a fake board: judged on the strokes
# the motor made.
import struct

import msgdefs as md
from msgfields import STATUS_FIELDS
from fakehw import reply, rx_blob

from mptest_pump import DAY, T0, run_until, started

NO_MIX = bytes(md.MIX_BYTES)  # (a fill of one drug)

STROKE = 250


def _st(p, t):
    fr = p.status_frame(t)
    return dict(zip(STATUS_FIELDS, struct.unpack_from(md.STATUS_FMT, fr, md.HDR_SIZE)))


def _catheter(p, h, t, nl):
    return reply(p.command(h.cmd(md.T_CATHETER, struct.pack(md.CATHETER_FMT, nl)), t))


def test_prime_fills_a_new_catheter_exempt_from_the_limits():
    # REQ: SR-CATH-01
    hw, p, h = started()  # morphine 10 mg/mL, 150 uL/day: 2500 ng a stroke
    t = T0 + 3600
    run_until(p, hw, t)
    counted0, strokes0 = p.rolling.sum(t), hw.motor.strokes
    assert _catheter(p, h, t, 150_000)[2] == 0
    assert _st(p, t)["flags"] & md.STATUS_FLAG_CATHETER_UNPRIMED
    assert [e[4] for e in hw.telemetry.events(md.EV_CATHETER_CHANGED)] == [150_000]
    assert reply(p.command(h.cmd(md.T_PRIME), t))[2] == 0
    started_ev = hw.telemetry.events(md.EV_PRIME_STARTED)
    assert [(e[4], e[5]) for e in started_ev] == [(150_000, 540)]  # at 1000 uL/h
    run_until(p, hw, t + 540)
    done = hw.telemetry.events(md.EV_PRIME_COMPLETED)
    assert [e[4] for e in done] == [150_000] and done[0][0] == t + 540
    pumped = (hw.motor.strokes - strokes0) * STROKE
    assert pumped >= 150_000  # the prime, and the basal on top
    assert not _st(p, t + 540)["flags"] & md.STATUS_FLAG_CATHETER_UNPRIMED
    # the drug that went into the catheter never reached the patient: not counted; what
    # the motor pushed beyond it is, every ng of it (10 ng per nL)
    assert p.rolling.sum(t + 540) - counted0 == (pumped - 150_000) * 10
    # primed: a second prime is refused
    r = reply(p.command(h.cmd(md.T_PRIME), t + 600))
    assert r[2] == md.NACK_INVALID and r[3] == md.FIELD_PRIMED


def test_an_unprimed_catheter_fills_from_the_basal():
    # REQ: SR-CATH-01
    hw, p, h = started()  # 600 strokes a day
    assert _catheter(p, h, T0, 100_000)[2] == 0  # 400 strokes to fill
    t = T0
    while _st(p, t)["flags"] & md.STATUS_FLAG_CATHETER_UNPRIMED and t < T0 + DAY:
        hw.clock.t = t
        t = p.tick(t)
    assert hw.motor.strokes == 400 and p.rolling.sum(t) == 0
    run_until(p, hw, T0 + DAY)
    assert p.rolling.sum(T0 + DAY) == (hw.motor.strokes - 400) * STROKE * 10


def test_catheter_and_prime_refusals():
    hw, p, h = started()
    for nl in (0, md.MAX_CATHETER_NL + 1):
        r = _catheter(p, h, T0, nl)
        assert r[2] == md.NACK_INVALID and r[3] == md.FIELD_VOLUME, r
    assert not hw.telemetry.events(md.EV_CATHETER_CHANGED)
    assert _catheter(p, h, T0, 150_000)[2] == 0
    assert reply(p.command(h.cmd(md.T_SUSPEND, struct.pack(md.SUSPEND_FMT, 0)), T0))[2] == 0
    r = reply(p.command(h.cmd(md.T_PRIME), T0 + 10))
    assert r[2] == md.NACK_LIMIT and r[3] == md.DENY_NOT_RUNNING  # the motor must be running
    # the patient key may not change or prime the catheter
    r = reply(p.command(h.cmd(md.T_PRIME, role=md.ROLE_PATIENT), T0 + 20))
    assert r[2] == md.NACK_FORBIDDEN
    assert not hw.telemetry.events(md.EV_PRIME_STARTED)


def test_refill_due_assumes_every_allowed_patient_bolus():
    # REQ: SR-RES-05
    # 150 uL/day basal, 4 boluses of 10 uL a day allowed: 190 uL/day at worst. 10 mL in
    # the reservoir, 8 mL above the threshold: 42 days and 2 h (whole hours, rounded down)
    hw, p, h = started(reservoir_nl=10_000_000, pb=(100_000, 600, 3600, 4))
    p.tick(T0)
    st = _st(p, T0)
    assert st["refill_due"] == T0 + 42 * DAY + 2 * 3600, (st["refill_due"] - T0) / 3600
    assert not st["flags"] & md.STATUS_FLAG_REFILL_DUE_STABILITY
    due = st["refill_due"]
    # the patient takes every bolus allowed, every day: the alarm (judged on the strokes
    # the motor made) does not come before the date, and comes within a day of it
    t = T0
    n = 0
    while not p.alarms.active(md.ALARM_LOW_RESERVOIR):
        if (t - T0) % DAY < 4 * 3600:  # 00:00, 01:00, 02:00, 03:00: the lockout is 1 h
            if reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT), t))[2] == 0:
                n += 1
        run_until(p, hw, t + 3600)
        t += 3600
    assert n >= 4 * ((t - T0) // DAY), n  # every bolus allowed was taken
    assert 10_000_000 - hw.motor.strokes * STROKE < 2_000_000
    assert due <= t <= due + DAY, (due, t)


def test_refill_due_follows_the_fills_stability():
    # REQ: SR-RES-05
    # ziconotide 25 mcg/mL at 2.4 mcg/day: 96 uL/day, 18 mL would last 187 days; the
    # label's first fill lasts 14 days, later fills 40
    hw, p, h = started(rx=rx_blob(drug=7, conc=25_000, steps=((0, 2_400),)))
    p.tick(T0)
    st = _st(p, T0)
    assert st["refill_due"] == T0 + 14 * DAY, (st["refill_due"] - T0) / 3600
    assert st["flags"] & md.STATUS_FLAG_REFILL_DUE_STABILITY
    t = T0 + 12 * DAY
    run_until(p, hw, t)
    body = struct.pack(md.REFILL_FMT, 18_000_000, 25_000, p.delivery.reservoir_nl, 0, NO_MIX)
    assert reply(p.command(h.cmd(md.T_REFILL, body), t))[2] == 0
    p.tick(t)
    assert _st(p, t)["refill_due"] == t + 40 * DAY
