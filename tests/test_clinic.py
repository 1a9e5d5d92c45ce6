"""The clinic's workflows on the real firmware in the twin, judged from its physical
truth (what the mechanism holds and pumps, and the drug at the catheter tip): the
reservoir knows its drug, a refill empties before it fills, a residual far from what the
pump expected is caught, and a change of drug is bridged through the catheter."""

from __future__ import annotations

import struct

import pytest
import theca_protocol as tp
from theca.inputs.rxfile import Prescription
from theca.link import requests as R
from theca_protocol import Refill, fixed_format
from theca_protocol import names as N
from theca_protocol.messages import MIX_BYTES
from twinctl import PATIENT, ControlledTwin, max_window

T0 = 189_388_800  # 2026-01-01T00:00:00Z
H, DAY = 3600, 86400
E6 = 1_000_000  # the truth's drug unit is 1e-6 ng
_REFILL = fixed_format(Refill)
NO_MIX = bytes(MIX_BYTES)  # (a fill of one drug)
MORPHINE, HYDROMORPHONE = 1, 2
_EV = tp.compiled(tp.EventRecord)
_LOGH = tp.compiled(tp.LogReadReplyHead)


def rx(drug_id: int, conc: int, rate_ng_day: int) -> Prescription:
    name = {MORPHINE: "morphine", HYDROMORPHONE: "hydromorphone"}[drug_id]
    return Prescription(drug_id=drug_id, drug=name, conc_ng_ml=conc, steps=[(0, rate_ng_day)])


def refill(tw: ControlledTwin, volume: int, conc: int, residual: int, drug: int = 0):
    return tw.command("REFILL", struct.pack(_REFILL, volume, conc, residual, drug, NO_MIX))


def events(tw: ControlledTwin, name: str) -> list[tuple]:
    """The pump's events called `name`, as (t, seq, code, who, a, b, c, d), via LOG_READ."""
    code = N.EVENT_CODES[name]
    out, frm = [], 1
    while True:
        rep = tw.command("LOG_READ", tp.compiled(tp.LogRead).pack(frm, 48))
        nxt, first, count = tp.compiled(tp.LogReadReplyHead).unpack_from(rep.body)
        for i in range(count):
            ev = _EV.unpack_from(rep.body, _LOGH.size + i * _EV.size)
            if ev[2] == code:
                out.append(ev)
        frm = first + count
        if count == 0 or frm >= nxt:
            return out


def tip_ng(tw: ControlledTwin, t0: int, t1: int) -> float:
    """Drug (ng) that left the catheter tip in true time [t0, t1)."""
    return sum(m for t, _, m in tw.strokes() if t0 <= t < t1) / E6


@pytest.fixture
def hydromorphone_pump(tmp_path):
    # a pump filled with hydromorphone 15 mg/mL at 3 mg/day
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=18_000_000, conc_ng_ml=15_000_000)
    assert tw.program(rx(HYDROMORPHONE, 15_000_000, 3_000_000)).result == "ack"
    yield tw
    tw.close()


def test_a_prescription_for_another_drug_than_the_reservoir_s_is_refused(hydromorphone_pump):
    # REQ: SR-DRUG-01
    tw = hydromorphone_pump
    tw.run(DAY)
    # the case: morphine 15 mg/mL at 9.9 mg/day on a hydromorphone pump
    r = tw.program(rx(MORPHINE, 15_000_000, 9_900_000))
    assert (r.result, N.INVALID_FIELDS[r.detail - 1]) == ("invalid", "drug")
    st = tw.status()
    assert st["drug"] == HYDROMORPHONE
    t1 = tw.now
    tw.run(DAY)
    # the patient still gets the hydromorphone dose, not 3.3 times it
    got = tip_ng(tw, t1, tw.now)
    assert abs(got - 3_000_000) <= 15_000 * 250 / 1000 * 2, got  # within two strokes


