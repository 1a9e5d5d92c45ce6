"""The twin's physical truth as `theca simulate --truth FILE.json` writes it (the contract's
"The twin's physical truth, for tests"): what the mechanism really pumped and holds, and per
drug what reached the catheter tip, in total and at most in any 24 h and any 1 h of true time.
Tests and users judge the pump with it, never with the pump's own belief."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import theca_protocol as tp
from theca_protocol.storage import TruthTipRecord

from theca.inputs.druglib import DrugLibrary

_TIP = tp.compiled(TruthTipRecord)
_UNG = 1_000_000  # 1e-6 ng per ng
_WINDOWS = {"max_24h_ng": 86400, "max_1h_ng": 3600}


def tip_records(data: bytes) -> list[tuple[int, int, int]]:
    """(true time, drug id, 1e-6 ng) of each record of a per-drug truth stream; a torn last
    record (a power cut while it was written) is left out."""
    n = len(data) - len(data) % _TIP.size
    return [(t, drug, ung) for t, drug, _, ung in (_TIP.unpack_from(data, o) for o in range(0, n, _TIP.size))]


def max_window(points: list[tuple[int, int]], window_s: int) -> int:
    """The most (1e-6 ng) in any window of window_s seconds: points (t, amount) in time
    order; a window holds the points with t in (end - window_s, end]."""
    best = tot = 0
    j = 0
    for t, m in points:
        tot += m
        while points[j][0] <= t - window_s:
            tot -= points[j][1]
            j += 1
        best = max(best, tot)
    return best


def tip_by_drug(records: Iterable[tuple[int, int, int]], lib: DrugLibrary,
                fills: dict[int, list[tuple[int, int, int]]] | None = None) -> dict[str, dict]:
    """Per drug (by name; an id the library lacks as "#id") its total at the tip and its
    most in any 24 h and any 1 h, ng. The fluid a new catheter held (drug 0) is no drug.
    `fills`: an admixture's tag -> its drugs (drug id, num, den): each drug's mass is the
    fluid's primary mass times num / den (the same volume at its own concentration)."""
    per: dict[int, list[tuple[int, int]]] = defaultdict(list)
    fills = fills or {}
    for t, drug, ung in records:
        for k, num, den in fills.get(drug, ((drug, 1, 1),)):
            if k:
                per[k].append((t, ung * num // den))
    out: dict[str, dict] = {}
    for drug, pts in sorted(per.items()):
        pts.sort(key=lambda p: p[0])  # (stable: a stroke's parts keep their order)
        d = lib.by_id(drug)
        row = {"total_ng": _ng(sum(m for _, m in pts))}
        for key, w in _WINDOWS.items():
            row[key] = _ng(max_window(pts, w))
        out[d.name if d else f"#{drug}"] = row
    return out


def _ng(ung: int) -> float:
    # 1e-6 ng -> ng, exact to the last unit (doubles hold 2**53: 9e9 ng)
    return round(ung / _UNG, 6)


def truth_document(phys: dict, tips: bytes, lib: DrugLibrary,
                   fills: dict[int, list[tuple[int, int, int]]] | None = None) -> dict:
    """The --truth document from the twin's final physical state and its per-drug stream."""
    return {
        "pumped_ul": phys["pumped_nl"] / 1000,
        "reservoir_ul": phys["reservoir_nl"] / 1000,
        "failed_strokes": phys["failed_strokes"],
        "strokes": phys["strokes"],
        "tones": phys["tones"],
        "pocket_ul": phys.get("pocket_nl", 0) / 1000,
        "filled_ul": phys.get("filled_nl", 0) / 1000,
        "aspirated_ul": phys.get("aspirated_nl", 0) / 1000,
        "tip": tip_by_drug(tip_records(tips), lib, fills),
    }
