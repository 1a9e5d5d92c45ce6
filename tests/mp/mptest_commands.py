# The command table (firmware/commands.py), under MicroPython: bodies, pages, the
# Rx version NACK.
import struct
import msgdefs as md
from fakehw import HW, Host, reply, rx_blob
import pump as P
from mptest_pump import LIB, T0, _vector, started

def test_log_read_pages():
    hw, p, h = started()
    r = reply(p.command(h.cmd(md.T_LOG_READ, struct.pack(md.LOG_READ_FMT, 1, 2)), T0))
    assert r[2] == 0
    nxt, first, cnt = struct.unpack_from(md.LOG_READ_REPLY_HEAD_FMT, r[4], 0)
    assert first == 1 and cnt == 2 and nxt >= 3
    ev = struct.unpack_from(md.EVENT_FMT, r[4], 9)
    assert ev[1] == 1 and ev[2] == md.EV_BOOT



def test_a_body_on_a_command_without_one_is_bad_frame():
    # PROTOCOL.md 4: a body of the wrong length is NACK bad_frame, and nothing is done
    hw, p, h = started()
    for typ in (md.T_SUSPEND, md.T_PATIENT_BOLUS, md.T_MAINTENANCE, md.T_GET_STATUS):
        r = reply(p.command(h.cmd(typ, b"\x01\x02\x03"), T0))
        assert r[2] == md.NACK_BAD_FRAME and r[3] == 3, (typ, r)
    assert p.mode == P.RUNNING and not p.exit_requested
    assert not hw.telemetry.events(md.EV_BOLUS_STARTED)
    assert reply(p.command(h.cmd(md.T_SUSPEND, struct.pack(md.SUSPEND_FMT, 0)), T0))[2] == 0  # right: done
    assert p.mode == P.SUSPENDED



def test_rx_of_another_version_gets_nack_schema_as_the_vector():
    want = _vector("reply_nack_schema_rx_version")
    hw = HW(T0)
    p = P.Pump(hw, T0, LIB)
    blob = rx_blob(version=md.RX_VERSION + 1)
    r = reply(p.command(Host().cmd(md.T_PROGRAM, blob, t=T0), T0))
    assert (r[1], r[2], r[3]) == (want["cmd_type"], want["result"], want["detail"])
    assert r[2] == md.NACK_SCHEMA and p.plan.rx is None