def test_a_refill_empties_the_pump_before_it_fills(hydromorphone_pump):
    # REQ: SR-DRUG-02
    tw = hydromorphone_pump
    tw.run(10 * DAY)
    st = tw.status()
    residual = tw.refill(18_000_000, 10_000_000)  # physical: aspirated, then filled
    assert residual is not None
    expected = st["reservoir_nl"]
    assert abs(residual - expected) <= 250  # the pump knew what it held (a stroke in flight)
    r = refill(tw, 18_000_000, 10_000_000, residual)
    assert r.result == "ack"
    st = tw.status()
    # nothing mixed: the reservoir is the fill, at the fill's concentration
    assert st["reservoir_nl"] == tw.truth["reservoir_nl"] == 18_000_000
    assert st["conc_ng_ml"] == 10_000_000 and st["alarms"] == 0
    ev = events(tw, "refilled")[-1]
    assert ev[4:8] == (18_000_000, residual, 10_000_000, HYDROMORPHONE)
    # the catheter's old fill goes first (the bridge), then the drug per day is kept at
    # the new concentration: 3 mg/day of hydromorphone, exactly as prescribed
    tw.run(3 * DAY)
    t1 = tw.now
    tw.run(DAY)
    got = tip_ng(tw, t1, tw.now)
    assert abs(got - 3_000_000) <= 2 * 250 * 10, got


def test_a_pocket_fill_is_caught_at_the_next_refill(hydromorphone_pump):
    # REQ: SR-DRUG-03
    tw = hydromorphone_pump
    tw.run(DAY)
    # the needle misses the septum: 10 of the 18 mL go into the pocket beside the pump
    residual = tw.refill(18_000_000, 15_000_000, pocket_nl=10_000_000)
    assert refill(tw, 18_000_000, 15_000_000, residual).result == "ack"
    assert 0 <= 8_000_000 - tw.truth["reservoir_nl"] <= 250 and tw.truth["pocket_nl"] == 10_000_000
    assert not events(tw, "refill_discrepancy")  # the pump cannot know yet
    tw.run(20 * DAY)
    pump_thinks = tw.status()["reservoir_nl"]
    residual = tw.refill(18_000_000, 15_000_000)
    assert pump_thinks - residual > 9_000_000  # 10 mL missing
    assert refill(tw, 18_000_000, 15_000_000, residual).result == "ack"
    ev = events(tw, "refill_discrepancy")
    assert len(ev) == 1 and ev[0][4:6] == (pump_thinks, residual)
    st = tw.status()
    assert st["alarms"] >> N.mask_of(N.ALARMS, "volume_discrepancy").bit_length() - 1 & 1
    assert st["mode"] == 1  # not critical: delivery goes on
    # it stays until the clinician acknowledges it: the patient's remote silences its tone
    # only (issue 23: the patient key cleared it)
    tw.run(H)
    mask = N.mask_of(N.ALARMS, "volume_discrepancy")
    assert tw.status()["alarms"] & mask
    assert tw.command("ACK_ALARM", tp.compiled(tp.AckAlarm).pack(mask), role=PATIENT).result == "ack"
    assert tw.status()["alarms"] & mask
    assert not [e for e in events(tw, "alarm_cleared") if e[4] == mask.bit_length() - 1]
    assert tw.command("ACK_ALARM", tp.compiled(tp.AckAlarm).pack(mask)).result == "ack"
    assert not tw.status()["alarms"] & mask


def test_a_small_residual_difference_is_no_discrepancy(hydromorphone_pump):
    # REQ: SR-DRUG-03
    tw = hydromorphone_pump
    tw.run(5 * DAY)
    residual = tw.refill(18_000_000, 15_000_000)
    # measured 0.9 mL less than the pump expects: within 1 mL
    assert refill(tw, 18_000_000, 15_000_000, residual - 900_000).result == "ack"
    assert not events(tw, "refill_discrepancy")
    assert not tw.status()["alarms"] & N.mask_of(N.ALARMS, "volume_discrepancy")


