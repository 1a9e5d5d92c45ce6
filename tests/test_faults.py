"""Every fault kind a scenario can inject, with the alarms and the therapy state checked
(SR-STALL, SR-OCCL, SR-BATT, SR-POWER)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RX = (ROOT / "examples" / "rx_morphine.toml").read_text()
HEAD = 'start = 2026-01-01T00:00:00Z\nstatus_period_s = 60\nreservoir_ml = 20.0\nprescription = "rx.toml"\n'


def run(tmp_path: Path, body: str, days: float = 1):
    (tmp_path / "rx.toml").write_text(RX)
    sc = tmp_path / "s.toml"
    sc.write_text(HEAD + f"days = {days}\n" + body)
    out = tmp_path / "r.tlog"
    r = subprocess.run([sys.executable, "-m", "theca.cli", "simulate", str(sc), "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    d = subprocess.run([sys.executable, "-m", "theca.cli", "decode", str(out), "--format", "jsonl"],
                       capture_output=True, text=True, cwd=ROOT, check=True)
    objs = [json.loads(x) for x in d.stdout.splitlines()]
    return objs, r.stdout


def events(objs, name=None):
    return [o for o in objs if o["kind"] == "event" and (name is None or o["event"] == name)]


def status_at(objs, t):
    return next(o for o in objs if o["kind"] == "status" and o["t"] >= t)


def test_motor_stall_nothing_counted_then_recovery(tmp_path):
    # REQ: SR-STALL-01
    objs, _ = run(tmp_path, '[[faults]]\nat = 2026-01-01T06:00:00Z\nkind = "motor_stall"\nduration = "40 min"\n')
    raised = [e for e in events(objs, "alarm_raised") if e["alarm"] == "motor_stall"]
    cleared = [e for e in events(objs, "alarm_cleared") if e["alarm"] == "motor_stall"]
    assert len(raised) == 1 and len(cleared) == 1
    assert "2026-01-01T06:00" <= raised[0]["t"] < "2026-01-01T06:05"
    assert "2026-01-01T06:40" <= cleared[0]["t"] < "2026-01-01T06:42"
    # nothing counted as delivered while stalled
    a = status_at(objs, raised[0]["t"])
    b = [o for o in objs if o["kind"] == "status" and o["t"] < cleared[0]["t"]][-1]
    assert a["delivered_ul"] == b["delivered_ul"]
    assert a["mode"] == "halted" and "motor_stall" in a["alarms"]
    assert events(objs, "motor_recovered")
    assert status_at(objs, "2026-01-01T07:00:00Z")["mode"] == "running"


def test_occlusion_stops_delivery_until_cleared(tmp_path):
    # REQ: SR-OCCL-01
    objs, _ = run(tmp_path, '[[faults]]\nat = 2026-01-01T10:00:00Z\nkind = "occlusion"\nduration = "2 h"\n')
    raised = [e for e in events(objs, "alarm_raised") if e["alarm"] == "occlusion"]
    assert raised and raised[0]["t"] < "2026-01-01T10:11"
    s1 = status_at(objs, "2026-01-01T10:30:00Z")
    s2 = status_at(objs, "2026-01-01T11:50:00Z")
    assert s1["mode"] == "halted" and "occlusion" in s1["alarms"]
    assert s1["delivered_ul"] == s2["delivered_ul"]  # delivery stopped
    assert status_at(objs, "2026-01-01T12:30:00Z")["mode"] == "running"


def test_battery_eri_then_end_of_service_stops_therapy(tmp_path):
    # REQ: SR-BATT-01
    body = ('[[faults]]\nat = 2026-01-01T06:00:00Z\nkind = "battery"\nremaining = "80 days"\n'
            '[[faults]]\nat = 2026-01-01T12:00:00Z\nkind = "battery"\nremaining = "0 days"\n')
    objs, _ = run(tmp_path, body)
    names = [(e["alarm"], e["t"][:16]) for e in events(objs, "alarm_raised")]
    assert ("battery_eri", "2026-01-01T06:00") in names
    assert ("battery_eos", "2026-01-01T12:00") in names
    s = status_at(objs, "2026-01-01T13:00:00Z")
    assert s["mode"] == "halted" and "battery_eos" in s["alarms"]
    assert s["delivered_ul"] == status_at(objs, "2026-01-01T23:00:00Z")["delivered_ul"]


def test_power_loss_reboots_without_catch_up(tmp_path):
    # REQ: SR-PWR-02
    # REQ: SR-PWR-03
    body = '[[faults]]\nat = 2026-01-01T10:00:00Z\nkind = "power_loss"\nduration = "3 h"\n'
    objs, text = run(tmp_path, body)
    boots = events(objs, "boot")
    assert [b["t"][:16] for b in boots] == ["2026-01-01T00:00", "2026-01-01T13:00"]
    gap = events(objs, "delivery_gap")
    assert gap and gap[0]["gap_s"] >= 3 * 3600
    # no catch-up: the day delivers the plan less the three hours without power
    end = [o for o in objs if o["kind"] == "status"][-1]
    full_day = 203.3  # uL: 1.5 mg/day 0-8 h, 2 mg/day 8-24 h, 0.2 mg at noon, 10 mg/mL
    assert end["delivered_ul"] < full_day - 3 / 24 * 200 + 1
    assert "Mechanism (physical truth)" in text
    assert abs(end["reservoir_ul"] - (20000 - end["delivered_ul"])) < 0.001


def test_a_stalled_pump_that_restarts_still_tries_its_motor(tmp_path):
    # REQ: SR-STALL-01
    # Found on the emulated Pico: the retry of a stalled motor lived in RAM only, so a
    # pump halted by a stall that then restarted (power loss, watchdog) stayed halted
    # for good though the motor was free again.
    body = ('[[faults]]\nat = 2026-01-01T06:00:00Z\nkind = "motor_stall"\nduration = "40 min"\n'
            '[[faults]]\nat = 2026-01-01T06:20:00Z\nkind = "power_loss"\nduration = "10 min"\n')
    objs, _ = run(tmp_path, body)
    raised = [e for e in events(objs, "alarm_raised") if e["alarm"] == "motor_stall"]
    cleared = [e for e in events(objs, "alarm_cleared") if e["alarm"] == "motor_stall"]
    assert [b["t"][:16] for b in events(objs, "boot")] == ["2026-01-01T00:00", "2026-01-01T06:30"]
    assert len(raised) == 1 and len(cleared) == 1
    assert "2026-01-01T06:40" <= cleared[0]["t"] < "2026-01-01T06:42"
    assert status_at(objs, "2026-01-01T07:00:00Z")["mode"] == "running"
