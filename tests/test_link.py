"""The live link end to end: `theca twin --pty` (the firmware's own main.py on the unix
port, its link a pseudo-terminal) and the `theca` programmer talking to it with
pyserial, as to a USB-serial board. Every command, every NACK reason, retries,
replays, wrong and missing keys, link failures.

Twin A runs at 600x real time on a flash image (a clinic day passes in minutes);
twin B runs in real time for what needs the device's one-second clock (back-off).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import theca_protocol as tp
from theca.link import keys as K
from theca.link.client import FIELDS, Client, LinkFailure, parse_reply
from theca.link.client import _field as explain_field
from theca.twin.live import LiveTwin
from theca_protocol import names as N

ROOT = Path(__file__).resolve().parents[1]
THECA = [sys.executable, "-m", "theca.cli"]

# Morphine 10 mg/mL; a patient bolus of 1 min with a 12 h lockout, so that a second
# bolus right after the first is always refused for `lockout` at any twin speed.
RX = """
drug = "morphine"
concentration = "10 mg/mL"
[[steps]]
start = "00:00"
rate = "1.5 mg/day"
[[steps]]
start = "08:00"
rate = "2 mg/day"
[patient_bolus]
dose = "0.1 mg"
duration = "1 min"
lockout = "12 h"
max_per_day = 2
"""


def env_for(home: Path, **extra) -> dict:
    """The environment of a host tool using the key store `home`."""
    e = dict(os.environ)
    e["THECA_HOME"] = str(home)
    e.pop("THECA_DEVICE", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_theca(home: Path, *args, env=None, input=None, timeout=120) -> subprocess.CompletedProcess:
    """`theca ARGS` as its own process, with THECA_HOME=home."""
    return subprocess.run(THECA + [str(a) for a in args], capture_output=True, text=True,
                          env=env or env_for(home), input=input, timeout=timeout, cwd=ROOT)


def status_json(home: Path, dev) -> dict:
    r = run_theca(home, "--device", dev, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def device_events(home: Path, dev, role: str = "clinician") -> list[tuple]:
    """Every event the device still holds, as (t, seq, code, who, a, b, c, d), via LOG_READ."""
    out = []
    frm = 1
    with in_home(home), Client(str(dev)) as c:
        while True:
            rep = c.request("LOG_READ", tp.compiled(tp.LogRead).pack(frm, 48), role)
            nxt, first, count = tp.compiled(tp.LogReadReplyHead).unpack_from(rep.body)
            for i in range(count):
                out.append(tp.compiled(tp.EventRecord).unpack_from(rep.body, 9 + 26 * i))
            frm = first + count
            if count == 0 or frm >= nxt:
                return out


class in_home:
    """THECA_HOME set for in-process calls (Client, cli.main)."""

    def __init__(self, home: Path):
        self.home = str(home)

    def __enter__(self):
        self.old = os.environ.get("THECA_HOME")
        os.environ["THECA_HOME"] = self.home

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("THECA_HOME", None)
        else:
            os.environ["THECA_HOME"] = self.old


def ev_code(name: str) -> int:
    return tp.EVENT_CODES[name]


@pytest.fixture(autouse=True)
def _no_user_home(tmp_path, monkeypatch):
    """In-process calls never touch the user's ~/.config/theca."""
    if "THECA_HOME" not in os.environ:
        monkeypatch.setenv("THECA_HOME", str(tmp_path / "stray-home"))


@pytest.fixture(scope="module")
def rx_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("rx") / "rx.toml"
    p.write_text(RX)
    return p