def test_a_change_of_drug_bridges_the_catheter_then_needs_its_prescription(hydromorphone_pump):
    # REQ: SR-DRUG-04
    tw = hydromorphone_pump
    tw.run(DAY)
    residual = tw.refill(18_000_000, 10_000_000)
    r = refill(tw, 18_000_000, 10_000_000, residual, drug=MORPHINE)
    assert r.result == "ack"
    st = tw.status()
    assert st["flags"] & N.mask_of(N.STATUS_FLAGS, "bridge")
    # during the bridge the old volume rate pushes the catheter's hydromorphone out:
    # 3 mg/day at 15 mg/mL is 200 uL/day, the catheter 150 uL: about 18 h
    t1 = tw.now
    tw.run(12 * H)
    strokes = [s for s in tw.strokes() if t1 <= s[0] < tw.now]
    assert strokes and all(m == 250 * 15_000_000 for _, _, m in strokes)  # hydromorphone
    # no prescription for morphine: delivery stops when the morphine reaches the tip
    tw.run(DAY)
    st = tw.status()
    assert st["alarms"] & N.mask_of(N.ALARMS, "rx_invalid") and st["mode"] == 3
    n = len(tw.strokes())
    tw.run(DAY)
    assert len(tw.strokes()) == n, "the pump delivered without a prescription for its drug"
    # the clinician programs morphine: delivery goes on with it
    assert tw.program(rx(MORPHINE, 10_000_000, 5_000_000)).result == "ack"
    st = tw.status()
    assert st["mode"] == 1 and not st["alarms"] & N.mask_of(N.ALARMS, "rx_invalid")
    t2 = tw.now
    tw.run(DAY)
    got = tip_ng(tw, t2, tw.now)
    assert abs(got - 5_000_000) <= 2 * 250 * 10, got


def test_the_new_drug_s_prescription_can_be_programmed_during_the_bridge(hydromorphone_pump):
    # REQ: SR-DRUG-04
    tw = hydromorphone_pump
    tw.run(DAY)
    residual = tw.refill(18_000_000, 10_000_000)
    assert refill(tw, 18_000_000, 10_000_000, residual, drug=MORPHINE).result == "ack"
    # refused while it describes the old drug, accepted for the drug now in the reservoir
    r = tw.program(rx(HYDROMORPHONE, 15_000_000, 3_000_000))
    assert (r.result, N.INVALID_FIELDS[r.detail - 1]) == ("invalid", "drug")
    assert tw.program(rx(MORPHINE, 10_000_000, 6_000_000)).result == "ack"
    t1 = tw.now
    tw.run(12 * H)
    # still the old volume rate and the old drug while the catheter empties
    strokes = [s for s in tw.strokes() if t1 <= s[0] < tw.now]
    assert all(m == 250 * 15_000_000 for _, _, m in strokes)
    assert len(strokes) <= 200_000 * 12 // 24 // 250 + 2
    tw.run(DAY)
    t2 = tw.now
    tw.run(DAY)
    # then morphine at its own prescription, without a stop
    assert tw.status()["mode"] == 1
    got = tip_ng(tw, t2, tw.now)
    assert abs(got - 6_000_000) <= 2 * 250 * 10, got


