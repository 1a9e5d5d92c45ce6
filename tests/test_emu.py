"""The firmware on the official MicroPython rp2 firmware, on an emulated RP2040 (rp2040js,
`theca emu`): flashed as a real board with `theca flash`, then therapy, a bolus, the log,
a restart on the same flash, a stall, an occlusion, a hung therapy task bitten by the
real watchdog, and the REPL that MAINTENANCE leaves. Judged by the emulator's physical
truth (STEP pulses with the driver enabled), not by what the firmware believes.

These tests fail when node or rp2040js is missing (`make setup` installs them). Without the
firmware and the boot ROM ($THECA_RP2_FIRMWARE, ../shared/rp2 or ~/.cache/theca/rp2) they
are skipped, naming what is missing and where to put it, except in CI (CI=true), where they
fail: a clone anywhere passes `make test`, and CI never passes without them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import theca_protocol as tp
from test_link import RX, run_theca, status_json
from theca.emu import Emulator
from theca.errors import BadInput
from theca_protocol.storage import TruthRecord

pytestmark = pytest.mark.timeout(400)


def _firmware_or_skip() -> None:
    from theca.emu import firmware_missing

    missing = firmware_missing()
    if missing and os.environ.get("CI", "").lower() != "true":
        pytest.skip(f"the emulated Pico: {missing}", allow_module_level=True)


_firmware_or_skip()

STROKE_NL = 250

_TRUTH = tp.compiled(TruthRecord)


def mpremote(dev, *args, timeout=60) -> subprocess.CompletedProcess:
    from theca.board.flash import mpremote as exe

    return subprocess.run([exe(), "connect", str(dev), *args], capture_output=True, text=True,
                          timeout=timeout)


def wait_status(home, dev, pred, timeout=60.0, what="") -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = run_theca(home, "--device", dev, "status", "--json")
        if r.returncode == 0:
            last = json.loads(r.stdout)
            if pred(last):
                return last
        time.sleep(2)  # the emulator paces idle time to real time while a host talks
    raise AssertionError(f"no status {what} in {timeout} s; last: {last}")


def log_events(home, dev, out: Path) -> list[dict]:
    r = run_theca(home, "--device", dev, "log", "pull", "-o", out)
    assert r.returncode == 0, r.stderr
    d = run_theca(home, "decode", out, "--format", "jsonl")
    assert d.returncode == 0, d.stderr
    return [o for o in map(json.loads, d.stdout.splitlines()) if o["kind"] == "event"]


@pytest.fixture(scope="module")
def pico(tmp_path_factory):
    """A bare emulated Pico, flashed with `theca flash --board rp2_pico` as a real one."""
    base = tmp_path_factory.mktemp("pico")
    home, dev, image = base / "home", base / "dev", base / "flash.img"
    t0 = time.monotonic()
    emu = Emulator(dev, flash_image=image).start()
    r = run_theca(home, "--device", dev, "flash", "--board", "rp2_pico", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\nflash of the emulated Pico: {time.monotonic() - t0:.1f} s")
    box = {"emu": emu, "home": home, "dev": dev, "image": image, "base": base,
           "flash_out": r.stdout}
    yield box
    box["emu"].stop()


def restart(pico, **kw) -> Emulator:
    """Stop the emulator and start it again on its flash image (a power cycle)."""
    pico["emu"].stop()
    pico["emu"] = Emulator(pico["dev"], flash_image=pico["image"], **kw).start()
    return pico["emu"]


def test_1_flash_program_bolus_log_then_restart_keeps_therapy(pico):
    home, dev, emu = pico["home"], pico["dev"], pico["emu"]
    s = status_json(home, dev)
    assert s["mode"] == "stopped" and s["reservoir_ul"] == 20_000
    # a Pico's RTC restarts at 2021-01-01: `theca flash` set it from the host's clock
    assert "its clock set from this host's" in pico["flash_out"], pico["flash_out"]
    assert s["device_time"][:4] >= "2026", s
    info = run_theca(home, "--device", dev, "info", "--json")
    assert info.returncode == 0, info.stderr
    i = json.loads(info.stdout)
    assert i["machine"] == "Raspberry Pi Pico with RP2040" and 0 < i["heap_free"] < i["heap_total"]
    assert run_theca(home, "--device", dev, "set-time").returncode == 0
    rx = pico["base"] / "rx.toml"
    rx.write_text(RX)
    r = run_theca(home, "--device", dev, "program", rx, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_theca(home, "--device", dev, "bolus")
    assert r.returncode == 0, r.stdout + r.stderr
    # the 0.1 mg bolus (10 uL = 40 strokes) runs over a minute, beside the basal
    s = wait_status(home, dev, lambda s: s["delivered_ul"] >= 12, 90, "past the bolus")
    # the flash's machine.reset() is the only reset: no watchdog bite
    assert [(e["kind"], e["why"]) for e in emu.events if e["ev"] == "reset"] == [
        ("force", "machine.reset()")], [e for e in emu.events if e["ev"] == "reset"]
    # the physical truth and the pump agree to the stroke (a stroke may be under way)
    s = status_json(home, dev)
    got = emu.strokes()
    assert abs(got * STROKE_NL / 1000 - s["delivered_ul"]) <= 2 * STROKE_NL / 1000, (got, s)
    ev = log_events(home, dev, pico["base"] / "a.tlog")
    names = [e["event"] for e in ev]
    for n in ("boot", "prescription_changed", "therapy_started", "bolus_started", "bolus_completed"):
        assert n in names, names
    # a power cycle: the emulator again on the same flash
    before = s["delivered_ul"]
    restart(pico)
    s2 = wait_status(home, dev, lambda s: s["mode"] == "running", 60, "running after restart")
    assert s2["drug"] == "morphine" and s2["delivered_ul"] >= before
    ev2 = log_events(home, dev, pico["base"] / "b.tlog")
    assert [e["seq"] for e in ev2[: len(ev)]] == [e["seq"] for e in ev]  # the log survived
    assert [e["cause"] for e in ev2 if e["event"] == "boot"][-1] == "power_on"


def test_2_a_stall_and_an_occlusion_raise_their_alarms(pico):
    # REQ: SR-STALL-01
    # REQ: SR-OCCL-01
    home, dev, emu = pico["home"], pico["dev"], pico["emu"]
    wait_status(home, dev, lambda s: s["mode"] == "running", 60, "running")
    n = emu.strokes()
    first = len(emu.events)
    emu.control(encoder=False)  # the rotor does not turn: no feedback edge
    s = wait_status(home, dev, lambda s: "motor_stall" in s["alarms"], 120, "with motor_stall")
    assert s["mode"] == "halted"
    # the alarm sounds: the buzzer's PWM makes a tone
    assert emu.wait_for(lambda e: e["ev"] == "tone" and e["hz"] > 100, 60, start=first) is not None
    # a stalled stroke delivered nothing the pump counted as delivered
    emu.control(encoder=True)
    s = wait_status(home, dev, lambda s: "motor_stall" not in s["alarms"] and s["mode"] == "running",
                    120, "recovered")
    assert emu.strokes() > n
    emu.control(occlusion=True)
    s = wait_status(home, dev, lambda s: "occlusion" in s["alarms"], 120, "with occlusion")
    assert s["mode"] == "halted"
    k = emu.strokes()
    time.sleep(3)
    assert emu.strokes() == k  # nothing moves against a blocked line
    emu.control(occlusion=False)
    wait_status(home, dev, lambda s: "occlusion" not in s["alarms"] and s["mode"] == "running",
                120, "occlusion cleared")


HANG_MAIN = """\
import os
import micropython
micropython.kbd_intr(-1)
import theca_main
try:
    os.remove("hang.arm")
    armed = True
