"""The fills a telemetry log records: an admixture's drugs, from the `refilled` and
`fill_drug` events (the same volume carries each drug at its own concentration)."""

from __future__ import annotations


def fill_changes(events: list[dict]) -> tuple[list[int], list[tuple]]:
    """(times, mixes): from each device time on, the reservoir's other drugs (an admixture)
    as ((drug id, conc ng/mL), ...): the `fill_drug` events after its `refilled` (or after
    a new pump's first prescription); () before any and for a fill of one drug."""
    from theca.inputs.druglib import load_druglib

    lib = load_druglib()
    times: list[int] = [0]
    mixes: list[tuple] = [()]
    fresh = True
    for e in sorted(events, key=lambda e: (e["time"], e.get("event_seq", 0))):
        if e["event"] == "refilled":
            times.append(e["time"])
            mixes.append(())
            fresh = False
        elif e["event"] == "fill_drug":
            d = lib.find(str(e.get("drug")))
            if d is None:
                continue
            if fresh:
                times.append(e["time"])
                mixes.append(())
                fresh = False
            mixes[-1] = (*mixes[-1], (d.id, int(e.get("conc_ng_ml") or 0)))
    return times, mixes