def test_a_scenario_pocket_fill_is_caught_by_the_next_refill_the_twin_measures(tmp_path):
    # REQ: SR-DRUG-03
    # two refill visits without `residual`: the twin measures what its reservoir really
    # holds when each happens; a pocket fill at the first leaves the second short
    import json
    import subprocess
    import sys

    (tmp_path / "rx.toml").write_text(
        'drug = "morphine"\nconcentration = "10 mg/mL"\n[[steps]]\nstart = "00:00"\n'
        'rate = "2 mg/day"\n')
    sc = tmp_path / "s.toml"
    sc.write_text(
        'start = 2026-01-01T00:00:00Z\ndays = 30\nstatus_period_s = 3600\n'
        'prescription = "rx.toml"\nreservoir_ml = 18.0\n'
        '[[events]]\nat = 2026-01-05T09:00:00Z\naction = "refill"\nvolume = "18 mL"\n'
        'concentration = "10 mg/mL"\n'
        '[[events]]\nat = 2026-01-25T09:00:00Z\naction = "refill"\nvolume = "18 mL"\n'
        'concentration = "10 mg/mL"\n'
        '[[faults]]\nat = 2026-01-05T08:00:00Z\nkind = "pocket_fill"\nvolume = "6 mL"\n')
    out = tmp_path / "r.tlog"
    theca = [sys.executable, "-m", "theca.cli"]
    r = subprocess.run([*theca, "simulate", sc, "-o", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "aspirated where the pump expected" in r.stdout and "volume_discrepancy" in r.stdout
    d = subprocess.run([*theca, "decode", out, "--format", "jsonl", "--type", "event"],
                       capture_output=True, text=True, check=True)
    ev = [json.loads(x) for x in d.stdout.splitlines()]
    refills = [e for e in ev if e["event"] == "refilled"]
    disc = [e for e in ev if e["event"] == "refill_discrepancy"]
    assert len(refills) == 2 and len(disc) == 1
    # the first visit: what 4 days of 200 uL/day left of 18 mL, as the twin measured it
    assert abs(refills[0]["residual_ul"] - (18_000 - 4.375 * 200)) < 1
    # the second: 6 mL short of what the pump believed it held
    assert abs(disc[0]["expected_ul"] - disc[0]["residual_ul"] - 6000) < 1
    assert disc[0]["t"].startswith("2026-01-25")
    raised = [e for e in ev if e["event"] == "alarm_raised" and e["alarm"] == "volume_discrepancy"]
    assert raised and raised[0]["t"].startswith("2026-01-25")


def test_a_suspension_past_its_maximum_alarms_and_sounds_until_resumed(tmp_path):
    # REQ: SR-SUSP-01
    # a baclofen pump: stopping intrathecal baclofen abruptly can kill
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=18_000_000, conc_ng_ml=2_000_000)
    try:
        baclofen = Prescription(drug_id=8, drug="baclofen", conc_ng_ml=2_000_000,
                                steps=[(0, 400_000)])
        assert tw.program(baclofen).result == "ack"
        tw.run(H)
        assert tw.command("SUSPEND", tp.compiled(tp.Suspend).pack(2 * H)).result == "ack"
        bit = N.mask_of(N.ALARMS, "suspended_too_long")
        tw.run(2 * H - 60)
        assert not tw.status()["alarms"] & bit  # within the maximum: no alarm
        tones = tw.truth["tones"]
        tw.run(2 * 60)
        st = tw.status()
        assert st["mode"] == 2 and st["alarms"] & bit
        assert tw.truth["tones"] > tones  # it sounds at once
        # an acknowledgement does not silence it: it sounds until delivery resumes
        assert tw.command("ACK_ALARM", tp.compiled(tp.AckAlarm).pack(bit)).result == "ack"
        tones = tw.truth["tones"]
        tw.run(H)
        assert tw.truth["tones"] >= tones + 30  # the two-tone, every minute
        n = len(tw.strokes())
        assert tw.command("RESUME").result == "ack"
        st = tw.status()
        assert st["mode"] == 1 and not st["alarms"] & bit
        tw.run(1)  # (the second half of a two-tone begun before the resume may follow)
        tones = tw.truth["tones"]
        tw.run(2 * H)
        assert tw.truth["tones"] == tones and len(tw.strokes()) > n  # quiet, delivering
    finally:
        tw.close()


def _tip_times(tw: ControlledTwin, t0: int) -> list[int]:
    # true times of the strokes from t0 on that put drug out of the catheter tip
    return [t for t, _, m in tw.strokes() if t >= t0 and m > 0]


def test_a_new_catheter_is_primed_and_the_prime_is_exempt(tmp_path):
    # REQ: SR-CATH-01
    # morphine 10 mg/mL at 10 mg/day: 1 mL/day. A catheter revision on day 2 (150 uL,
    # empty), then PRIME: 150 uL at the mechanism's 1000 uL/h
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=18_000_000, conc_ng_ml=10_000_000)
    try:
        assert tw.program(rx(MORPHINE, 10_000_000, 10_000_000)).result == "ack"
        tw.run(DAY + 10 * H)
        t_cut = tw.now
        tw.new_catheter(150_000)
        assert tw.command("CATHETER", R.catheter(150_000)).result == "ack"
        st = tw.status()
        assert st["flags"] & N.mask_of(N.STATUS_FLAGS, "catheter_unprimed")
        assert tw.command("PRIME").result == "ack"
        tw.run(H)
        # the truth: no drug left the tip until the new catheter was full, and the prime
        # filled it within its 9 minutes (not the 3.6 h the basal alone would take)
        first = _tip_times(tw, t_cut)[0]
        assert t_cut < first <= t_cut + 9 * 60 + 60, first - t_cut
        done = events(tw, "prime_completed")
        assert [e[4] for e in done] == [150_000]
        assert not tw.status()["flags"] & N.mask_of(N.STATUS_FLAGS, "catheter_unprimed")
        # over the 24 h that hold the prime, what the pump counts is never less than what
        # reached the patient, and the prime's 150 uL (1.5 mg) are not counted against
        # the limits: within one 5-minute bucket of basal (34.7 ug) of the truth
        counted = tw.status()["rolling_ng"]
        reached = tip_ng(tw, tw.now - DAY, tw.now)
        assert counted >= reached - 1, (counted, reached)
        assert counted <= reached + 10_000_000 * 300 // DAY + 2 * 2_500, (counted, reached)
        r = tw.command("PRIME")
        assert (r.result, N.INVALID_FIELDS[r.detail - 1]) == ("invalid", "primed")
    finally:
        tw.close()


