"""The programmer: `theca --device DEV [--role clinician|patient] COMMAND`.

status [--json], program RX.toml [--yes] [--override-soft-limit], refill --volume V
--concentration C, bolus (the patient's), log pull -o FILE.tlog; and, as extensions,
clinician-bolus --dose D --duration T, suspend, resume, ack-alarm [--alarm NAME],
set-time [--utc ISO] [--offset +HH:MM], maintenance (back to the REPL for flashing),
catheter --volume V (after an implant or a revision), prime (fill the catheter).

Every command identifies the device first (GET_INFO: serial, schema) and then signs
its command with the role's key (client.py). Exit status: 0 done; 2 bad input (a
file, a unit, a missing key file: nothing was sent); 3 the device refused (the reason
in words); 4 link failure; 1 the user did not confirm (nothing sent).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import replace

import theca_protocol as tp
from theca_protocol import names as N

from theca.cli.device import (
    NOT_CONFIRMED,
    client_for,
    cmd_info,
    cmd_status,
    confirmed,
    either_role,
    guarded,
    role_of,
    status_record,
)
from theca.cli.helptext import epilog
from theca.cli.visit import cmd_catheter, cmd_mri, cmd_prime, cmd_refill
from theca.errors import CHECK_FAILED, OK, BadInput
from theca.inputs import units as U
from theca.link import logpull, seen
from theca.link import requests as R
from theca.link.client import Client, Refused
from theca.log.devtime import iso
from theca.outputs import output_file

# --- program -------------------------------------------------------------------------


@guarded
def cmd_program(args) -> int:
    """Validate a prescription file, show it beside the one on the pump, send it, and
    verify it by reading it back."""
    from theca.inputs import titration
    from theca.inputs.druglib import load_druglib
    from theca.inputs.rxfile import load_prescription

    lib = load_druglib()
    rx = load_prescription(args.rx, druglib=lib, override_soft=args.override_soft_limit)
    if not args.device:
        raise BadInput("no device: give --device DEV or set THECA_DEVICE")
    with client_for(args) as c:
        role = role_of(args, "clinician")
        info = c.identify(role)
        old, since = _on_pump(c, role, lib)
        drug = lib.by_id(rx.drug_id)
        if drug is not None:
            extra = titration.check(old, rx, drug, since, args.override_soft_limit)
            if extra:
                rx = replace(rx, flags=rx.flags | extra)
        blob = rx.to_blob()
        print(f"Prescription for {info['serial']} ({args.rx}):")
        print(_side_by_side(old, rx, lib) if old is not None else rx.describe(lib))
        if not confirmed(args.yes, "program", f"Program this into {info['serial']}?",
                         "the prescription was not sent",
                         ": confirming a prescription is a person's act"):
            return NOT_CONFIRMED
        c.request("PROGRAM", blob, role)
        rep = c.request("READ_RX", b"", role)
        want = hashlib.sha256(blob).digest()
        got, held = rep.body[:32], rep.body[32:]
        if got != want or held != blob or hashlib.sha256(held).digest() != want:
            raise Refused(f"verification failed: {info['serial']} acknowledged the prescription "
                          f"but holds another one (sha256 {got.hex()[:16]}..., sent "
                          f"{want.hex()[:16]}...): check it with the clinic before relying "
                          "on it", "verify")
    print(f"programmed {info['serial']}: {rx.drug} {U.fmt_conc(rx.conc_ng_ml)}, "
          f"{len(rx.steps)} step(s); read back and verified (sha256 {want.hex()[:16]})")
    return OK


def _on_pump(c: Client, role: str, lib):
    # (the prescription in force or None, seconds since it was programmed or None)
    from theca.inputs.rxfile import Prescription

    try:
        rep = c.request("READ_RX", b"", role)
    except Refused as e:
        if e.reason != "invalid":
            raise
        return None, None  # none programmed yet
    old = Prescription.from_blob(rep.body[32:], lib)
    return old, _since_programmed(c, role, rep.time)


def _since_programmed(c: Client, role: str, now: int) -> int | None:
    # the newest prescription_changed on the pump's log, a few pages back at most
    head = tp.compiled(tp.LogReadReplyHead)
    ev = tp.compiled(tp.EventRecord)
    rep = c.request("LOG_READ", R.log_read(1, 1), role)  # next_seq and the oldest kept
    nxt, first, _ = head.unpack_from(rep.body)
    code = N.EVENT_CODES["prescription_changed"]
    frm = nxt
    for _ in range(8):
        if frm <= first:
            return None
        frm = max(first, frm - tp.LOG_PAGE_MAX)
        rep = c.request("LOG_READ", R.log_read(frm, tp.LOG_PAGE_MAX), role)
        count = head.unpack_from(rep.body)[2]
        recs = [ev.unpack_from(rep.body, head.size + i * ev.size) for i in range(count)]
        hits = [r for r in recs if r[2] == code]
        if hits:
            return max(0, now - hits[-1][0])
    return None


def _side_by_side(old, new, lib) -> str:
    """The prescription on the pump and the new one, field by field, with the change."""
    from theca.inputs import titration

    drug = lib.by_id(new.drug_id)
    unit = U.amount_unit(drug.max_ng_day if drug else max(new.daily_ng(), 1))

    def amt(ng):
        return U.fmt_amount(ng, unit)

    def steps(rx):
        return [f"{U.fmt_clock(s.start_min)} {U.fmt_rate(s.rate_ng_day, unit)}" for s in rx.steps]

    def pb(rx):
        if not rx.pb:
            return "none"
        return (f"{amt(rx.pb.dose_ng)} over {U.fmt_duration(rx.pb.duration_s)}, lockout "
                f"{U.fmt_duration(rx.pb.lockout_s)}, {rx.pb.max_per_day}/day")

    rows = [("", "on the pump", "new", "change"),
            ("drug", f"{old.drug} {U.fmt_conc(old.conc_ng_ml)}",
             f"{new.drug} {U.fmt_conc(new.conc_ng_ml)}", "" if old.drug_id == new.drug_id
             else "another drug")]
    so, sn = steps(old), steps(new)
    for i in range(max(len(so), len(sn))):
        rows.append((f"step {i + 1}", so[i] if i < len(so) else "-",
                     sn[i] if i < len(sn) else "-", ""))
    rows.append(("timed boluses", f"{len(old.timed)} ({amt(old.timed_ng())}/day)",
                 f"{len(new.timed)} ({amt(new.timed_ng())}/day)", ""))
    rows.append(("daily dose", f"{amt(old.daily_ng())}/day", f"{amt(new.daily_ng())}/day",
                 titration.pct(old.daily_ng(), new.daily_ng())))
    rows.append(("patient bolus", pb(old), pb(new), ""))
    rows.append(("phase", old.phase, new.phase, ""))
    w = [max(len(r[k]) for r in rows) for k in range(4)]
    return "\n".join("  ".join(r[k].ljust(w[k]) for k in range(4)).rstrip() for r in rows)


# --- refill, boluses, modes, alarms, time ----------------------------------------------


@guarded
def cmd_bolus(args) -> int:
    """The patient's bolus (patient key by default)."""
    with client_for(args) as c:
        c.request("PATIENT_BOLUS", b"", role_of(args, "patient"))
    print(f"patient bolus started on {c.serial}")
    return OK


