# heapsize: 16m
# Power-up and restore (firmware/powerup.py, restore.py, snapshot.py) on littlefs2 (a RAM block device),
# under MicroPython.
import struct

import msgdefs as md
from msgfields import DEVICE_INFO_FIELDS
from fakehw import HW, Host, reply, rx_blob
from ramflash import mounted
from store import Store
import pump as P
from mptest_store import LIB, T0

def test_snapshot_roundtrip_restores_therapy_without_catch_up():
    # REQ: SR-PWR-02
    # REQ: SR-PWR-03
    # REQ: SR-LOG-02
    root, _ = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    h = Host()
    assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(pb=(100_000, 600, 3600, 4))), T0))[2] == 0
    assert reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT), T0 + 60))[2] == 0
    t = T0 + 60
    while t < T0 + 6 * 3600:
        hw.clock.t = t
        t = p.tick(t)
    res, dul, seq = p.delivery.reservoir_nl, p.delivery.delivered_ul, p.events.next_seq
    # reboot two hours later on the same flash
    hw2 = HW(T0 + 8 * 3600)
    p2 = P.Pump(hw2, T0 + 8 * 3600, LIB, md.BOOT_WATCHDOG, Store(root))
    assert p2.mode == P.RUNNING and p2.plan.rx is not None
    assert p2.delivery.reservoir_nl == res and p2.delivery.delivered_ul == dul
    assert p2.events.next_seq > seq  # numbers go on, never reused
    boot = hw2.telemetry.events(md.EV_BOOT)[0]
    assert boot[4] == md.BOOT_WATCHDOG
    gap = hw2.telemetry.events(md.EV_DELIVERY_GAP)
    assert gap and gap[0][4] >= 2 * 3600 - 60
    # the lockout and the counters survived: the same bolus again is in lockout? no: 8 h
    # later it is allowed, but the replayed command frame is refused
    assert p2.gate.n == 1
    assert p2.auth.last_ctr[md.ROLE_PATIENT] == 1
    # nothing caught up: the first tick after boot owes less than a stroke
    assert p2.engine.advance(T0 + 8 * 3600) == 0



def test_replayed_command_refused_after_reboot():
    # REQ: SR-AUTH-02
    root, _ = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    h = Host()
    f1 = h.cmd(md.T_PROGRAM, rx_blob())
    f2 = h.cmd(md.T_SUSPEND, struct.pack(md.SUSPEND_FMT, 0))
    assert reply(p.command(f1, T0))[2] == 0
    assert reply(p.command(f2, T0 + 5))[2] == 0
    p2 = P.Pump(HW(T0 + 100), T0 + 100, LIB, 0, Store(root))
    assert p2.mode == P.SUSPENDED
    r = reply(p2.command(f1, T0 + 100))
    assert r[2] == md.NACK_REPLAY
    # the same frame retried after the reboot gets the saved answer, not a second run
    r = reply(p2.command(f2, T0 + 100))
    assert r[2] == 0 and r[1] == md.T_SUSPEND



def test_clock_never_goes_back_behind_the_stored_state():
    # REQ: SR-PWR-03
    # A board without a battery-backed RTC boots at its epoch after a power loss.
    root, _ = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    assert reply(p.command(Host().cmd(md.T_PROGRAM, rx_blob(pb=(100_000, 600, 3600, 4))), T0))[2] == 0
    assert reply(p.command(Host().cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT, ctr=1), T0 + 100))[2] == 0
    hw2 = HW(1000)  # the clock came back at its epoch
    p2 = P.Pump(hw2, 1000, LIB, md.BOOT_POWER_ON, Store(root))
    assert hw2.clock.now() >= T0 + 100
    moved = hw2.telemetry.events(md.EV_TIME_CHANGED)
    assert moved and moved[0][4] == 1000 and moved[0][5] >= T0 + 100
    # the lockout still holds: no second bolus for an hour after the first
    r = reply(p2.command(Host().cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT, ctr=2), hw2.clock.now()))
    assert r[2] == md.NACK_LIMIT and r[3] == md.DENY_LOCKOUT


def test_prescription_threshold_survives_a_reboot():
    # REQ: SR-RES-04
    root, _ = mounted()
    hw = HW(T0, 4_000_000)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    h = Host()
    assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(low_ul=4500)), T0))[2] == 0
    assert p.alarms.active(md.ALARM_LOW_RESERVOIR)  # 4 mL left, below the prescription's 4.5 mL
    hw2 = HW(T0 + 3600, 4_000_000)
    p2 = P.Pump(hw2, T0 + 3600, LIB, md.BOOT_WATCHDOG, Store(root))
    assert p2.plan.low_nl == 4_500_000 and p2.alarms.active(md.ALARM_LOW_RESERVOIR)
    buf = bytearray(md.DEVICE_INFO_SIZE)
    p2.telemetry.info_into(p2, buf, 0)
    info = struct.unpack(md.DEVICE_INFO_FMT, buf)
    assert info[DEVICE_INFO_FIELDS.index("low_reservoir_nl")] == 4_500_000
