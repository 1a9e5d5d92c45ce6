"""Hostile input on the live link: tens of thousands of random and malformed frames
into a running twin (random bytes, valid COBS with a bad CRC, a good CRC around
garbage, oversize frames, 0x03 bytes everywhere, other frame versions, torn frames,
and correctly signed commands with garbage bodies). The twin never crashes, therapy
never changes (the status differs only by what time delivered), nothing but the
authentication failures is logged, and a good command works afterwards."""

from __future__ import annotations

import os
import random
import threading
import time
import tty

import pytest
import theca_protocol as tp
from test_link import RX, device_events, env_for, in_home, run_theca, status_json
from theca.link import keys as K
from theca.link.client import Client
from theca.twin.live import LiveTwin

N_FRAMES = 30_000
N_SIGNED = 2_000
SEED = 20260101
CMD = tp.TYPES
# what therapy-changing events look like; none may appear during the flood
THERAPY_EVENTS = {tp.EVENT_CODES[n] for n in (
    "therapy_started", "prescription_changed", "bolus_started", "refilled", "suspended",
    "resumed", "time_changed", "alarm_acknowledged", "refill_refused", "fault")}


def frame(typ: int, payload: bytes, version: int = 1) -> bytes:
    head = tp.compiled(tp.Header).pack(version, typ, 0, 0)
    return head + payload + tp.crc32(head + payload).to_bytes(tp.CRC_SIZE, "little")


def wire(f: bytes) -> bytes:
    return tp.cobs_encode(f) + b"\x00"