def test_an_unprimed_catheter_says_so_until_the_basal_has_filled_it(tmp_path):
    # REQ: SR-CATH-01
    # 150 uL/day: the basal alone takes a day to fill a new 150 uL catheter; the status
    # says it is unprimed all that time, and the pump counts none of that drug
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=18_000_000, conc_ng_ml=10_000_000)
    try:
        assert tw.program(rx(MORPHINE, 10_000_000, 1_500_000)).result == "ack"
        tw.run(H)
        tw.new_catheter(150_000)
        t0 = tw.now
        assert tw.command("CATHETER", R.catheter(150_000)).result == "ack"
        tw.run(20 * H)
        assert tw.status()["flags"] & N.mask_of(N.STATUS_FLAGS, "catheter_unprimed")
        assert not _tip_times(tw, t0)  # the truth: nothing reached the patient yet
        tw.run(6 * H)
        assert not tw.status()["flags"] & N.mask_of(N.STATUS_FLAGS, "catheter_unprimed")
        assert _tip_times(tw, t0)
    finally:
        tw.close()


def test_a_scenario_revises_and_primes_the_catheter(tmp_path):
    # REQ: SR-CATH-01
    # the scenario actions `catheter` and `prime`; simulate's truth says when drug reached
    # the tip again
    import json
    import subprocess
    import sys

    (tmp_path / "rx.toml").write_text(
        'drug = "morphine"\nconcentration = "10 mg/mL"\n[[steps]]\nstart = "00:00"\n'
        'rate = "2 mg/day"\n')
    sc = tmp_path / "s.toml"
    sc.write_text(
        'start = 2026-01-01T00:00:00Z\ndays = 3\nprescription = "rx.toml"\n'
        '[[events]]\nat = 2026-01-02T09:00:00Z\naction = "catheter"\nvolume = "200 uL"\n'
        '[[events]]\nat = 2026-01-02T09:01:00Z\naction = "prime"\n')
    out = tmp_path / "r.tlog"
    theca = [sys.executable, "-m", "theca.cli"]
    r = subprocess.run([*theca, "simulate", sc, "-o", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    d = subprocess.run([*theca, "decode", out, "--format", "jsonl", "--type", "event"],
                       capture_output=True, text=True, check=True)
    ev = [json.loads(x) for x in d.stdout.splitlines()]
    changed = [e for e in ev if e["event"] == "catheter_changed"]
    began = [e for e in ev if e["event"] == "prime_started"]
    done = [e for e in ev if e["event"] == "prime_completed"]
    assert [e["volume_ul"] for e in changed] == [200.0]
    assert len(began) == 1 and began[0]["duration_s"] == 720
    assert len(done) == 1 and done[0]["volume_ul"] == began[0]["volume_ul"]
    assert done[0]["t"].startswith("2026-01-02T09:13")  # 12 minutes at 1000 uL/h
    # a second prime in a scenario would be refused: the run then says so and fails
    sc.write_text(sc.read_text() + '[[events]]\nat = 2026-01-02T10:00:00Z\naction = "prime"\n')
    r = subprocess.run([*theca, "simulate", sc, "-o", out], capture_output=True, text=True)
    assert r.returncode != 0 and "primed already" in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_refill_date_moves_with_the_boluses_allowed_and_holds(tmp_path):
    # REQ: SR-RES-05
    # morphine 10 mg/mL at 1.5 mg/day (150 uL/day), 10 mL in the reservoir, 8 mL above the
    # 2 mL threshold: 53 days 8 hours without patient boluses; 4 a day of 0.1 mg (10 uL)
    # allowed: 190 uL/day at worst, 42 days 2 hours
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=10_000_000, conc_ng_ml=10_000_000)
    try:
        plain = rx(MORPHINE, 10_000_000, 1_500_000)
        assert tw.program(plain).result == "ack"
        assert tw.status()["refill_due"] == T0 + 53 * DAY + 8 * H
        with_pb = Prescription(drug_id=MORPHINE, drug="morphine", conc_ng_ml=10_000_000,
                               steps=[(0, 1_500_000)], pb=(100_000, 600, 3600, 4))
        assert tw.program(with_pb).result == "ack"
        st = tw.status()
        due = st["refill_due"]
        assert due == T0 + 42 * DAY + 2 * H
        assert not st["flags"] & N.mask_of(N.STATUS_FLAGS, "refill_due_stability")
        # the patient takes every bolus allowed: the reservoir (the truth) reaches 2 mL no
        # sooner than the date, and within a day of it
        low = N.mask_of(N.ALARMS, "low_reservoir")
        while not tw.status()["alarms"] & low:
            if (tw.now - T0) % DAY < 4 * H:
                tw.command("PATIENT_BOLUS", role=2)
            tw.run(H)
        assert tw.truth["reservoir_nl"] < 2_000_000
        assert due <= tw.now <= due + DAY, (tw.now - due) / H
    finally:
        tw.close()


def test_the_refill_date_follows_the_fills_stability(tmp_path):
    # REQ: SR-RES-05
    # ziconotide 25 mcg/mL at 2.4 mcg/day: 18 mL would last 187 days, but the label's first
    # fill lasts 14 days, and a refill of the same drug 40
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=18_000_000, conc_ng_ml=25_000)
    try:
        zic = Prescription(drug_id=7, drug="ziconotide", conc_ng_ml=25_000, steps=[(0, 2_400)])
        assert tw.program(zic).result == "ack"
        st = tw.status()
        assert st["refill_due"] == T0 + 14 * DAY
        assert st["flags"] & N.mask_of(N.STATUS_FLAGS, "refill_due_stability")
        tw.run(12 * DAY)
        residual = tw.refill(18_000_000, 25_000)
        assert refill(tw, 18_000_000, 25_000, residual).result == "ack"
        assert tw.status()["refill_due"] == tw.now + 40 * DAY
    finally:
        tw.close()


