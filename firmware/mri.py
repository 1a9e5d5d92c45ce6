# An MRI scan (Medtronic's procedure for SynchroMed: the magnet stalls the motor, so the
# pump is checked after the scan): MRI_PREPARE suspends delivery and holds the motor
# (mri_prepared); MRI_CHECK, after the scan, makes one test stroke with feedback
# (mri_checked with the result) and resumes therapy only if the motor moved. A pump left
# suspended sounds suspended_too_long after DEFAULT_SUSPEND_MAX_S, as any suspension.
import msgdefs as md
import strokes
from gate import RESERVOIR


def prepare(p, now, who):
    """Delivery suspended, the motor held (off) for the scan."""
    r = p.suspend(now, who, md.DEFAULT_SUSPEND_MAX_S)
    if r[0]:
        return r
    p.log(now, md.EV_MRI_PREPARED, who, md.DEFAULT_SUSPEND_MAX_S, 0, 0)
    return 0, 0


def check(p, now, who):
    """After the scan: a test stroke; therapy resumes only if the motor moved."""
    if p.mode != md.MODE_SUSPENDED:
        return md.NACK_INVALID, p.mode
    if p.delivery.reservoir_nl < p.delivery.stroke_nl:
        p.log(now, md.EV_MRI_CHECKED, who, md.MRI_EMPTY, 0, 0)
        return md.NACK_LIMIT, RESERVOIR
    r = strokes.test_stroke(p, now)  # (its failure codes are MRI_RESULTS')
    p.log(now, md.EV_MRI_CHECKED, who, r, 0, 0)
    if r != 0:
        return md.NACK_LIMIT, md.DENY_MOTOR_STALL
    return p.resume(now, who)