@guarded
def cmd_clinician_bolus(args) -> int:
    """A clinician bolus of --dose over --duration."""
    dose = U.parse_amount(args.dose, "--dose")
    dur = U.parse_duration(args.duration, "--duration")
    with client_for(args) as c:
        role = role_of(args, "clinician")
        st = status_record(c, c.request("GET_STATUS", role=role))
        _bolus_fits(c, st, dose, dur)
        c.request("CLINICIAN_BOLUS", R.clinician_bolus(dose, dur), role)
    from theca.inputs.druglib import dose_unit, load_druglib

    # in the unit its drug is dosed in: 0.1 mg of morphine, not "100 mcg"
    d = load_druglib().find(st["drug"]) if st.get("drug") else None
    print(f"clinician bolus started on {c.serial}: {U.fmt_amount(dose, dose_unit(d))}"
          f"{' of ' + d.name if d else ''} over {U.fmt_duration(dur)}")
    return OK


def _bolus_fits(c: Client, st: dict, dose: int, dur: int) -> None:
    """The hard limits the host can judge before it sends a bolus (exit 2, naming the
    option); the device judges them again, with the rest (the dose guard)."""
    from theca.inputs.druglib import load_druglib

    d = load_druglib().find(st["drug"]) if st.get("drug") else None
    if d is not None and dose > d.max_bolus_ng:
        unit = U.amount_unit(d.max_ng_day)
        raise BadInput.at("--dose", f"limit: max_bolus: {U.fmt_amount(dose, unit)} exceeds "
                                    f"{d.name} hard limit {U.fmt_amount(d.max_bolus_ng, unit)}")
    from theca.inputs.rxfile import too_fast

    conc = st.get("conc_ng_ml")
    max_rate = (c.info or {}).get("max_rate_nl_h") or tp.DEFAULT_MAX_RATE_NL_H
    fast = too_fast(dose, dur, conc, max_rate) if conc and dur > 0 else None
    if fast is not None:
        raise BadInput.at("--duration", f"limit: max_rate: {U.fmt_amount(dose)} over "
                                        f"{U.fmt_duration(dur)} is {float(fast) / 1000:.4g} uL/h, faster than "
                                        f"the pump's {max_rate / 1000:g} uL/h; give a longer "
                                        "duration")