def test_the_prescription_s_threshold_moves_the_low_reservoir_alarm(tmp_path):
    # REQ: SR-RES-04
    # 3.1 mL left, the prescription says 3 mL: the alarm comes with the stroke that takes
    # the reservoir (the truth) below 3 mL, not at the board's 2 mL
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=3_100_000, conc_ng_ml=10_000_000)
    try:
        p = Prescription(drug_id=MORPHINE, drug="morphine", conc_ng_ml=10_000_000,
                         steps=[(0, 10_000_000)], low_reservoir_nl=3_000_000)
        assert tw.program(p).result == "ack"
        tw.run(4 * H)  # 1 mL/day: 100 uL in 2.4 h
        raised = [e for e in events(tw, "alarm_raised")
                  if e[4] == N.mask_of(N.ALARMS, "low_reservoir").bit_length() - 1]
        assert len(raised) == 1
        t_alarm = raised[0][0]
        before = [nl for t, nl, _ in tw.strokes() if t < t_alarm]
        upto = [nl for t, nl, _ in tw.strokes() if t <= t_alarm]
        assert 3_100_000 - sum(upto) < 3_000_000 <= 3_100_000 - sum(before)
    finally:
        tw.close()


def test_a_change_of_drug_into_an_empty_catheter_needs_the_new_drug_s_prescription(tmp_path):
    # REQ: SR-DRUG-04
    # found by the stateful test: a new (empty) catheter, then a refill with ziconotide on
    # a morphine prescription of 10.8 mg/day. No old drug to bridge, so the morphine plan
    # ran at ziconotide's 25 mcg/mL: 432 mL/day, 10.8 mg/day of ziconotide (its limit:
    # 19.2 mcg). Now the pump stops with rx_invalid until ziconotide is prescribed.
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=2_000_000, conc_ng_ml=10_000_000)
    try:
        tw.new_catheter(50_000)
        assert tw.command("CATHETER", R.catheter(50_000)).result == "ack"
        assert tw.program(rx(MORPHINE, 10_000_000, 10_800_000)).result == "ack"
        residual = tw.refill(2_000_000, 25_000)
        assert refill(tw, 2_000_000, 25_000, residual, 7).result == "ack"
        t0 = tw.now
        tw.run(H)
        assert not [s for s in tw.strokes() if s[0] >= t0]  # the truth: nothing pumped
        st = tw.status()
        assert st["alarms"] & N.mask_of(N.ALARMS, "rx_invalid") and st["rate_nl_day"] == 0
        zic = Prescription(drug_id=7, drug="ziconotide", conc_ng_ml=25_000, steps=[(0, 2_400)])
        assert tw.program(zic).result == "ack"
        tw.run(DAY)
        got = sum(m for t, _, m in tw.strokes() if t >= t0) / E6
        assert got <= 2_400 + 25_000 * 250 / 1000 * 2, got  # 2.4 mcg a day, two strokes
    finally:
        tw.close()


