"""What the programmer's commands share: the role to sign with, the client, refusals and
link failures as exit statuses, the confirmation prompt, and the status and info
commands (the pump's state as the interface's fields)."""

from __future__ import annotations

import json
import os
import sys

import theca_protocol as tp
from theca_protocol import names as N

from theca.errors import DEVICE_REFUSED, LINK_FAILURE, OK
from theca.inputs import units as U
from theca.link import keys as K
from theca.link.client import Client, LinkFailure, Refused, Reply
from theca.log.devtime import iso
from theca.log.fields import REFILL_DUE_WORDS, refill_due_reason
from theca.log.records import Renderer

NOT_CONFIRMED = 1
_STATUS = tp.compiled(tp.Status)
_STATUS_FLAG = {n: N.mask_of(N.STATUS_FLAGS, n) for n in N.STATUS_FLAGS.values()}


def role_of(args, default: str) -> str:
    """The role to sign with: --role, else the command's own default."""
    return args.role or default


def either_role(args, serial: str) -> str:
    """For commands either key may send: --role, else the clinician key if this host
    has it, else the patient key (a patient's handheld has only that one)."""
    if args.role:
        return args.role
    return "clinician" if K.key_path(serial, "clinician").exists() else "patient"


def client_for(args) -> Client:
    _a_port(args.device)
    return Client(args.device)  # timeouts and retries: $THECA_TIMEOUT, $THECA_RETRIES


_MEM_MAJOR = 1  # Linux: /dev/null, /dev/zero, /dev/random...


def _a_port(device: str | None) -> None:
    # a path that exists but is no serial port or terminal (a file, /dev/null, a folder)
    # is named for what it is, before any key is looked for (issue 25: /dev/null got
    # advice about the keys of several devices)
    if not device or not os.path.exists(device):
        return
    import stat

    st = os.stat(device)
    if stat.S_ISDIR(st.st_mode):
        raise LinkFailure(f"{device} is a folder, not a serial port or pseudo-terminal")
    if not stat.S_ISCHR(st.st_mode):
        raise LinkFailure(f"{device} is a file, not a serial port or pseudo-terminal (is the "
                          "path right? a twin's is the --pty PATH it was started with)")
    # (not opened here: opening a real serial port toggles DTR, which resets some boards)
    if os.major(st.st_rdev) == _MEM_MAJOR:
        raise LinkFailure(f"{device} is a memory device (null, zero, random), not a serial "
                          "port or pseudo-terminal: no pump can answer on it")


def guarded(fn):
    """Run a command; turn refusals and link failures into their exit status."""

    def run(args) -> int:
        name = " ".join(x for x in (args.command, getattr(args, "log_command", None)) if x)
        try:
            return fn(args)
        except Refused as e:
            print(f"theca {name}: {e}", file=sys.stderr)
            return DEVICE_REFUSED
        except LinkFailure as e:
            print(f"theca {name}: link failure: {e}", file=sys.stderr)
            return LINK_FAILURE

    run.__doc__ = fn.__doc__
    return run


# --- status --------------------------------------------------------------------------


def status_record(c: Client, rep: Reply) -> dict:
    """The `status --json` object: STATUS in interface units, device time, identity."""
    r = Renderer()
    st = r.status_fields(_STATUS.unpack(rep.body))
    flags = st.pop("flags")
    conc = st["conc_ng_ml"]
    info = c.info or {}
    due = st["refill_due"]
    return {
        "serial": info.get("serial", c.serial),
        "firmware": f"{info.get('fw_major', 0)}.{info.get('fw_minor', 0)}.{info.get('fw_patch', 0)}",
        "schema_ok": c.schema_ok(),
        "device_time": iso(rep.time),
        **st,  # every STATUS field of the field model, by its name
        "concentration": U.fmt_conc(conc) if conc else None,
        "bolus_running": bool(flags & _STATUS_FLAG["bolus_running"]),
        "catheter_bridge": bool(flags & _STATUS_FLAG["bridge"]),
        "trial": bool(flags & _STATUS_FLAG["trial"]),
        "admixture": bool(flags & _STATUS_FLAG["admixture"]),
        "capacity_ul": info.get("capacity_nl", 0) / 1000,
        "refill_due_reason": None if due is None else refill_due_reason(flags),
        "catheter_primed": not flags & _STATUS_FLAG["catheter_unprimed"],
        "catheter_ul": info.get("catheter_nl", 0) / 1000,
    }


def add_fill(c: Client, role: str, s: dict) -> dict:
    """The status `s` with `drugs`: every drug of the prescription's fill with its
    concentration and its amount in the last 24 h (an admixture: each in its own unit)."""
    from theca.inputs.prescription import Prescription
    from theca.link.client import Refused as _Refused

    drugs = []
    if s.get("drug") and s.get("conc_ng_ml"):
        drugs.append({"drug": s["drug"], "conc_ng_ml": s["conc_ng_ml"],
                      "rolling_24h_ng": s["rolling_24h_ng"]})
        rx = None
        if s.get("admixture"):  # (the fill's other drugs are the prescription's)
            try:
                rx = Prescription.from_blob(c.request("READ_RX", b"", role).body[32:])
            except (_Refused, ValueError):
                rx = None
        if rx is not None and rx.drug_id and rx.conc_ng_ml == s["conc_ng_ml"]:
            for m in rx.mix:
                drugs.append({"drug": m.drug, "conc_ng_ml": m.conc_ng_ml,
                              "rolling_24h_ng": round(rx.of(s["rolling_24h_ng"], m.conc_ng_ml))})
    return {**s, "drugs": drugs}


