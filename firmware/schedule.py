# The plan in force, as the engine and the dose guard see it: the prescription's volume
# plan loaded into the engine at the concentration now leaving the catheter, the
# threshold it sets, the end of a refill's bridge, the wall clock that places the daily
# schedule, and the guard's answer for a dose. Functions of the pump, acting on its parts
# through their methods.
from alarms import LOW_RESERVOIR, RX_INVALID
from gate import NOT_CONFIGURED


def guard_check(p, now, dose_ng=0, dose_nl=0, duration_s=0):
    """The dose guard's answer (gate.OK or the limit) for a dose starting now, or with
    dose_ng = 0 for the plan as it stands (guard.py)."""
    pl = p.plan
    d = pl.tip_limits(p.druglib) if pl.plan_rx() is not None else None
    if d is None:
        return NOT_CONFIGURED
    return p.guard.check(now, d, pl.drug_conc(), dose_ng, dose_nl, duration_s, pl.guard_cap())


def use_threshold(p, now):
    """The low-reservoir threshold of the prescription in force (the board's without
    one), and the alarm as it now stands against it. True if the threshold moved."""
    moved = p.plan.threshold()
    res = p.delivery.reservoir_nl
    if res < p.plan.low_nl:
        p.alarms.raise_(LOW_RESERVOIR, now, res)
    else:
        p.alarms.clear(LOW_RESERVOIR, now, res)
    p.eta_stale()
    return moved


def load(p, now):
    """The engine takes up the volume plan of the prescription in force."""
    starts, rates, timed = p.plan.volume_plan()
    p.engine.load(starts, rates, timed, now, p.offset + p.wall_delta)
    p.delivery.set_conc(p.plan.drug_conc())
    p.zone.plan(p, now)  # its time zone's offset now, and when it next changes
    p.replanned()


def unload(p, now):
    """No prescription in force: nothing is scheduled."""
    p.plan.drop_rx()
    p.engine.unload(now)


def end_bridge(p, now):
    """The old fill is out of the catheter (pushed, or gone with a new catheter)."""
    num, den = p.plan.carry()  # (of the bridge that ends here)
    r = p.plan.end_bridge()
    if r:
        # one drug's ng say nothing of another's limits: its history starts here (the
        # patient's bolus count and lockout stay: they are the patient's); another fill
        # of the same primary drug keeps it, scaled so that no drug is under-counted
        if num:
            p.rolling.scale(num, den)
        else:
            p.rolling.clear()
    if r == 2:
        # the new drug reaches the tip with no prescription of its own
        p.engine.unload(now)
        use_threshold(p, now)
        p.alarms.raise_(RX_INVALID, now, p.delivery.reservoir_nl)
        p.update_mode(now)
    elif p.plan.rx is not None:
        load(p, now)
