# Power-up: the pump boots, takes up its stored state if it has one (restore.py), logs
# what it found, says who it is and what it believes. (Not named boot.py: a MicroPython
# board runs a boot.py at every reset, frozen or on its filesystem.)
import sys

import msgdefs as md
import schedule
import strokes
from alarms import RX_INVALID, STORAGE_DAMAGED
from engine import DAY
from eventlog import wall_u32


def _found(p, now, damage):
    if damage:
        # what the boot found damaged or missing, named (SR-STO-01): a clinician must see
        # it (only the clinician's acknowledgement clears it)
        p.alarms.retire(STORAGE_DAMAGED)
        p.alarms.raise_(STORAGE_DAMAGED, now, p.delivery.reservoir_nl, damage)
    if damage & md.DAMAGE_STATE_LOST or p.plan.rx_bad:
        # no good copy of the stored state, or its prescription does not parse: no
        # delivery until a clinician programs the pump again
        schedule.unload(p, now)
        p.alarms.raise_(RX_INVALID, now, p.delivery.reservoir_nl)
        if p.mode == md.MODE_RUNNING:
            p.set_mode(now, md.MODE_HALTED)


def start(p, now, boot_cause):
    """Boot pump `p` at monotonic time `now`: take up the stored state, log the boot and
    what it found, say who the pump is and what it believes, save."""
    store = p.store
    gap = 0
    damage = 0
    cut = ()
    if store is not None:
        import restore  # a pump without a store never pays for it

        now, gap, damage, cut = restore.restore(p, store, now)
        # (boot only: its code, and a lost state's witness.py, leave the heap)
        sys.modules.pop("restore", None)
        sys.modules.pop("witness", None)
        sys.modules.pop("storeread", None)
    p.log(now, md.EV_BOOT, 0, boot_cause, 0, 0)
    if p.clock_moved is not None:
        d = p.wall_delta
        p.log(now, md.EV_TIME_CHANGED, 0, wall_u32(p.clock_moved[0] + d),
              wall_u32(p.clock_moved[1] + d), p.offset)
    if damage or p.plan.rx_bad:
        _found(p, now, damage)
    missed = 0
    for kind, done, rest in cut:
        # a bolus the cut ended: its end, with what it delivered; its rest is missed (one
        # whose schedule had run out ended before the cut: its own record says so)
        if rest > 0:
            p.log(now, md.EV_BOLUS_COMPLETED, 0, done, kind, 0)
            missed += rest
    if gap > 0 or missed:
        # what the schedule would have delivered while the power was off (a running pump)
        e = p.engine
        if gap > 0 and p.mode == md.MODE_RUNNING and e.loaded:
            missed += e.plan_units(now - gap, now) // DAY
        p.log(now, md.EV_DELIVERY_GAP, 0, gap, missed, 0)
    # what the boot's status says is read now, not at the first tick: the battery (0
    # would read as end of service) and the low-reservoir projection
    p.sense(now)
    p.update_eta(now)
    strokes.rearm(p, now)
    p.emit_info(now)
    if p.hw.telemetry is not None:
        # what the pump believes as it boots (after a restart: what it recovered)
        p.hw.telemetry.emit(p.status_frame(now))
    if store is not None:
        strokes.save(p, now)
    # the commands and their rooms, after the pump's buffers and the boot's garbage:
    # their code goes where the heap has room, and a command later allocates nothing
    # for it
    import commands  # noqa: F401
    import refilldue  # noqa: F401
