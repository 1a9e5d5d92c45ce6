"""`theca trumpet`: the IEC 60601-2-24 trumpet curve from 30 s samples of delivered volume.

Synthetic logs with known flow (a constant rate; a stepwise delivery whose Ep(max) and
Ep(min) are computed by hand below), a real twin log with 30 s status frames checked
against an independent computation from `decode --format jsonl`, and every refusal
(exit status 2, naming the problem)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_decode_extras import T0, Log
from theca.analysis import trumpet
from theca.cli import main as cli_main
from theca.log.data import read_log
from theca.log.records import iso

ROOT = Path(__file__).resolve().parent.parent
START = T0 + 3600  # the hour analysed in the synthetic logs: 01:00 to 02:00
START_ISO = "2026-01-01T01:00:00Z"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def flow_log(volume_nl, rate_nl_day: int, period: int = 30, hours: float = 3,
             **status) -> Log:
    """A log whose delivered volume at device time t is volume_nl(t - T0), status every `period`."""
    lg = Log()
    lg.info(T0)
    lg.event(T0, "therapy_started", who=1)
    for k in range(int(hours * 3600 // period) + 1):
        t = T0 + k * period
        v = int(volume_nl(t - T0))
        lg.status(t, delivered_ul=v // 1000, delivered_nl=v % 1000, rate_nl_day=rate_nl_day,
                  **status)
    return lg


def curve(tmp_path, lg: Log, start: int = START) -> trumpet.Trumpet:
    return trumpet.compute(read_log(lg.write(tmp_path / "t.tlog")), start)


def test_exact_constant_flow_has_no_error(tmp_path):
    # 288 uL/day = 100 nL every 30 s exactly: every window's mean flow is the set rate
    tr = curve(tmp_path, flow_log(lambda s: s * 288_000 // 86400, 288_000))
    assert tr.mean_error == 0.0
    assert all(mx == 0.0 and mn == 0.0 for mx, mn, _ in tr.windows.values())
    assert {p: m for p, (_, _, m) in tr.windows.items()} == {2: 117, 5: 111, 11: 99, 19: 83,
                                                             31: 59}


@pytest.mark.parametrize("rate", [150_000, 200_000, 1_000_000])
def test_constant_rate_in_strokes_within_one_stroke(tmp_path, rate):
    """Delivery in 250 nL strokes at a constant rate: |Ep| of a P-minute window is at most
    one stroke over the volume the set rate gives in P minutes."""
    stroke = 250
    tr = curve(tmp_path, flow_log(lambda s: (s * rate // 86400) // stroke * stroke, rate))
    for p, (mx, mn, _) in tr.windows.items():
        bound = 100 * stroke / (rate * p * 60 / 86400)
        assert -bound - 1e-9 <= mn <= mx <= bound + 1e-9, (p, mx, mn, bound)
    assert abs(tr.mean_error) <= 100 * stroke / (rate / 24) + 1e-9
    # the longest windows come close to the set rate
    assert abs(tr.windows[31][0]) < 100 * stroke / (rate * 31 * 60 / 86400) + 1e-9


def test_stepwise_delivery_hand_computed(tmp_path, capsys):
    """2880 uL/day = 1000 nL per 30 s. In the hour, interval 10 (0-based) delivers 3000 nL
    (+2000) and interval 60 delivers nothing (-1000); every other interval 1000 nL.

    P = 2 min (4 intervals): a window with interval 10: 6000/4000 -> +50 %; with 60:
    3000/4000 -> -25 %. P = 5 (10): +20 %, -10 %. P = 11 (22): +2000/22000 = +9.091 %,
    -1000/22000 = -4.545 %. P = 19 (38): a window never holds both (50 intervals apart):
    +5.263 %, -2.632 %. P = 31 (62): windows j = 0..58 all hold interval 60; those with
    j <= 10 also hold 10: +1000/62000 = +1.613 %, the others -1.613 %. The hour:
    121000 nL for 120000 -> +0.833 %.
    """
    rate = 2_880_000

    def vol(s: int) -> int:
        k = (s - 3600) // 30  # intervals completed since 01:00
        v = 1000 * (s // 30)
        if k >= 11:
            v += 2000
        if k >= 61:
            v -= 1000
        return v

    lg = flow_log(vol, rate)
    p = lg.write(tmp_path / "step.tlog")
    rc, out, err = run_cli(capsys, "trumpet", p, "--start", START_ISO, "--json")
    assert rc == 0, err
    assert json.loads(out) == {"2": [50.0, -25.0], "5": [20.0, -10.0], "11": [9.091, -4.545],
                               "19": [5.263, -2.632], "31": [1.613, -1.613]}
    assert list(json.loads(out)) == ["2", "5", "11", "19", "31"]  # exactly the interface's keys
    tr = trumpet.compute(read_log(p), START)
    assert tr.mean_error == pytest.approx(100 * 1000 / 120000)
    rc, out, _ = run_cli(capsys, "trumpet", p, "--start", START_ISO)
    assert rc == 0 and "mean error   +0.833 %" in out
    assert "  2 min   +50.000 %   -25.000 %     117" in out


def test_finer_status_is_resampled_exactly(tmp_path):
    """Status every 10 s gives the same curve as every 30 s: the 30 s frames are the samples."""

    def vol(s: int) -> int:
        return (s * 200_000 // 86400) // 250 * 250

    a = curve(tmp_path, flow_log(vol, 200_000, period=30))
    b = curve(tmp_path, flow_log(vol, 200_000, period=10))
    assert a.windows == b.windows and a.mean_error == b.mean_error
    assert b.status_period_s == 10 and list(b.times[:2]) == [START, START + 30]


def test_png(tmp_path, capsys):
    p = flow_log(lambda s: s * 288_000 // 86400, 288_000).write(tmp_path / "c.tlog")
    png = tmp_path / "curve.png"
    rc, out, err = run_cli(capsys, "trumpet", p, "--start", START_ISO, "--json", "--png", png)
    assert rc == 0, err
    assert json.loads(out)["2"] == [0.0, 0.0]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert w >= 800 and h >= 700


def test_default_start_is_the_second_hour(tmp_path, capsys):
    p = flow_log(lambda s: s * 288_000 // 86400, 288_000).write(tmp_path / "c.tlog")
    rc, out, err = run_cli(capsys, "trumpet", p, "--json")
    assert rc == 0 and f"--start {START_ISO} (first steady hour)" in err


# --- refusals: exit 2, naming the problem ---------------------------------------------------------


def test_refuses_a_log_without_30s_samples(tmp_path, capsys):
    p = flow_log(lambda s: s, 86_400_000, period=60).write(tmp_path / "m.tlog")
    rc, out, err = run_cli(capsys, "trumpet", p, "--start", START_ISO)
    assert rc == 2 and out == ""
    assert "lacks 30 s samples" in err and "60 s apart" in err
    p = flow_log(lambda s: s, 86_400_000, period=20).write(tmp_path / "m20.tlog")
    rc, _, err = run_cli(capsys, "trumpet", p, "--start", START_ISO)
    assert rc == 2 and "lacks 30 s samples" in err and "20 s apart" in err


def test_refuses_a_rate_change_naming_it(tmp_path, capsys):
    lg = Log()
    lg.info(T0)
    v = 0
    for k in range(3 * 120 + 1):
        t = T0 + 30 * k
        rate = 200_000 if t < START + 1800 else 300_000
        if t == START + 1800:
            lg.event(t, "step_changed", a=1, b=300_000)
        lg.status(t, delivered_ul=v // 1000, delivered_nl=v % 1000, rate_nl_day=rate,
                  step=0 if rate == 200_000 else 1)
        v += rate * 30 // 86400
    p = lg.write(tmp_path / "s.tlog")
    rc, _, err = run_cli(capsys, "trumpet", p, "--start", START_ISO)
    assert rc == 2
    assert "set rate changes within the hour" in err
    assert "200.000 uL/day until 2026-01-01T01:29:30Z" in err
    assert "300.000 uL/day at 2026-01-01T01:30:00Z" in err and "step_changed" in err
    assert "next steady hour starts at 2026-01-01T01:30:00Z" in err
    # the hour after the step is fine
    rc, _, err = run_cli(capsys, "trumpet", p, "--start", "2026-01-01T01:30:00Z", "--json")
    assert rc == 0, err


def test_refuses_a_bolus_and_a_halt(tmp_path, capsys):
    lg = flow_log(lambda s: s * 288_000 // 86400, 288_000)
    lg.event(START + 600, "bolus_started", a=10_000, b=1, c=600, who=2)
    p = lg.write(tmp_path / "b.tlog")
    rc, _, err = run_cli(capsys, "trumpet", p, "--start", START_ISO)
    assert rc == 2 and "bolus_started at 2026-01-01T01:10:00Z" in err
    halted = flow_log(lambda s: s * 288_000 // 86400, 288_000, mode=3, alarms=4)
    p = halted.write(tmp_path / "h.tlog")
    rc, _, err = run_cli(capsys, "trumpet", p, "--start", START_ISO)
    assert rc == 2 and "mode halted" in err and "motor_stall" in err


@pytest.mark.parametrize("start, words", [
    ("2026-01-01T01:00:10Z", "no status frame at 2026-01-01T01:00:10Z"),
    ("2026-01-01T02:30:00Z", "is not inside the log"),
    ("2025-12-31T23:00:00Z", "is not inside the log"),
    ("soon", "--start: 'soon' is not an ISO-8601 time"),
])
def test_refuses_bad_starts(tmp_path, capsys, start, words):
    p = flow_log(lambda s: s * 288_000 // 86400, 288_000).write(tmp_path / "c.tlog")
    rc, out, err = run_cli(capsys, "trumpet", p, "--start", start, "--json")
    assert rc == 2 and out == "" and words in err, err


def test_refuses_a_missing_sample(tmp_path, capsys):
    lg = flow_log(lambda s: s * 288_000 // 86400, 288_000)
    lg.frames = [f for f in lg.frames if iso(int.from_bytes(f[4:8], "little"))
                 != "2026-01-01T01:20:00Z"]
    p = lg.write(tmp_path / "gap.tlog")
    rc, _, err = run_cli(capsys, "trumpet", p, "--start", START_ISO)
    assert rc == 2 and "lacks the 30 s sample at 2026-01-01T01:20:00Z" in err


def test_refuses_not_a_tlog(tmp_path, capsys):
    p = tmp_path / "x.tlog"
    p.write_bytes(b"hello")
    rc, _, err = run_cli(capsys, "trumpet", p, "--start", START_ISO)
    assert rc == 2 and "not a Theca telemetry log" in err


# --- a real twin log with 30 s status frames --------------------------------------------------


@pytest.fixture(scope="module")
def twin30(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("twin30")
    (d / "rx.toml").write_text((ROOT / "examples" / "rx_morphine.toml").read_text())
    sc = d / "s.toml"
    sc.write_text('start = 2026-01-01T00:00:00Z\ndays = 1\nstatus_period_s = 30\n'
                  'prescription = "rx.toml"\n')
    out = d / "run.tlog"
    r = subprocess.run([sys.executable, "-m", "theca.cli", "simulate", sc, "-o", out, "--quiet"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return out


def test_twin_log_against_independent_computation(twin30, capsys):
    """The curve of 08:00-09:00 (2 mg/day of 10 mg/mL: 200 uL/day) recomputed from jsonl."""
    rc, out, err = run_cli(capsys, "trumpet", twin30, "--start", "2026-01-01T08:00:00Z", "--json")
    assert rc == 0, err
    got = json.loads(out)
    assert list(got) == ["2", "5", "11", "19", "31"]
    rc, text, _ = run_cli(capsys, "decode", twin30, "--format", "jsonl", "--type", "status",
                          "--from", "2026-01-01T08:00:00Z", "--to", "2026-01-01T09:00:01Z")
    st = [json.loads(x) for x in text.splitlines()]
    assert len(st) == 121 and {s["rate_ul_per_day"] for s in st} == {200.0}
    d = [s["delivered_ul"] for s in st]
    r = 200.0 / 1440  # uL per minute
    for p in (2, 5, 11, 19, 31):
        m = 2 * p
        eps = [100 * ((d[j + m] - d[j]) / p - r) / r for j in range(len(d) - m)]
        assert got[str(p)] == [round(max(eps), 3), round(min(eps), 3)], p
        # one 250 nL stroke more or less than the exact share, at most
        bound = 100 * 0.25 / (r * p)
        assert -bound - 1e-6 <= min(eps) <= max(eps) <= bound + 1e-6


def test_twin_log_refusals_name_the_step_and_the_bolus(twin30, capsys):
    rc, _, err = run_cli(capsys, "trumpet", twin30, "--start", "2026-01-01T07:30:00Z")
    assert rc == 2 and "step_changed" in err and "150.000 uL/day" in err
    rc, _, err = run_cli(capsys, "trumpet", twin30, "--start", "2026-01-01T11:45:00Z")
    assert rc == 2 and "bolus_started" in err and "timed" in err
