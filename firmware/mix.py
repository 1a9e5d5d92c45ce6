# Admixtures: a fill of up to four drugs (the primary one, whose unit every dose is written
# in, and up to RX_MAX_MIX more in the same volume, each at its own concentration). Each
# drug is held to its own hard limits: a limit L of drug k at ck is L * conc / ck of the
# primary drug at conc (rounded down: towards denial), and a dose is judged against the
# smallest. The other drugs travel as MIX_BYTES of MixEntry slots (the Rx blob, REFILL,
# the snapshot); all zeros: one drug. Only a pump that meets an admixture loads this
# module (a single-drug pump's heap does not carry it).
import struct

import msgdefs as md
from gate import OK
from guard import MAX_CONCENTRATION, check_conc

_KEYS = ("max_ng_day", "max_ng_hour", "max_bolus_ng")


def drugs(mix):
    """[(drug, conc ng/mL), ...] of an admixture's other drugs."""
    out = []
    for k in range(0, md.MIX_BYTES, md.MIX_SIZE):
        drug, conc = struct.unpack_from(md.MIX_FMT, mix, k)
        if drug:
            out.append((drug, conc))
    return out


def check(mix, primary, lib=None):
    """None, or the field (md.FIELD_*) a fill's other drugs break: the slots used first,
    each with a concentration, each drug once and none the primary one, and (given the
    library `lib`) each known."""
    seen = [primary]
    end = False
    for k in range(0, md.MIX_BYTES, md.MIX_SIZE):
        drug, conc = struct.unpack_from(md.MIX_FMT, mix, k)
        if not drug:
            end = True
            if conc:
                return md.FIELD_DRUGS
            continue
        if end or not conc or drug in seen or (lib is not None and drug not in lib):
            return md.FIELD_DRUGS
        seen.append(drug)
    return None


def limits(d, conc, mix, lib):
    """The hard limits (a drug library entry's keys) of a fill whose primary drug `d` is
    at conc with the other drugs of `mix`, in ng of the primary drug. Allocates: on a
    command or a timed bolus start, never per stroke."""
    out = dict(d)
    for k, ck in drugs(mix):
        e = lib[k]
        for key in _KEYS:
            lim = e[key] * conc // ck
            if lim < out[key]:
                out[key] = lim
    return out


def check_conc_all(mix, lib):
    """OK, or MAX_CONCENTRATION if a drug of the admixture is over its hard maximum."""
    for k, ck in drugs(mix):
        if check_conc(ck, lib[k]) != OK:
            return MAX_CONCENTRATION
    return OK


def stability_days(n, mix, lib):
    """The days a fill keeps: n (the primary drug's, 0: no limit) or less, as long as its
    least stable drug."""
    for k, _ in drugs(mix):
        s = lib[k]["stability_days"]
        if s and (not n or s < n):
            n = s
    return n


def carry(old_conc, old_mix, conc, mix):
    """(num, den) >= 1: the old fill's history, in ng of their common primary drug, scaled
    so that no drug of the new fill is under-counted against its limits (drug k's true
    history is h * old_ck / old_conc, the new fill counts h * ck / conc: the largest
    ratio of the two)."""
    num, den = 1, 1
    old = drugs(old_mix)
    for k, ck in drugs(mix):
        for j, cj in old:
            if j == k and cj * conc * den > num * old_conc * ck:
                num, den = cj * conc, old_conc * ck
    return num, den


def log_fill(p, now, who, mix):
    """The fill's other drugs into the event log, one `fill_drug` each."""
    for k, ck in drugs(mix):
        p.log(now, md.EV_FILL_DRUG, who, k, ck, 0)
