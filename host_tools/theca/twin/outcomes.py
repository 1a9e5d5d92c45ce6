"""What became of each command a scenario sent: the pump's reply to it in the run's log.

A scenario run succeeds when every command did what it asked. A patient bolus the pump
denies by its rules (`limit`: lockout, max_per_day, a hard limit...) is an outcome the
scenario studies, not a failure; any other refusal fails the run (`theca simulate` exit 3)
unless the event says `expect = "refused"`, and such an event that was accepted fails it
too. A command sent while the pump was off (a power loss) gets no answer: listed, not a
failure; a command a powered pump never answered fails the run (its link is broken).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import theca_protocol as tp
from theca_protocol import names as N

from theca.inputs.scenario import Event, Scenario
from theca.link.client import explain
from theca.log.records import records
from theca.twin.simulate import scenario_commands

_ACK = next(k for k, v in N.RESULTS.items() if v == "ack")
_LIMIT = next(k for k, v in N.RESULTS.items() if v == "limit")


class Outcome(NamedTuple):
    """One scenario command that did not simply succeed."""

    t: str  # when (ISO), or "" if it got no answer
    command: str
    event: Event | None
    result: str  # the NACK reason, "ack" (expected refused), or "no_answer"
    words: str
    fails: bool  # it makes the run fail


def outcomes(sc: Scenario, tlog: Path) -> list[Outcome]:
    """The commands of `sc` whose replies in `tlog` were not a plain ACK, in order."""
    # only the replies are decoded: a long run's log is nearly all STATUS frames
    replies = {r["cmd_id"]: r for r in records(tlog, frozenset((tp.T_REPLY,)))
               if r.get("kind") == "reply"}
    out = []
    for k, (name, ev) in enumerate(scenario_commands(sc), 1):
        rep = replies.get(k)
        expect = ev is not None and ev.expect_refused
        if rep is None:
            off = ev is not None and _powered_off(sc, ev.at)
            words = ("no answer (the pump was off: a power loss)" if off else
                     "no answer from a powered pump (its link failed)")
            out.append(Outcome("", name, ev, "no_answer", words, not off))
            continue
        result = next(c for c, n in N.RESULTS.items() if n == rep["result"]) \
            if rep["result"] in N.RESULTS.values() else -1
        if result == _ACK:
            if expect:
                out.append(Outcome(rep["t"], name, ev, "ack",
                                   "accepted, but the scenario expected it refused", True))
            continue
        words = explain(tp.TYPES[name], result, rep.get("detail", 0))
        denied_by_rules = name == "PATIENT_BOLUS" and result == _LIMIT
        out.append(Outcome(rep["t"], name, ev, rep["result"], words,
                           not denied_by_rules and not expect))
    return out


def _powered_off(sc: Scenario, t: int) -> bool:
    # within a power loss, or at the instant the power came back (the pump is booting)
    return any(f.kind == "power_loss" and f.at <= t <= f.at + (f.duration_s or 0)
               for f in sc.faults)


def describe(o: Outcome) -> str:
    """One line for the summary."""
    where = f"events[{o.event.index}] " if o.event is not None else ""
    when = o.t or "-"
    tag = "" if o.fails else (" (expected)" if o.event is not None and o.event.expect_refused
                             else " (an outcome)")
    return f"{when}  {where}{o.command.lower()}: {o.words}{tag}"
