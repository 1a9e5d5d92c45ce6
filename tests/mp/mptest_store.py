# heapsize: 16m
# The firmware's persistent store on littlefs2 (a RAM block device), under MicroPython.
import struct

import micropython
import msgdefs as md
from fakehw import HW, Host, heap_blocks_taken, reply, rx_blob
from ramflash import mounted
from store import EVENT_SLOTS, Store

import pump as P

LIB = P.load_druglib("firmware/druglib.json")
T0 = 189_388_800


def test_event_ring_holds_at_least_10000_events():
    # REQ: SR-LOG-01
    assert EVENT_SLOTS >= 10_000


def test_event_ring_wraps_and_records_it():
    # REQ: SR-LOG-01
    root, _ = mounted()
    st = Store(root, event_slots=16)
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, st)
    for i in range(40):
        p.log(T0 + i, md.EV_SUSPENDED, 1, i, 0, 0)
    wraps = hw.telemetry.events(md.EV_LOG_WRAPPED)
    assert len(wraps) >= 2, wraps  # one per lap of the ring
    ev = p.events
    # each in order, after the event that made the lap, and exact: what it says is kept
    # is the oldest readable once it is written
    sent = [e[1] for e in hw.telemetry.events()]
    assert sent == sorted(sent), sent
    last = wraps[-1]
    assert last[4] == last[1] - 16 + 1, last
    causes = [e for e in hw.telemetry.events() if e[1] == last[1] - 1]
    assert causes and (causes[0][1] - 1) % 16 == 0  # the event that began the lap
    assert ev.next_seq - ev.first_seq == 16
    # the oldest readable is really on flash, the overwritten one is gone
    assert ev.record(ev.first_seq) is not None
    assert ev.record(ev.first_seq - 1) is None
    # a new boot finds the same bounds on flash
    st2 = Store(root, event_slots=16)
    assert st2.log_bounds() == (ev.next_seq, ev.first_seq)


def test_journal_newest_record_wins_and_a_torn_one_is_ignored():
    # REQ: SR-PWR-01
    root, _ = mounted()
    st = Store(root)
    st.journal(T0, 1000, 5, 250, 7, 1, 40)
    st.journal(T0 + 1, 750, 5, 500, 8, 1, 50)
    assert st.journal_last() == (2, T0 + 1, 750, 5, 8, 500, 1, 50)
    # tear the newest record (a power cut in the middle of its write)
    with open(root + "/theca/journal.bin", "r+b") as f:
        f.seek(2 * 32 + 10)
        f.write(b"\xa5\xa5")
    st2 = Store(root)
    assert st2.journal_last()[0] == 1


def test_journaled_stroke_path_allocates_nothing():
    # REQ: SR-HEAP-01
    root, _ = mounted()
    hw = HW(T0)
    hw.telemetry.keep = False
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    assert reply(p.command(Host().cmd(md.T_PROGRAM, rx_blob(steps=((0, 15_000_000),), conc=20_000_000)), T0))[2] == 0
    t = T0
    for _ in range(30):
        t = p.tick(t)
    p.save(t)  # keep the hourly snapshot out of the locked window
    before = hw.motor.strokes
    micropython.heap_lock()
    try:
        for _ in range(60):
            t = p.tick(t)
    finally:
        micropython.heap_unlock()
    assert hw.motor.strokes - before >= 50
    # nor a frame taken from the heap and given back (which heap_lock cannot see)
    tt = [t]

    def tick():
        tt[0] = p.tick(tt[0])

    assert not heap_blocks_taken(tick, 60)
    assert hw.motor.strokes - before >= 100


def test_new_battery_resumes_delivery():
    # REQ: SR-BATT-01
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, None)
    assert reply(p.command(Host().cmd(md.T_PROGRAM, rx_blob()), T0))[2] == 0
    hw.battery.days = 0
    p.tick(T0 + 10)
    assert p.mode == P.HALTED
    hw.battery.days = 2000
    p.tick(T0 + 20)
    assert p.mode == P.RUNNING and not p.alarms.active(md.ALARM_BATTERY_EOS)


def test_events_from_before_a_reboot_read_back_from_flash():
    # REQ: SR-LOG-02
    # Found by the live twin's SIGKILL test: the newest events of the last boot were
    # read from the (empty) RAM cache after a reboot, as zeros.
    root, _ = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    for i in range(5):
        p.log(T0 + i, md.EV_SUSPENDED, 1, i, 0, 0)
    last = p.events.next_seq - 1
    p2 = P.Pump(HW(T0 + 60), T0 + 60, LIB, 0, Store(root))
    for seq in range(p2.events.first_seq, p2.events.next_seq):
        rec = p2.events.record(seq)
        assert rec is not None and struct.unpack_from(md.EVENT_FMT, rec, 0)[1] == seq, seq
    r = bytes(p2.events.record(last))
    assert r[8] == md.EV_SUSPENDED and struct.unpack_from(md.EVENT_FMT, r, 0)[4] == 4
