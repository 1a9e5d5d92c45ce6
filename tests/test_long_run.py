"""Five years on the twin: the battery runs down to end of service (therapy stops with
both battery alarms) and the heap does not grow (SR-HEAP-02, SR-BATT-01)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from theca.board.build import compile_firmware
from theca.inputs.scenario import load_scenario
from theca.log.records import records
from theca.twin import proc as twinproc
from theca.twin.simulate import input_records, scenario_frames, twin_config

ROOT = Path(__file__).resolve().parents[1]
YEAR = 365 * 86400


@pytest.mark.slow
def test_five_years_to_end_of_service_without_heap_growth(tmp_path):
    # REQ: SR-HEAP-02
    # REQ: SR-BATT-01
    rx = tmp_path / "rx.toml"
    rx.write_text('drug = "morphine"\nconcentration = "10 mg/mL"\n'
                  '[[steps]]\nstart = "00:00"\nrate = "1 mg/day"\n')
    refills = "".join(
        f'[[events]]\nat = {2026 + (m * 3) // 12}-{(m * 3) % 12 + 1:02d}-01T09:00:00Z\n'
        'action = "refill"\nvolume = "9 mL"\nconcentration = "10 mg/mL"\n'
        for m in range(1, 20)
    )
    sc_path = tmp_path / "five.toml"
    sc_path.write_text(
        'start = 2026-01-01T00:00:00Z\ndays = 1830\nstatus_period_s = 86400\n'
        'reservoir_ml = 20.0\nprescription = "rx.toml"\nbattery_days = 1826\n' + refills
    )
    sc = load_scenario(sc_path)
    keys = {1: b"\x01" * 32, 2: b"\x02" * 32}
    (tmp_path / "in.bin").write_bytes(input_records(scenario_frames(sc, keys)))
    cfg = twin_config(sc, keys, tmp_path / "in.bin", tmp_path / "five.tlog",
                      tmp_path / "truth.json", heap_report=30 * 86400)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    r = twinproc.run_twin(tmp_path / "cfg.json", heapsize="256k", mpy_dir=compile_firmware("unix"))
    err = r.stderr.decode()
    assert r.returncode == 0, r.stdout.decode() + err
    heap = [(int(t), int(n)) for t, n in re.findall(r"@@heap (\d+) (\d+)", err)]
    assert len(heap) >= 60
    # No growth: a code path used for the first time (the first refill, the first
    # battery alarm) may allocate once, but the live heap never creeps up.
    first_year = [n for t, n in heap if t < sc.start + YEAR]
    last_two = [n for t, n in heap if t >= sc.start + 3 * YEAR]
    assert max(last_two) <= max(first_year) + 2048, (max(first_year), max(last_two))
    ups = sum(1 for a, b in zip(heap, heap[1:], strict=False) if b[1] > a[1])
    assert ups <= 3, [(round((t - sc.start) / 86400), n) for t, n in heap]
    objs = list(records(tmp_path / "five.tlog"))
    raised = {e["alarm"]: e["t"] for e in objs if e["kind"] == "event" and e["event"] == "alarm_raised"}
    assert raised["battery_eri"] < raised["battery_eos"]
    assert raised["battery_eos"].startswith("2031-01-01")  # 1826 days after 2026-01-01
    last = [o for o in objs if o["kind"] == "status"][-1]
    assert last["mode"] == "halted" and "battery_eos" in last["alarms"]
    # five years of therapy really ran: about 0.1 mL a day
    assert 170_000 < last["delivered_ul"] < 185_000
