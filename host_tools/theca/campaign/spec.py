"""A campaign file (TOML) -> its runs, each a scenario table that `theca simulate` takes.

```toml
scenario = "base.toml"      # every run starts from this scenario
seeds = 5                   # each point repeated; seeds after the first jitter the times
jitter = "10 min"           # how far (optional; default: the sweep's `every`, else 10 min)
[[sweep]]                   # sweeps multiply
fault = "power_loss"        # a fault kind, or event = "set_time" / "patient_bolus" / ...
every = "37 min"            # injected at each multiple of this from the start (or at = [...])
duration = ["2 s", "3 h"]   # any field of the fault or event: a list of values to sweep
```
A `set_time` event may sweep `shift = ["+1 h", "-1 h"]`: its `utc` is the injection time
plus the shift. The base scenario's prescriptions are taken into each run's table, so that
a run (and a failing run's file, DIR/failures/RUN.toml) stands on its own.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from theca.errors import BadInput, Problems
from theca.inputs import units as u
from theca.inputs.scenario import ACTIONS, FAULT_KINDS
from theca.inputs.tomlfile import check_keys, read_toml, table_list

_TOP = ("scenario", "seeds", "jitter", "sweep", "description", "timeout")
_SWEEP_RESERVED = ("fault", "event", "every", "at")
#: Runs a campaign may make at most (a typo in `every` should not start a year of work).
MAX_RUNS = 1_000_000


@dataclass(frozen=True)
class Sweep:
    kind: str  # "fault" or "event"
    name: str  # the fault kind or the event action
    times: tuple[datetime, ...]  # injection times (before jitter)
    fields: tuple[tuple[str, tuple], ...]  # (field, its values to sweep)
    jitter_s: int


@dataclass(frozen=True)
class Campaign:
    base: dict  # the base scenario table, prescriptions taken in
    seeds: int
    sweeps: tuple[Sweep, ...]
    timeout_s: int
    source: str

    def n_runs(self) -> int:
        n = self.seeds
        for s in self.sweeps:
            n *= len(s.times) * max(1, _product_size(s.fields))
        return n


def _product_size(fields) -> int:
    n = 1
    for _, vals in fields:
        n *= len(vals)
    return n


def load_campaign(path: str | Path) -> Campaign:
    """Read and check a campaign file; BadInput naming every problem (exit 2)."""
    path = Path(path)
    data, _ = read_toml(path)
    probs = Problems()
    check_keys(data, _TOP, ("scenario", "sweep"), "", probs,
               {"scenario": '"base.toml"', "sweep": "[[sweep]] with fault = ... and every = ..."})
    base = None
    if isinstance(data.get("scenario"), str):
        base = _base_scenario(path.parent / data["scenario"], probs)
    seeds = data.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 1000:
        probs.add("seeds", f"expected a whole number 1..1000, got {seeds!r}")
        seeds = 1
    timeout = data.get("timeout", "10 min")
    timeout_s = probs.call(duration, timeout, "timeout") or 600
    sweeps = []
    if base is not None:
        start, end = _span(base, probs)
        for i, sw in enumerate(table_list(data.get("sweep", []), "sweep", probs), 1):
            s = _sweep(sw, f"sweep[{i}]", start, end, data.get("jitter"), probs)
            if s is not None:
                sweeps.append(s)
    probs.raise_if_any(str(path))
    assert base is not None
    c = Campaign(base, seeds, tuple(sweeps), timeout_s, str(path))
    if c.n_runs() > MAX_RUNS:
        raise BadInput(f"{path}: {c.n_runs():,} runs: more than {MAX_RUNS:,} (a smaller "
                       "sweep, or fewer seeds)")
    return c


def _base_scenario(p: Path, probs: Problems) -> dict | None:
    # the scenario's table with every prescription file read into it
    try:
        data, _ = read_toml(p)
    except BadInput as e:
        probs.extend(e, "scenario")
        return None
    data = dict(data)
    try:
        if isinstance(data.get("prescription"), str):
            data["prescription"] = read_toml(p.parent / data["prescription"])[0]
        evs = []
        for ev in data.get("events", []):
            ev = dict(ev)
            if isinstance(ev.get("prescription"), str):
                ev["prescription"] = read_toml(p.parent / ev["prescription"])[0]
            evs.append(ev)
        if evs:
            data["events"] = evs
    except BadInput as e:
        probs.extend(e, "scenario")
        return None
    return data


def _span(base: Mapping, probs: Problems) -> tuple[datetime, datetime]:
    start = base.get("start")
    if not isinstance(start, datetime):
        probs.add("scenario", "its `start` is not a date and time (e.g. 2026-01-01T00:00:00Z)")
        start = datetime(2026, 1, 1, tzinfo=UTC)
    days = base.get("days", 1)
    secs = u.parse_duration(days, "days") if isinstance(days, str) else int(float(days) * 86400)
    return start, start + timedelta(seconds=secs)


def _sweep(sw: Mapping, f: str, start: datetime, end: datetime, jitter, probs: Problems):
    kinds = [k for k in ("fault", "event") if k in sw]
    if len(kinds) != 1:
        probs.add(f, "give one of fault = KIND or event = ACTION")
        return None
    kind = kinds[0]
    name = sw[kind]
    known = FAULT_KINDS if kind == "fault" else tuple(ACTIONS)
    if name not in known:
        probs.add(f"{f}.{kind}", f"unknown {kind} {name!r} (one of {', '.join(known)})")
        return None
    if ("every" in sw) == ("at" in sw):
        probs.add(f, "give one of every = DURATION or at = [times]")
        return None
    times: list[datetime] = []
    step = 0
    if "every" in sw:
        step = probs.call(duration, sw["every"], f"{f}.every") or 0
        if step:
            t = start + timedelta(seconds=step)
            while t < end:
                times.append(t)
                t += timedelta(seconds=step)
    else:
        for j, a in enumerate(sw["at"] if isinstance(sw["at"], list) else [sw["at"]], 1):
            if isinstance(a, datetime):
                times.append(a)
            elif isinstance(a, str):
                off = probs.call(duration, a, f"{f}.at[{j}]")
                if off is not None:
                    times.append(start + timedelta(seconds=off))
            else:
                probs.add(f"{f}.at[{j}]", f"expected a date and time or a duration from the "
                                         f"start, got {a!r}")
    if not times and "every" in sw and step:
        probs.add(f"{f}.every", f"no injection time before the scenario's end ({end.isoformat()})")
    fields = tuple((k, tuple(v) if isinstance(v, list) else (v,))
                   for k, v in sw.items() if k not in _SWEEP_RESERVED and k != kind)
    for k, vals in fields:
        if not vals:
            probs.add(f"{f}.{k}", "an empty list sweeps nothing")
    j = step or 600
    if jitter is not None:
        j = probs.call(duration, jitter, "jitter") or j
    return Sweep(kind, name, tuple(times), fields, j)


def duration(text, f: str) -> int:
    """A duration, which may be compound ("9 h 59 min"): seconds."""
    import re

    if isinstance(text, str):
        parts = re.findall(r"[-+]?\d+(?:\.\d+)?\s*[a-zA-Z]+", text)
        if len(parts) > 1 and "".join(parts).replace(" ", "") == text.replace(" ", ""):
            return sum(u.parse_duration(p, f) for p in parts)
    return u.parse_duration(text, f)


def runs(c: Campaign) -> list[dict]:
    """Every run of the campaign, in a fixed order: {"id", "params", "scenario"}."""
    axes = []
    for s in c.sweeps:
        combos = list(itertools.product(*(vals for _, vals in s.fields))) or [()]
        axes.append([(t, combo) for t in s.times for combo in combos])
    out = []
    points = list(itertools.product(*axes)) if axes else [()]
    n = 0
    for seed in range(c.seeds):
        for p, point in enumerate(points):
            rng = random.Random(f"{seed}/{p}")
            params: dict = {"seed": seed}
            sc = dict(c.base)
            faults = list(sc.get("faults", []))
            events = list(sc.get("events", []))
            for i, (s, (t, combo)) in enumerate(zip(c.sweeps, point, strict=True), 1):
                if seed:
                    t += timedelta(seconds=rng.randrange(-(s.jitter_s // 2), s.jitter_s // 2 + 1))
                t = max(t, sc["start"] + timedelta(seconds=1))
                entry: dict = {"at": t}
                params[f"s{i}_{s.kind}"] = s.name
                params[f"s{i}_at"] = t.strftime("%Y-%m-%dT%H:%M:%SZ")
                for (k, _), v in zip(s.fields, combo, strict=True):
                    params[f"s{i}_{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
                    if k == "shift" and s.name == "set_time":
                        entry["utc"] = t + timedelta(seconds=u.parse_duration(
                            str(v).lstrip("+-"), f"sweep[{i}].shift") * (-1 if str(v).startswith("-") else 1))
                    else:
                        entry[k] = v
                if s.kind == "fault":
                    faults.append({"kind": s.name, **entry})
                else:
                    events.append({"action": s.name, **entry})
            if faults:
                sc["faults"] = sorted(faults, key=lambda f: f["at"])
            if events:
                sc["events"] = sorted(events, key=lambda e: e["at"])
            n += 1
            out.append({"id": f"r{n:06d}", "params": params, "scenario": sc})
    return out
