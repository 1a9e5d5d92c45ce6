"""The titration soft limit on the host (inputs/titration.py) against the drug library's
numbers: the issue's cases."""

from __future__ import annotations

import pytest
from theca.errors import BadInput
from theca.inputs import titration
from theca.inputs.druglib import load_druglib
from theca.inputs.rxfile import Prescription, override_flag
from theca_protocol import names as N

LIB = load_druglib()
DAY_S = 86400


def rx(name: str, conc: int, ng_day: int) -> Prescription:
    d = LIB.find(name)
    assert d is not None
    return Prescription(drug_id=d.id, drug=d.name, conc_ng_ml=conc, steps=[(0, ng_day)])


def test_ziconotide_is_raised_by_at_most_its_label_s_step():
    # REQ: SR-TITR-01
    z = LIB.find("ziconotide")
    old = rx("ziconotide", 25_000, 2_400)
    # the case: 2.4 -> 12 mcg/day in one change
    with pytest.raises(BadInput) as e:
        titration.check(old, rx("ziconotide", 25_000, 12_000), z, 7 * DAY_S, False)
    assert "an increase of 9.6 mcg/day (+400 %) is more than ziconotide's 2.4 mcg/day" in str(e.value)
    # 2.4 mcg/day more is allowed, a week after the last change
    assert titration.check(old, rx("ziconotide", 25_000, 4_800), z, 7 * DAY_S, False) == 0
    # but not a day after it: at most 2-3 increases a week
    with pytest.raises(BadInput) as e:
        titration.check(old, rx("ziconotide", 25_000, 4_800), z, DAY_S, False)
    assert "raised at most every" in str(e.value)


def test_an_override_passes_and_is_recorded_a_decrease_or_a_new_drug_is_no_titration():
    # REQ: SR-TITR-01
    m = LIB.find("morphine")
    old = rx("morphine", 10_000_000, 2_000_000)
    new = rx("morphine", 10_000_000, 9_500_000)
    flag = titration.check(old, new, m, DAY_S, True)
    assert flag == override_flag("titration")
    assert N.RX_FLAGS[flag.bit_length() - 1] == "override_titration"
    assert titration.check(new, old, m, 60, False) == 0  # a decrease
    h = LIB.find("hydromorphone")
    assert titration.check(old, rx("hydromorphone", 10_000_000, 3_000_000), h, 60, False) == 0
    assert titration.check(None, new, m, None, False) == 0  # a first prescription
    # +50 % is morphine's step a change
    assert titration.check(old, rx("morphine", 10_000_000, 3_000_000), m, DAY_S, False) == 0
    with pytest.raises(BadInput):
        titration.check(old, rx("morphine", 10_000_000, 3_001_000), m, DAY_S, False)