def fmt_status(s: dict) -> str:
    from theca.inputs.druglib import dose_unit, load_druglib

    lib = load_druglib()
    ml = s["reservoir_ul"] / 1000
    drugs = s.get("drugs") or []
    fill = " + ".join(f"{d['drug']} {U.fmt_conc(d['conc_ng_ml'])}" for d in drugs)
    day = ", ".join(f"{U.fmt_reading(d['rolling_24h_ng'], dose_unit(lib.find(d['drug'])))} "
                    f"of {d['drug']}" for d in drugs) or "no drug"
    lines = [
        f"{s['serial']}  firmware {s['firmware']}  device time {s['device_time']}"
        + ("" if s["schema_ok"] else "  (SCHEMA MISMATCH)"),
        f"  mode        {s['mode']}",
        f"  drug        {fill or s['drug'] or 'none programmed'}"
        + (f" {s['concentration']}" if s["concentration"] and not fill else ""),
        f"  reservoir   {ml:.3f} mL of {s['capacity_ul'] / 1000:g} mL"
        + (f" (low-reservoir alarm expected {s['low_reservoir_eta']})"
           if s["low_reservoir_eta"] else ""),
        f"  delivered   {s['delivered_ul']:.3f} uL since therapy start",
        f"  rate now    {s['rate_ul_per_day']:.3f} uL/day (step {s['step'] + 1})"
        + ("; a bolus is running" if s["bolus_running"] else ""),
        f"  last 24 h   {day}, {s['boluses_24h']} patient bolus(es)",
        f"  refill by   {s['refill_due'] or 'no date'}"
        + (f" ({REFILL_DUE_WORDS[s['refill_due_reason']]})" if s["refill_due"] else ""),
        f"  catheter    {s['catheter_ul']:g} uL, "
        + ("primed" if s["catheter_primed"] else "NOT PRIMED (theca prime)"),
        f"  battery     {s['battery_days']} days",
        f"  alarms      {', '.join(s['alarms']) if s['alarms'] else 'none'}",
        f"  heap        {s['heap_free']} of {s['heap_total']} bytes free",
    ]
    return "\n".join(lines)


@guarded
def cmd_status(args) -> int:
    """Read and show the pump's status."""
    with client_for(args) as c:
        role = either_role(args, c.serial)
        rep = c.request("GET_STATUS", role=role)
        s = add_fill(c, role, status_record(c, rep))
    print(json.dumps(s) if args.json else fmt_status(s))
    from theca.link import seen

    went_back = seen.note(s["serial"], delivered_ul=s["delivered_ul"])
    if went_back:
        # the status itself is true; the pump's past is not what this host saw
        print("theca status: " + seen.warning(s["serial"], went_back), file=sys.stderr)
        return NOT_CONFIRMED
    return OK


@guarded
def cmd_info(args) -> int:
    """Who the pump is (DEVICE_INFO) and its MicroPython heap (a fresh GET_STATUS sample)."""
    with client_for(args) as c:
        role = either_role(args, c.serial)
        rep = c.request("GET_STATUS", role=role)
        st = status_record(c, rep)
        info = c.info or {}
    out = {
        "runtime": N.RUNTIMES.get(info.get("runtime", 0), "unknown"),
        "machine": info.get("machine", ""),
        "firmware": st["firmware"],
        "schema": f"0x{info.get('schema', 0):08x}",
        "serial": st["serial"],
        "heap_free": st.get("heap_free"),
        "heap_total": st.get("heap_total"),
    }
    if args.json:
        print(json.dumps(out))
    else:
        free, tot = out["heap_free"] or 0, out["heap_total"] or 0
        pct = f" ({100 * free / tot:.0f} % free)" if tot else ""
        print(f"{out['serial']}: {out['machine'] or '?'}, {out['runtime']} firmware "
              f"{out['firmware']}, schema {out['schema']}\nheap: {free:,} of {tot:,} bytes "
              f"free{pct}")
    return OK


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    try:
        return input(question + " [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def confirmed(yes: bool, command: str, question: str, unsent: str = "nothing was sent",
              why: str = "") -> bool:
    """`--yes`, or a person's answer at a terminal (a piped answer is never taken); when
    not, says so on stderr for `theca COMMAND`: what was not sent and why (`why`: more
    on why a person must answer)."""
    if yes or confirm(question):
        return True
    reason = ("" if sys.stdin.isatty() else "standard input is not a terminal, so the "
              f"question cannot be asked (a piped answer is not taken{why}); ")
    print(f"theca {command}: not confirmed; {reason}{unsent} (--yes confirms it without the "
          "question)", file=sys.stderr)
    return False
