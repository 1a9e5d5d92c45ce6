"""What this host has seen of each pump: the most it has delivered and the event numbers it
has issued. A pump found behind either has had its state put back (an old flash image, a
restored backup, damaged storage taken up from an older copy): the host says so loudly,
since the pump may grant again what it already gave (SAFETY.md, SR-ROLL-01). Kept in
$THECA_HOME/seen/SERIAL.json (readable by its owner only)."""

from __future__ import annotations

import json
from pathlib import Path

from theca.link import keys as K


def _path(serial: str) -> Path:
    return K.home() / "seen" / f"{K.check_serial(serial)}.json"


def load(serial: str) -> dict:
    """The maxima seen of `serial` ({} if none, or the file is unreadable)."""
    try:
        v = json.loads(_path(serial).read_text())
    except (OSError, ValueError):
        return {}
    return v if isinstance(v, dict) else {}


def note(serial: str, delivered_ul: float | None = None, event_next: int | None = None) -> list[str]:
    """Record what the pump says now; returns what went back since (empty: nothing)."""
    old = load(serial)
    went_back = []
    new = dict(old)
    if delivered_ul is not None:
        seen = old.get("delivered_ul")
        if isinstance(seen, int | float) and delivered_ul + 0.001 < seen:
            went_back.append(f"it says {delivered_ul:.3f} uL delivered since therapy started, "
                             f"this host saw {seen:.3f} uL")
        new["delivered_ul"] = max(delivered_ul, seen if isinstance(seen, int | float) else 0)
    if event_next is not None:
        seen = old.get("event_next")
        if isinstance(seen, int) and event_next < seen:
            went_back.append(f"its next event is #{event_next}, this host saw it number "
                             f"#{seen - 1}")
        new["event_next"] = max(event_next, seen if isinstance(seen, int) else 0)
    if new != old:
        p = _path(serial)
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        K.write_private(p, json.dumps(new))
    return went_back


def warning(serial: str, went_back: list[str]) -> str:
    """The loud message for a pump whose state went back."""
    return (f"WARNING: pump {serial} went BACK in time ({'; '.join(went_back)}): its state was "
            "put back (an old flash image, a restored backup, storage taken up from an older "
            "copy). It may grant again doses it already gave and number events again: check "
            "its reservoir and its dose history before any change")
