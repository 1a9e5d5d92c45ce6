# heapsize: 16m
# Stored state that survives damage (issue 23, SR-STO-01..03): two copies of the state, the
# journal and the event log as witnesses, an alarm naming the damage, and a flash whose
# writes fail halting delivery until it takes them again. Judged from the mechanism's
# strokes (the fake motor), not from what the pump believes.
import os
import struct

import msgdefs as md
from fakehw import HW, Host, reply, rx_blob
from ramflash import mounted
from store import Store
import pump as P
from mptest_flood import _events
from mptest_store import LIB, T0

PB = (100_000, 600, 3600, 4)  # patient bolus: 0.1 mg, 10 min, lockout 1 h, 4 a day
RES0 = 20_000_000


def _used_pump(root, hours=6):
    # a pump that ran `hours` with one patient bolus: (hw, pump, host, time)
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    h = Host()
    assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(pb=PB)), T0))[2] == 0
    assert reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT), T0 + 60))[2] == 0
    t = T0 + 60
    while t < T0 + hours * 3600:
        hw.clock.t = t
        t = p.tick(t)
    return hw, p, h, t


def _flip(path, at):
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes((b[0] ^ 0x10,)))


def _damage(p2):
    # the storage_damaged alarm's detail (STORAGE_DAMAGE bits), from its raise event
    evs = _events(p2, md.EV_ALARM_RAISED)
    got = [struct.unpack_from(md.EVENT_FMT, e, 0) for e in evs]
    got = [g for g in got if g[4] == md.ALARM_STORAGE_DAMAGED]
    return got[-1][6] if got else None


def test_one_damaged_copy_of_the_state_is_taken_up_from_the_other():
    # REQ: SR-STO-01
    root, _ = mounted()
    hw, p, h, t = _used_pump(root)
    res, gate_n = p.delivery.reservoir_nl, p.gate.n
    _flip(root + "/theca/state.bin", 60)
    hw2 = HW(t + 60)
    p2 = P.Pump(hw2, t + 60, LIB, md.BOOT_POWER_ON, Store(root))
    # nothing forgotten: the reservoir, the bolus history, the prescription, delivering
    assert p2.delivery.reservoir_nl == res and p2.gate.n == gate_n
    assert p2.plan.rx is not None and p2.mode == P.RUNNING
    assert p2.alarms.active(md.ALARM_STORAGE_DAMAGED) and _damage(p2) == 1  # state_copy
    t2 = t + 120
    for _ in range(30):
        hw2.clock.t = t2
        t2 = p2.tick(t2)
    assert hw2.motor.strokes > 0


def test_a_lost_state_never_boots_as_new_nor_over_estimates_nor_forgets():
    # REQ: SR-STO-02
    # REQ: SR-STATE-01
    root, _ = mounted()
    hw, p, h, t = _used_pump(root)
    truth_left = RES0 - hw.motor.strokes * 250  # what the mechanism really holds
    window = p.rolling.sum(t)
    seq = p.events.next_seq
    os.remove(root + "/theca/state.bin")
    os.remove(root + "/theca/state.bak")
    hw2 = HW(t + 60)
    p2 = P.Pump(hw2, t + 60, LIB, md.BOOT_POWER_ON, Store(root))
    assert p2.delivery.reservoir_nl <= truth_left  # never over-estimated
    assert p2.delivery.reservoir_nl >= truth_left - 250  # (the journal's: within a stroke)
    assert p2.alarms.active(md.ALARM_STORAGE_DAMAGED) and _damage(p2) & 2  # state_lost
    assert p2.alarms.active(md.ALARM_RX_INVALID) and p2.mode != P.STOPPED  # not a new pump
    assert p2.events.next_seq > seq  # the log goes on: no number is issued twice
    assert p2.plan.conc == 0 or p2.plan.drug == 1
    assert p2.rolling.sum(t + 60) >= window  # the dose history counts, as recent
    # the clinician programs the pump again: a patient bolus is still denied (the history
    # of the last 24 h is unknown: it counts as recent), the basal runs
    h2 = Host()
    assert reply(p2.command(h2.cmd(md.T_PROGRAM, rx_blob(pb=PB), t=t + 120), t + 120))[2] == 0
    r = reply(p2.command(h2.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT, t=t + 180), t + 180))
    assert r[2] == md.NACK_LIMIT, r
    assert p2.mode == P.RUNNING


def test_a_damaged_journal_counts_one_more_stroke_and_says_so():
    # REQ: SR-STO-02
    root, _ = mounted()
    hw, p, h, t = _used_pump(root, hours=2)
    truth_left = RES0 - hw.motor.strokes * 250
    st = Store(root)
    newest = st.journal_last()[0]
    st.close()
    _flip(root + "/theca/journal.bin", (newest % md.JOURNAL_SLOTS) * md.JOURNAL_SIZE + 10)
    hw2 = HW(t + 60)
    p2 = P.Pump(hw2, t + 60, LIB, md.BOOT_POWER_ON, Store(root))
    assert p2.delivery.reservoir_nl <= truth_left
    assert _damage(p2) & 4  # journal


