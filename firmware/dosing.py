# Boluses asked for: the patient's button, the clinician's bolus and the schedule's timed
# boluses. Each is checked by the bolus gate (lockout, count) and the dose guard (the
# drug's limits with what was delivered and what is planned) before the engine starts
# it; a denial is an event. A flood of identical patient denials is one record per
# window, with its count (Denials), so the patient's button cannot fill the log.
import msgdefs as md
import schedule
import rx as rxmod
from engine import KIND_CLINICIAN, KIND_PATIENT, KIND_TIMED
from gate import IN_PROGRESS, NOT_CONFIGURED, NOT_RUNNING, OK, RESERVOIR


class Denials:
    """Identical patient bolus denials within DENIAL_WINDOW_S: the first is logged, the
    rest counted and logged as one record when the window closes."""

    def __init__(self):
        self.reason = 0
        self.t = 0
        self.n = 0
        self.who = 0

    def deny(self, p, now, who, reason, dose_nl):
        if self.n and reason == self.reason and who == self.who and \
                now - self.t < md.DENIAL_WINDOW_S:
            self.n += 1
            return
        self.flush(p, now)
        p.log(now, md.EV_BOLUS_DENIED, who, reason, KIND_PATIENT, dose_nl, 1)
        self.reason = reason
        self.who = who
        self.t = now
        self.n = 1

    def due(self, now):
        """True if counted denials wait for their window to close."""
        return self.n and now - self.t >= md.DENIAL_WINDOW_S

    def flush(self, p, now):
        """Log the identical denials counted after the window's first (if any)."""
        k = self.n - 1
        self.n = 0
        if k > 0:
            p.log(now, md.EV_BOLUS_DENIED, self.who, self.reason, KIND_PATIENT,
                  p.plan.pb_dose_nl(), k)


def _allowed(p, now, dose_ng, dose_nl, duration_s):
    # the dose guard, then the reservoir
    reason = schedule.guard_check(p, now, dose_ng, dose_nl, duration_s)
    if reason == OK and p.delivery.reservoir_nl < dose_nl:
        reason = RESERVOIR
    return reason


def _start(p, now, who, dose_nl, duration_s, kind):
    e = p.engine
    e.advance(now)
    e.start_bolus(now, dose_nl, duration_s, kind)
    p.log(now, md.EV_BOLUS_STARTED, who, dose_nl, kind, duration_s)
    p.replanned()


def patient_bolus(p, now, who):
    """The patient's button. Returns the deny reason (gate.OK when started)."""
    rx = p.plan.rx
    reason = OK
    if p.mode != md.MODE_RUNNING:
        reason = NOT_RUNNING
    elif rx is None or rx.pb_max_per_day == 0 or p.plan.bridge_drug:
        # (during a drug change's bridge the catheter holds a drug no bolus is for)
        reason = NOT_CONFIGURED
    elif p.engine.bolus_active(KIND_PATIENT):
        reason = IN_PROGRESS
    else:
        reason = p.gate.check(now, rx.pb_lockout_s, rx.pb_max_per_day)
    dose_nl = 0
    if reason == OK:
        dose_nl = rxmod.ng_to_nl(rx.pb_dose_ng, p.plan.drug_conc())
        reason = _allowed(p, now, rx.pb_dose_ng, dose_nl, rx.pb_duration_s)
    if reason != OK:
        p.denials.deny(p, now, who, reason, dose_nl or p.plan.pb_dose_nl())
        return reason
    _start(p, now, who, dose_nl, rx.pb_duration_s, KIND_PATIENT)
    p.gate.record(now)
    return OK


def clinician_bolus(p, now, who, dose_ng, duration_s):
    """A clinician's bolus of dose_ng over duration_s. Returns (result, detail)."""
    if p.mode != md.MODE_RUNNING or p.plan.rx is None:
        p.log(now, md.EV_BOLUS_DENIED, who, NOT_RUNNING, KIND_CLINICIAN, 0)
        return md.NACK_LIMIT, NOT_RUNNING
    if p.plan.bridge_drug:
        p.log(now, md.EV_BOLUS_DENIED, who, NOT_CONFIGURED, KIND_CLINICIAN, 0)
        return md.NACK_LIMIT, NOT_CONFIGURED
    if dose_ng <= 0 or not 0 < duration_s <= md.MAX_BOLUS_DURATION_S:
        return md.NACK_INVALID, md.FIELD_DOSE
    if p.engine.bolus_active(KIND_CLINICIAN):
        return md.NACK_BUSY, IN_PROGRESS
    dose_nl = rxmod.ng_to_nl(dose_ng, p.plan.drug_conc())
    reason = _allowed(p, now, dose_ng, dose_nl, duration_s)
    if reason != OK:
        p.log(now, md.EV_BOLUS_DENIED, who, reason, KIND_CLINICIAN, dose_nl)
        return md.NACK_LIMIT, reason
    _start(p, now, who, dose_nl, duration_s, KIND_CLINICIAN)
    return 0, 0


def timed_bolus(p, t, dose_nl, dur, late_s=0):
    """The schedule's timed bolus is due at t (the engine's callback); late_s: the clock
    jumped over its time that long ago (it starts now if under TIMED_LATE_MAX_S and the
    pump is delivering, else it is recorded as not given: never skipped unrecorded)."""
    if late_s and p.mode != md.MODE_RUNNING:
        reason = NOT_RUNNING
    elif late_s >= md.TIMED_LATE_MAX_S:
        reason = md.DENY_CLOCK_CHANGED
    else:
        # Counted once: the plan the guard projects already holds it (plan_units is the
        # basal and the timed boluses), so it is checked as the plan as it stands, not as
        # a new dose on top of it (which denied a prescribed daily bolus every day, issue
        # 24). Its size and rate were checked when the prescription was accepted. Late,
        # its time of day is behind the plan: then it is a dose on top of it.
        dose_ng = rxmod.nl_to_ng(dose_nl, p.plan.drug_conc()) if late_s else 0
        reason = _allowed(p, t, dose_ng, dose_nl, dur)
    if reason != OK:
        p.log(t, md.EV_BOLUS_DENIED, 0, reason, KIND_TIMED, dose_nl)
        p.eta_stale()
        return
    p.engine.start_bolus(t, dose_nl, dur, KIND_TIMED)
    p.log(t, md.EV_BOLUS_STARTED, 0, dose_nl, KIND_TIMED, dur, late_s)
