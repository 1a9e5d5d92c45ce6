# The pump's therapy core: its modes and the tick that delivers. No clocks, no pins: `now`
# comes in, the board's hardware `hw` is used only through its small interface, and every
# decision is an ordinary method call a test can make. The pump is made of parts, each
# owning its state (docs/DESIGN.md, "Firmware rooms"); other modules change a part only
# through its methods. The pump keeps the mode, the wall clock and the tick.
import json

import dosing
import guard as guardmod
import msgdefs as md
import powerup
import schedule
import strokes
from alarms import BATTERY_EOS, BATTERY_ERI, INTERNAL_FAULT, OCCLUSION, SUSPENDED_TOO_LONG, Alarms
from auth import Auth
from delivery import Delivery
from engine import DAY, KIND_PRIME, KIND_TIMED, Engine
from eventlog import EventLog
from gate import NOT_RUNNING, Gate, Rolling
from micropython import const
from part import Part
from plan import Plan
from telemetry import Telemetry
from zone import Zone

STOPPED = md.MODE_STOPPED
RUNNING = md.MODE_RUNNING
SUSPENDED = md.MODE_SUSPENDED
HALTED = md.MODE_HALTED
SAFE = md.MODE_SAFE

SENSE_S = const(600)  # longest sleep: battery and sensors are looked at this often
SAVE_S = const(3600)  # the snapshot is at most this old (rolling 24 h buckets)
ERI_DAYS = const(90)


def load_druglib(path):
    """The drug library's hard limits as {id: entry}. Read once at boot."""
    with open(path) as f:
        return guardmod.load_limits(json.load(f))


