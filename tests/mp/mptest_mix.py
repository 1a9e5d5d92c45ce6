# Admixtures (firmware/guard.mix_limits, rx.check_mix, clinic.refill), under MicroPython
# with a fake board: each drug of a fill held to its own limits by the device itself,
# whatever the host let through; judged on the strokes the motor made.
import struct

import msgdefs as md
from fakehw import mix_bytes, reply, rx_blob

from mptest_pump import DAY, T0, run_until, started

MORPHINE, BUPIVACAINE, CLONIDINE = 1, 5, 6
M4 = 4_000_000  # morphine 4 mg/mL
B20 = ((BUPIVACAINE, 20_000_000),)  # + bupivacaine 20 mg/mL: 5 ng of it per ng of morphine
HOUR = 3600


def _program(p, h, t, **kw):
    return reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(**kw)), t))


def _bolus(p, h, t, ng, dur=600):
    return reply(p.command(h.cmd(md.T_CLINICIAN_BOLUS, struct.pack(md.CLINICIAN_BOLUS_FMT, ng, dur)), t))


def _refill(p, h, t, conc, drug=0, mix=()):
    body = struct.pack(md.REFILL_FMT, 18_000_000, conc, p.delivery.reservoir_nl, drug, mix_bytes(mix))
    return reply(p.command(h.cmd(md.T_REFILL, body), t))


def test_an_rx_whose_other_drug_breaks_its_own_limit_is_refused_by_the_device():
    # REQ: SR-MIX-01
    # morphine 5 mg/day is within morphine's 15 mg; its bupivacaine is 25 mg/day, over
    # bupivacaine's own 20 mg: the device refuses it (the host never sent it: crafted)
    hw, p, h = started(conc=M4, drug=MORPHINE, steps=((0, 3_000_000),), mix=B20)
    r = _program(p, h, T0 + 60, conc=M4, drug=MORPHINE, steps=((0, 5_000_000),), mix=B20)
    assert (r[2], r[3]) == (md.NACK_LIMIT, md.DENY_DAILY_LIMIT), r
    # the same worst case over the hour (bupivacaine 3.33 mg/h: 0.667 mg/h of morphine)
    r = _program(p, h, T0 + 60, conc=M4, drug=MORPHINE, steps=((0, 3_000_000),), mix=B20,
                 pb=(400_000, 600, 1800, 1))
    assert r[2] == 0, r  # one 2 mg bupivacaine bolus: within every limit
    r = _program(p, h, T0 + 60, conc=M4, drug=MORPHINE, steps=((0, 3_000_000),), mix=B20,
                 pb=(450_000, 600, 1800, 2))
    assert (r[2], r[3]) == (md.NACK_LIMIT, md.DENY_MAX_PER_HOUR), r
    # and a single bolus over bupivacaine's 2.5 mg (0.6 mg of morphine: 3 mg of it)
    r = _program(p, h, T0 + 60, conc=M4, drug=MORPHINE, steps=((0, 3_000_000),), mix=B20,
                 timed=((480, 600, 600_000),))
    assert (r[2], r[3]) == (md.NACK_LIMIT, md.DENY_MAX_BOLUS), r


def test_an_admixture_names_known_drugs_once_within_their_concentrations():
    # REQ: SR-MIX-01
    hw, p, h = started(conc=M4, drug=MORPHINE, steps=((0, 3_000_000),), mix=B20)
    for mix in (((99, 1_000_000),), ((BUPIVACAINE, 20_000_000), (BUPIVACAINE, 10_000_000)),
                ((MORPHINE, 1_000_000),), ((BUPIVACAINE, 0),)):
        r = _program(p, h, T0 + 60, conc=M4, drug=MORPHINE, steps=((0, 3_000_000),), mix=mix)
        assert (r[2], r[3]) == (md.NACK_INVALID, md.FIELD_DRUGS), (mix, r)
    r = _refill(p, h, T0 + 60, M4, MORPHINE, ((BUPIVACAINE, 40_000_000),))  # over 30 mg/mL
    assert (r[2], r[3]) == (md.NACK_LIMIT, md.DENY_MAX_CONCENTRATION), r
    # the prescription must name the reservoir's whole fill
    r = _program(p, h, T0 + 60, conc=M4, drug=MORPHINE, steps=((0, 3_000_000),))
    assert (r[2], r[3]) == (md.NACK_INVALID, md.FIELD_DRUGS), r


def test_boluses_stop_at_the_first_drug_of_the_mix_to_reach_its_daily_limit():
    # REQ: SR-MIX-01
    # basal 3 mg/day of morphine = 15 mg of bupivacaine: 5 mg of bupivacaine left in
    # 24 h (1 mg of morphine), where morphine alone would allow 12 mg more
    hw, p, h = started(conc=M4, drug=MORPHINE, steps=((0, 3_000_000),), mix=B20)
    t = T0 + HOUR
    given = 0
    for k in range(8):
        run_until(p, hw, t)
        r = _bolus(p, h, t, 400_000)  # 0.4 mg of morphine = 2 mg of bupivacaine
        if r[2] == 0:
            given += 1
        else:
            assert (r[2], r[3]) == (md.NACK_LIMIT, md.DENY_DAILY_LIMIT), (k, r)
        t += 2 * HOUR
    run_until(p, hw, T0 + DAY)
    assert given == 2
    # what the motor pushed in the first 24 h, as bupivacaine (20 ng per nL)
    pushed_nl = hw.motor.strokes * p.delivery.stroke_nl
    assert pushed_nl * 20 <= 20_000_000 + p.delivery.stroke_nl * 20, pushed_nl


def test_another_admixture_keeps_the_history_and_a_refill_naming_none_keeps_the_mix():
    # REQ: SR-MIX-02
    hw, p, h = started(conc=M4, drug=MORPHINE, steps=((0, 3_000_000),), mix=B20)
    run_until(p, hw, T0 + 12 * HOUR)
    before = p.rolling.sum(T0 + 12 * HOUR)
    t = T0 + 12 * HOUR
    assert _refill(p, h, t, M4)[2] == 0  # no drug named: the same fill, bupivacaine too
    assert p.plan.mix == mix_bytes(B20)
    assert [e[4:6] for e in hw.telemetry.events(md.EV_FILL_DRUG)][-1] == (BUPIVACAINE, 20_000_000)
    # a stronger bupivacaine: another fill; its prescription must be its own
    b10 = ((BUPIVACAINE, 10_000_000),)
    assert _refill(p, h, t + 60, M4, MORPHINE, b10)[2] == 0
    r = _program(p, h, t + 120, conc=M4, drug=MORPHINE, steps=((0, 3_000_000),), mix=B20)
    assert (r[2], r[3]) == (md.NACK_INVALID, md.FIELD_DRUGS), r
    assert _program(p, h, t + 120, conc=M4, drug=MORPHINE, steps=((0, 3_000_000),), mix=b10)[2] == 0
    # the old fill leaves the catheter; then the history is kept: morphine's ng are
    # morphine's (the new bupivacaine is weaker: counted as it was, never less)
    run_until(p, hw, t + DAY // 2)
    assert not p.plan.bridging()
    assert p.rolling.sum(t + DAY // 2) >= before