@pytest.fixture(scope="module")
def twin_a(tmp_path_factory, rx_file):
    """A twin at 600x on a new flash image, filled with 15 mL, programmed with RX."""
    d = tmp_path_factory.mktemp("twin_a")
    home = d / "home"
    dev = d / "pump"
    with LiveTwin(dev, speed=600, env=env_for(home),
                  args=["--flash-image", d / "flash.img", "--reservoir-ml", 15]) as t:
        r = run_theca(home, "--device", dev, "program", rx_file, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        yield {"home": home, "dev": dev, "serial": t.serial, "twin": t, "dir": d}


@pytest.fixture(scope="module")
def twin_b(tmp_path_factory, rx_file):
    """A twin in real time (no flash image), programmed with RX."""
    d = tmp_path_factory.mktemp("twin_b")
    home = d / "home"
    dev = d / "pump"
    with LiveTwin(dev, speed=1, env=env_for(home)) as t:
        r = run_theca(home, "--device", dev, "program", rx_file, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        yield {"home": home, "dev": dev, "serial": t.serial, "twin": t}


# --- keys and the twin ---------------------------------------------------------------


def test_twin_makes_keys_per_device_and_role(twin_a):
    home, serial = twin_a["home"], twin_a["serial"]
    assert serial.startswith("TWIN") and len(serial) == 12
    for role in ("clinician", "patient"):
        p = home / f"{serial}-{role}.key"
        assert p.stat().st_mode & 0o777 == 0o600
        assert len(bytes.fromhex(p.read_text().strip())) == 32
    a = (home / f"{serial}-clinician.key").read_text()
    assert a != (home / f"{serial}-patient.key").read_text()
    # the flash image knows whose it is; the device map knows where it is
    assert (twin_a["dir"] / "flash.img.serial").read_text().strip() == serial
    assert json.loads((home / "devices.json").read_text())[str(twin_a["dev"])] == serial


def test_status_json_has_the_interface_fields(twin_a):
    s = status_json(twin_a["home"], twin_a["dev"])
    for k in ("mode", "reservoir_ul", "delivered_ul", "alarms", "drug", "concentration",
              "device_time"):
        assert k in s, k
    assert s["mode"] == "running" and s["drug"] == "morphine"
    assert s["concentration"] == "10 mg/mL" and s["serial"] == twin_a["serial"]
    assert 14_000 < s["reservoir_ul"] <= 15_000 and s["alarms"] == []
    assert s["device_time"].endswith("Z")
    # the text form, and --device after the command name
    r = run_theca(twin_a["home"], "status", "--device", twin_a["dev"])
    assert r.returncode == 0 and "morphine 10 mg/mL" in r.stdout and "running" in r.stdout
    # THECA_DEVICE
    r = run_theca(twin_a["home"], "status", env=env_for(twin_a["home"], THECA_DEVICE=twin_a["dev"]))
    assert r.returncode == 0, r.stderr


def test_info_says_who_the_pump_is_and_its_memory(twin_a):
    # issue 14: `theca info`, so an engineer sees the board's memory
    r = run_theca(twin_a["home"], "--device", twin_a["dev"], "info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert set(info) == {"runtime", "machine", "firmware", "schema", "serial", "heap_free",
                         "heap_total"}
    assert info["runtime"] == "micropython" and info["serial"] == twin_a["serial"]
    assert info["machine"] and info["schema"] == f"0x{tp.SCHEMA:08x}"
    assert 0 < info["heap_free"] < info["heap_total"]
    r = run_theca(twin_a["home"], "--device", twin_a["dev"], "info")
    assert r.returncode == 0 and "% free" in r.stdout and twin_a["serial"] in r.stdout


def test_status_never_carries_keys(twin_a):
    keys = [bytes.fromhex((twin_a["home"] / f"{twin_a['serial']}-{r}.key").read_text())
            for r in ("clinician", "patient")]
    with in_home(twin_a["home"]), Client(str(twin_a["dev"])) as c:
        frames = [c.request(n, role="patient").frame for n in ("GET_STATUS", "GET_INFO", "READ_RX")]
    for f in frames:
        for k in keys:
            assert k not in f and k[:16] not in f


# --- program ---------------------------------------------------------------------------


def test_program_bad_file_is_exit_2_and_nothing_is_sent(twin_a, tmp_path):
    home, serial = twin_a["home"], twin_a["serial"]
    bad = tmp_path / "bad.toml"
    bad.write_text(RX.replace("2 mg/day", "30 mg/day"))
    counter = home / f"{serial}-clinician.counter"
    before = counter.read_text()
    r = run_theca(home, "--device", twin_a["dev"], "program", bad, "--yes")
    assert r.returncode == 2
    assert "bad.toml" in r.stderr and "hard limit" in r.stderr, r.stderr
    # an unknown unit, a missing file
    bad.write_text(RX.replace("10 mg/mL", "10 mg/L"))
    r = run_theca(home, "--device", twin_a["dev"], "program", bad, "--yes")
    assert r.returncode == 2 and "concentration" in r.stderr
    r = run_theca(home, "--device", twin_a["dev"], "program", tmp_path / "none.toml", "--yes")
    assert r.returncode == 2
    assert counter.read_text() == before  # not one command


def test_program_asks_for_confirmation(twin_a, rx_file):
    home = twin_a["home"]
    r = run_theca(home, "--device", twin_a["dev"], "program", rx_file, input="y\n")
    assert r.returncode == 1 and "not confirmed" in r.stderr
    # issue 13: `echo y | theca program` said only "not confirmed"; it says why and how
    assert "not a terminal" in r.stderr and "--yes" in r.stderr
    assert "morphine 10 mg/mL" in r.stdout  # the prescription was shown
    events = device_events(home, twin_a["dev"])
    assert len([e for e in events if e[2] == ev_code("prescription_changed")]) == 1


def test_program_reads_back_and_verifies(twin_a, rx_file):
    r = run_theca(twin_a["home"], "--device", twin_a["dev"], "program", rx_file, "--yes")
    assert r.returncode == 0, r.stderr
    assert "read back and verified" in r.stdout
    blob_sha = r.stdout.split("sha256 ")[1][:16]
    with in_home(twin_a["home"]), Client(str(twin_a["dev"])) as c:
        rep = c.request("READ_RX", role="patient")
    assert rep.body[:32].hex()[:16] == blob_sha


def test_patient_key_may_not_program(twin_a, rx_file):
    r = run_theca(twin_a["home"], "--role", "patient", "--device", twin_a["dev"], "program",
                  rx_file, "--yes")
    assert r.returncode == 3
    assert "forbidden for this role" in r.stderr and "patient key may not program" in r.stderr


def test_invalid_value_names_the_field(twin_a, rx_file, tmp_path):
    # valid on the host, refused by the device: the reservoir holds 10 mg/mL
    other = tmp_path / "rx5.toml"
    other.write_text(RX.replace("10 mg/mL", "5 mg/mL").replace('"1 min"', '"10 min"'))
    r = run_theca(twin_a["home"], "--device", twin_a["dev"], "program", other, "--yes")
    assert r.returncode == 3
    assert r.stderr.count("invalid value: concentration") == 1, r.stderr


# --- boluses, refill, modes, alarms, time ---------------------------------------------------


def test_bolus_then_lockout(twin_a):
    home, dev = twin_a["home"], twin_a["dev"]
    r = run_theca(home, "--device", dev, "bolus")
    assert r.returncode == 0, r.stderr
    assert "patient bolus started" in r.stdout
    r = run_theca(home, "--device", dev, "bolus")
    assert r.returncode == 3
    assert "limit: bolus denied: lockout" in r.stderr
    ev = device_events(home, dev)
    started = [e for e in ev if e[2] == ev_code("bolus_started") and e[5] == 1]
    denied = [e for e in ev if e[2] == ev_code("bolus_denied") and e[5] == 1]
    assert len(started) == 1 and started[0][3] == 2  # who: patient
    assert denied and denied[-1][4] == 1  # reason: lockout


def test_clinician_bolus_and_busy(twin_a):
    home, dev = twin_a["home"], twin_a["dev"]
    r = run_theca(home, "--device", dev, "clinician-bolus", "--dose", "0.05 mg", "--duration", "1 h")
    assert r.returncode == 0, r.stderr
    assert "0.05 mg of morphine over 1 h" in r.stdout, r.stdout  # (its drug's unit, not 50 mcg)
    r = run_theca(home, "--device", dev, "clinician-bolus", "--dose", "0.05 mg", "--duration", "1 h")
    # busy says with what (issue 25)
    assert r.returncode == 3 and "busy: a clinician bolus is still running" in r.stderr, r.stderr
    r = run_theca(home, "--device", dev, "clinician-bolus", "--dose", "lots", "--duration", "1 h")
    assert r.returncode == 2 and "--dose" in r.stderr


def test_refill_and_overfill(twin_a):
    home, dev = twin_a["home"], twin_a["dev"]
    before = status_json(home, dev)
    # a refill is a visit: the pump emptied first, the residual measured and given
    r = run_theca(home, "--device", dev, "refill", "--volume", "2 mL", "--concentration", "10 mg/mL")
    assert r.returncode == 2 and "--residual" in r.stderr and "aspirated" in r.stderr
    residual = f"{before['reservoir_ul']:.3f} uL"
    r = run_theca(home, "--device", dev, "refill", "--volume", "2 mL", "--concentration", "10 mg/mL",
                  "--residual", residual)
    assert r.returncode == 0, r.stderr
    assert "emptied" in r.stdout and "filled 2 mL" in r.stdout, r.stdout
    after = status_json(home, dev)
    assert 1990 < after["reservoir_ul"] <= 2000  # the fill, nothing mixed
    r = run_theca(home, "--device", dev, "refill", "--volume", "21 mL", "--concentration", "10 mg/mL",
                  "--residual", "2 mL")
    assert r.returncode == 3 and "overfill" in r.stderr
    r = run_theca(home, "--device", dev, "refill", "--volume", "2 parsecs", "--concentration",
                  "10 mg/mL", "--residual", "1 mL")
    assert r.returncode == 2 and "--volume" in r.stderr
    ev = device_events(home, dev)
    refilled = [e for e in ev if e[2] == ev_code("refilled")][-1]
    assert refilled[4] == 2_000_000 and refilled[7] == 1  # the fill (nL), the drug (morphine)
    assert abs(refilled[5] - round(before["reservoir_ul"] * 1000)) <= 1  # the residual
    assert any(e[2] == ev_code("refill_refused") for e in ev)


def test_suspend_resume_and_invalid_mode(twin_a):
    home, dev = twin_a["home"], twin_a["dev"]
    assert run_theca(home, "--device", dev, "suspend").returncode == 0
    assert status_json(home, dev)["mode"] == "suspended"
    r = run_theca(home, "--device", dev, "suspend")
    assert r.returncode == 3 and "invalid value: the pump is suspended" in r.stderr
    assert run_theca(home, "--device", dev, "resume").returncode == 0
    assert status_json(home, dev)["mode"] == "running"
    r = run_theca(home, "--device", dev, "--role", "patient", "suspend")
    assert r.returncode == 3 and "forbidden" in r.stderr


def test_ack_alarm_and_set_time(twin_a):
    home, dev = twin_a["home"], twin_a["dev"]
    r = run_theca(home, "--device", dev, "ack-alarm")
    assert r.returncode == 0 and "acknowledged" in r.stdout
    r = run_theca(home, "--device", dev, "ack-alarm", "--alarm", "no_such_alarm")
    assert r.returncode == 2
    now = time.time()
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    r = run_theca(home, "--device", dev, "set-time", "--utc", iso, "--offset", "+01:00")
    assert r.returncode == 0, r.stderr
    assert "+01:00" in r.stdout
    ev = device_events(home, dev)
    tc = [e for e in ev if e[2] == ev_code("time_changed")][-1]
    assert tc[5] == int(now) - tp.EPOCH_UNIX and tc[6] == 3600 and tc[3] == 1  # by the clinician
    r = run_theca(home, "--device", dev, "set-time", "--offset", "+15:00")
    assert r.returncode == 2 and "--offset" in r.stderr


# --- NACK reasons provoked with raw frames -------------------------------------------------


def _raw(twin, fn):
    with in_home(twin["home"]), Client(str(twin["dev"])) as c:
        c.identify("clinician")
        return fn(c)


def test_unknown_command_and_bad_frame_and_schema(twin_a):
    def go(c: Client):
        out = {}
        f, _, _ = c.sign(0x5F, b"", "clinician")  # a command type no firmware knows
        out["unknown"] = c.transact(f)
        f, _, _ = c.sign(tp.TYPES["REFILL"], b"\x01" * 7, "clinician")  # body 7 bytes, not 8
        out["bad_frame"] = c.transact(f)
        good, _, _ = c.sign(tp.TYPES["GET_STATUS"], b"", "clinician")
        v2 = bytearray(good[:-4])
        v2[0] = 2  # frame version 2
        out["schema"] = _send_wait(c, _reframe(v2))
        short = tp.build_frame(tp.TYPES["GET_STATUS"], 1, 0, b"\x01\x02\x03")  # no envelope
        out["short"] = _send_wait(c, short)
        return out

    r = _raw(twin_a, go)
    assert r["unknown"].reason == "unknown_command"
    assert r["bad_frame"].reason == "bad_frame" and r["bad_frame"].detail == 7
    assert r["schema"].reason == "schema" and r["schema"].detail == 1
    assert r["short"].reason == "bad_frame" and r["short"].detail == 15
    from theca.link.client import explain

    assert "does not know" in explain(0x5F, 9, 0)
    assert "wrong length" in explain(tp.TYPES["REFILL"], 1, 7)
    assert "frame version 1" in explain(0x40, 8, 1)


def _reframe(body_with_header: bytearray) -> bytes:
    """A frame (header as given, any version) with a correct CRC."""
    b = bytes(body_with_header)
    return b + tp.crc32(b).to_bytes(tp.CRC_SIZE, "little")


def _send_wait(c: Client, frame: bytes):
    c.link.send(frame)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        fr = c.link.recv(deadline - time.monotonic())
        rep = parse_reply(fr) if fr else None
        if rep is not None and rep.cmd_id == 0:
            return rep
    raise AssertionError("no reply")


def test_replay_of_a_captured_frame(twin_a):
    def go(c: Client):
        captured, _, ctr = c.sign(tp.TYPES["GET_STATUS"], b"", "patient")
        first = c.transact(captured)
        again = c.transact(captured)  # the same frame at once: a retry, from the cache
        c.request("GET_STATUS", role="patient")  # a newer command
        replayed = c.transact(captured)  # the captured frame, later: a replay
        return first, again, replayed, ctr

    first, again, replayed, ctr = _raw(twin_a, go)
    assert first.result == 0 and again.frame == first.frame
    assert replayed.reason == "replay" and replayed.detail > ctr


def test_schema_mismatch_is_refused_by_the_host(twin_a, monkeypatch, capsys):
    from theca import cli

    home, dev = twin_a["home"], twin_a["dev"]
    before = status_json(home, dev)
    monkeypatch.setattr(tp, "SCHEMA", tp.SCHEMA ^ 1)  # these host tools are "another version"
    with in_home(home):
        rc = cli.main(["--device", str(dev), "suspend"])
        err = capsys.readouterr().err
        assert rc == 3 and "schema mismatch" in err and "SUSPEND was not sent" in err
        rc = cli.main(["--device", str(dev), "status", "--json"])  # allowed, for diagnosis
        out = capsys.readouterr()
        assert rc == 0 and "schema mismatch" in out.err
        assert json.loads(out.out)["schema_ok"] is False
    monkeypatch.undo()
    assert status_json(home, dev)["mode"] == before["mode"] == "running"


def test_field_codes_the_firmware_sends_are_the_names_the_host_reads():
    # the firmware's FIELD_* codes are generated from the same INVALID_FIELDS the host
    # decodes with, and every field the host can name has words for a person
    md = {}
    exec((ROOT / "firmware" / "msgdefs.py").read_text().replace(
        "from micropython import const", "const = int"), md)
    codes = {k[len("FIELD_"):].lower(): v for k, v in md.items() if k.startswith("FIELD_")}
    assert {FIELDS[c - 1].replace(".", "_"): c for c in codes.values()} == codes
    assert FIELDS is N.INVALID_FIELDS
    assert all(explain_field(i + 1).startswith(f) for i, f in enumerate(FIELDS))


# --- retries: a lost reply never becomes a second bolus ------------------------------------


def test_retried_bolus_is_answered_from_the_cache(twin_b):
    home, dev = twin_b["home"], twin_b["dev"]
    with in_home(home), Client(str(dev), timeout=0.5) as c:
        c.identify("patient")
        frame, cmd_id, _ = c.sign(tp.TYPES["PATIENT_BOLUS"], b"", "patient",
                                  challenge=c.challenge("patient"))
        # the first reply is "lost": the client hears nothing and sends the same frame
        real_recv = c.link.recv
        lost = []

        def lossy(timeout):
            fr = real_recv(timeout)
            if fr is not None and not lost and parse_reply(fr).cmd_id == cmd_id:
                lost.append(fr)
                return None
            return fr

        c.link.recv = lossy
        rep = c.transact(frame)
        c.link.recv = real_recv
        assert lost and rep.attempts == 2 and rep.result == 0
        assert rep.frame == lost[0]  # byte for byte the first answer
        again = c.transact(frame)  # and once more, later
        assert again.frame == lost[0]
        # a new bolus is refused (lockout): the ACKs above came from the cache
        assert c.request("PATIENT_BOLUS", role="patient", check=False).reason == "limit"
    started = [e for e in device_events(home, dev) if e[2] == ev_code("bolus_started")]
    assert len(started) == 1


def test_client_gives_up_after_bounded_retries(tmp_path):
    home = tmp_path / "home"
    with in_home(home):
        K.make_keys("TWIN00000077")
    m, s = os.openpty()  # a port with nothing behind it
    try:
        dev = tmp_path / "silent"
        dev.symlink_to(os.ttyname(s))
        t0 = time.monotonic()
        r = run_theca(home, "--device", dev, "status",
                      env=env_for(home, THECA_TIMEOUT=0.3, THECA_RETRIES=2))
        assert r.returncode == 4
        assert "no reply" in r.stderr and "3 attempts" in r.stderr
        assert time.monotonic() - t0 < 10
        # each attempt was the same frame
        os.set_blocking(m, False)
        sent = os.read(m, 4096)
        frames = [f for f in sent.split(b"\x00") if f]
        assert len(frames) == 3 and len(set(frames)) == 1
    finally:
        os.close(m)
        os.close(s)


def test_link_failures_are_exit_4(tmp_path):
    home = tmp_path / "home"
    with in_home(home):
        K.make_keys("TWIN00000078")
    r = run_theca(home, "--device", tmp_path / "no-such-port", "status")
    assert r.returncode == 4 and "cannot open" in r.stderr
    # a board at the REPL: garbage, named as such
    m, s = os.openpty()
    stop = threading.Event()

    def repl():
        while not stop.is_set():
            try:
                if os.read(m, 4096):
                    os.write(m, b"\r\nMicroPython v1.29.0\r\n>>> ")
            except OSError:
                return

    th = threading.Thread(target=repl, daemon=True)
    th.start()
    try:
        dev = tmp_path / "repl"
        dev.symlink_to(os.ttyname(s))
        r = run_theca(home, "--device", dev, "status",
                      env=env_for(home, THECA_TIMEOUT=0.3, THECA_RETRIES=1))
        assert r.returncode == 4 and "MicroPython REPL" in r.stderr, r.stderr
    finally:
        stop.set()
        os.close(s)
        os.close(m)


# --- keys: wrong, missing; bad MACs and the back-off -----------------------------------------


def test_wrong_key_file_is_bad_mac(twin_b):
    home, serial = twin_b["home"], twin_b["serial"]
    with in_home(home):
        kp = K.key_path(serial, "patient")  # a twin without an image: in its own folder
    assert kp.parent == home / "twins" / serial
    good = kp.read_text()
    kp.write_text(secrets.token_bytes(32).hex() + "\n")
    try:
        r = run_theca(home, "--device", twin_b["dev"], "--role", "patient", "status")
        assert r.returncode == 3
        assert "bad MAC" in r.stderr and str(kp) in r.stderr
        assert "unauthenticated" in r.stderr  # the device cannot sign it: a diagnosis
    finally:
        kp.write_text(good)
    assert run_theca(home, "--device", twin_b["dev"], "--role", "patient", "status").returncode == 0
    ev = device_events(home, twin_b["dev"])
    fails = [e for e in ev if e[2] == ev_code("auth_failure")]
    # recorded by the device (who 0) with the count and the role the frame claimed
    assert fails and fails[-1][3] == 0 and fails[-1][4] >= 1 and fails[-1][5] == 2


def test_missing_key_file_is_exit_2(twin_b):
    home, serial = twin_b["home"], twin_b["serial"]
    with in_home(home):
        kp = K.key_path(serial, "patient")
    kp.rename(kp.with_suffix(".away"))
    try:
        r = run_theca(home, "--device", twin_b["dev"], "bolus")
        assert r.returncode == 2
        assert str(kp) in r.stderr and "does not exist" in r.stderr
    finally:
        kp.with_suffix(".away").rename(kp)


def test_junk_frames_never_lock_out_a_signed_command(twin_b):
    # REQ: SR-AUTH-04
    # The attack: frames with a good CRC, role 1 and random MAC bytes kept every
    # suspend/resume refused (`backoff`). Now a keyless sender costs the device the check
    # and nothing else: signed commands go through while the junk flows.
    home, dev = twin_b["home"], twin_b["dev"]
    stop = threading.Event()
    sent = [0]

    def junk():
        # a foreign sender on the wire: it takes no lock (theca's own hosts do, one per port)
        fd = os.open(str(dev), os.O_RDWR | os.O_NOCTTY)
        try:
            while not stop.is_set():
                for role in (1, 2):
                    f = tp.build_command(tp.TYPES["SUSPEND"], tp.compiled(tp.Suspend).pack(0), role,
                                         secrets.token_bytes(32), secrets.randbits(32),
                                         secrets.randbits(32), 0, 0)
                    os.write(fd, b"\x00" + tp.cobs_encode(f) + b"\x00")
                    sent[0] += 1
                time.sleep(0.01)
        finally:
            os.close(fd)

    th = threading.Thread(target=junk, daemon=True)
    th.start()
    try:
        for _ in range(4):
            for cmd in ("suspend", "resume"):
                r = run_theca(home, "--device", dev, cmd)
                assert r.returncode == 0, (cmd, r.stderr)
    finally:
        stop.set()
        th.join(timeout=10)
    assert sent[0] >= 40
    st = status_json(home, dev)
    assert st["mode"] == "running" and "auth_backoff" not in st["alarms"]
    fails = [e for e in device_events(home, dev) if e[2] == ev_code("auth_failure")]
    # one record per window (the first at once), never one per frame
    assert 1 <= len(fails) <= 2, fails


def test_counters_survive_processes_and_never_repeat(twin_b):
    home, serial = twin_b["home"], twin_b["serial"]
    with in_home(home):
        cp = K.counter_path(serial, "clinician")
    c0 = int(cp.read_text())
    for _ in range(3):
        assert run_theca(home, "--device", twin_b["dev"], "status").returncode == 0
    c1 = int(cp.read_text())
    assert c1 == c0 + 6  # GET_INFO + GET_STATUS per run, each a new counter
    # a host that lost its counter file catches up from the device's `replay` answer
    cp.write_text("0\n")
    r = run_theca(home, "--device", twin_b["dev"], "status")
    assert r.returncode == 0 and "was behind" in r.stderr
    assert int(cp.read_text()) > c1


# --- the twin's life: restart on its image, maintenance, signals ------------------------------


def test_twin_restarts_on_its_flash_image_with_the_same_keys(tmp_path):
    home = tmp_path / "home"
    dev = tmp_path / "pump"
    img = tmp_path / "flash.img"
    with LiveTwin(dev, speed=10, env=env_for(home), args=["--flash-image", img]) as t:
        serial = t.serial
        assert "new pump" in t.banner[0]
        r = run_theca(home, "--device", dev, "suspend")  # stopped pumps cannot be suspended
        assert r.returncode == 3
    assert not dev.exists()  # the symlink goes with the twin
    keys = sorted(p.name for p in home.glob("*.key"))
    with LiveTwin(dev, speed=10, env=env_for(home), args=["--flash-image", img]) as t2:
        assert t2.serial == serial and "restarted" in t2.banner[0]
        assert status_json(home, dev)["serial"] == serial
    assert sorted(p.name for p in home.glob("*.key")) == keys  # no new keys
    # an image whose serial file is gone: refused, nothing started
    (tmp_path / "flash.img.serial").unlink()
    r = run_theca(home, "twin", "--pty", dev, "--flash-image", img)
    assert r.returncode == 2 and "flash.img.serial" in r.stderr


def test_flash_image_state_survives_a_sigkill_of_the_twin(tmp_path, rx_file):
    # REQ: SR-PWR-01
    # interface.md: state in the flash image survives a restart or a SIGKILL of the twin
    home = tmp_path / "home"
    dev = tmp_path / "pump"
    img = tmp_path / "flash.img"
    t = LiveTwin(dev, speed=600, env=env_for(home),
                 args=["--flash-image", img, "--reservoir-ml", 15]).start()
    try:
        assert run_theca(home, "--device", dev, "program", rx_file, "--yes").returncode == 0
        r = run_theca(home, "--device", dev, "refill", "--volume", "1 mL",
                      "--concentration", "10 mg/mL", "--residual", "15 mL")
        assert r.returncode == 0, r.stderr
        time.sleep(2)  # 20 minutes of therapy at 600x
        before = status_json(home, dev)
        events_before = device_events(home, dev)
    finally:
        t.proc.kill()  # SIGKILL: no shutdown at all (the firmware dies with it)
        t.proc.wait()
    time.sleep(0.5)
    with LiveTwin(dev, speed=600, env=env_for(home), args=["--flash-image", img]) as t2:
        assert "restarted" in t2.banner[0]
        after = status_json(home, dev)
        assert after["serial"] == before["serial"] and after["drug"] == before["drug"]
        assert after["mode"] == "running"
        # nothing lost, nothing over-estimated: the reservoir is at most what it was
        assert after["delivered_ul"] >= before["delivered_ul"]
        assert after["reservoir_ul"] <= before["reservoir_ul"]
        assert abs(after["reservoir_ul"] + after["delivered_ul"]
                   - before["reservoir_ul"] - before["delivered_ul"]) < 0.001
        evs = device_events(home, dev)
        seqs = [e[1] for e in evs]
        assert seqs == sorted(set(seqs))  # numbers unique and in order
        assert {e[1] for e in events_before} <= set(seqs)  # every event read before is kept
        # the restart is logged after everything that came before it
        assert any(e[2] == ev_code("boot") and e[1] > events_before[-1][1] for e in evs)


def test_maintenance_ends_the_twin_and_sigint_stops_it(tmp_path):
    home = tmp_path / "home"
    dev = tmp_path / "pump"
    t = LiveTwin(dev, speed=10, env=env_for(home)).start()
    r = run_theca(home, "--device", dev, "maintenance")
    assert r.returncode == 0 and "maintenance" in r.stdout
    assert t.proc.wait(timeout=10) == 0  # the firmware returned to the REPL: the twin ends
    assert "MAINTENANCE" in t.output()
    t.stop()
    t = LiveTwin(dev, speed=10, env=env_for(home)).start()
    assert t.stop(signal.SIGINT) == 0
    assert not dev.exists()


def test_twin_refuses_bad_options(tmp_path):
    home = tmp_path / "home"
    for args, word in ((["--speed", "0"], "--speed"), (["--reservoir-ml", "25"], "--reservoir-ml"),
                       (["--heapsize", "lots"], "--heapsize")):
        r = run_theca(home, "twin", "--pty", tmp_path / "p", *args)
        assert r.returncode == 2 and word in r.stderr, (args, r.stderr)
    (tmp_path / "file").write_text("x")
    r = run_theca(home, "twin", "--pty", tmp_path / "file")
    assert r.returncode == 2 and "not a symlink" in r.stderr


def test_device_given_by_serial_when_several_are_known(twin_a, twin_b, tmp_path):
    # two devices' keys in one store: the path tells which; unknown paths must say
    home = tmp_path / "home"
    home.mkdir()
    for t in (twin_a, twin_b):
        for role in ("clinician", "patient"):
            with in_home(t["home"]):
                kf, cf = K.key_path(t["serial"], role), K.counter_path(t["serial"], role)
            for f, name in ((kf, f"{t['serial']}-{role}.key"),
                            (cf, f"{t['serial']}-{role}.counter")):
                (home / name).write_bytes(f.read_bytes())
                (home / name).chmod(0o600)
    r = run_theca(home, "--device", twin_a["dev"], "status")
    assert r.returncode == 2 and "THECA_SERIAL" in r.stderr
    r = run_theca(home, "--device", twin_b["dev"], "status",
                  env=env_for(home, THECA_SERIAL=twin_b["serial"]))
    assert r.returncode == 0, r.stderr
    with pytest.raises(LinkFailure):
        with in_home(home):
            Client(str(tmp_path / "nothing"), twin_a["serial"])
    # issue 13: a wrong path with keys of several devices was told about THECA_SERIAL
    r = run_theca(home, "--device", tmp_path / "nothing", "status")
    assert r.returncode == 4 and "cannot open" in r.stderr and "THECA_SERIAL" not in r.stderr


def test_a_live_twin_survives_clock_changes_and_refuses_what_does_not_fit(tmp_path, rx_file):
    # Before: two of three forward set-time commands ended a live twin at --speed 60 (a
    # false watchdog reset); a 2054 clock was accepted and hung the engine; a 0.3 mg bolus
    # over 1 s wrapped its rate.
    # REQ: SR-TIME-01
    # REQ: SR-TIME-02
    # REQ: SR-LIM-06
    home, dev = tmp_path / "home", tmp_path / "pump"
    with LiveTwin(dev, speed=60, env=env_for(home),
                  args=["--flash-image", tmp_path / "flash.img"]) as t:
        assert run_theca(home, "--device", dev, "program", rx_file, "--yes").returncode == 0
        for hours in (1, 3, 5):
            st = json.loads(run_theca(home, "--device", dev, "status", "--json").stdout)
            now = datetime.fromisoformat(st["device_time"].replace("Z", "+00:00"))
            later = (now + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
            r = run_theca(home, "--device", dev, "set-time", "--utc", later, "--offset", "+00:00")
            assert r.returncode == 0, r.stderr
            time.sleep(3)  # three device minutes: a false watchdog would have bitten
        assert t.proc.poll() is None, "the twin died after a clock change"
        r = run_theca(home, "--device", dev, "set-time", "--utc", "2054-01-09T13:20:00Z")
        assert r.returncode == 2 and "--utc" in r.stderr, r.stderr
        r = run_theca(home, "--device", dev, "clinician-bolus", "--dose", "0.3 mg",
                      "--duration", "1 s")
        assert r.returncode == 2 and "--duration" in r.stderr and "max_rate" in r.stderr, r.stderr
        st = json.loads(run_theca(home, "--device", dev, "status", "--json").stdout)
        assert st["mode"] == "running"
        names = [N.EVENTS[e[2]].name for e in device_events(home, dev)]
        assert names.count("time_changed") == 3 and "bolus_started" not in names


def test_refill_over_the_maximum_concentration_names_the_limit_and_its_value(twin_a):
    # a fill of another concentration is shown beside the reservoir's and asked for first
    # (issue 24); a piped answer is not taken
    r = run_theca(twin_a["home"], "--device", twin_a["dev"], "refill", "--volume", "1 mL",
                  "--concentration", "30 mg/mL", "--residual", "1 mL", input="y\n")
    assert r.returncode == 1 and "nothing was sent" in r.stderr, r.stdout + r.stderr
    assert "now   morphine 10 mg/mL" in r.stdout and "new   morphine 30 mg/mL" in r.stdout, r.stdout
    r = run_theca(twin_a["home"], "--device", twin_a["dev"], "refill", "--volume", "1 mL",
                  "--concentration", "30 mg/mL", "--residual", "1 mL", "--yes")
    assert r.returncode == 3, r.stderr
    assert "limit: max_concentration: 30 mg/mL is over the drug's maximum concentration " \
           "25 mg/mL" in r.stderr, r.stderr


def _morphine(path: Path, mg_day: str) -> Path:
    path.write_text(f'drug = "morphine"\nconcentration = "10 mg/mL"\n[[steps]]\nstart = "00:00"\n'
                    f'rate = "{mg_day} mg/day"\n')
    return path


def test_program_shows_the_pump_s_prescription_and_guards_the_titration(tmp_path):
    # REQ: SR-TITR-01
    home, dev = tmp_path / "home", tmp_path / "pump"
    with LiveTwin(dev, speed=600, env=env_for(home), args=["--flash-image", tmp_path / "f.img"]):
        assert run_theca(home, "--device", dev, "program", _morphine(tmp_path / "a.toml", "2"),
                         "--yes").returncode == 0
        # +25 % is within morphine's 50 % a change, but not 24 h after the last change
        r = run_theca(home, "--device", dev, "program", _morphine(tmp_path / "b.toml", "2.5"),
                      "--yes")
        assert r.returncode == 2 and "soft limit: titration: the prescription in force was " \
            "programmed" in r.stderr, r.stderr
        # the case: 2 -> 9.5 mg/day in one change
        high = _morphine(tmp_path / "c.toml", "9.5")
        r = run_theca(home, "--device", dev, "program", high, "--yes")
        assert r.returncode == 2 and "an increase of 7.5 mg/day (+375 %)" in r.stderr, r.stderr
        assert status_json(home, dev)["rate_ul_per_day"] == 200.0  # nothing was sent
        r = run_theca(home, "--device", dev, "program", high, "--yes", "--override-soft-limit")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert any(ln.split()[:1] == ["daily"] and "2 mg/day" in ln and "9.5 mg/day" in ln
                   and ln.rstrip().endswith("+375 %") for ln in lines), r.stdout
        assert any("on the pump" in ln and "new" in ln for ln in lines)
        ev = [e for e in device_events(home, dev) if e[2] == ev_code("prescription_changed")]
        assert N.flag_names(N.SOFT_LIMITS, ev[-1][7]) == ["titration"]
        assert ev[0][7] == 0  # the first was within every soft limit
        assert status_json(home, dev)["rate_ul_per_day"] == 950.0


def test_catheter_and_prime_from_the_command_line(twin_a):
    # REQ: SR-CATH-01
    home, dev = twin_a["home"], twin_a["dev"]
    s = status_json(home, dev)
    assert s["catheter_primed"] is True and s["catheter_ul"] == 150
    assert s["refill_due_reason"] in ("reservoir", "stability") and s["refill_due"].endswith("Z")
    assert 0 < s["heap_free"] < s["heap_total"]
    r = run_theca(home, "--device", dev, "catheter", "--volume", "2 mL")
    assert r.returncode == 2 and "--volume" in r.stderr and "at most 1 mL" in r.stderr
    # it asks first, showing what the prime will push; a piped answer is not taken
    r = run_theca(home, "--device", dev, "catheter", "--volume", "120 uL", input="y\n")
    assert r.returncode == 1 and "not confirmed" in r.stderr and "nothing was sent" in r.stderr
    assert "120 uL = 1.2 mg of morphine" in r.stdout and "old catheter" in r.stdout, r.stdout
    assert status_json(home, dev)["catheter_primed"] is True
    r = run_theca(home, "--device", dev, "catheter", "--volume", "120 uL", "--yes")
    assert r.returncode == 0 and "prime it" in r.stdout, r.stderr
    s = status_json(home, dev)
    assert s["catheter_primed"] is False and s["catheter_ul"] == 120
    r = run_theca(home, "--device", dev, "--role", "patient", "prime")
    assert r.returncode == 3 and "forbidden" in r.stderr
    r = run_theca(home, "--device", dev, "prime")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30  # 432 device seconds at 600x
    while not status_json(home, dev)["catheter_primed"]:
        assert time.monotonic() < deadline, "the prime did not complete"
        time.sleep(0.2)
    r = run_theca(home, "--device", dev, "prime")
    assert r.returncode == 3 and "primed already" in r.stderr, r.stderr
    ev = device_events(home, dev)
    names = [N.EVENTS[e[2]].name for e in ev if e[2] in N.EVENTS]
    assert names.count("catheter_changed") == 1 and names.count("prime_completed") == 1
    # the prime pushes what the basal has not yet pushed since the change: all of it
    began = [e for e in ev if e[2] == ev_code("prime_started")][0]
    done = [e for e in ev if e[2] == ev_code("prime_completed")][0]
    assert done[4] == began[4] and 110_000 < began[4] <= 120_000, (began, done)
    r = run_theca(home, "--device", dev, "status")
    assert "catheter    120 uL, primed" in r.stdout and "refill by" in r.stdout, r.stdout


def test_a_device_path_that_is_no_port_is_named_for_what_it_is(tmp_path):
    # issue 25: --device /dev/null got advice about the keys of several devices
    home = tmp_path / "home"
    (tmp_path / "file").write_text("")
    for dev, words in (("/dev/null", "memory device"), (tmp_path / "file", "is a file"),
                       (tmp_path, "is a folder")):
        r = run_theca(home, "--device", dev, "status")
        assert r.returncode == 4 and words in r.stderr and "keys" not in r.stderr, r.stderr
