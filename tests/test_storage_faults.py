"""Damaged storage and failing flash on the twin, judged from the physical truth that
`theca simulate --truth` writes (issue 23; SR-STO-01..03): the drug at the catheter tip, the
mechanism's reservoir and strokes, never the pump's own belief."""

from __future__ import annotations

from pathlib import Path

import pytest
from scenario_run import events
from scenario_run import simulate as run_scenario

ROOT = Path(__file__).resolve().parents[1]
RX = (ROOT / "examples" / "rx_morphine.toml").read_text()
MG = 1_000_000  # ng
PB_MG = 0.1  # the example's patient bolus
BASAL_MAX_MG_DAY = 2.0 + 0.2  # its highest step a whole day, and its timed bolus


def simulate(tmp_path: Path, body: str, days: float = 2, reservoir_ml: float = 20.0):
    """(decoded jsonl objects, truth document) of a scenario of the example prescription."""
    objs, truth, _ = run_scenario(tmp_path, RX, body, days, reservoir_ml, ok=(0, 1))
    return objs, truth  # (1: a refused command is the point)


def presses(start: str, n: int, every_min: int = 61) -> str:
    # n patient presses from `start` (HH:MM on 2026-01-02), every_min apart
    h, m = map(int, start.split(":"))
    out = []
    for k in range(n):
        t = h * 60 + m + k * every_min
        day, t = 2 + t // 1440, t % 1440
        out.append(f'[[events]]\nat = 2026-01-{day:02d}T{t // 60:02d}:{t % 60:02d}:00Z\n'
                   'action = "patient_bolus"\n')
    return "".join(out)


@pytest.mark.parametrize("damage", ["bitflip", "erase"])
def test_damaged_state_forgets_no_dose_at_the_tip(tmp_path, damage):
    # REQ: SR-STO-01
    # REQ: SR-STO-02
    # The attack: four patient boluses, the state damaged in a power cut, the pump
    # programmed again as its alarm asks, then the patient presses 16 times more. At the
    # tip no 24 h holds more than the basal and the four boluses the prescription allows.
    body = presses("01:00", 4, 61).replace("2026-01-02", "2026-01-01")
    body += ('[[faults]]\nat = 2026-01-01T06:00:00Z\nkind = "storage"\nfile = "state"\n'
             f'damage = "{damage}"\nduration = "1 min"\n')
    body += '[[events]]\nat = 2026-01-01T06:30:00Z\naction = "program"\nprescription = "rx.toml"\n'
    body += presses("07:00", 16, 61).replace("2026-01-02", "2026-01-01")
    objs, truth = simulate(tmp_path, body, days=2)
    tip = truth["tip"]["morphine"]
    assert tip["max_24h_ng"] <= (BASAL_MAX_MG_DAY + 4 * PB_MG) * MG, tip
    raised = [e for e in events(objs, "alarm_raised") if e["alarm"] == "storage_damaged"]
    assert raised and raised[0]["damage"] == (["state_copy"] if damage == "bitflip" else ["state_lost"])
    # the pump never believes more in the reservoir than the mechanism holds
    last = [o for o in objs if o["kind"] == "status"][-1]
    assert last["reservoir_ul"] <= truth["reservoir_ul"]


def test_lost_state_with_little_left_alarms_before_the_reservoir_runs_dry(tmp_path):
    # REQ: SR-STO-02
    # The case: 2.5 mL left, the state erased; the pump must not run dry unwarned
    body = ('[[faults]]\nat = 2026-01-01T06:00:00Z\nkind = "storage"\nfile = "state"\n'
            'damage = "erase"\nduration = "1 min"\n'
            '[[events]]\nat = 2026-01-01T06:30:00Z\naction = "program"\nprescription = "rx.toml"\n')
    objs, truth = simulate(tmp_path, body, days=14, reservoir_ml=2.5)
    alarms = {e["alarm"]: e["t"] for e in reversed(events(objs, "alarm_raised"))}
    assert "low_reservoir" in alarms and alarms["low_reservoir"] < "2026-01-05", alarms
    # the pump said it was empty and stopped, never believing more than the mechanism holds
    last = [o for o in objs if o["kind"] == "status"][-1]
    assert last["reservoir_ul"] <= truth["reservoir_ul"]
    assert "empty_reservoir" in alarms and last["mode"] == "halted"


def test_flash_error_moves_no_stroke_without_its_journal_and_delivery_resumes(tmp_path):
    # REQ: SR-STO-03
    body = '[[faults]]\nat = 2026-01-01T09:00:00Z\nkind = "flash_error"\nduration = "20 min"\n'
    objs, truth = simulate(tmp_path, body, days=0.5)
    raised = [e for e in events(objs, "alarm_raised") if e["alarm"] == "flash_fault"]
    cleared = [e for e in events(objs, "alarm_cleared") if e["alarm"] == "flash_fault"]
    assert raised and cleared and "2026-01-01T09:00" <= raised[0]["t"] < "2026-01-01T09:05"
    assert cleared[0]["t"] >= "2026-01-01T09:20:00Z"
    # delivery resumed: the mechanism pumped about the plan of the run less the halt
    assert truth["pumped_ul"] >= 0.5 * 2.0 / 10 * 1000 * (11 / 12) * 0.8
    # no event was lost: the numbers run on without a gap
    seqs = [o["event_seq"] for o in objs if o["kind"] == "event"]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_truth_file_names_each_drug_and_its_windows(tmp_path):
    # the contract's --truth document, from the mechanism's strokes
    objs, truth = simulate(tmp_path, "", days=1)
    assert set(truth) >= {"pumped_ul", "reservoir_ul", "failed_strokes", "tones", "pocket_ul", "tip"}
    tip = truth["tip"]["morphine"]
    assert tip["max_1h_ng"] <= tip["max_24h_ng"] <= tip["total_ng"] > 0
    assert abs(truth["pumped_ul"] + truth["reservoir_ul"] - 20_000) < 1e-6
