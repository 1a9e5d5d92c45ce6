"""The titration soft limit (host-checked, `--override-soft-limit` to pass): how far one
change may raise the daily dose (basal plus timed boluses) of the drug on the pump, and
how soon after the last change. Not applied to a change of drug (the reservoir's drug
must change first, by a refill, and its first prescription is judged by the drug's own
limits). The numbers are the drug library's (`titration_*`), with their sources.
"""

from __future__ import annotations

from theca.errors import BadInput
from theca.inputs import units as u
from theca.inputs.druglib import Drug
from theca.inputs.rxfile import Prescription, override_flag


def check(old: Prescription | None, new: Prescription, drug: Drug, since_last_s: int | None,
          override: bool) -> int:
    """The Rx flags to add (the titration override) or BadInput naming the soft limit.
    `since_last_s`: seconds since the prescription in force was programmed (None: not
    known, e.g. the log no longer holds it)."""
    if old is None or old.drug_id != new.drug_id:
        return 0
    before, after = old.daily_ng(), new.daily_ng()
    rise = after - before
    if rise <= 0:
        return 0
    unit = u.amount_unit(drug.max_ng_day)
    problems = []
    step = drug.titration_step_ng(before)
    if rise > step:
        how = (f"{u.fmt_amount(drug.titration_ng_day, unit)}/day" if drug.titration_ng_day
               else f"{drug.titration_pct} % ({u.fmt_amount(step, unit)}/day)")
        problems.append(f"an increase of {u.fmt_amount(rise, unit)}/day ({pct(before, after)}) "
                        f"is more than {drug.name}'s {how} per change")
    gap = drug.titration_interval_h * 3600
    if gap and since_last_s is not None and since_last_s < gap:
        problems.append(f"the prescription in force was programmed {u.fmt_duration(since_last_s)} "
                        f"ago; {drug.name} is raised at most every "
                        f"{u.fmt_duration(gap)}")
    if not problems:
        return 0
    if override:
        return override_flag("titration")
    raise BadInput([f"soft limit: titration: {p}; confirm with --override-soft-limit"
                    for p in problems])


def pct(before: int, after: int) -> str:
    """The change from before to after in percent, signed ("+25 %"), or "new"."""
    if before <= 0:
        return "new"
    return f"{100 * (after - before) / before:+.0f} %"