def _simple(name: str, done: str):
    @guarded
    def run(args) -> int:
        with client_for(args) as c:
            c.request(name, b"", role_of(args, "clinician"))
        print(f"{done} ({c.serial})")
        return OK

    run.__doc__ = done
    return run


@guarded
def cmd_suspend(args) -> int:
    """Suspend delivery; past --max the pump sounds suspended_too_long until resumed."""
    max_s = U.parse_duration(args.max, "--max") if args.max else N.DEFAULT_SUSPEND_MAX_S
    with client_for(args) as c:
        c.request("SUSPEND", R.suspend(max_s), role_of(args, "clinician"))
    print(f"delivery suspended ({c.serial}); the pump alarms after {U.fmt_duration(max_s)} "
          "suspended (stopping some drugs, baclofen above all, is dangerous)")
    return OK
cmd_resume = _simple("RESUME", "delivery resumed")


@guarded
def cmd_maintenance(args) -> int:
    """MAINTENANCE: motor off, therapy suspended, the firmware returns to the REPL."""
    with client_for(args) as c:
        c.request("MAINTENANCE", b"", role_of(args, "clinician"))
    print(f"{c.serial} stopped for maintenance: delivery is suspended and the board is at the "
          "MicroPython REPL (flash it with `theca flash`; resume delivery after restart with "
          "`theca resume`)")
    return OK


@guarded
def cmd_ack_alarm(args) -> int:
    """Acknowledge alarms (all, or those named with --alarm): silences their tones."""
    mask = 0
    if args.alarm:
        names = {v: k for k, v in N.ALARMS.items()}
        for a in args.alarm:
            if a not in names:
                raise BadInput.at("--alarm", f"unknown alarm {a!r} (known: {', '.join(names)})")
            mask |= 1 << names[a]
    else:
        mask = sum(1 << b for b in N.ALARMS)  # every alarm there is, no undefined bit
    with client_for(args) as c:
        role = either_role(args, c.serial)
        rep = c.request("ACK_ALARM", R.ack_alarm(mask), role)
    acked = N.alarm_names(rep.detail)
    print(f"acknowledged on {c.serial}: {', '.join(acked) if acked else 'no active alarm'}")
    if role == "patient" and "volume_discrepancy" in acked:
        print("volume_discrepancy: its tone is silenced; the alarm stays until a clinician "
              "acknowledges it (the clinician key)")
    return OK