except OSError:
    armed = False
if armed:
    import asyncio

    async def hung(app, clock, sh):
        await asyncio.Event().wait()  # a therapy task that never comes back

    theca_main.therapy_task = hung
theca_main.main()
"""


def test_3_the_real_watchdog_resets_a_hung_therapy_task_and_maintenance_leaves_a_repl(pico):
    # REQ: SR-WDT-01
    home, dev, emu = pico["home"], pico["dev"], pico["emu"]
    r = run_theca(home, "--device", dev, "maintenance")
    assert r.returncode == 0, r.stdout + r.stderr
    assert emu.wait_for(lambda e: e["ev"] == "reset", 30) is not None
    # the maintenance boot's REPL survives mpremote's soft reset and a minute more
    r = mpremote(dev, "exec", "import machine; print('repl', machine.reset_cause())")
    assert r.returncode == 0 and "repl" in r.stdout, r.stdout + r.stderr
    resets = sum(1 for e in emu.events if e["ev"] == "reset")
    t0 = emu.stats()["t"]
    while emu.stats()["t"] < t0 + 60e9:
        time.sleep(0.5)
    r = mpremote(dev, "exec", "print('still the repl')")
    assert r.returncode == 0 and "still the repl" in r.stdout, r.stdout + r.stderr
    assert sum(1 for e in emu.events if e["ev"] == "reset") == resets  # no watchdog bite
    # a therapy task that hangs once: main.py with a fault armed by a file
    shim = pico["base"] / "main.py"
    shim.write_text(HANG_MAIN)
    arm = pico["base"] / "hang.arm"
    arm.write_text("")
    r = mpremote(dev, "resume", "fs", "cp", str(shim), ":main.py", "+", "fs", "cp", str(arm), ":hang.arm")
    assert r.returncode == 0, r.stdout + r.stderr
    n = len(emu.events)
    r = mpremote(dev, "resume", "exec", "--no-follow", "import machine; machine.reset()")
    bite = emu.wait_for(lambda e: e["ev"] == "reset" and e["kind"] == "watchdog", 120, start=n)
    assert bite is not None, [e for e in emu.events[n:] if e["ev"] != "stroke"]
    s = wait_status(home, dev, lambda s: s["mode"] in ("running", "suspended"), 90, "after the bite")
    ev = log_events(home, dev, pico["base"] / "c.tlog")
    assert [e["cause"] for e in ev if e["event"] == "boot"][-1] == "watchdog"
    if s["mode"] == "suspended":  # MAINTENANCE suspended it
        assert run_theca(home, "--device", dev, "resume").returncode == 0
    n = emu.strokes()
    wait_status(home, dev, lambda s: s["mode"] == "running", 30, "running")
    deadline = time.monotonic() + 60
    while emu.strokes() == n and time.monotonic() < deadline:
        time.sleep(1)
    assert emu.strokes() > n  # the pump delivers again


def test_missing_or_damaged_firmware_is_named(tmp_path, monkeypatch):
    from theca.emu import BOOTROM_NAME, FIRMWARE_NAME, rp2_dir

    real = rp2_dir()  # this run's: $THECA_RP2_FIRMWARE, ../shared/rp2 or the user cache
    monkeypatch.setenv("THECA_RP2_FIRMWARE", str(tmp_path))
    with pytest.raises(BadInput, match="not found"):
        Emulator(tmp_path / "dev")
    from theca.emu import firmware_missing

    assert f"{FIRMWARE_NAME} and {BOOTROM_NAME} not found" in (firmware_missing() or "")
    for name in (FIRMWARE_NAME, BOOTROM_NAME, "SHA256SUMS"):
        (tmp_path / name).write_bytes((real / name).read_bytes())
    monkeypatch.setenv("THECA_RP2_FIRMWARE", str(tmp_path))
    Emulator(tmp_path / "dev")  # a good copy is taken
    bad = bytearray((tmp_path / FIRMWARE_NAME).read_bytes())
    bad[1000] ^= 1
    (tmp_path / FIRMWARE_NAME).write_bytes(bytes(bad))
    with pytest.raises(BadInput, match="does not match SHA256SUMS"):
        Emulator(tmp_path / "dev")
    # --firmware: the user's choice, used with a warning naming both hashes
    Emulator(tmp_path / "dev", firmware=tmp_path / FIRMWARE_NAME)
    (tmp_path / "img").write_bytes(b"\xff" * 100)
    monkeypatch.setenv("THECA_RP2_FIRMWARE", str(real))
    with pytest.raises(BadInput, match="not a 2097152-byte Pico flash image"):
        Emulator(tmp_path / "dev", flash_image=tmp_path / "img")


RX_STEP = """drug = "morphine"
concentration = "10 mg/mL"
[[steps]]
start = "00:00"
rate = "2 mg/day"
[[steps]]
start = "00:30"
rate = "3 mg/day"
[patient_bolus]
dose = "0.05 mg"
duration = "1 min"
lockout = "20 min"
max_per_day = 4
"""


def _t(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def _iso(t: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_4_the_same_scenario_on_the_emulated_pico_and_on_the_twin(tmp_path):
    """An hour of device time with a step change, boluses and a denial, on the Pico
    first; then on the twin with every command at the device time the Pico logged it:
    the same events in the same order at the same times, the same strokes."""

    import theca_protocol as tp
    from theca.inputs.scenario import load_scenario
    from theca.twin.simulate import simulate

    home, dev = tmp_path / "home", tmp_path / "dev"
    with Emulator(dev, flash_image=tmp_path / "flash.img") as emu:
        r = run_theca(home, "--device", dev, "flash", "--board", "rp2_pico", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        # midnight, so that the step at 00:30 comes within the hour run here
        r = run_theca(home, "--device", dev, "set-time", "--utc", "2026-01-01T00:00:00Z")
        assert r.returncode == 0, r.stdout + r.stderr
        d0 = _t(status_json(home, dev)["device_time"])
        rx = tmp_path / "rx.toml"
        rx.write_text(RX_STEP)
        r = run_theca(home, "--device", dev, "program", rx, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        for at in (4 * 60, 11 * 60, 41 * 60):  # given, denied (lockout), given
            wait_status(home, dev, lambda s, at=at: _t(s["device_time"]) >= d0 + at, 120, f"at +{at} s")
            r = run_theca(home, "--device", dev, "bolus")
            assert r.returncode in (0, 3), r.stdout + r.stderr
        s = wait_status(home, dev, lambda s: _t(s["device_time"]) >= d0 + 55 * 60, 120, "at +55 min")
        end = _t(s["device_time"])
        pico_strokes = emu.strokes()
        ev = log_events(home, dev, tmp_path / "pico.tlog")
    start = next(_t(e["t"]) for e in ev if e["event"] == "prescription_changed")
    presses = [_t(e["t"]) for e in ev if e["event"] in ("bolus_started", "bolus_denied")
               and e["who"] == "patient"]
    assert len(presses) == 3, ev
    body = "".join(f'[[events]]\nat = {_iso(t)}\naction = "patient_bolus"\n' for t in presses)
    (tmp_path / "s.toml").write_text(
        f'start = {_iso(start)}\ndays = {(end + 1 - start) / 86400!r}\nstatus_period_s = 3600\n'
        f'reservoir_ml = 20.0\nprescription = "rx.toml"\n' + body)
    stream = tmp_path / "truth.bin"
    res = simulate(load_scenario(tmp_path / "s.toml"), tmp_path / "twin.tlog",
                   extra={"truth_stream": str(stream)})
    assert res["returncode"] == 0, res["stderr"][-2000:]
    d = run_theca(home, "decode", tmp_path / "twin.tlog", "--format", "jsonl")
    twin_ev = [o for o in map(json.loads, d.stdout.splitlines()) if o["kind"] == "event"]

    def key(e):
        # (the numbers differ by the flash's own time_changed, which the twin has not)
        return {k: v for k, v in e.items() if k not in ("seq", "kind", "event_seq")}

    def from_program(evs):
        i = next(i for i, e in enumerate(evs) if e["event"] == "prescription_changed")
        return [key(e) for e in evs[i:] if e["event"] != "boot" and _t(e["t"]) <= end]

    i0 = next(i for i, e in enumerate(ev) if e["event"] == "prescription_changed")
    nums = [e["event_seq"] for e in ev[i0:] if _t(e["t"]) <= end]
    assert nums == list(range(nums[0], nums[0] + len(nums))), nums  # none lost, none twice
    a, b = from_program(ev), from_program(twin_ev)
    assert a == b, "\n".join(f"{x}\n{y}\n" for x, y in zip(a, b, strict=False) if x != y) or (len(a), len(b))
    names = [e["event"] for e in a]
    assert "step_changed" in names and "bolus_denied" in names and names.count("bolus_completed") == 2
    data = stream.read_bytes()
    times = [_TRUTH.unpack_from(data, o)[0] + tp.EPOCH_UNIX for o in range(0, len(data), 16)]
    lo = sum(1 for t in times if t < end)
    hi = sum(1 for t in times if t <= end)
    # the status was read somewhere inside second `end`: a stroke due in it may be either side
    assert lo <= pico_strokes <= hi, (pico_strokes, lo, hi)
    assert lo > 40
