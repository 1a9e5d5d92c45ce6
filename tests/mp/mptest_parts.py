# heapsize: 16m
# The pump's parts own their state (issue 22): each snapshot field has exactly one owner,
# the snapshot and the restore walk the parts' declarations, and what one part declares
# survives a restart in that part.
import msgdefs as md
from msgfields import SNAP_PRIME_FIELDS
from fakehw import HW, Host, reply, rx_blob
from ramflash import mounted
from store import Store
import pump as P
import snapshot
from mptest_store import LIB, T0

# written by snapshot.pack itself, not by a part: the time, the mode (restored through
# set_mode), the journal and frame counters, the lengths and counts of the tail
SNAPSHOT_OWN = ("t", "mode", "j_seq", "seq", "rx_len", "bridge_rx_len", "held_first", "held_n")


class _Counting(dict):
    # a snapshot's values that count who writes each: a field two parts write is a bug
    def __init__(self):
        super().__init__()
        self.twice = []

    def __setitem__(self, k, v):
        if k in self:
            self.twice.append(k)
        super().__setitem__(k, v)


def test_every_snapshot_field_has_exactly_one_owner():
    root, _ = mounted()
    p = P.Pump(HW(T0), T0, LIB, 0, Store(root))
    v = _Counting()
    for part in snapshot.parts(p):
        part.snap_into(v)
    assert not v.twice, v.twice
    owned = set(v) - {"gate", "rolling"}
    want = (set(md.SNAP_FIELDS) | set(SNAP_PRIME_FIELDS)) - set(SNAPSHOT_OWN)
    assert owned == want, (sorted(owned - want), sorted(want - owned))


def test_a_breach_of_one_owner_is_seen():
    # the check above, shown a part that writes a field another part owns
    root, _ = mounted()
    p = P.Pump(HW(T0), T0, LIB, 0, Store(root))
    v = _Counting()
    for part in snapshot.parts(p) + (p.delivery,):
        part.snap_into(v)
    assert "reservoir_nl" in v.twice


def test_each_part_takes_up_what_it_declared():
    root, _ = mounted()
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB, 0, Store(root))
    h = Host()
    assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(pb=(100_000, 600, 3600, 4))), T0))[2] == 0
    assert reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT), T0 + 60))[2] == 0
    t = T0 + 60
    while t < T0 + 3 * 3600:
        hw.clock.t = t
        t = p.tick(t)
    p.save(t)
    p2 = P.Pump(HW(t + 60), t + 60, LIB, md.BOOT_WATCHDOG, Store(root))
    p.rolling.sum(t + 60)  # the boot's status rolled p2's window on to its time
    for a, b in zip(snapshot.parts(p), snapshot.parts(p2)):
        for name in getattr(a, "SNAP", ()):
            assert getattr(a, name) == getattr(b, name), (type(a).__name__, name)
    assert p2.gate.starts == p.gate.starts and p2.rolling.b == p.rolling.b
    assert p2.plan.rx.blob == p.plan.rx.blob
    assert p2.auth.last_ctr == p.auth.last_ctr and p2.auth.last_id == p.auth.last_id
