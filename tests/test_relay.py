"""Attacks on the link by a relay between host and pump (issue 12): forged replies, a
forged counter hint, a command held back and delivered late. Each judges from the pump
itself whether the attack changed anything: its status and log, read through the relay
with the hooks off (the pump's replies are signed: a relay cannot bend what an honest
read sees)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import theca_protocol as tp
from relay import Relay, command_head, forged_reply, frame_type
from test_link import (
    RX,
    device_events,
    env_for,
    ev_code,
    in_home,
    run_theca,
    status_json,
)
from theca.link import keys as K
from theca.twin.live import LiveTwin

T = tp.TYPES


@pytest.fixture(scope="module")
def pump(tmp_path_factory):
    """A twin at 60x on a flash image, programmed, with a relay on its link."""
    d = tmp_path_factory.mktemp("relay")
    home = d / "home"
    dev = d / "pump"
    rx = d / "rx.toml"
    rx.write_text(RX)
    with LiveTwin(dev, speed=60, env=env_for(home),
                  args=["--flash-image", d / "flash.img", "--reservoir-ml", 15]) as t:
        r = run_theca(home, "--device", dev, "program", rx, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        with Relay(dev, d / "relayed") as relay:
            yield {"home": home, "dev": dev, "via": d / "relayed", "relay": relay,
                   "serial": t.serial, "dir": d}


@pytest.fixture
def relay(pump):
    r: Relay = pump["relay"]
    r.on_host = lambda f: [f]
    r.on_device = lambda f: [f]
    yield r
    r.on_host = lambda f: [f]
    r.on_device = lambda f: [f]
    assert r.error is None, r.error


def _rx2(d: Path) -> Path:
    p = d / "rx2.toml"
    p.write_text(RX.replace('rate = "2 mg/day"', 'rate = "1.8 mg/day"'))
    return p


def test_a_relay_works_as_a_link(pump, relay):
    # the harness itself: everything passes through it unchanged
    assert status_json(pump["home"], pump["via"])["mode"] == "running"
    assert any(side == "device" and frame_type(f) == tp.T_REPLY for side, f in relay.seen)


def test_a_forged_ack_is_not_believed(pump, relay):
    # REQ: SR-AUTH-05
    # The issue: the relay dropped PROGRAM, forged its ACK and answered READ_RX with a
    # captured blob: "read back and verified", exit 0, the old therapy kept.
    home, d = pump["home"], pump["dir"]
    before = status_json(home, pump["via"])
    blobs: list[bytes] = []

    def host(f):
        t = frame_type(f)
        if t == T["PROGRAM"]:
            relay.to_host(forged_reply(f))  # "done"
            return []
        if t == T["READ_RX"] and blobs:
            relay.to_host(forged_reply(f, body=blobs[-1]))
            return []
        return [f]

    def device(f):
        if frame_type(f) == tp.T_REPLY and f[tp.HDR_SIZE + 4] == T["READ_RX"]:
            blobs.append(f[tp.HDR_SIZE + tp.ReplyHead.sizeof() : -tp.CRC_SIZE - tp.MAC_SIZE])
        return [f]

    relay.on_host, relay.on_device = host, device
    r = run_theca(home, "--device", pump["via"], "program", _rx2(d), "--yes",
                  env=env_for(home, THECA_TIMEOUT=0.5, THECA_RETRIES=1))
    assert r.returncode == 4, r.stdout + r.stderr
    assert "failed authentication" in r.stderr and "verified" not in r.stdout
    relay.on_host, relay.on_device = (lambda f: [f]), (lambda f: [f])
    after = status_json(home, pump["via"])
    assert after["rx_crc"] == before["rx_crc"]  # the pump kept its therapy, and says so


def test_a_forged_read_rx_is_not_believed(pump, relay):
    # REQ: SR-AUTH-05
    home = pump["home"]

    def host(f):
        if frame_type(f) == T["READ_RX"]:
            relay.to_host(forged_reply(f, body=b"\x00" * 40))
            return []
        return [f]

    relay.on_host = host
    r = run_theca(home, "--device", pump["via"], "program", _rx2(pump["dir"]), "--yes",
                  env=env_for(home, THECA_TIMEOUT=0.5, THECA_RETRIES=1))
    assert r.returncode == 4 and "failed authentication" in r.stderr, r.stderr


def test_a_forged_replay_hint_moves_no_counter(pump, relay):
    # REQ: SR-AUTH-05
    # The issue: one forged `replay` NACK with detail 0xFFFFFFFE raised the host's
    # counter file to 4294967295: every later clinician command failed.
    home, serial = pump["home"], pump["serial"]

    def host(f):
        if frame_type(f) == T["GET_STATUS"]:
            relay.to_host(forged_reply(f, result=3, detail=0xFFFFFFFE))
        return [f]  # and the real one goes on: its authentic reply wins

    relay.on_host = host
    with in_home(home):
        c0 = K.last_counter(serial, "clinician")
    r = run_theca(home, "--device", pump["via"], "status")
    assert r.returncode == 0, r.stderr
    with in_home(home):
        c1 = K.last_counter(serial, "clinician")
    assert c0 < c1 < c0 + 10  # moved by the commands sent, not by the hint
    relay.on_host = lambda f: [f]
    assert run_theca(home, "--device", pump["via"], "suspend").returncode == 0
    assert run_theca(home, "--device", pump["via"], "resume").returncode == 0


def test_a_held_command_is_stale(pump, relay):
    # REQ: SR-AUTH-06
    # The issue: a bolus frame the relay withheld (the host gave up, exit 4) was
    # delivered 41 device minutes later: `ack`, `bolus_started`.
    home = pump["home"]
    held: list[bytes] = []

    def host(f):
        if frame_type(f) == T["PATIENT_BOLUS"]:
            held.append(f)
            return []
        return [f]

    replies: list[bytes] = []

    def device(f):
        if frame_type(f) == tp.T_REPLY and f[tp.HDR_SIZE + 4] == T["PATIENT_BOLUS"]:
            replies.append(f)
        return [f]

    started0 = sum(1 for e in device_events(home, pump["via"]) if e[2] == ev_code("bolus_started"))
    relay.on_host, relay.on_device = host, device
    r = run_theca(home, "--device", pump["via"], "bolus",
                  env=env_for(home, THECA_TIMEOUT=0.3, THECA_RETRIES=1))
    assert r.returncode == 4 and held, r.stderr
    time.sleep(1.5)  # 90 device seconds at 60x: more than FRESH_S after its challenge
    relay.to_device(held[0])
    deadline = time.monotonic() + 5
    while not replies and time.monotonic() < deadline:
        time.sleep(0.05)
    assert replies, "the pump did not answer the held frame"
    _, _, res, detail = tp.compiled(tp.ReplyHead).unpack_from(replies[0], tp.HDR_SIZE)
    assert tp.RESULTS[res] == "stale" and detail > tp.names.FRESH_S, (res, detail)
    relay.on_host = lambda f: [f]
    started1 = sum(1 for e in device_events(home, pump["via"]) if e[2] == ev_code("bolus_started"))
    assert started1 == started0  # no bolus from it
    assert command_head(held[0])[3] != 0  # it carried a challenge: only too old


def test_the_host_takes_no_unsigned_nack_for_the_device_s_word(pump, relay):
    # REQ: SR-AUTH-05
    # a NACK the device cannot sign (bad_mac) is shown as an unauthenticated diagnosis,
    # exit 3, and changes nothing here
    home, serial = pump["home"], pump["serial"]

    def host(f):
        if frame_type(f) == T["GET_STATUS"]:
            relay.to_host(forged_reply(f, result=2))
            return []
        return [f]

    relay.on_host = host
    with in_home(home):
        c0 = K.last_counter(serial, "clinician")
    r = run_theca(home, "--device", pump["via"], "status")
    assert r.returncode == 3 and "unauthenticated" in r.stderr, r.stderr
    with in_home(home):
        assert K.last_counter(serial, "clinician") == c0 + 2  # GET_INFO, GET_STATUS only


def test_a_frame_damaged_on_the_way_is_sent_again(pump, relay):
    # REQ: SR-AUTH-05
    # issue 23: the first GET_STATUS reaches the pump cut short (line noise, a collision):
    # the pump's unsigned `bad_frame` NACK is no answer to the command, so the host sends
    # the same frame again within its retry budget, and the second gets the real status
    home = pump["home"]
    cut = []

    def host(f):
        if frame_type(f) == T["GET_STATUS"] and not cut:
            cut.append(f)
            return [tp.build_frame(T["GET_STATUS"], 1, 0, b"\x00" * 4)]  # too short
        return [f]

    relay.on_host = host
    r = run_theca(home, "--device", pump["via"], "status", "--json")
    assert r.returncode == 0, r.stderr
    assert cut and json.loads(r.stdout)["mode"] == "running"
    assert sum(1 for d, f in relay.seen if d == "host" and frame_type(f) == T["GET_STATUS"]
               and f == cut[0]) == 2  # the same frame twice
