# The pump's therapy core: modes, strokes, alarms, the prescription and the drug. No
# clocks, no pins: `now` comes in, the hardware object `hw` built by the board is used
# only through its small interface (docs/DESIGN.md), and every decision is an ordinary
# method call a test can make. Its neighbours: commands.py (the link's commands),
# auth.py (who may command), guard.py (the dose limits), clinic.py (the clinician's
# changes to the plan), refilldue.py, snapshot.py, powerup.py and
# restore.py (the boot, and what survives a restart).
import gc
import json
import struct
import sys

import msgdefs as md
from alarms import (
    BATTERY_EOS,
    BATTERY_ERI,
    EMPTY_RESERVOIR,
    INTERNAL_FAULT,
    LOW_RESERVOIR,
    RX_INVALID,
    VOLUME_DISCREPANCY,
    SUSPENDED_TOO_LONG,
    MOTOR_STALL,
    OCCLUSION,
    Alarms,
)
import auth as authmod
import powerup
import commands
from codec import FrameWriter
from engine import DAY, KIND_CLINICIAN, KIND_PATIENT, KIND_PRIME, KIND_TIMED, NEVER, Engine
from eventlog import REC_SIZE, EventLog
from gate import (
    IN_PROGRESS,
    NOT_CONFIGURED,
    NOT_RUNNING,
    OK,
    RESERVOIR,
    Gate,
    Rolling,
)
import micropython
from micropython import const
import guard as guardmod
import rx as rxmod

FW_VERSION = (0, 1, 0)

STOPPED = md.MODE_STOPPED
RUNNING = md.MODE_RUNNING
SUSPENDED = md.MODE_SUSPENDED
HALTED = md.MODE_HALTED
SAFE = md.MODE_SAFE
CLINICIAN = md.ROLE_CLINICIAN
PATIENT = md.ROLE_PATIENT

STALL_RETRY_S = const(60)  # how often a stalled motor is tried again
SENSE_S = const(600)  # longest sleep: battery and sensors are looked at this often
SAVE_S = const(3600)  # the snapshot is at most this old (rolling 24 h buckets)
HEAP_SAMPLE_S = const(86400)  # telemetry's heap figures are at most a day old
ERI_DAYS = const(90)
MAX_FRAME = md.MAX_FRAME
# the largest telemetry frame: header, DEVICE_INFO (the largest payload), crc
_TX_MAX = md.HDR_SIZE + md.DEVICE_INFO_SIZE + md.CRC_SIZE + 16


def _machine(info):
    # the board as MicroPython names it, as ASCII (DEVICE_INFO's field cuts it at its
    # width, as its description says)
    m = info.get("machine")
    if m is None:
        m = getattr(sys.implementation, "_machine", "")
    return bytes(c if 32 <= c < 127 else 63 for c in m.encode())


def load_druglib(path):
    """The drug library's hard limits as {id: entry}. Read once at boot."""
    with open(path) as f:
        return guardmod.load_limits(json.load(f))


