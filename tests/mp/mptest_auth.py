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



def test_repeated_bad_macs_back_off_and_log():
    # REQ: SR-AUTH-04
    hw, p, h = started()
    for _ in range(P.BACKOFF_AFTER):
        assert reply(p.command(h.cmd(md.T_GET_STATUS, key=b"\x01" * 32), T0))[2] == md.NACK_BAD_MAC
    r = reply(p.command(h.cmd(md.T_GET_STATUS), T0))
    assert r[2] == md.NACK_BACKOFF and r[3] >= 1
    assert len(hw.telemetry.events(md.EV_AUTH_FAILURE)) == P.BACKOFF_AFTER
    assert reply(p.command(h.cmd(md.T_GET_STATUS), T0 + 2))[2] == 0
