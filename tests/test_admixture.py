"""Admixtures (issue 24, point 3): a fill of up to four drugs, each held to its own limits
on the host and on the device, and shown per drug in its unit; judged from the physical
truth at the catheter tip (`simulate --truth`)."""

from __future__ import annotations

import pytest
from scenario_run import events, simulate
from theca.analysis.summary import summarize
from theca.errors import BadInput
from theca.inputs.rxfile import load_prescription

MIX = """
[[drugs]]
name = "morphine"
concentration = "4 mg/mL"
[[drugs]]
name = "bupivacaine"
concentration = "20 mg/mL"
[[steps]]
start = "00:00"
rate = "{rate}"
"""


def test_each_drug_of_a_mix_is_held_to_its_own_limits_on_the_host():
    # REQ: SR-MIX-01
    # the case: 5.2 mg/day of morphine is within morphine's limits, but carries
    # 26 mg/day of bupivacaine, over bupivacaine's own 20 mg
    with pytest.raises(BadInput) as e:
        load_prescription(_toml(MIX.format(rate="5.2 mg/day")))
    msg = str(e.value)
    assert "bupivacaine" in msg and "hard limit 20 mg/day" in msg and "26 mg" in msg, msg
    assert "morphine hard" not in msg  # morphine itself is within its limits
    rx = load_prescription(_toml(MIX.format(rate="3 mg/day")))
    assert [(n, c) for n, _, c in rx.drugs()] == [("morphine", 4_000_000), ("bupivacaine", 20_000_000)]
    assert "bupivacaine (20 mg/mL): per day 15 mg" in rx.describe()
    # the blob carries the mix, and reads back the same
    assert type(rx).from_blob(rx.to_blob()).mix == rx.mix


@pytest.mark.parametrize("extra, words", [
    ('drug = "morphine"\n', "give the fill once"),
    ('[[drugs]]\nname = "clonidine"\nconcentration = "5 mg/mL"\n', "clonidine hard limit"),
    ('[[drugs]]\nname = "bupivacaine"\nconcentration = "10 mg/mL"\n', "named twice"),
    ('[[drugs]]\nname = "bupivicaine"\nconcentration = "10 mg/mL"\n', "bupivacaine"),
])
def test_a_mix_written_wrong_is_refused_naming_the_drug(extra, words):
    # REQ: SR-MIX-01
    with pytest.raises(BadInput) as e:
        load_prescription(_toml(extra + MIX.format(rate="2 mg/day")))
    assert words in str(e.value), str(e.value)


def test_on_the_twin_boluses_stop_at_the_mix_s_first_limit_judged_at_the_tip(tmp_path):
    # REQ: SR-MIX-01
    # morphine 2.5 mg/day carries 12.5 mg/day of bupivacaine; clinician boluses of 0.4 mg
    # of morphine (2 mg of bupivacaine) every 2 h: morphine alone would allow 31 of them,
    # bupivacaine allows 3
    body = "".join(f'[[events]]\nat = 2026-01-01T{h:02d}:00:00Z\naction = "clinician_bolus"\n'
                   f'dose = "0.4 mg"\nduration = "20 min"\n' for h in range(2, 24, 2))
    objs, truth, r = simulate(tmp_path, MIX.format(rate="2.5 mg/day"), body, days=2, ok=(3,))
    tip = truth["tip"]
    assert set(tip) == {"morphine", "bupivacaine"}
    assert tip["bupivacaine"]["max_24h_ng"] <= 20_000_000, tip
    assert tip["bupivacaine"]["max_24h_ng"] > 18_000_000, tip  # the boluses did run up to it
    assert tip["morphine"]["max_24h_ng"] <= 4_000_000, tip
    # the same volume: 5 ng of bupivacaine for each ng of morphine
    assert tip["bupivacaine"]["total_ng"] == pytest.approx(5 * tip["morphine"]["total_ng"], rel=1e-6)
    given = events(objs, "bolus_started", bolus="clinician")
    assert len(given) == 3, given
    assert {e["reason"] for e in events(objs, "bolus_denied")} == {"daily_limit"}
    # the fill is in the log by name, and the summary counts each drug apart
    assert events(objs, "fill_drug", drug="bupivacaine", conc_ng_ml=20_000_000)
    s = summarize(tmp_path / "r.tlog")
    assert s.mix == [("bupivacaine", 20_000_000)]
    day1 = s.days[0].per_drug
    assert day1["bupivacaine"] == pytest.approx(5 * day1["morphine"], rel=1e-6)
    assert 18 < day1["bupivacaine"] <= 20.01, day1