def test_a_new_concentration_without_a_catheter_keeps_the_dose(tmp_path):
    # REQ: SR-DRUG-02
    # a board without a catheter volume (nothing to bridge): after a refill at a fifth of
    # the concentration the pump moves five times the volume, the same mg a day
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=18_000_000, conc_ng_ml=10_000_000,
                        catheter_nl=0)
    try:
        assert tw.program(rx(MORPHINE, 10_000_000, 2_000_000)).result == "ack"
        tw.run(H)
        residual = tw.refill(18_000_000, 2_000_000)
        assert refill(tw, 18_000_000, 2_000_000, residual).result == "ack"
        t0 = tw.now
        tw.run(DAY)
        got = sum(m for t, _, m in tw.strokes() if t >= t0) / E6
        assert abs(got - 2_000_000) <= 2_000_000 * 250 // 1_000_000 * 2, got
    finally:
        tw.close()


def test_a_change_of_drug_with_no_old_prescription_keeps_the_old_drug_in_its_limits(tmp_path):
    # REQ: SR-DRUG-04
    # found by the stateful test: a new pump, its catheter full of morphine 10 mg/mL
    # (150 uL, 1.5 mg), never programmed, refilled with hydromorphone 2 mg/mL. The new
    # drug's plan pushes the morphine out first, at five times morphine's volume per mg:
    # 5.7 mg/day of hydromorphone is 118.75 uL/h, 1.19 mg of morphine in an hour, over
    # its 1.125 mg. The guard judges the catheter's morphine by morphine's limits.
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=2_500_000, conc_ng_ml=10_000_000)
    try:
        # the pump learns what it holds from a refill visit (a new pump knows nothing)
        residual = tw.refill(2_500_000, 10_000_000)
        assert refill(tw, 2_500_000, 10_000_000, residual, MORPHINE).result == "ack"
        residual = tw.refill(15_000_000, 2_000_000)
        assert refill(tw, 15_000_000, 2_000_000, residual, HYDROMORPHONE).result == "ack"
        r = tw.program(rx(HYDROMORPHONE, 2_000_000, 5_700_000))
        assert (r.result, r.limit) == ("limit", "max_per_hour"), r
        assert tw.program(rx(HYDROMORPHONE, 2_000_000, 5_000_000)).result == "ack"
        tw.run(2 * DAY)
        s = tw.strokes()
        morphine = [(t, v, m if m == v * 10_000_000 else 0) for t, v, m in s]
        assert max_window(morphine, H) <= 1_125_000 * E6  # the truth, at the tip
        assert sum(m for _, _, m in morphine) <= 1_500_000 * E6
        got = [m for _, v, m in s if m == v * 2_000_000]
        assert got, "hydromorphone reached the tip after the bridge"
    finally:
        tw.close()


