"""The clinic visit's commands: `refill` (a fill of another drug or concentration shown
beside the reservoir's and asked for), `catheter` (asks first, showing what the prime will
push), `prime`, and `mri prepare` / `mri check`."""

from __future__ import annotations

import sys

import theca_protocol as tp
from theca_protocol import names as N

from theca.cli.device import (
    NOT_CONFIRMED,
    add_fill,
    client_for,
    confirmed,
    guarded,
    role_of,
    status_record,
)
from theca.errors import OK, BadInput
from theca.inputs import units as U
from theca.inputs.prescription import MAX_MIX
from theca.link import requests as R
from theca.link.client import Refused


@guarded
def cmd_catheter(args) -> int:
    """CATHETER: the catheter's volume after an implant or a revision; it is then unprimed.
    Asks first, showing what the prime will push (SR-CATH-02: a declaration without a real
    new catheter sends that drug to the patient)."""
    vol = U.parse_volume(args.volume, "--volume")
    if vol > N.MAX_CATHETER_NL:
        raise BadInput.at("--volume", f"{U.fmt_volume(vol)} is more than a catheter holds "
                                      f"(at most {U.fmt_volume(N.MAX_CATHETER_NL)})")
    with client_for(args) as c:
        role = role_of(args, "clinician")
        st = status_record(c, c.request("GET_STATUS", role=role))
        print(_catheter_question(c.serial, vol, st))
        if not confirmed(args.yes, "catheter", f"Record a new, empty catheter of {U.fmt_volume(vol)}?"):
            return NOT_CONFIRMED
        c.request("CATHETER", R.catheter(vol), role)
    print(f"catheter of {U.fmt_volume(vol)} recorded ({c.serial}); it is empty: prime it "
          "(theca prime) or the patient gets no drug until the basal has filled it")
    return OK


def _catheter_question(serial: str, vol: int, st: dict) -> str:
    # what `prime` will push after this declaration, and what it means without a revision
    conc = st.get("conc_ng_ml") or 0
    drug = st.get("drug") or "the reservoir's drug"
    from theca.inputs.druglib import dose_unit, load_druglib

    unit = dose_unit(load_druglib().find(drug)) if st.get("drug") else None
    amount = (f" = {U.fmt_reading(vol * conc // 1_000_000, unit)} of {drug}" if conc
              else f" of {drug}")
    return (f"{serial}: a new, empty catheter of {U.fmt_volume(vol)}. `theca prime` will then "
            f"push {U.fmt_volume(vol)}{amount} at the pump's fastest rate. Only for a catheter "
            "really replaced (implant, revision): with the old catheter still in place and "
            "full, all of it reaches the patient, and a second change within 24 h counts "
            "against the daily limit.")


@guarded
def cmd_mri(args) -> int:
    """MRI_PREPARE before a scan, MRI_CHECK after it."""
    with client_for(args) as c:
        role = role_of(args, "clinician")
        if args.step == "prepare":
            c.request("MRI_PREPARE", b"", role)
            print(f"{c.serial}: ready for the scan: delivery suspended, the motor held. After "
                  "the scan: theca mri check (the pump sounds suspended_too_long after "
                  f"{N.DEFAULT_SUSPEND_MAX_S // 3600} h)")
            return OK
        try:
            c.request("MRI_CHECK", b"", role)
        except Refused as e:
            if e.reason == "limit" and N.name_of(N.DENY_REASONS, e.detail) == "motor_stall":
                raise Refused("the motor did not move after the scan: therapy stays stopped "
                              "(motor_stall); check again later, or replace the pump",
                              e.reason, e.detail) from None
            raise
    print(f"{c.serial}: the motor moved: therapy resumed")
    return OK


