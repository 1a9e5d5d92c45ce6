# Who may command the pump (firmware/auth.py through commands.py), under MicroPython:
# retries, replays, bad MACs, roles.
import msgdefs as md
from fakehw import reply, rx_blob
import pump as P
from mptest_pump import T0, started

def test_retried_command_id_is_not_executed_twice():
    # REQ: SR-AUTH-02
    hw, p, h = started(pb=(100_000, 600, 600, 10))
    f = h.cmd(md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT)
    a = bytes(p.command(f, T0 + 10))
    b = bytes(p.command(f, T0 + 20))
    assert a == b and reply(a)[2] == 0
    assert len(hw.telemetry.events(md.EV_BOLUS_STARTED)) == 1



def test_replay_bad_mac_and_roles():
    # REQ: SR-AUTH-01
    # REQ: SR-AUTH-02
    # REQ: SR-AUTH-03
    hw, p, h = started()
    f1 = h.cmd(md.T_GET_STATUS)
    f2 = h.cmd(md.T_GET_STATUS)
    assert reply(p.command(f2, T0))[2] == 0
    assert reply(p.command(f1, T0))[2] == md.NACK_REPLAY  # older counter, other cmd id
    bad = h.cmd(md.T_GET_STATUS, key=b"\x99" * 32)
    assert reply(p.command(bad, T0))[2] == md.NACK_BAD_MAC
    r = reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(), role=md.ROLE_PATIENT), T0))
    assert r[2] == md.NACK_FORBIDDEN
    r = reply(p.command(h.cmd(md.T_SUSPEND, role=md.ROLE_PATIENT), T0))
    assert r[2] == md.NACK_FORBIDDEN and p.mode == P.RUNNING



def test_bad_macs_never_lock_out_a_signed_command():
    # REQ: SR-AUTH-04
    hw, p, h = started()
    junk = 0
    for role in (md.ROLE_CLINICIAN, md.ROLE_PATIENT, 7):
        for k in range(40):
            r = reply(p.command(h.cmd(md.T_SUSPEND, b"\0\0\0\0", role=role,
                                      key=bytes([0x80 + k]) * 32, ctr=10_000 + k), T0 + k))
            assert r[2] == md.NACK_BAD_MAC, r
            junk += 1
    # a correctly signed command meets nothing of it: executed, at once
    f = h.cmd(md.T_SUSPEND, b"\0\0\0\0")
    r = reply(p.command(f, T0 + 50))
    assert r[2] == 0 and p.mode == P.SUSPENDED, r
    assert not p.alarms.mask & (1 << md.ALARM_AUTH_BACKOFF)
    # the bad MACs are one record per window, with their count
    ev = hw.telemetry.events(md.EV_AUTH_FAILURE)
    assert len(ev) == 1 and ev[0][4] == 1, ev  # the first at once
    p.tick(T0 + md.AUTH_FAILURE_WINDOW_S + 1)
    ev = hw.telemetry.events(md.EV_AUTH_FAILURE)
    assert len(ev) == 2 and ev[1][4] == junk - 1, ev


def test_a_reply_is_signed_and_bound_to_its_command():
    # REQ: SR-AUTH-05
    from fakehw import reply_mac_ok

    hw, p, h = started()
    f = h.cmd(md.T_GET_STATUS, role=md.ROLE_PATIENT)
    rep = bytes(p.command(f, T0))
    ctr = h.ctr[md.ROLE_PATIENT]
    assert reply(rep)[2] == 0
    assert reply_mac_ok(rep, md.ROLE_PATIENT, ctr)
    assert not reply_mac_ok(rep, md.ROLE_PATIENT, ctr + 1)  # bound to the counter
    assert not reply_mac_ok(rep, md.ROLE_CLINICIAN, ctr)  # and to the role and key
    # a NACK the device cannot sign carries 16 zero bytes
    bad = bytes(p.command(h.cmd(md.T_GET_STATUS, key=b"\x01" * 32), T0))
    assert reply(bad)[2] == md.NACK_BAD_MAC
    end = len(bad) - md.CRC_SIZE
    assert bad[end - md.MAC_SIZE : end] == bytes(md.MAC_SIZE)


def test_a_change_is_executed_only_within_fresh_s_of_its_challenge():
    # REQ: SR-AUTH-06
    hw, p, h = started(pb=(100_000, 600, 600, 10))
    role = md.ROLE_PATIENT
    c = p.auth.issue(role, T0 + 100)
    late = h.cmd(md.T_PATIENT_BOLUS, role=role, challenge=c)
    r = reply(p.command(late, T0 + 100 + md.FRESH_S + 1))
    assert r[2] == md.NACK_STALE and r[3] == md.FRESH_S + 1, r
    assert not hw.telemetry.events(md.EV_BOLUS_STARTED)
    # a challenge the device never issued, and none at all
    for ch in (c ^ 1, 0):
        r = reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=role, challenge=ch), T0 + 200))
        assert r[2] == md.NACK_STALE and r[3] == 0, r
    # the newest challenge replaces the one before
    c1 = p.auth.issue(role, T0 + 300)
    c2 = p.auth.issue(role, T0 + 301)
    assert c1 != c2
    r = reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=role, challenge=c1), T0 + 302))
    assert r[2] == md.NACK_STALE
    r = reply(p.command(h.cmd(md.T_PATIENT_BOLUS, role=role, challenge=c2), T0 + 302))
    assert r[2] == 0, r
    assert len(hw.telemetry.events(md.EV_BOLUS_STARTED)) == 1
    # reads need none
    assert reply(p.command(h.cmd(md.T_GET_STATUS, role=role, challenge=0), T0 + 999))[2] == 0


def test_a_challenge_does_not_survive_a_reboot():
    # REQ: SR-AUTH-06
    hw, p, h = started()
    c = p.auth.issue(md.ROLE_CLINICIAN, T0 + 10)
    p2 = P.Pump(hw, T0 + 20, p.druglib)
    r = reply(p2.command(h.cmd(md.T_RESUME, challenge=c), T0 + 20))
    assert r[2] == md.NACK_STALE and r[3] == 0, r
