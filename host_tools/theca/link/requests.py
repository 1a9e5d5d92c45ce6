"""Command bodies, built from the one protocol definition (theca_protocol): the programmer
and `simulate` send the same bytes for the same request."""

from __future__ import annotations

import theca_protocol as tp

#: Command type ids by name.
T: dict[str, int] = {m.name: m.type for m in tp.COMMANDS.values()}


def body(name: str, **fields: int | bytes) -> bytes:
    """The body of command `name` with these field values, named as in PROTOCOL.md (for
    example `body("REFILL", added_nl=..., conc_ng_ml=...)`). A missing field or a value
    that does not fit its field raises construct's error: the caller checks ranges first."""
    return tp.COMMANDS[T[name]].body.build(fields)


def refill(volume_nl: int, conc_ng_ml: int, residual_nl: int, drug: int = 0,
           mix: tuple = ()) -> bytes:
    """REFILL body: the fill after emptying, its concentration, what was aspirated, the
    drug (0: the reservoir's, with its other drugs) and an admixture's other drugs
    ((drug id, conc ng/mL), ...)."""
    from theca.inputs.prescription import mix_bytes

    return body("REFILL", volume_nl=volume_nl, conc_ng_ml=conc_ng_ml, residual_nl=residual_nl,
                drug=drug, mix=mix_bytes(mix))


def catheter(volume_nl: int) -> bytes:
    """CATHETER body: the catheter's volume after an implant or a revision."""
    return body("CATHETER", volume_nl=volume_nl)


def clinician_bolus(dose_ng: int, duration_s: int) -> bytes:
    """CLINICIAN_BOLUS body."""
    return body("CLINICIAN_BOLUS", dose_ng=dose_ng, duration_s=duration_s)


def suspend(max_s: int) -> bytes:
    """SUSPEND body: past max_s suspended (0: no maximum) the pump alarms."""
    return body("SUSPEND", max_s=max_s)


def ack_alarm(mask: int) -> bytes:
    """ACK_ALARM body."""
    return body("ACK_ALARM", mask=mask)


def set_time(utc: int, local_offset_s: int) -> bytes:
    """SET_TIME body."""
    return body("SET_TIME", utc=utc, local_offset_s=local_offset_s)


def log_read(from_seq: int, max_count: int) -> bytes:
    """LOG_READ body."""
    return body("LOG_READ", from_seq=from_seq, max_count=max_count)