@guarded
def cmd_prime(args) -> int:
    """PRIME: a priming bolus of the catheter volume not yet pushed."""
    with client_for(args) as c:
        role = role_of(args, "clinician")
        before = status_record(c, c.request("GET_STATUS", role=role))
        c.request("PRIME", b"", role)
    info = c.info or {}
    rate = info.get("max_rate_nl_h") or tp.DEFAULT_MAX_RATE_NL_H
    print(f"priming the catheter ({c.serial}) at {rate / 1000:g} uL/h; the log says "
          f"prime_completed when it is full (catheter {before['catheter_ul']:g} uL)")
    return OK


@guarded
def cmd_refill(args) -> int:
    """Record a refill visit: the pump emptied (the residual measured), then filled."""
    vol = U.parse_volume(args.volume, "--volume")
    conc = U.parse_concentration(args.concentration, "--concentration")
    if args.residual is None:
        raise BadInput("--residual: required: empty the pump first and give the volume "
                       "aspirated (e.g. --residual \"1.8 mL\"); it is checked against what "
                       "the pump expected")
    residual = U.parse_volume(args.residual, "--residual", allow_zero=True)
    drug = None
    from theca.inputs.druglib import load_druglib

    lib = load_druglib()
    if args.drug is not None:
        drug = lib.lookup(args.drug, "--drug")
    mix = _mix_of(args.with_ or [], drug, lib)
    if mix and drug is None:
        raise BadInput("--with: an admixture names its whole fill: give the primary drug with "
                       "--drug (doses are written in it) and each other drug with --with")
    with client_for(args) as c:
        role = role_of(args, "clinician")
        before = add_fill(c, role, status_record(c, c.request("GET_STATUS", role=role)))
        if not _refill_confirmed(args, before, vol, conc, drug, mix):
            return NOT_CONFIRMED
        try:
            c.request("REFILL", R.refill(vol, conc, residual, drug.id if drug else 0,
                                         tuple((d.id, ck) for d, ck in mix)), role)
        except Refused as e:
            raise _refill_refused(e, vol, conc, before) from None
        after = status_record(c, c.request("GET_STATUS", role=role))
    expected = before["reservoir_ul"] * 1000
    print(f"refilled {after['serial']}: emptied {U.fmt_volume(residual)} (the pump expected "
          f"{U.fmt_volume(round(expected))}), filled {U.fmt_volume(vol)} of "
          f"{after.get('drug') or (drug.name if drug else '?')} {U.fmt_conc(conc)}"
          + "".join(f" + {d.name} {U.fmt_conc(ck)}" for d, ck in mix))
    if "volume_discrepancy" in after["alarms"]:
        print("theca refill: volume_discrepancy: the residual differs from what the pump "
              "expected by more than 1 mL or 20 %: a pocket fill, a leak or an underdose "
              "may have happened; acknowledge with `theca ack-alarm --alarm "
              "volume_discrepancy` once assessed", file=sys.stderr)
    if after.get("catheter_bridge"):
        print("the catheter still holds the previous fill: it is delivered first (the bridge)")
    return OK


def _mix_of(given: list[str], drug, lib) -> list:
    # --with "bupivacaine 20 mg/mL" (each other drug of an admixture): [(Drug, conc)]
    out: list = []
    if len(given) > MAX_MIX:
        raise BadInput.at("--with", f"{len(given)} drugs given; an admixture holds the primary "
                                    f"drug and at most {MAX_MIX} more")
    for g in given:
        name, _, c = g.strip().partition(" ")
        d = lib.lookup(name, "--with")
        ck = U.parse_concentration(c.strip(), "--with")
        if ck > d.max_conc_ng_ml:
            raise BadInput.at("--with", f"{U.fmt_conc(ck)} exceeds {d.name} hard limit "
                                        f"{U.fmt_conc(d.max_conc_ng_ml)}")
        if (drug is not None and d.id == drug.id) or any(d.id == x.id for x, _ in out):
            raise BadInput.at("--with", f"{d.name} is named twice (each drug of the fill once)")
        out.append((d, ck))
    return out


