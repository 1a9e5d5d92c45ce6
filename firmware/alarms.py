# Alarm state: which alarms are raised, which the patient or clinician acknowledged.
# Alarm bit numbers and the critical set come from the protocol definition.
import micropython
from engine import NEVER
from part import Part
from msgdefs import (  # noqa: F401  (re-exported for the pump and the tests)
    ALARM_BATTERY_EOS as BATTERY_EOS,
    ALARM_BATTERY_ERI as BATTERY_ERI,
    ALARM_EMPTY_RESERVOIR as EMPTY_RESERVOIR,
    ALARM_INTERNAL_FAULT as INTERNAL_FAULT,
    ALARM_LOW_RESERVOIR as LOW_RESERVOIR,
    ALARM_MOTOR_STALL as MOTOR_STALL,
    ALARM_OCCLUSION as OCCLUSION,
    ALARM_RX_INVALID as RX_INVALID,
    ALARM_VOLUME_DISCREPANCY as VOLUME_DISCREPANCY,
    ALARM_SUSPENDED_TOO_LONG as SUSPENDED_TOO_LONG,
    ALARMS_UNSILENCEABLE as UNSILENCEABLE,
    ALARM_WATCHDOG_RESET as WATCHDOG_RESET,
    ALARMS_CRITICAL as CRITICAL,
    ALARMS_CLINICIAN as CLINICIAN_CLEARS,
    ALARM_PAUSE_S as PAUSE_S,
    ALARM_FLASH_FAULT as FLASH_FAULT,
    ALARM_STORAGE_DAMAGED as STORAGE_DAMAGED,
    EV_ALARM_ACKNOWLEDGED,
    EV_ALARM_CLEARED,
    EV_ALARM_RAISED,
    ROLE_CLINICIAN,
)


class Alarms(Part):
    """A bit mask of raised alarms; `log(code, a, b)` records raise and clear events."""

    SNAP_PREFIX = "alarm_"
    SNAP = ("mask", "acked")

    def __init__(self, log):
        self.mask = 0
        self.acked = 0
        self.log = log
        # an acknowledged critical alarm is an audio pause: its tones come back at
        # until[bit] (monotonic), the earliest of them pause_end (RAM only: a restart
        # ends every pause)
        self.until = [0] * 16
        self.pause_end = NEVER

    def take_up(self, v):
        super().take_up(v)
        self.acked &= ~CRITICAL  # (a restart ends an audio pause: they sound again)

    def expire(self, now):
        """The audio pauses that ended by `now`: their alarms sound again (each until its
        cause is gone or it is acknowledged again). (Every tick: a small frame.)"""
        if now >= self.pause_end:
            self._expire(now)

    def _expire(self, now):
        end = NEVER
        for b in range(16):
            u = self.until[b]
            if u:
                if u <= now:
                    self.until[b] = 0
                    self.acked &= ~(1 << b)
                elif u < end:
                    end = u
        self.pause_end = end

    def active(self, bit):
        return (self.mask >> bit) & 1

    @micropython.native
    def raise_(self, bit, now, reservoir_nl, detail=0):
        """Raise; returns True if newly raised (an event is logged only then). The event
        carries the reservoir and a detail (battery days, role, fault code)."""
        m = 1 << bit
        if self.mask & m:
            return False
        self.mask |= m
        self.acked &= ~m
        self.log(now, EV_ALARM_RAISED, 0, bit, reservoir_nl, detail)
        return True

    @micropython.native
    def clear(self, bit, now, reservoir_nl, detail=0):
        m = 1 << bit
        if not self.mask & m:
            return False
        self.mask &= ~m
        self.acked &= ~m
        self.until[bit] = 0
        self.log(now, EV_ALARM_CLEARED, 0, bit, reservoir_nl, detail)
        return True

    def ack(self, mask):
        """Silence the tones of these alarms; they stay raised until their cause is gone.
        Some sound until then (UNSILENCEABLE)."""
        self.acked |= mask & self.mask & ~UNSILENCEABLE
        return self.acked

    def acknowledge(self, now, mask, who, reservoir_nl, wall_delta=0):
        """ACK_ALARM: silence the tones of the alarms in `mask`; returns the acknowledged
        mask. A critical alarm (delivery stopped or unsafe) is only paused, for at most
        ALARM_PAUSE_S: then it sounds again until its cause is gone; the event says until
        when (wall time: now + wall_delta). A volume discrepancy or damaged storage lasts
        until the clinician acknowledges it (SR-DRUG-03, SR-STO-01: the clinician has seen
        it and assessed the pocket fill, the leak, the underdose or what the pump took up);
        the patient's acknowledgement only silences its tone."""
        before = self.acked
        acked = self.ack(mask)
        clears = mask & self.mask & CLINICIAN_CLEARS if who == ROLE_CLINICIAN else 0
        paused = acked & ~before & CRITICAL
        until = 0
        if paused:
            until = now + PAUSE_S
            for b in range(16):
                if paused >> b & 1:
                    self.until[b] = until
            if until < self.pause_end:
                self.pause_end = until
        if acked != before or clears:
            # only an acknowledgement that silenced something is a record (a repeated
            # one, or one of nothing raised, changes nothing: no flood fills the log),
            # and it names what it silenced, not the mask asked (all bits: "every alarm")
            self.log(now, EV_ALARM_ACKNOWLEDGED, who, (acked & ~before) | clears,
                     until + wall_delta if until else 0, 0)
        b = 0
        while clears:
            if clears & 1:
                self.clear(b, now, reservoir_nl)
            clears >>= 1
            b += 1
        return acked

    def sounding(self):
        """Mask of raised alarms not yet acknowledged."""
        return self.mask & ~self.acked

    def critical(self):
        return self.mask & CRITICAL

    def retire(self, bit):
        """Forget an alarm no firmware raises any more (a state saved by older firmware
        may hold it): no event, it was never this firmware's."""
        self.mask &= ~(1 << bit)
        self.acked &= ~(1 << bit)