@guarded
def cmd_set_time(args) -> int:
    """Set the device clock (UTC) and the local offset its daily schedule follows."""
    utc = U.parse_datetime(args.utc, "--utc") if args.utc else None
    if args.offset is not None:
        offset = U.parse_offset(args.offset, "--offset")
    else:
        offset = time.localtime().tm_gmtoff  # the host's own offset
    with client_for(args) as c:
        if utc is None:
            utc = int(time.time()) - tp.EPOCH_UNIX
            if not tp.UTC_MIN <= utc <= tp.UTC_MAX:
                raise BadInput.at("--utc", f"this host's clock reads {iso(utc)}, outside the "
                                           "device's 2020-01-01 .. 2049-12-31: give --utc")
        c.request("SET_TIME", R.set_time(utc, offset), role_of(args, "clinician"))
    sign = "+" if offset >= 0 else "-"
    print(f"clock of {c.serial} set to {iso(utc)}, local offset {sign}{abs(offset) // 3600:02d}:"
          f"{abs(offset) % 3600 // 60:02d}")
    return OK


# --- log pull ------------------------------------------------------------------------


@guarded
def cmd_log_pull(args) -> int:
    """Download the event log into a .tlog, resuming a file already begun."""
    from theca.progress import Bar

    # (a log is continued in place: resumable; never through a link, its folder made)
    out = output_file(args.output)
    with client_for(args) as c:
        role = either_role(args, c.serial)
        info = c.identify(role)
        bar: list = []

        def progress(pulled: int, total: int) -> None:
            if not bar:
                bar.append(Bar(total, f"log {info['serial']}", "events").__enter__())
            bar[0].update(pulled)

        try:
            res = logpull.pull(c, role, out, args.from_seq, args.pages, progress)
        finally:
            if bar:
                bar[0].__exit__(None, None, None)
    rng = f"#{res.first_wanted}-#{res.next_from - 1}" if res.pulled else "none new"
    more = f"; {res.left} more on the device (run again to continue)" if res.left else ""
    print(f"pulled {res.pulled} events ({rng}) from {info['serial']} in {res.pages} page(s), "
          f"{res.seconds:.1f} s, {res.line_bytes} bytes on the line"
          + (f", resumed after #{res.resumed_after}" if res.resumed_after is not None else "")
          + f" -> {res.out}{more}")
    for a, b in res.lost:
        print(f"theca log pull: events #{a}-#{b} were overwritten on the device before they "
              "were read (its log keeps the newest)", file=sys.stderr)
    went_back = seen.note(info["serial"], event_next=res.event_next or None)
    if res.rollback is not None:
        print(f"theca log pull: ROLLBACK: {res.rollback}. {out} is kept as it was; the "
              f"device's log is in {res.out}: both histories are kept", file=sys.stderr)
        went_back.append(res.rollback)
    if went_back:
        print("theca log pull: " + seen.warning(info["serial"], went_back), file=sys.stderr)
        return CHECK_FAILED
    return OK


# --- the parser ----------------------------------------------------------------------


def _add_reads(sub) -> None:
    p = sub.add_parser("status", help="show the pump's status")
    p.add_argument("--json", action="store_true", help="one JSON object (interface fields)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("info", help="who the pump is and its memory: runtime, machine, "
                                    "firmware, schema, serial, heap")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_info)