def test_a_refill_names_the_whole_fill_and_the_tip_follows_each_drug(tmp_path):
    # REQ: SR-MIX-02
    (tmp_path / "rx2.toml").write_text(MIX.replace("20 mg/mL", "10 mg/mL").format(rate="2 mg/day"))
    body = ('[[events]]\nat = 2026-01-02T10:00:00Z\naction = "refill"\nvolume = "18 mL"\n'
            'drugs = [{name = "morphine", concentration = "4 mg/mL"}, '
            '{name = "bupivacaine", concentration = "10 mg/mL"}]\n'
            '[[events]]\nat = 2026-01-02T10:05:00Z\naction = "program"\nprescription = "rx2.toml"\n'
            # the old prescription for the new fill: refused, it names another bupivacaine
            '[[events]]\nat = 2026-01-02T10:10:00Z\naction = "program"\nprescription = "rx.toml"\n'
            'expect = "refused"\n')
    objs, truth, _ = simulate(tmp_path, MIX.format(rate="2 mg/day"), body, days=4)
    assert [e["conc_ng_ml"] for e in events(objs, "fill_drug")] == [20_000_000, 10_000_000]
    refused = events(objs, "prescription_refused") or [o for o in objs if o.get("result") == "invalid"]
    assert refused
    # 4 days of 2 mg of morphine; bupivacaine 10 mg/day before, 5 mg/day after the bridge
    tip = truth["tip"]
    assert tip["morphine"]["max_24h_ng"] <= 2_100_000
    assert tip["bupivacaine"]["max_24h_ng"] <= 10_100_000
    # each stroke's bupivacaine is its fill's: 5 ng per ng of morphine before, 2.5 after
    m, b = tip["morphine"]["total_ng"], tip["bupivacaine"]["total_ng"]
    assert 2.5 * m < b < 5 * m, (m, b)
    # the report counts each drug of each fill apart, as the tip got it (to a status period)
    from theca.analysis.report_numbers import analyse
    from theca.log.data import read_log

    rep = analyse(read_log(tmp_path / "r.tlog"))
    per = {k: sum(d.per_drug_mg.get(k, 0.0) for d in rep.days) for k in (1, 5)}
    assert per[1] == pytest.approx(m / 1e6, abs=0.002) and per[5] == pytest.approx(b / 1e6, abs=0.05), (per, m, b)


def _toml(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def test_theca_refill_with_and_status_show_each_drug_on_a_live_twin(tmp_path):
    # REQ: SR-MIX-02
    from test_link import env_for, run_theca, status_json
    from theca.twin.live import LiveTwin

    home, dev = tmp_path / "home", tmp_path / "pump"
    rx = tmp_path / "mix.toml"
    rx.write_text(MIX.format(rate="2.4 mg/day"))
    with LiveTwin(dev, speed=600, env=env_for(home), args=["--reservoir-ml", 15]):
        st = status_json(home, dev)
        # an admixture names its primary drug: --with alone is refused, nothing sent
        r = run_theca(home, "--device", dev, "refill", "--volume", "18 mL", "--concentration",
                      "4 mg/mL", "--residual", "15 mL", "--with", "bupivacaine 20 mg/mL")
        assert r.returncode == 2 and "--drug" in r.stderr, r.stderr
        r = run_theca(home, "--device", dev, "refill", "--volume", "18 mL", "--drug", "morphine",
                      "--concentration", "4 mg/mL", "--with", "bupivacaine 40 mg/mL",
                      "--residual", "15 mL", "--yes")
        assert r.returncode == 2 and "bupivacaine hard limit 30 mg/mL" in r.stderr, r.stderr
        r = run_theca(home, "--device", dev, "refill", "--volume", "18 mL", "--drug", "morphine",
                      "--concentration", "4 mg/mL", "--with", "bupivacaine 20 mg/mL",
                      "--residual", f"{st['reservoir_ul']:.3f} uL", "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "morphine 4 mg/mL + bupivacaine 20 mg/mL" in r.stdout, r.stdout
        r = run_theca(home, "--device", dev, "program", rx, "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        import time

        time.sleep(3)  # half an hour of therapy at 600x
        st = status_json(home, dev)
        assert st["admixture"] and [d["drug"] for d in st["drugs"]] == ["morphine", "bupivacaine"]
        m, b = (d["rolling_24h_ng"] for d in st["drugs"])
        assert m > 0 and b == pytest.approx(5 * m, abs=1)
        text = run_theca(home, "--device", dev, "status").stdout
        assert "morphine 4 mg/mL + bupivacaine 20 mg/mL" in text and "of bupivacaine" in text, text