def test_an_erased_journal_is_bounded_by_the_hour_a_save_can_be_old():
    # REQ: SR-STO-02
    root, _ = mounted()
    hw, p, h, t = _used_pump(root, hours=3)
    truth_left = RES0 - hw.motor.strokes * 250
    os.remove(root + "/theca/journal.bin")
    hw2 = HW(t + 60)
    p2 = P.Pump(hw2, t + 60, LIB, md.BOOT_POWER_ON, Store(root))
    assert p2.delivery.reservoir_nl <= truth_left
    assert _damage(p2) & 4


def test_an_erased_event_log_never_reissues_a_number():
    # REQ: SR-STO-02
    root, _ = mounted()
    hw, p, h, t = _used_pump(root, hours=1)
    seq = p.events.next_seq
    os.remove(root + "/theca/events.bin")
    hw2 = HW(t + 60)
    p2 = P.Pump(hw2, t + 60, LIB, md.BOOT_POWER_ON, Store(root))
    boot = hw2.telemetry.events(md.EV_BOOT)[0]
    assert boot[1] >= seq  # its event number comes after every one issued before
    assert _damage(p2) & 8  # events


def test_only_the_clinician_clears_storage_damaged():
    # REQ: SR-STO-01
    root, _ = mounted()
    hw, p, h, t = _used_pump(root, hours=1)
    _flip(root + "/theca/state.bak", 60)
    hw2 = HW(t + 60)
    p2 = P.Pump(hw2, t + 60, LIB, md.BOOT_POWER_ON, Store(root))
    bit = 1 << md.ALARM_STORAGE_DAMAGED
    r = reply(p2.command(h.cmd(md.T_ACK_ALARM, struct.pack(md.ACK_ALARM_FMT, bit),
                                role=md.ROLE_PATIENT, t=t + 70), t + 70))
    assert r[2] == 0 and p2.alarms.active(md.ALARM_STORAGE_DAMAGED)  # silenced only
    r = reply(p2.command(h.cmd(md.T_ACK_ALARM, struct.pack(md.ACK_ALARM_FMT, bit), t=t + 80),
                         t + 80))
    assert r[2] == 0 and not p2.alarms.active(md.ALARM_STORAGE_DAMAGED)


def test_a_failing_flash_halts_delivery_and_it_resumes_when_writes_work():
    # REQ: SR-STO-03
    root, bd = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    assert reply(p.command(Host().cmd(md.T_PROGRAM, rx_blob(steps=((0, 15_000_000),))), T0))[2] == 0
    t = T0
    for _ in range(20):
        hw.clock.t = t
        t = p.tick(t)
    n = hw.motor.strokes
    assert n > 0
    bd.fail = True
    t_fail = t
    while t < t_fail + 1800:
        hw.clock.t = t
        t = p.tick(t)
    # no stroke without its journal: the mechanism did not move while the flash failed
    assert hw.motor.strokes == n
    assert p.alarms.active(md.ALARM_FLASH_FAULT) and p.mode == P.HALTED
    bd.fail = False
    t_ok = t
    while t < t_ok + 1800:
        hw.clock.t = t
        t = p.tick(t)
    assert not p.alarms.active(md.ALARM_FLASH_FAULT) and p.mode == P.RUNNING
    assert hw.motor.strokes > n
    # the events the flash did not take while it failed are on it now
    raised = _events(p, md.EV_ALARM_RAISED)
    assert raised and p.events.unwritten_from == 0
    p2 = P.Pump(HW(t + 60), t + 60, LIB, md.BOOT_POWER_ON, Store(root))
    assert p2.events.next_seq > p.events.next_seq - 1


def test_a_lost_state_takes_up_the_admixture_the_log_last_recorded():
    # REQ: SR-MIX-02
    # REQ: SR-STO-02
    from fakehw import mix_bytes

    root, _ = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    h = Host()
    assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(pb=PB)), T0))[2] == 0
    b20 = ((5, 20_000_000),)  # + bupivacaine 20 mg/mL
    body = struct.pack(md.REFILL_FMT, 18_000_000, 4_000_000, p.delivery.reservoir_nl, 1,
                       mix_bytes(b20))
    assert reply(p.command(h.cmd(md.T_REFILL, body), T0 + 60))[2] == 0
    os.remove(root + "/theca/state.bin")
    os.remove(root + "/theca/state.bak")
    p2 = P.Pump(HW(T0 + 120), T0 + 120, LIB, md.BOOT_POWER_ON, Store(root))
    # the fill is the log's: morphine 4 mg/mL with bupivacaine, so that a prescription
    # that forgets the bupivacaine is refused and bupivacaine's limits hold again
    assert (p2.plan.drug, p2.plan.conc, p2.plan.mix) == (1, 4_000_000, mix_bytes(b20))
    h2 = Host()
    r = reply(p2.command(h2.cmd(md.T_PROGRAM, rx_blob(conc=4_000_000), t=T0 + 180), T0 + 180))
    assert (r[2], r[3]) == (md.NACK_INVALID, md.FIELD_DRUGS), r
    r = reply(p2.command(h2.cmd(md.T_PROGRAM, rx_blob(conc=4_000_000, mix=b20), t=T0 + 180),
                         T0 + 180))
    assert r[2] == 0, r