def _refill_confirmed(args, before: dict, vol: int, conc: int, drug, mix=()) -> bool:
    """A fill that differs from the reservoir's (drug or concentration) is shown beside it
    and asked for (issue 24: 1 mg/mL entered over 10 mg/mL took the volume rate from 300
    to 3,000 uL/day without a word); so are the critical alarms the pump has raised."""
    crit = [a for a in before["alarms"] if a in N.CRITICAL_ALARMS]
    if crit:
        print(f"note: {before['serial']} has critical alarms raised: {', '.join(crit)}")
    old_conc = before.get("conc_ng_ml") or 0
    old_drug = before.get("drug")
    new_drug = drug.name if drug else old_drug
    old_mix = [(d["drug"], d["conc_ng_ml"]) for d in (before.get("drugs") or [])[1:]]
    new_mix = [(d.name, ck) for d, ck in mix] if drug is not None else old_mix
    if not old_conc or (new_drug == old_drug and conc == old_conc and new_mix == old_mix):
        return True
    if new_mix or old_mix:
        print(f"The fill changes ({before['serial']}): an admixture's fill is another fill:")
        old = " + ".join([f"{old_drug} {U.fmt_conc(old_conc)}"]
                         + [f"{n} {U.fmt_conc(c)}" for n, c in old_mix])
        new = " + ".join([f"{new_drug} {U.fmt_conc(conc)}"]
                         + [f"{n} {U.fmt_conc(c)}" for n, c in new_mix])
        rate = before["rate_ul_per_day"]
        print(f"  now   {old}, {rate:.1f} uL/day = " + ", ".join(
            f"{U.fmt_reading(rate * c / 1000)}/day of {n}"
            for n, c in [(old_drug, old_conc), *old_mix]))
        print(f"  new   {new}: the old prescription's volume rate pushes the old fill out of "
              "the catheter, then the new fill needs its own prescription (theca program)")
        return confirmed(args.yes, "refill", "Record this refill?")
    rate = before["rate_ul_per_day"]
    print(f"The fill changes ({before['serial']}):")
    print(f"  now   {old_drug or '?'} {U.fmt_conc(old_conc)}, {rate:.1f} uL/day = "
          f"{U.fmt_reading(round(rate * old_conc / 1000))}/day of {old_drug or 'drug'}")
    if new_drug == old_drug:
        new_rate = rate * old_conc / conc
        left = max(vol - N.DEFAULT_LOW_RESERVOIR_NL, 0) / 1000
        days = f", refill in about {left / new_rate:.0f} days" if new_rate else ""
        print(f"  new   {new_drug} {U.fmt_conc(conc)}, {new_rate:.1f} uL/day for the same "
              f"{U.fmt_reading(round(rate * old_conc / 1000))}/day{days} (after the catheter's "
              "old fill)")
    else:
        print(f"  new   {new_drug} {U.fmt_conc(conc)}: another drug; the old prescription's "
              f"volume rate pushes {old_drug} out of the catheter, then {new_drug} needs its own "
              "prescription (theca program)")
    return confirmed(args.yes, "refill", "Record this refill?")


def _refill_refused(e: Refused, vol: int, conc: int, before: dict) -> Refused:
    # the limit's name is the detail (REFILL's `limit` detail is a deny reason); the
    # figures are what was sent and the pump's or the library's
    if e.reason != "limit":
        return e
    r = N.name_of(N.DENY_REASONS, e.detail, "reason")
    if r == "capacity":
        cap = round(before["capacity_ul"] * 1000)
        msg = (f"limit: overfill refused: {U.fmt_volume(vol)} is more than the reservoir's "
               f"{U.fmt_volume(cap)}")
    elif r == "max_concentration":
        from theca.inputs.druglib import load_druglib

        d = load_druglib().find(before["drug"]) if before.get("drug") else None
        top = f" {U.fmt_conc(d.max_conc_ng_ml)}" if d is not None else ""
        msg = (f"limit: max_concentration: {U.fmt_conc(conc)} is over the drug's "
               f"maximum concentration{top}")
    else:
        return e
    return Refused(msg, "limit", e.detail)