def add_parser(sub) -> None:
    """Register the programmer's commands."""
    _add_reads(sub)

    p = sub.add_parser("program", help="program a prescription (read back and verified)")
    p.add_argument("rx", help="prescription TOML file")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--override-soft-limit", action="store_true",
                   help="accept a prescription over the drug library's soft limits")
    p.set_defaults(func=cmd_program)

    p = sub.add_parser("refill", help="record a refill visit: emptied (residual measured), "
                                      "then filled")
    p.add_argument("--volume", required=True, help='the fill after emptying, e.g. "18 mL"')
    p.add_argument("--concentration", required=True, help='e.g. "10 mg/mL"')
    p.add_argument("--residual", help='the volume aspirated before filling, measured, e.g. '
                                      '"1.8 mL" (required)')
    p.add_argument("--drug", help="the drug filled (default: the reservoir's drug, with its "
                                  "other drugs if it is an admixture); the primary drug of an "
                                  "admixture")
    p.add_argument("--with", dest="with_", action="append", metavar='"DRUG CONC"',
                   help='an admixture\'s other drug and its concentration, e.g. --with '
                        '"bupivacaine 20 mg/mL" (repeat for each, up to three; needs --drug)')
    p.add_argument("--yes", action="store_true",
                   help="record a fill of another drug or concentration without asking (the "
                        "question shows the old and new fill side by side)")
    p.set_defaults(func=cmd_refill)

    p = sub.add_parser("catheter", help="record a new catheter's volume (implant, revision)")
    p.add_argument("--volume", required=True, help='the catheter\'s volume, e.g. "150 uL"')
    p.add_argument("--yes", action="store_true",
                   help="record it without asking (the question shows what the prime pushes)")
    p.set_defaults(func=cmd_catheter)
    p = sub.add_parser("prime", help="fill the catheter: a priming bolus of its volume not "
                                     "yet pushed (exempt from the dose limits)")
    p.set_defaults(func=cmd_prime)
    p = sub.add_parser("mri", help="an MRI scan: `prepare` before it (delivery suspended, the "
                                   "motor held), `check` after it (a test stroke; therapy "
                                   "resumes only if the motor moves)")
    p.add_argument("step", choices=("prepare", "check"), help="before or after the scan")
    p.set_defaults(func=cmd_mri)

    p = sub.add_parser("bolus", help="the patient's bolus (patient key)")
    p.set_defaults(func=cmd_bolus)

    p = sub.add_parser("clinician-bolus", help="a clinician bolus")
    p.add_argument("--dose", required=True, help='e.g. "0.5 mg"')
    p.add_argument("--duration", required=True, help='e.g. "30 min"')
    p.set_defaults(func=cmd_clinician_bolus)

    _add_modes(sub)
    _add_log(sub)


def _add_modes(sub) -> None:
    p = sub.add_parser("suspend", help="suspend delivery")
    p.add_argument("--max", help='alarm suspended_too_long after this long, e.g. "2 h" '
                                 '(default 2 h)')
    p.set_defaults(func=cmd_suspend)
    p = sub.add_parser("resume", help="resume delivery")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("ack-alarm", help="acknowledge alarms (silence their tones)")
    p.add_argument("--alarm", action="append", metavar="NAME",
                   help="an alarm to acknowledge (repeatable; default: all)")
    p.set_defaults(func=cmd_ack_alarm)

    p = sub.add_parser("set-time", help="set the device clock and local offset")
    p.add_argument("--utc", help="UTC time, e.g. 2026-01-01T08:00:00Z (default: now)")
    p.add_argument("--offset", help='local offset, e.g. "+01:00" (default: this host\'s)')
    p.set_defaults(func=cmd_set_time)

    p = sub.add_parser("maintenance",
                       help="stop the pump (motor off, suspended) and return to the REPL")
    p.set_defaults(func=cmd_maintenance)



def _add_log(sub) -> None:
    p = sub.add_parser("log", help="the event log")
    lsub = p.add_subparsers(dest="log_command", metavar="pull")
    lsub.required = True
    q = lsub.add_parser(
        "pull", help="download the event log into a .tlog (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download the pump's event log (LOG_READ, page by page) into a .tlog that "
                    "`theca decode` and `theca report` read. An existing file is continued from "
                    "its last event; a pump whose log went back (an old image put back) is "
                    "named, the file kept and the device's log written beside it "
                    "(NAME.rollback-TIME.tlog, exit 1).",
        epilog=epilog("log"))
    q.add_argument("-o", "--output", required=True, help="the .tlog to write or continue")
    q.add_argument("--from", dest="from_seq", type=int, default=0, metavar="N",
                   help="start at event N (a new file only)")
    q.add_argument("--pages", type=int, default=0, metavar="N",
                   help=f"stop after N pages of {tp.LOG_PAGE_MAX} events (a slow link; run again to go on)")
    q.set_defaults(func=cmd_log_pull)