class Pump:
    """The therapy application: dosing, alarms, events, telemetry and commands."""

    def __init__(self, hw, now, druglib, boot_cause=0, store=None):
        info = hw.info
        self.hw = hw
        self.druglib = druglib
        self.stroke_nl = info["stroke_nl"]
        self.capacity_nl = info["capacity_nl"]
        self.board_low_nl = info["low_reservoir_nl"]
        self.low_nl = self.board_low_nl  # the prescription's, while one says so
        self.catheter_nl = info["catheter_nl"]  # CATHETER sets it (catheter.py)
        self.unprimed_nl = 0  # catheter volume not yet pushed since the last CATHETER
        self.max_rate_nl_h = info["max_rate_nl_h"]
        self.min_rate_nl_day = info["min_rate_nl_day"]
        self.serial = info["serial"]
        self.machine = _machine(info)
        self.telemetry = hw.telemetry
        self.tx = FrameWriter(_TX_MAX)  # telemetry frames (status, events, info)
        self.rtx = FrameWriter(MAX_FRAME)  # replies
        self.seq = 0
        self.store = store
        # RAM cache of the newest events; with a store the full log is on flash
        self.events = EventLog(32 if store is not None else 128, store)
        self.alarms = Alarms(self.log)
        self.engine = Engine(self.stroke_nl, self)
        self.gate = Gate()
        self.rolling = Rolling()
        self.guard = guardmod.Guard(self.rolling, self.engine, self.max_rate_nl_h)
        self.mode = STOPPED
        self.rx = None
        self.conc = 0  # ng/mL of what is in the reservoir (0: unknown until programmed)
        self.drug = 0  # the drug in the reservoir (0: unknown until programmed or filled)
        self.reservoir_nl = info.get("reservoir_nl", 0)
        self.delivered_ul = 0
        self.delivered_nl = 0
        self.offset = 0  # local time = UTC + offset
        # `now` is the pump's monotonic clock (the board's, which SET_TIME never moves):
        # dose history, lockouts and the engine run on it. UTC = now + wall_delta; the
        # wall clock only places the daily schedule and stamps events and frames.
        self.wall_delta = 0
        self.battery_days = 0
        # drug per stroke = ng_q + ng_r / 1e6 ng, carried exactly
        self.ng_q = 0
        self.ng_r = 0
        self.ng_frac = 0
        # refill with a new concentration: the catheter still holds the old one
        self.bridge_nl = 0
        self.bridge_conc = 0
        # a refill with another drug: the catheter still holds the old one, delivered by
        # the old prescription's volume rate (bridge_rx) until it is pushed out
        self.bridge_drug = 0
        self.bridge_rx = None
        self.suspend_alarm_t = 0  # suspended: when suspended_too_long is raised (0: never)
        self.halt_t = 0  # halted by an alarm since (0: not halted)
        self.halt_lost = 0  # nL missed at the halt's start (owed, boluses cut short)
        self.cut_boluses = []  # (kind, delivered, rest) of boluses a power cut ended
        self.low_eta = 0
        # refill by this monotonic time (0: none); True if the fill's stability says so
        self.refill_due = 0
        self.refill_stab = False
        self.fill_t = 0  # when the fill in the reservoir went in (0: not known)
        self.fill_first = 0  # 1: the reservoir's first fill of its drug
        self.heap_free = 0
        self.heap_total = 0
        self.heap_t = 0  # when the heap is sampled next
        self.heap_gc_t = 0  # when a sample may collect the garbage next
        self.eta_dirty = True
        self.retry_t = NEVER
        self.last_tick = now
        # the boot's salt for challenges: the board's entropy if it has some, else the
        # boot time (a reboot never issues the challenges of the boot before)
        salt = getattr(hw, "salt", None)
        self.auth = authmod.Auth(hw.keys, salt if salt is not None else
                                  (now & 0xFFFFFFFF).to_bytes(4, "little"))
        self.reply_key = None  # the key the next reply is signed with (None: unsigned)
        self.hold_from = 0
        self.reply_bind = bytearray(md.REPLY_BINDING_SIZE)  # the command's role and counter
        # identical patient bolus denials within DENIAL_WINDOW_S: the first is logged,
        # the rest counted and logged as one record when the window closes
        self.den_reason = 0
        self.den_t = 0
        self.den_n = 0
        self.den_who = 0
        self.rx_bad = False
        self.clock_moved = None
        self.exit_requested = False
        self.changed = False  # the plan changed outside tick(): the therapy task must re-plan
        self.dirty = False  # state worth saving changed
        self.saved_t = now
        powerup.start(self, now, boot_cause)

    # -- events and telemetry -----------------------------------------------------------
    def log(self, now, code, who, a, b, c, d=0):
        """Record an event in the log and, when telemetry is recorded, as an EVENT frame."""
        seq = self.events.append(now + self.wall_delta, code, who, a, b, c, d)
        if not seq:
            return 0  # a flood's record that would evict a protected one (eventlog.py)
        self.dirty = True
        if self.events.wrapped:
            # the oldest event on flash was overwritten: say so, once per lap of the ring
            self.events.wrapped = False
            self.log(now, md.EV_LOG_WRAPPED, 0, self.events.first_seq, 0, 0)
        if self.telemetry is not None and not self.events.holding:
            self._emit_event(now, seq)
        return seq

    def _emit_event(self, now, seq):
        rec = self.events.record(seq)
        if rec is None:
            return
        buf = self.tx.buf
        buf[md.HDR_SIZE : md.HDR_SIZE + REC_SIZE] = rec
        self.telemetry.emit(self.tx.finish(md.T_EVENT, self._next_seq(), now + self.wall_delta,
                                           REC_SIZE))

    def hold_events(self):
        """A command begins: its events stay off flash and off the air until
        release_events() (after the snapshot that carries them)."""
        self.hold_from = self.events.next_seq
        self.events.hold()

    def release_events(self, now, rep):
        """The command is durable: its events go to flash, then out as telemetry; the
        reply `rep` (in rtx) is numbered after them, as it goes out after them. Returns
        the reply."""
        ev = self.events
        ev.release()
        if self.telemetry is None or self.hold_from == ev.next_seq:
            return rep
        if rep is not None:
            # the reply's frame number goes to the first event, the reply after the last
            _, _, self.seq, t = struct.unpack_from(md.HDR_FMT, rep, 0)
        for seq in range(self.hold_from, ev.next_seq):
            self._emit_event(now, seq)
        if rep is None:
            return rep
        n = len(rep) - md.HDR_SIZE - md.MAC_SIZE - md.CRC_SIZE
        return self.rtx.finish_reply(md.T_REPLY, self._next_seq(), t, n, self.reply_key,
                                     self.reply_bind)

    @micropython.native
    def _next_seq(self):
        s = self.seq
        self.seq = (s + 1) & 0xFFFF
        return s

    def emit_info(self, now):
        if self.telemetry is not None:
            n = self.info_into(self.tx.buf, md.HDR_SIZE)
            self.telemetry.emit(self.tx.finish(md.T_DEVICE_INFO, self._next_seq(),
                                               now + self.wall_delta, n))

    def info_into(self, buf, off):
        struct.pack_into(
            md.DEVICE_INFO_FMT, buf, off, self.serial, FW_VERSION[0], FW_VERSION[1],
            FW_VERSION[2], md.RUNTIME_MICROPYTHON, md.SCHEMA, self.stroke_nl, self.capacity_nl, self.low_nl,
            self.catheter_nl, self.max_rate_nl_h, self.min_rate_nl_day, self.machine,
        )
        return md.DEVICE_INFO_SIZE

    @micropython.native
    def status_into(self, buf, off, now):
        """Pack the STATUS payload; allocation-free (called every status period)."""
        flags = 0
        eta = self.low_eta
        if eta:
            eta += self.wall_delta
            if not 0 < eta < NEVER:
                eta = 0  # no horizon past 2**30 - 1: reads as none
        if self.engine.b_next_end != NEVER:
            flags |= md.STATUS_FLAG_BOLUS_RUNNING
        if self.bridge_nl > 0:
            flags |= md.STATUS_FLAG_BRIDGE
        rx = self.rx
        if rx is not None and rx.flags & md.RX_FLAG_TRIAL:
            flags |= md.STATUS_FLAG_TRIAL
        if self.unprimed_nl > 0:
            flags |= md.STATUS_FLAG_CATHETER_UNPRIMED
        due = self.refill_due
        if due:
            due += self.wall_delta
            if not 0 < due < NEVER:
                due = 0
            elif self.refill_stab:
                flags |= md.STATUS_FLAG_REFILL_DUE_STABILITY
        if now >= self.heap_t:
            self.sample_heap(now)
        struct.pack_into(
            md.STATUS_FMT, buf, off, self.mode, self.engine.step, flags,
            rx.drug if rx is not None else 0, self.alarms.mask, self.reservoir_nl,
            self.delivered_ul, self.delivered_nl, self.battery_days,
            self.engine.rate if self.mode == RUNNING else 0, eta,
            self.rolling.sum(now), self.conc, self.gate.count_24h(now),
            self.alarms.acked & 0xFF, rx.crc if rx is not None else 0, due, self.heap_free,
            self.heap_total,
        )
        return md.STATUS_SIZE

    def sample_heap(self, now):
        """The heap's figures for STATUS (gc.mem_free walks the whole heap: not for every
        frame; telemetry carries a sample at most HEAP_SAMPLE_S old, GET_STATUS a new one).
        The garbage is collected first (at most once a second: a flood of requests cannot
        keep the CPU collecting), so the figure is what the pump really holds, not how
        long ago the last collection ran."""
        if now >= self.heap_gc_t:
            gc.collect()
            self.heap_gc_t = now + 1
        free = gc.mem_free()
        self.heap_free = free
        self.heap_total = free + gc.mem_alloc()
        self.heap_t = now + HEAP_SAMPLE_S

    @micropython.native
    def status_frame(self, now):
        """A complete STATUS frame (memoryview into a reused buffer)."""
        n = self.status_into(self.tx.buf, md.HDR_SIZE, now)
        return self.tx.finish(md.T_STATUS, self._next_seq(), now + self.wall_delta, n)

    # -- the therapy loop ---------------------------------------------------------------
    @micropython.native
    def tick(self, now):
        """Do everything due at `now`; return the device time to be called again."""
        if self.mode == SAFE:
            return now + SENSE_S  # after an internal fault nothing runs but the link
        if self.suspend_alarm_t and now >= self.suspend_alarm_t:
            self.alarms.raise_(SUSPENDED_TOO_LONG, now, self.reservoir_nl)
        if now - self.last_tick > 3600 and self.mode == RUNNING:
            # The pump was not scheduled for over an hour (a hang the watchdog did not
            # catch, a clock jump): never catch that up in one go.
            self.engine.advance(now, False)
            self.log(now, md.EV_DELIVERY_GAP, 0, now - self.last_tick, 0, 0)
        self.last_tick = now
        if self.den_n or self.auth.bad_macs:
            self._flush_counts(now)
        self._sense(now)
        if self.mode == RUNNING:
            due = self.engine.advance(now)
            while due > 0:
                if not self._stroke(now):
                    break
                due -= 1
        else:
            self.engine.advance(now, False)
            if self._probing() and now >= self.retry_t:
                self._probe(now)
        if self.eta_dirty:
            self._update_eta(now)
        if self.store is not None and (self.dirty or now - self.saved_t >= SAVE_S):
            self.save(now)
        if self.mode == RUNNING:
            nxt = self.engine.next_time(now)
        else:
            # halted or suspended: only the schedule's breakpoints matter, not strokes
            nxt = self.engine.next_breakpoint()
            # the stall retry only while a probe can happen: a suspended pump keeps its
            # retry time, and waking for it would wake at once for ever (found by the
            # stateful test: the therapy task spun at one instant)
            if self._probing() and self.retry_t < nxt:
                nxt = self.retry_t
            a = self.suspend_alarm_t
            if a and now < a < nxt:
                nxt = a  # the suspension's maximum: its alarm comes on time
        lim = now + SENSE_S
        if nxt > lim:
            nxt = lim
        return nxt

    @micropython.native
    def _sense(self, now):
        hw = self.hw
        days = hw.battery.days_left(now)
        self.battery_days = days if days < 0xFFFF else 0xFFFF
        if days <= 0:
            if self.alarms.raise_(BATTERY_EOS, now, self.reservoir_nl, days):
                self._update_mode(now)
        elif days < ERI_DAYS:
            self.alarms.raise_(BATTERY_ERI, now, self.reservoir_nl, days)
        else:
            self.alarms.clear(BATTERY_ERI, now, self.reservoir_nl, days)
            if self.alarms.clear(BATTERY_EOS, now, self.reservoir_nl, days):
                self._update_mode(now)  # a new battery: delivery goes on by the schedule
        if hw.occlusion.blocked():
            if self.alarms.raise_(OCCLUSION, now, self.reservoir_nl):
                self._update_mode(now)
        elif self.alarms.active(OCCLUSION):
            self.alarms.clear(OCCLUSION, now, self.reservoir_nl)
            self._update_mode(now)

    @micropython.native
    def _stroke(self, now):
        # One stroke: check, move, then account. Returns False if delivery must stop.
        if self.reservoir_nl < self.stroke_nl:
            if self.alarms.raise_(EMPTY_RESERVOIR, now, self.reservoir_nl):
                self._update_mode(now)
            return False
        st = self.store
        if st is not None:
            self._journal(now, self.stroke_nl)
        r = self.hw.motor.stroke()
        if r != 0:
            if st is not None:
                self._journal(now, 0)  # nothing moved: the journal must not say it did
            self._stroke_failed(now, r)
            return False
        self.engine.stroke_done()
        self._account(now)
        return True

    @micropython.native
    def _journal(self, now, s):
        # Write ahead: the accounting as it stands once a stroke of s nL is done.
        nl = self.delivered_nl + s
        ul = self.delivered_ul
        while nl >= 1000:
            nl -= 1000
            ul += 1
        acc = self.engine.acc - (self.engine.Q if s else 0)
        self.store.journal(now, self.reservoir_nl - s, ul, nl, acc, self.mode)

    @micropython.native
    def _account(self, now):
        # A confirmed stroke: reservoir, delivered, drug in the rolling window.
        s = self.stroke_nl
        self.reservoir_nl -= s
        nl = self.delivered_nl + s
        while nl >= 1000:
            nl -= 1000
            self.delivered_ul += 1
        self.delivered_nl = nl
        ng = self.ng_q
        f = self.ng_frac + self.ng_r
        if f >= 1_000_000:
            f -= 1_000_000
            ng += 1
        self.ng_frac = f
        u = self.unprimed_nl
        if u > 0:
            # a new catheter filling: this drug does not reach the patient (SR-CATH-01)
            if u >= s:
                self.unprimed_nl = u - s
                ng = 0
            else:
                self.unprimed_nl = 0
                ng = (ng * (s - u) + s - 1) // s  # the part that does, rounded up
            if self.unprimed_nl == 0:
                self.changed = True
        self.rolling.add(now, ng)
        if self.bridge_nl > 0:
            self.bridge_nl -= s
            if self.bridge_nl <= 0:
                self.end_bridge(now)
        if self.reservoir_nl < self.low_nl:
            if self.alarms.raise_(LOW_RESERVOIR, now, self.reservoir_nl):
                self.low_eta = 0
        if self.reservoir_nl < s:
            if self.alarms.raise_(EMPTY_RESERVOIR, now, self.reservoir_nl):
                self._update_mode(now)

    def _stroke_failed(self, now, r):
        # Nothing is counted for a stroke the mechanism did not confirm.
        self.log(now, md.EV_STROKE_FAILED, 0, r, 0, 0)
        bit = MOTOR_STALL if r == 1 else OCCLUSION
        self.alarms.raise_(bit, now, self.reservoir_nl)
        # what was owed is not caught up; it is counted into the halt's delivery_gap
        self.halt_lost += self.engine.drop_owed()
        if bit == MOTOR_STALL:
            self.retry_t = now + STALL_RETRY_S
        self._update_mode(now)

    def rearm_probe(self, now):
        """At boot: a pump halted by a stall before the reset tries its motor again
        STALL_RETRY_S on, as it would have had it not restarted (retry_t is not stored)."""
        if self._probing():
            self.retry_t = now + STALL_RETRY_S

    def _probing(self):
        # a halted pump with a stalled motor tries it again at retry_t
        return self.mode == HALTED and self.alarms.active(MOTOR_STALL)

    def _probe(self, now):
        # Try the stalled motor with one real stroke. A success counts as an early
        # stroke (acc goes below zero), so the plan is kept and never exceeded.
        if self.reservoir_nl < self.stroke_nl:
            self.retry_t = NEVER
            return
        if self.store is not None:
            self._journal(now, self.stroke_nl)
        r = self.hw.motor.stroke()
        if r != 0:
            if self.store is not None:
                self._journal(now, 0)
            self.retry_t = now + STALL_RETRY_S
            return
        self.engine.stroke_done()
        self._account(now)
        self.retry_t = NEVER
        self.alarms.clear(MOTOR_STALL, now, self.reservoir_nl)
        self.log(now, md.EV_MOTOR_RECOVERED, 0, 0, 0, 0)
        self._update_mode(now)

    def set_mode(self, now, mode):
        """The one place the mode changes (STATUS.mode, MODES). Delivery (RUNNING) is
        never entered while a critical alarm is raised: HALTED instead. Leaving delivery
        cancels the boluses, drops what was owed and stops the motor; entering it owes
        nothing for the time before."""
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
            self.alarms.clear(SUSPENDED_TOO_LONG, now, self.reservoir_nl)
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
            self.halt_gap(now)
        self.mode = mode
        self.eta_dirty = True
        self.changed = True

    def halt_gap(self, now):
        """Log the delivery gap of the halt that ends now: how long, and what was missed
        (the schedule over it, what was owed at the stop and the rest of the boluses it
        cut short)."""
        e = self.engine
        missed = self.halt_lost
        if e.loaded and now > self.halt_t:
            missed += e.plan_units(self.halt_t, now) // DAY
        self.log(now, md.EV_DELIVERY_GAP, 0, now - self.halt_t, missed, 0)
        self.halt_t = 0
        self.halt_lost = 0

    def _update_mode(self, now):
        # RUNNING <-> HALTED follows the critical alarms; other modes are set by commands.
        if self.mode == RUNNING and self.alarms.critical():
            self.set_mode(now, HALTED)
        elif self.mode == HALTED and not self.alarms.critical():
            self.set_mode(now, RUNNING)
        self.changed = True

    def _update_eta(self, now):
        self.eta_dirty = False
        import refilldue  # after the boot: its code is not in the boot's peak

        self.refill_due, self.refill_stab = refilldue.due(self, now)
        self.low_eta = 0
        if self.mode != RUNNING or self.rx is None:
            return
        margin = self.reservoir_nl - self.low_nl
        if margin < 0:
            return
        # the alarm comes with the stroke that takes the reservoir below the threshold
        k = margin // self.stroke_nl + 1
        extra = 0
        e = self.engine
        if e.bolus_active(KIND_PATIENT) or e.bolus_active(KIND_CLINICIAN):
            extra = e.committed_nl(now)
        t = e.time_to_deliver(now, k * self.stroke_nl, extra)
        self.low_eta = 0 if t >= NEVER else t

    # -- engine callbacks ---------------------------------------------------------------
    def on_step(self, t, step, rate):
        self.log(t, md.EV_STEP_CHANGED, 0, step, rate, 0)

    def on_timed(self, t, dose_nl, dur):
        dose_ng = rxmod.nl_to_ng(dose_nl, self._drug_conc())
        reason = self._guard(t, dose_ng, dose_nl, dur)
        if reason == OK and self.reservoir_nl < dose_nl:
            reason = RESERVOIR
        if reason != OK:
            self.log(t, md.EV_BOLUS_DENIED, 0, reason, KIND_TIMED, dose_nl)
            self.eta_dirty = True
            return
        self.engine.start_bolus(t, dose_nl, dur, KIND_TIMED)
        self.log(t, md.EV_BOLUS_STARTED, 0, dose_nl, KIND_TIMED, dur)

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

    # -- prescription and drug ----------------------------------------------------------
    def _drug_conc(self):
        # During a bridge the patient still receives the catheter's old concentration.
        return self.bridge_conc if self.bridge_nl > 0 else self.conc

    def _plan_rx(self):
        # The prescription whose volume rate runs: during a drug change's bridge the old
        # drug's, whatever was programmed for the new one since; when the old drug had
        # none (never programmed, or stopped), the new one's, judged by the old drug's
        # limits while the old drug leaves the catheter (clinic.program).
        if self.bridge_drug and self.bridge_rx is not None:
            return self.bridge_rx
        return self.rx

    def _tip_drug(self):
        # the drug now leaving the catheter
        if self.bridge_drug:
            return self.bridge_drug
        return self.rx.drug if self.rx is not None else self.drug

    def _guard(self, now, dose_ng=0, dose_nl=0, duration_s=0):
        """The dose guard's answer (gate.OK or the limit) for a dose starting now, or with
        dose_ng = 0 for the plan as it stands (guard.py)."""
        rx = self._plan_rx()
        d = self.druglib.get(self._tip_drug()) if rx is not None else None
        if d is None:
            return NOT_CONFIGURED
        # a change of drug whose old drug had no prescription: the new plan pushes at
        # most the catheter's old fill of the old drug (by its limits) before its own
        cap = self.bridge_nl if self.bridge_drug and self.bridge_rx is None else 0
        return self.guard.check(now, d, self._drug_conc(), dose_ng, dose_nl, duration_s, cap)

    def use_threshold(self, now):
        """The low-reservoir threshold of the prescription in force (the board's without
        one), and the alarm as it now stands against it. True if the threshold moved."""
        rx = self.rx
        old = self.low_nl
        self.low_nl = rx.low_nl if rx is not None and rx.low_nl else self.board_low_nl
        if self.reservoir_nl < self.low_nl:
            self.alarms.raise_(LOW_RESERVOIR, now, self.reservoir_nl)
        else:
            self.alarms.clear(LOW_RESERVOIR, now, self.reservoir_nl)
        self.eta_dirty = True
        return self.low_nl != old

    def drug_per_stroke(self):
        """ng_q + ng_r / 1e6: the drug one stroke delivers at the concentration now
        leaving the catheter."""
        self.ng_q, self.ng_r = divmod(self.stroke_nl * self._drug_conc(), 1_000_000)

    def load_plan(self, now):
        # Volume plan from the drug plan at the concentration now leaving the catheter.
        rx = self._plan_rx()
        conc = self._drug_conc()
        if self.bridge_drug and self.bridge_rx is None:
            conc = rx.conc_ng_ml  # the new drug's plan, in its own volume
        rates = [rxmod.ng_to_nl(r, conc) for r in rx.step_rate_ng_day]
        timed = []
        for i in range(len(rx.timed_start_s)):
            timed.append(
                (rx.timed_start_s[i], rx.timed_duration_s[i], rxmod.ng_to_nl(rx.timed_dose_ng[i], conc))
            )
        self.engine.load(rx.step_start_s, rates, timed, now, self.offset + self.wall_delta)
        self.drug_per_stroke()
        self.eta_dirty = True
        self.changed = True

    def end_bridge(self, now):
        """The old fill is out of the catheter (pushed, or gone with a new catheter)."""
        self.bridge_nl = 0
        self.bridge_conc = 0
        if self.bridge_drug:
            # the new drug reaches the tip: its own prescription, or none at all
            self.bridge_drug = 0
            self.bridge_rx = None
            # one drug's ng say nothing of another's limits: its history starts here (the
            # patient's bolus count and lockout stay: they are the patient's)
            self.rolling.clear()
            if self.rx is None or self.rx.drug != self.drug:
                self.rx = None
                self.engine.unload(now)
                self.use_threshold(now)
                self.alarms.raise_(RX_INVALID, now, self.reservoir_nl)
                self._update_mode(now)
                return
        if self.rx is not None:
            self.load_plan(now)

    def patient_bolus(self, now, who):
        """The patient's button. Returns the deny reason (gate.OK when started)."""
        rx = self.rx
        reason = OK
        if self.mode != RUNNING:
            reason = NOT_RUNNING
        elif rx is None or rx.pb_max_per_day == 0 or self.bridge_drug:
            # (during a drug change's bridge the catheter holds a drug no bolus is for)
            reason = NOT_CONFIGURED
        elif self.engine.bolus_active(KIND_PATIENT):
            reason = IN_PROGRESS
        else:
            reason = self.gate.check(now, rx.pb_lockout_s, rx.pb_max_per_day)
        dose_nl = 0
        if reason == OK:
            dose_nl = rxmod.ng_to_nl(rx.pb_dose_ng, self._drug_conc())
            reason = self._guard(now, rx.pb_dose_ng, dose_nl, rx.pb_duration_s)
            if reason == OK and self.reservoir_nl < dose_nl:
                reason = RESERVOIR
        if reason != OK:
            self._denied(now, who, reason, dose_nl or self._pb_dose_nl())
            return reason
        self.engine.advance(now)
        self.engine.start_bolus(now, dose_nl, rx.pb_duration_s, KIND_PATIENT)
        self.gate.record(now)
        self.log(now, md.EV_BOLUS_STARTED, who, dose_nl, KIND_PATIENT, rx.pb_duration_s)
        self.eta_dirty = True
        self.changed = True
        return OK

    def _flush_counts(self, now):
        # the counted denials and bad MACs whose window has closed go to the log
        if self.den_n and now - self.den_t >= md.DENIAL_WINDOW_S:
            self.flush_denials(now)
        a = self.auth
        if a.bad_macs and now - a.bad_t >= md.AUTH_FAILURE_WINDOW_S:
            a.flush_bad(self, now)

    def _pb_dose_nl(self):
        # the patient bolus asked for, nL (0: none configured): a denial records it
        rx = self.rx
        if rx is None or not rx.pb_max_per_day or not self.conc:
            return 0
        return rxmod.ng_to_nl(rx.pb_dose_ng, self.conc)

    def _denied(self, now, who, reason, dose_nl):
        # a flood of the same denial is one record per window (with its count), so the
        # patient's button cannot fill the log
        if self.den_n and reason == self.den_reason and who == self.den_who and \
                now - self.den_t < md.DENIAL_WINDOW_S:
            self.den_n += 1
            return
        self.flush_denials(now)
        self.log(now, md.EV_BOLUS_DENIED, who, reason, KIND_PATIENT, dose_nl, 1)
        self.den_reason = reason
        self.den_who = who
        self.den_t = now
        self.den_n = 1

    def flush_denials(self, now):
        """Log the identical denials counted after the window's first (if any)."""
        k = self.den_n - 1
        self.den_n = 0
        if k > 0:
            self.log(now, md.EV_BOLUS_DENIED, self.den_who, self.den_reason, KIND_PATIENT,
                     self._pb_dose_nl(), k)

    def clinician_bolus(self, now, who, dose_ng, duration_s):
        if self.mode != RUNNING or self.rx is None:
            self.log(now, md.EV_BOLUS_DENIED, who, NOT_RUNNING, KIND_CLINICIAN, 0)
            return md.NACK_INVALID, NOT_RUNNING
        if self.bridge_drug:
            self.log(now, md.EV_BOLUS_DENIED, who, NOT_CONFIGURED, KIND_CLINICIAN, 0)
            return md.NACK_LIMIT, NOT_CONFIGURED
        if dose_ng <= 0 or not 0 < duration_s <= md.MAX_BOLUS_DURATION_S:
            return md.NACK_INVALID, md.FIELD_DOSE
        if self.engine.bolus_active(KIND_CLINICIAN):
            return md.NACK_BUSY, IN_PROGRESS
        dose_nl = rxmod.ng_to_nl(dose_ng, self._drug_conc())
        reason = self._guard(now, dose_ng, dose_nl, duration_s)
        if reason == OK and self.reservoir_nl < dose_nl:
            reason = RESERVOIR
        if reason != OK:
            self.log(now, md.EV_BOLUS_DENIED, who, reason, KIND_CLINICIAN, dose_nl)
            return md.NACK_LIMIT, reason
        self.engine.advance(now)
        self.engine.start_bolus(now, dose_nl, duration_s, KIND_CLINICIAN)
        self.log(now, md.EV_BOLUS_STARTED, who, dose_nl, KIND_CLINICIAN, duration_s)
        self.eta_dirty = True
        self.changed = True
        return 0, 0

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
        if self.rx is not None:
            reason = self._guard(now)
            if reason != OK:
                return md.NACK_LIMIT, reason
        self.engine.advance(now, False)
        self.set_mode(now, RUNNING)  # HALTED while a critical alarm is raised
        self.log(now, md.EV_RESUMED, who, 0, 0, 0)
        self.eta_dirty = True
        self.changed = True
        return 0, 0

    def fault(self, now, code):
        """An unexpected error in the application: motor off, safe state, logged."""
        try:
            self.set_mode(now, SAFE)
        finally:
            self.alarms.raise_(INTERNAL_FAULT, now, self.reservoir_nl, code)
            self.log(now, md.EV_FAULT, 0, code, 0, 0)

    def ack_alarm(self, now, mask, who):
        """Silence the tones of the alarms in `mask`; returns the acknowledged mask. A
        volume discrepancy lasts until it is acknowledged: the clinician has seen it."""
        before = self.alarms.acked
        acked = self.alarms.ack(mask)
        disc = mask >> VOLUME_DISCREPANCY & 1 and self.alarms.active(VOLUME_DISCREPANCY)
        if acked != before or disc:
            # only an acknowledgement that silenced something is a record (a repeated
            # one, or one of nothing raised, changes nothing: no flood fills the log),
            # and it names what it silenced, not the mask asked (all bits: "every alarm")
            done = (acked & ~before) | (1 << VOLUME_DISCREPANCY if disc else 0)
            self.log(now, md.EV_ALARM_ACKNOWLEDGED, who, done, 0, 0)
        if disc:
            self.alarms.clear(VOLUME_DISCREPANCY, now, self.reservoir_nl)
        return acked

    def maintenance(self, now, who):
        """Stop for maintenance: suspended if delivering, motor off, the firmware exits
        to the REPL (main.py)."""
        if self.mode in (RUNNING, HALTED):
            self.suspend(now, who)
        self.hw.motor.off()
        self.exit_requested = True

    # -- the link (commands.py) ------------------------------------------------------
    def command(self, frame, now):
        """Handle one CRC-checked frame from the link; returns a REPLY frame or None."""
        return commands.command(self, frame, now)

    def reply(self, now, cmd_id, typ, result, detail, body_len):
        """The REPLY frame, its body (body_len bytes) already in place after the head,
        signed with reply_key and bound to reply_bind (commands.py sets both)."""
        struct.pack_into(md.REPLY_HEAD_FMT, self.rtx.buf, md.HDR_SIZE, cmd_id, typ, result,
                         detail)
        return self.rtx.finish_reply(md.T_REPLY, self._next_seq(), now + self.wall_delta,
                                     md.REPLY_HEAD_SIZE + body_len, self.reply_key,
                                     self.reply_bind)

    # -- persistence (store.py) -------------------------------------------------------
    def save(self, now):
        """Write the snapshot (atomic). Allocates: never called per stroke."""
        self.dirty = False
        self.saved_t = now
        import snapshot  # only a pump with a store saves one

        self.store.save_state(snapshot.pack(self, now))

    def snapshot(self, now):
        """The snapshot (snapshot.py) as bytes."""
        import snapshot

        return snapshot.pack(self, now)