def test_a_repeated_catheter_and_prime_without_a_revision_counts_against_the_limits(tmp_path):
    # REQ: SR-CATH-02
    # issue 23's attack: morphine 10 mg/mL at 5 mg/day; three times `catheter --volume
    # "1 mL"` then `prime`, and no real revision (the old catheter stays full: each prime
    # pushes 10 mg to the tip). It put 31.6 mg at the tip in 24 h (hard limit 15).
    tw = ControlledTwin(tmp_path, T0, reservoir_nl=18_000_000, conc_ng_ml=10_000_000)
    try:
        assert tw.program(rx(MORPHINE, 10_000_000, 5_000_000)).result == "ack"
        tw.run(DAY)
        results = []
        for _ in range(3):
            assert tw.command("CATHETER", R.catheter(1_000_000)).result == "ack"
            r = tw.command("PRIME")
            results.append((r.result, N.name_of(N.DENY_REASONS, r.detail) if r.detail else ""))
            tw.run(70 * 60)
        # only the first change in 24 h is exempt; the next primes are boluses like any
        # other, and the guard refuses them (10 mg is over morphine's largest bolus, and
        # the 24 h window would pass 15 mg)
        assert results[0] == ("ack", "")
        assert [x[0] for x in results[1:]] == ["limit", "limit"], results
        assert {x[1] for x in results[1:]} <= {"max_bolus", "daily_limit", "max_per_hour"}
        assert len(events(tw, "bolus_denied")) == 2
        tw.run(DAY)
        worst = max_window(tw.strokes(), DAY) / E6
        # the truth: the basal and the one exempt catheter volume (10 mg: what the pump
        # cannot tell from a real revision, SR-CATH-02), no more
        assert worst <= 15_000_000 + 10_000_000, worst
        assert worst < 21_000_000, worst  # was 31.6 mg
        print(f"worst 24 h at the tip: {worst / 1e6:.2f} mg")
    finally:
        tw.close()


def test_a_scenario_catheter_without_a_revision_is_sent_and_its_second_prime_refused(tmp_path):
    # REQ: SR-CATH-02
    # `replaced = false`: only the command is sent; the twin's catheter stays the old, full
    # one (its physical catheter is not replaced), and a second change within 24 h is no
    # longer exempt: its 10 mg prime is refused by the guard, as the scenario expects
    import json
    import subprocess
    import sys

    from theca.inputs.scenario import load_scenario
    from theca.twin.simulate import twin_config

    (tmp_path / "rx.toml").write_text(
        'drug = "morphine"\nconcentration = "10 mg/mL"\n[[steps]]\nstart = "00:00"\n'
        'rate = "5 mg/day"\n')
    sc = tmp_path / "s.toml"
    sc.write_text(
        'start = 2026-01-01T00:00:00Z\ndays = 3\nprescription = "rx.toml"\n'
        '[[events]]\nat = 2026-01-02T09:00:00Z\naction = "catheter"\nvolume = "1 mL"\n'
        'replaced = false\n'
        '[[events]]\nat = 2026-01-02T09:01:00Z\naction = "prime"\n'
        '[[events]]\nat = 2026-01-02T11:00:00Z\naction = "catheter"\nvolume = "1 mL"\n'
        'replaced = false\n'
        '[[events]]\nat = 2026-01-02T11:01:00Z\naction = "prime"\nexpect = "refused"\n')
    s = load_scenario(sc)
    assert [e.replaced for e in s.events if e.action == "catheter"] == [False, False]
    cfg = twin_config(s, {1: b"\x11" * 32, 2: b"\x22" * 32}, tmp_path, tmp_path / "x.tlog")
    assert cfg["catheters"] == []  # no physical revision
    out = tmp_path / "r.tlog"
    theca = [sys.executable, "-m", "theca.cli"]
    r = subprocess.run([*theca, "simulate", sc, "-o", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    d = subprocess.run([*theca, "decode", out, "--format", "jsonl", "--type", "event"],
                       capture_output=True, text=True, check=True)
    ev = [json.loads(x) for x in d.stdout.splitlines()]
    assert len([e for e in ev if e["event"] == "prime_started"]) == 1
    denied = [e for e in ev if e["event"] == "bolus_denied" and e.get("bolus") == "prime"]
    assert len(denied) == 1, [e for e in ev if e["event"] == "bolus_denied"]
    bad = tmp_path / "bad.toml"
    bad.write_text(sc.read_text().replace("replaced = false", 'replaced = "no"', 1))
    with pytest.raises(Exception, match="replaced"):
        load_scenario(bad)
