# heapsize: 16m
# A flood on the link (issue 12): nothing sent with the patient key or without a valid
# MAC evicts a protected event from the last 30 days; identical denials are one record
# with a count; reads write nothing to flash. Under MicroPython, on littlefs2 in RAM.
import os

import msgdefs as md
from fakehw import HW, Host, reply, rx_blob
from ramflash import mounted
from store import Store

import pump as P

LIB = P.load_druglib("firmware/druglib.json")
T0 = 189_388_800
# frames of the flood: twice the ring in `make test`; `make soak` sets 100,000
FLOOD = int(os.getenv("THECA_FLOOD_FRAMES") or 2 * md.EVENT_SLOTS)
PB = (100_000, 600, 3600, 4)


def _protected(p):
    # (seq, code) of every protected event still in the log
    ev = p.events
    out = []
    for seq in range(ev.first_seq, ev.next_seq):
        r = ev.record(seq)
        if r is not None and md.EV_PROTECTED[r[8]]:
            out.append((seq, r[8]))
    return out


def _events(p, code):
    ev = p.events
    out = []
    for seq in range(ev.first_seq, ev.next_seq):
        r = ev.record(seq)
        if r is not None and r[8] == code:
            out.append(bytes(r))
    return out


def test_a_flood_of_denied_boluses_fills_no_log():
    # REQ: SR-LOG-04
    root, _ = mounted(blocks=512)
    hw = HW(T0)
    hw.telemetry.keep = False
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    h = Host()
    assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(pb=PB)), T0))[2] == 0
    assert reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT), T0 + 1))[2] == 0
    before = _protected(p)
    assert len(before) >= 3  # boot, prescription_changed, therapy_started
    t = T0 + 2
    for i in range(FLOOD):
        t = T0 + 2 + i // 8  # eight frames a second, as fast as the line takes them
        r = reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT), t))
        assert r[2] == md.NACK_LIMIT
    p.tick(t + md.DENIAL_WINDOW_S)
    assert _protected(p)[: len(before)] == before  # nothing protected evicted
    den = _events(p, md.EV_BOLUS_DENIED)
    counts = sum(int.from_bytes(r[22:26], "little") for r in den)
    assert counts == FLOOD, (counts, FLOOD)
    # two records a minute at most (the first of a window, then its count)
    minutes = (t - T0) // 60 + 2
    assert len(den) <= 2 * minutes, (len(den), minutes)


def test_a_flood_that_would_evict_a_protected_event_is_dropped():
    # REQ: SR-LOG-04
    # a ring of 64 slots, so that the flood's records do reach the oldest protected ones
    root, _ = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root, event_slots=64))
    h = Host()
    # no patient bolus in it: every press is denied (not_configured)
    assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob()), T0))[2] == 0
    before = _protected(p)
    t = T0
    for m in range(200):  # a denial a minute, each its own window: one record each
        t = T0 + 10 + 61 * m
        p.tick(t)
        reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT), t))
    now = _protected(p)
    assert now[: len(before)] == before, (before, now)
    assert p.events.dropped > 0
    # a device event may still overwrite them (only floodable ones are held back)
    for _ in range(80):
        p.log(t + 1, md.EV_STEP_CHANGED, 0, 0, 0, 0)
    assert _protected(p)[: len(before)] != before


def test_bad_macs_are_one_record_an_hour():
    # REQ: SR-LOG-04
    root, _ = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    h = Host()
    n0 = p.events.next_seq
    for i in range(2000):
        r = reply(p.command(h.cmd(md.T_GET_STATUS, key=b"\x5a" * 32, ctr=5 + i), T0 + i))
        assert r[2] == md.NACK_BAD_MAC
    p.tick(T0 + 3 * 3600)
    af = _events(p, md.EV_AUTH_FAILURE)
    assert 2 <= len(af) <= 3 and p.events.next_seq - n0 <= 4, af
    assert sum(int.from_bytes(r[10:14], "little") for r in af) == 2000


def test_reads_write_nothing_to_flash_and_a_change_writes_once():
    # REQ: SR-LOG-05
    root, bd = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    h = Host()
    assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(pb=PB)), T0))[2] == 0
    p.tick(T0 + 5)
    w = bd.writes
    for typ, body in ((md.T_GET_STATUS, b""), (md.T_GET_INFO, b""), (md.T_READ_RX, b""),
                      (md.T_CHALLENGE, b""), (md.T_LOG_READ, b"\x01\x00\x00\x00\x10")):
        for _ in range(20):
            assert reply(p.command(h.cmd(typ, body), T0 + 5))[2] == 0, typ
    assert bd.writes == w, (bd.writes - w, "block programs for 100 reads")
    st = p.store
    n = st.writes
    assert reply(p.command(h.cmd(md.T_SUSPEND, b"\x00\x00\x00\x00"), T0 + 5))[2] == 0
    # one snapshot and the command's own events (suspended, its mode change)
    assert st.writes - n <= 1 + 3, st.writes - n


def test_an_acknowledgement_records_what_it_silenced():
    # issue 13: `ack-alarm` without --alarm sent every bit and the log said
    # "bit_10 ... bit_31"; now the record names the alarms it silenced
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, None)
    h = Host()
    assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob()), T0))[2] == 0
    hw.battery.days = 50  # below 90 days: elective replacement
    p.tick(T0 + 1)
    assert p.alarms.active(md.ALARM_BATTERY_ERI)
    r = reply(p.command(h.cmd(md.T_ACK_ALARM, b"\xff\xff\xff\xff"), T0 + 2))
    assert r[2] == 0
    ev = hw.telemetry.events(md.EV_ALARM_ACKNOWLEDGED)
    assert len(ev) == 1 and ev[0][4] == 1 << md.ALARM_BATTERY_ERI, ev


def test_a_denied_patient_bolus_records_the_dose_asked_for():
    # issue 13: a patient's bolus_denied carried dose_ul=0.000
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, None)
    h = Host()
    assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(pb=PB)), T0))[2] == 0
    assert reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT), T0 + 1))[2] == 0
    r = reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT), T0 + 2))
    assert r[2] == md.NACK_LIMIT  # (in_progress: the first still runs)
    ev = hw.telemetry.events(md.EV_BOLUS_DENIED)
    # 0.1 mg at 10 mg/mL: 10 uL
    assert len(ev) == 1 and ev[0][6] == 10_000 and ev[0][7] == 1, ev