def garbage(rng: random.Random) -> tuple[str, bytes]:
    """One malformed frame on the wire, and its kind."""
    k = rng.randrange(9)
    if k == 0:  # random bytes (0x00 and 0x03 included)
        return "random", rng.randbytes(rng.randrange(1, 300))
    if k == 1:  # valid COBS around bytes whose CRC is wrong
        return "bad_crc", wire(rng.randbytes(rng.randrange(12, 200)))
    if k == 2:  # a good CRC around a garbage command (mostly a bad MAC)
        typ = rng.choice([rng.randrange(0x40, 0x80), rng.randrange(256)])
        return "garbage_payload", wire(frame(typ, rng.randbytes(rng.randrange(0, 200))))
    if k == 3:  # a good CRC around a command envelope with a random MAC, any role byte
        body = tp.compiled(tp.CommandHead).pack(rng.getrandbits(32), rng.choice([1, 2, 0, 3, 255]),
                                                  rng.getrandbits(32), 0) + rng.randbytes(rng.randrange(0, 60))
        return "bad_mac", wire(frame(rng.randrange(0x40, 0x4D), body + rng.randbytes(16)))
    if k == 4:  # oversize: more than a frame can be, then a delimiter
        return "oversize", bytes(rng.randrange(1, 256) for _ in range(rng.randrange(tp.MAX_FRAME + 20, 3000))) + b"\x00"
    if k == 5:  # 0x03 (Ctrl-C on a REPL) everywhere, in a frame with a good CRC
        return "ctrl_c", wire(frame(0x40, b"\x03" * rng.randrange(0, 120))) + b"\x03" * rng.randrange(8)
    if k == 6:  # another frame version
        return "version", wire(frame(rng.randrange(0x40, 0x4D), rng.randbytes(40), rng.randrange(2, 256)))
    if k == 7:  # torn: half a frame, then the delimiter
        f = wire(frame(0x40, rng.randbytes(rng.randrange(30, 80))))
        return "torn", f[: len(f) // 2] + b"\x00"
    return "short", wire(rng.randbytes(rng.randrange(0, 12)))  # shorter than a frame


def signed_garbage(rng: random.Random, keys: dict, serial: str, ctr: dict) -> tuple[str, bytes]:
    """A correctly signed command whose body is garbage, of a kind that cannot change
    therapy: reads with junk bodies, changes with bodies of the wrong length, random
    prescriptions (rejected by the device's own checks), unknown types."""
    role = rng.choice(["clinician", "patient"])
    k = rng.randrange(6)
    if k == 0:
        typ, body = rng.choice([CMD["GET_STATUS"], CMD["GET_INFO"], CMD["READ_RX"]]), rng.randbytes(rng.randrange(0, 40))
    elif k == 1:
        typ, body = CMD["LOG_READ"], rng.randbytes(rng.randrange(0, 12))
    elif k == 2:
        typ = rng.choice([CMD["REFILL"], CMD["CLINICIAN_BOLUS"], CMD["SET_TIME"], CMD["ACK_ALARM"]])
        good = 4 if typ == CMD["ACK_ALARM"] else 8
        n = rng.choice([x for x in range(0, 30) if x != good])
        body = rng.randbytes(n)
    elif k == 3:
        body = bytearray(rng.randbytes(rng.randrange(0, 200)))
        if len(body) > 2 and body[0] == 1 and rng.random() < 0.5:
            body[2] = 0  # no steps: never a valid prescription
        typ, body = CMD["PROGRAM"], bytes(body)
        role = "clinician"
    elif k == 4:
        typ, body = rng.randrange(0x4D, 0x80), rng.randbytes(rng.randrange(0, 30))
    else:
        typ, body = CMD["GET_STATUS"], b""
    ctr[role] += 1
    f = tp.build_command(typ, body, role, keys[role], rng.getrandbits(32), ctr[role], 0, 0)
    return "signed", wire(f)


class Drain(threading.Thread):
    """Reads the device's replies while the flood goes in (a host that stops reading
    would only make the twin drop replies), counting the good REPLY frames."""

    def __init__(self, fd: int):
        super().__init__(daemon=True)
        self.fd = fd
        self.replies = 0
        self.last = time.monotonic()
        self.stop = False

    def run(self):
        buf = b""
        while not self.stop:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                time.sleep(0.005)
                continue
            except OSError:
                return
            self.last = time.monotonic()
            buf += data
            *chunks, buf = buf.split(b"\x00")
            for c in chunks:
                try:
                    f = tp.cobs_decode(c)
                    tp.parse_frame(f)
                    if f[1] == tp.T_REPLY:
                        self.replies += 1
                except (tp.CobsError, tp.FrameError):
                    pass


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    home = d / "home"
    dev = d / "pump"
    rx = d / "rx.toml"
    rx.write_text(RX)
    with LiveTwin(dev, speed=600, env=env_for(home), args=["--flash-image", d / "flash.img"]) as t:
        r = run_theca(home, "--device", dev, "program", rx, "--yes")
        assert r.returncode == 0, r.stderr
        yield {"home": home, "dev": dev, "serial": t.serial, "twin": t}


def _good_status(home, dev, role: str) -> dict:
    """GET_STATUS with `role`, right after the flood: junk never locks a signed frame out
    (issue 12: there is no back-off to wait for)."""
    with in_home(home), Client(str(dev)) as c:
        rep = c.request("GET_STATUS", role=role)
        from theca.cli.programmer import status_record

        return status_record(c, rep)


def test_flood_of_malformed_frames(twin):
    home, dev, serial = twin["home"], twin["dev"], twin["serial"]
    rng = random.Random(SEED)
    before = status_json(home, dev)
    first_new = max(e[1] for e in device_events(home, dev)) + 1
    keys = {r: bytes.fromhex((home / f"{serial}-{r}.key").read_text()) for r in ("clinician", "patient")}
    with in_home(home):
        # a block of counters for the signed garbage, reserved in the host's store
        ctr = {r: K.last_counter(serial, r) for r in keys}
        for r in keys:
            K.raise_counter(serial, r, ctr[r] + N_SIGNED + 1)

    fd = os.open(str(dev), os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    # a second open, not a dup: O_NONBLOCK belongs to the open file, and the writer blocks
    drain_fd = os.open(str(dev), os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    drain = Drain(drain_fd)
    drain.start()
    kinds: dict[str, int] = {}
    sent_bytes = 0
    t0 = time.monotonic()
    try:
        batch = bytearray()
        for i in range(N_FRAMES):
            if i < N_SIGNED:
                kind, w = signed_garbage(rng, keys, serial, ctr)  # before any bad MAC
            else:
                kind, w = garbage(rng)
            kinds[kind] = kinds.get(kind, 0) + 1
            batch += w
            if len(batch) > 16384:
                os.write(fd, batch)  # blocks while the twin catches up
                sent_bytes += len(batch)
                batch.clear()
        os.write(fd, bytes(batch) + b"\x00")
        sent_bytes += len(batch) + 1
        # until the twin has answered everything it is going to
        while time.monotonic() - drain.last < 1.0:
            time.sleep(0.1)
    finally:
        drain.stop = True
        drain.join(timeout=2)
        os.close(drain_fd)
        os.close(fd)
    secs = time.monotonic() - t0
    print(f"\nhostile: {N_FRAMES} frames, {sent_bytes} bytes in {secs:.1f} s, "
          f"{drain.replies} replies; {kinds}")

    assert twin["twin"].proc.poll() is None, "the twin died"
    assert sum(kinds.values()) == N_FRAMES and len(kinds) == 10
    assert drain.replies > N_SIGNED  # every signed frame got its answer, and NACKs followed

    # the link recovers: good commands with both keys (after any back-off has passed)
    after_c = _good_status(home, dev, "clinician")
    _good_status(home, dev, "patient")
    after = status_json(home, dev)
    assert after["alarms"] == before["alarms"] == []
    for k in ("mode", "drug", "concentration", "rx_crc", "battery_days", "trial", "boluses_24h"):
        assert after[k] == before[k], k
    assert after_c["mode"] == "running"
    # only time moved: what left the reservoir is what was delivered, at the set rates
    d_deliv = after["delivered_ul"] - before["delivered_ul"]
    d_res = before["reservoir_ul"] - after["reservoir_ul"]
    assert abs(d_deliv - d_res) < 0.0015 and d_deliv >= 0
    ev = [e for e in device_events(home, dev) if e[1] >= first_new]
    assert not [e for e in ev if e[2] in THERAPY_EVENTS], ev[:5]
    assert any(e[2] == tp.EVENT_CODES["auth_failure"] for e in ev)  # the attack is on record
    # and the programmer still works end to end
    r = run_theca(home, "--device", dev, "status")
    assert r.returncode == 0 and "running" in r.stdout
