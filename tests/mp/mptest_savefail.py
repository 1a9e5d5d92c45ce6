# heapsize: 16m
# A state-changing command whose save fails is refused (NACK fault) on its first try and
# on every retry, its events are not logged as done, and the pump takes the change up
# nowhere: it is safe until a restart, which finds the last durable state (issue 23,
# SR-PWR-04).
import msgdefs as md
from fakehw import HW, Host, reply, rx_blob
from ramflash import mounted
from store import Store
import pump as P
from mptest_flood import _events
from mptest_store import LIB, T0


def test_a_change_whose_save_fails_is_refused_on_every_try_and_never_taken_up():
    # REQ: SR-PWR-04
    root, bd = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    h = Host()
    old = rx_blob(steps=((0, 1_500_000),))
    assert reply(p.command(h.cmd(md.T_PROGRAM, old), T0))[2] == 0
    crc_old = p.plan.rx.crc
    t = T0 + 60
    hw.clock.t = t
    p.tick(t)  # (therapy brought up to t: the command's own tick has nothing to do)
    strokes = hw.motor.strokes
    changed = len(_events(p, md.EV_PRESCRIPTION_CHANGED))
    bd.fail = True  # the flash fails from here on
    new = h.cmd(md.T_PROGRAM, rx_blob(steps=((0, 3_000_000),)), t=t)
    r1 = reply(p.command(new, t))
    assert r1[2] == md.NACK_FAULT, r1
    r2 = reply(p.command(new, t + 1))  # the host's retry: the same answer, never an ACK
    assert r2[2] == md.NACK_FAULT, r2
    assert p.mode == P.SAFE and p.alarms.active(md.ALARM_INTERNAL_FAULT)
    assert len(_events(p, md.EV_PRESCRIPTION_CHANGED)) == changed  # not logged as done
    assert _events(p, md.EV_FAULT)
    assert hw.motor.strokes == strokes  # the failure was the command's save, not a stroke
    bd.fail = False  # the flash works again: still nothing changes before a restart
    r3 = reply(p.command(h.cmd(md.T_RESUME, t=t + 5), t + 5))
    assert r3[2] == md.NACK_FAULT, r3
    for k in range(10):
        p.tick(t + 60 * (k + 1))
    assert hw.motor.strokes == strokes  # the unsaved plan never delivers
    # the restart takes up the last durable state: the old prescription, running
    hw2 = HW(t + 3600)
    p2 = P.Pump(hw2, t + 3600, LIB, md.BOOT_WATCHDOG, Store(root))
    assert p2.plan.rx.crc == crc_old and p2.mode == P.RUNNING
    assert len(_events(p2, md.EV_PRESCRIPTION_CHANGED)) == changed