class Pump(Part):
    """The therapy application: modes and the tick, over the parts that own the state."""

    # the pump's own snapshot fields (the mode is restored through set_mode)
    SNAP = ("offset", "wall_delta", "suspend_alarm_t")

    def __init__(self, hw, now, druglib, boot_cause=0, store=None):
        info = hw.info
        self.hw = hw
        self.druglib = druglib
        self.store = store
        self.delivery = Delivery(info)
        self.plan = Plan(info["low_reservoir_nl"])
        self.telemetry = Telemetry(info, hw.telemetry)
        # RAM cache of the newest events; with a store the full log is on flash
        self.events = EventLog(32 if store is not None else 128, store)
        self.alarms = Alarms(self.log)
        self.engine = Engine(info["stroke_nl"], self)
        self.gate = Gate()
        self.zone = Zone()
        self.rolling = Rolling()
        self.guard = guardmod.Guard(self.rolling, self.engine, info["max_rate_nl_h"])
        self.denials = dosing.Denials()
        self.mode = STOPPED
        self.offset = 0  # local time = UTC + offset
        # `now` is the pump's monotonic clock (the board's, which SET_TIME never moves):
        # dose history, lockouts and the engine run on it. UTC = now + wall_delta; the
        # wall clock only places the daily schedule and stamps events and frames.
        self.wall_delta = 0
        self.battery_days = 0
        self.suspend_alarm_t = 0  # suspended: when suspended_too_long is raised (0: never)
        self.halt_t = 0  # halted by an alarm since (0: not halted)
        self.halt_lost = 0  # nL missed at the halt's start (owed, boluses cut short)
        self.low_eta = 0
        # refill by this monotonic time (0: none); True if the fill's stability says so
        self.refill_due = 0
        self.refill_why = 0
        self.eta_dirty = True
        self.last_tick = now
        # the boot's salt for challenges: the board's entropy if it has some, else the
        # boot time (a reboot never issues the challenges of the boot before)
        salt = getattr(hw, "salt", None)
        self.auth = Auth(hw.keys, salt if salt is not None else
                         (now & 0xFFFFFFFF).to_bytes(4, "little"))
        self.exit_requested = False
        self.changed = False  # the plan changed outside tick(): the therapy task must re-plan
        self.dirty = False  # state worth saving changed
        self.unsaved = False  # a command's change could not be saved: nothing more is
        self.saved_t = now
        self.clock_moved = None  # (boot time, stored time) if the clock came back
        powerup.start(self, now, boot_cause)

    # -- small notices other modules give ------------------------------------------------
    def replanned(self):
        """The plan changed outside tick(): re-plan, and project the refill again."""
        self.eta_dirty = True
        self.changed = True

    def wake(self):
        """Something outside tick() may have changed the plan: the therapy task looks."""
        self.changed = True

    def eta_stale(self):
        self.eta_dirty = True

    def planned(self):
        """The therapy task took the change up (main.py)."""
        self.changed = False

    def command_begins(self):
        """A state-changing command starts: what it changes is what it saves."""
        self.dirty = False

    def take_up_clock(self, now, t_last):
        """After a restart, a clock behind the stored state moves on to it (logged)."""
        self.hw.clock.set(t_last)
        self.clock_moved = (now, t_last)

    def low_reached(self):
        """The low-reservoir alarm came: its projection is passed."""
        self.low_eta = 0

    def missed(self, nl):
        """nL the schedule owed that a halt's delivery gap counts as missed."""
        self.halt_lost += nl

    def resumed_at(self, now):
        """After a restart: the stored state is taken up, therapy goes on from `now`."""
        self.last_tick = now
        self.eta_dirty = True

    # -- events and telemetry -----------------------------------------------------------
    def log(self, now, code, who, a, b, c, d=0):
        """Record an event in the log and, when telemetry is recorded, as an EVENT frame."""
        ev = self.events
        seq = ev.append(now + self.wall_delta, code, who, a, b, c, d)
        if not seq:
            return 0  # a flood's record that would evict a protected one (eventlog.py)
        self.dirty = True
        if not ev.holding:
            self.telemetry.event(ev, seq, now + self.wall_delta)
        if ev.lapped():  # said after the event that began a lap, with what is kept then
            self.log(now, md.EV_LOG_WRAPPED, 0, ev.first_kept(), 0, 0)
        return seq

    def emit_info(self, now):
        self.telemetry.info(self, now + self.wall_delta)

    def status_frame(self, now):
        """A complete STATUS frame (memoryview into a reused buffer)."""
        return self.telemetry.status(self, now)

    def reply(self, now, cmd_id, typ, result, detail, body_len):
        """The REPLY frame, its body (body_len bytes) already in place after the head."""
        return self.telemetry.reply(now + self.wall_delta, cmd_id, typ, result, detail, body_len)

    # -- the therapy loop ---------------------------------------------------------------
    def tick(self, now):
        """Do everything due at `now`; return the device time to be called again."""
        if self.mode == SAFE:
            return now + SENSE_S  # after an internal fault nothing runs but the link
        if self.suspend_alarm_t and now >= self.suspend_alarm_t:
            self.alarms.raise_(SUSPENDED_TOO_LONG, now, self.delivery.reservoir_nl)
        if now - self.last_tick > 3600 and self.mode == RUNNING:
            # not scheduled for over an hour (a hang, a clock jump): never caught up at once
            self.engine.advance(now, False)
            self.log(now, md.EV_DELIVERY_GAP, 0, now - self.last_tick, 0, 0)
        self.last_tick = now
        if self.denials.n or self.auth.bad_macs:
            self._flush_counts(now)
        if now >= self.zone.t:
            self.zone.plan(self, now)  # the prescription's time zone: an offset change
        self.sense(now)
        if self.mode == RUNNING:
            due = self.engine.advance(now)
            while due > 0:
                if not strokes.stroke(self, now):
                    break
                due -= 1
        else:
            self.engine.advance(now, False)
            if strokes.probing(self) and now >= self.delivery.retry_t:
                strokes.probe(self, now)
        if self.eta_dirty:
            self.update_eta(now)
        if self.store is not None and (self.dirty or now - self.saved_t >= SAVE_S):
            strokes.save(self, now)  # (never while unsaved: that pump is SAFE, returned above)
        return self._next_wake(now)

    def _next_wake(self, now):
        if self.mode == RUNNING:
            nxt = self.engine.next_time(now)
        else:
            # halted or suspended: only the schedule's breakpoints matter, not strokes
            nxt = self.engine.next_breakpoint()
            # the stall retry only while a probe can happen: a suspended pump waking for its
            # retry time would wake at once for ever (the stateful test found it spin)
            r = self.delivery.retry_t
            if r < nxt and strokes.probing(self):
                nxt = r
            a = self.suspend_alarm_t
            if a and now < a < nxt:
                nxt = a  # the suspension's maximum: its alarm comes on time
        if self.zone.t < nxt:
            nxt = self.zone.t
        lim = self.alarms.pause_end  # an audio pause ends on time
        lim = now + SENSE_S if lim > now + SENSE_S else lim
        return lim if nxt > lim else nxt

    def _flush_counts(self, now):
        # the counted denials and bad MACs whose window has closed go to the log
        if self.denials.due(now):
            self.denials.flush(self, now)
        if self.auth.bad_macs and now - self.auth.bad_t >= md.AUTH_FAILURE_WINDOW_S:
            self.auth.flush_bad(self, now)

    def sense(self, now):
        """The battery and the occlusion sensor, the alarms they call for, the audio
        pauses that ended."""
        # (no more locals: its frame stays within the C stack's 11 words, SR-HEAP-01)
        res = self.delivery.reservoir_nl
        al = self.alarms
        al.expire(now)
        days = self.hw.battery.days_left(now)
        # (0 from end of service on, never a negative value wrapped in the u16)
        self.battery_days = 0 if days < 0 else days if days < 0xFFFF else 0xFFFF
        if days <= 0:
            if al.raise_(BATTERY_EOS, now, res, days):
                self.update_mode(now)
        elif days < ERI_DAYS:
            if al.raise_(BATTERY_ERI, now, res, days):
                self.eta_dirty = True  # (the refill date may now be the battery's)
        else:
            if al.clear(BATTERY_ERI, now, res, days):
                self.eta_dirty = True
            if al.clear(BATTERY_EOS, now, res, days):
                self.update_mode(now)  # a new battery: delivery goes on by the schedule
        if self.hw.occlusion.blocked():
            if al.raise_(OCCLUSION, now, res):
                self.update_mode(now)
        elif al.active(OCCLUSION):
            al.clear(OCCLUSION, now, res)
            self.update_mode(now)

    # -- modes ---------------------------------------------------------------------------
    def set_mode(self, now, mode):
        """The one place the mode changes (STATUS.mode, MODES); never RUNNING with a critical
        alarm raised (HALTED). Leaving delivery cancels the boluses, drops what was owed and
        stops the motor; entering it owes nothing for the time before."""
        if mode == SAFE:
            # an internal fault: trust nothing but the motor's off
            self.mode = SAFE
            self.changed = True
            self.hw.motor.off()
            return
        if mode == RUNNING and self.alarms.critical():
            mode = HALTED
        old = self.mode
        if mode == old:
            return
        if old == SUSPENDED:
            self.suspend_alarm_t = 0
            self.alarms.clear(SUSPENDED_TOO_LONG, now, self.delivery.reservoir_nl)
        if old == RUNNING:
            e = self.engine
            cut = e.committed_nl(now)  # the rest of the boluses cut short
            e.cancel_boluses(now)
            lost = e.drop_owed()
            if mode == HALTED:
                # delivery stopped by an alarm: what it misses is a delivery gap,
                # logged when delivery can go on (halt_gap)
                self.halt_t = now
                self.halt_lost += cut + lost
            self.hw.motor.off()
        elif mode == RUNNING:
            self.engine.advance(now, False)  # nothing is owed for the time not running
        if old == HALTED and self.halt_t:
            self._halt_gap(now)
        self.mode = mode
        self.replanned()

    def _halt_gap(self, now):
        # Log the delivery gap of the halt that ends now: how long, and what was missed
        # (the schedule over it, what was owed at the stop and the rest of the boluses it
        # cut short).
        e = self.engine
        missed = self.halt_lost
        if e.loaded and now > self.halt_t:
            missed += e.plan_units(self.halt_t, now) // DAY
        self.log(now, md.EV_DELIVERY_GAP, 0, now - self.halt_t, missed, 0)
        self.halt_t = 0
        self.halt_lost = 0

    def update_mode(self, now):
        """RUNNING <-> HALTED follows the critical alarms; commands set the others."""
        if self.mode == RUNNING and self.alarms.critical():
            self.set_mode(now, HALTED)
        elif self.mode == HALTED and not self.alarms.critical():
            self.set_mode(now, RUNNING)
        self.changed = True

    def update_eta(self, now):
        """Project the low-reservoir time and the refill date again (refilldue.py)."""
        self.eta_dirty = False
        import refilldue  # after the boot: its code is not in the boot's peak

        self.refill_due, self.refill_why = refilldue.due(self, now)
        self.low_eta = refilldue.low_eta(self, now) if self.mode == RUNNING else 0

    # -- the plan in force ---------------------------------------------------------------
    def on_step(self, t, step, rate):
        self.log(t, md.EV_STEP_CHANGED, 0, step, rate, 0)

    def on_timed(self, t, dose_nl, dur, late_s):
        dosing.timed_bolus(self, t, dose_nl, dur, late_s)

    def on_timed_missed(self, t, dose_nl):
        self.log(t, md.EV_BOLUS_DENIED, 0, NOT_RUNNING, KIND_TIMED, dose_nl)

    def on_bolus_end(self, t, kind, volume_nl):
        if kind == KIND_PRIME:
            self.log(t, md.EV_PRIME_COMPLETED, 0, volume_nl, 0, 0)
            self.eta_dirty = True
            return
        self.log(t, md.EV_BOLUS_COMPLETED, 0, volume_nl, kind, 0)
        if kind != KIND_TIMED:
            self.eta_dirty = True

    def set_clock(self, now, utc, offset):
        """The wall clock (UTC) and local offset; only the daily schedule moves."""
        self.wall_delta = utc - now
        self.offset = offset
        self.engine.set_offset(offset + self.wall_delta, now)

    # -- commands that are the pump's own --------------------------------------------------
    def suspend(self, now, who, max_s=0):
        """Stop delivery; past max_s (0: no maximum) the alarm suspended_too_long sounds
        until delivery resumes."""
        if self.mode not in (RUNNING, HALTED):
            return md.NACK_INVALID, self.mode
        self.engine.advance(now, self.mode == RUNNING)
        self.set_mode(now, SUSPENDED)
        self.suspend_alarm_t = now + max_s if max_s else 0
        self.log(now, md.EV_SUSPENDED, who, max_s, 0, 0)
        return 0, 0

    def resume(self, now, who):
        if self.mode not in (SUSPENDED, SAFE):
            return md.NACK_INVALID, self.mode
        if self.plan.rx is not None:
            reason = schedule.guard_check(self, now)
            if reason:
                return md.NACK_LIMIT, reason
        self.engine.advance(now, False)
        self.set_mode(now, RUNNING)  # HALTED while a critical alarm is raised
        self.log(now, md.EV_RESUMED, who, 0, 0, 0)
        self.replanned()
        return 0, 0

    def fault(self, now, code):
        """An unexpected error in the application: motor off, safe state, logged."""
        try:
            self.set_mode(now, SAFE)
        finally:
            self.alarms.raise_(INTERNAL_FAULT, now, self.delivery.reservoir_nl, code)
            self.log(now, md.EV_FAULT, 0, code, 0, 0)

    def maintenance(self, now, who):
        """Stop for maintenance: suspended if delivering, motor off, to the REPL (main.py)."""
        if self.mode in (RUNNING, HALTED):
            self.suspend(now, who)
        self.hw.motor.off()
        self.exit_requested = True

    def command(self, frame, now):
        """Handle one CRC-checked frame from the link; returns a REPLY frame or None."""
        import commands  # made at the end of the boot (powerup.py)

        return commands.command(self, frame, now)

    # -- persistence (store.py) -------------------------------------------------------
    def save_failed(self, now):
        """A command's change could not be saved: it never delivers nor becomes durable
        (SR-PWR-04). Its events are dropped, the pump is safe with internal_fault, and it
        saves and changes nothing until a restart takes up the last durable state."""
        self.unsaved = True
        self.events.drop_held()
        self.fault(now, md.FAULT_STORAGE)

    def save(self, now):
        """Write the snapshot (snapshot.py; atomic). Allocates: never called per stroke."""
        import snapshot  # only a pump with a store saves one

        self.store.save_state(snapshot.pack(self, now))
        self.dirty = False
        self.saved_t = now
