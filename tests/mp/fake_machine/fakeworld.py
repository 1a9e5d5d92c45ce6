# The simulated world behind the fake `machine`, `rp2` and `time` modules.
#
# A board module runs unchanged on the MicroPython unix port over these fakes. Time is
# virtual (integer nanoseconds) and only moves when the code under test sleeps, waits
# in asyncio, or runs a PIO state machine; everything the board does to the hardware
# is recorded with its time in `world.log` as (t_ns, kind, name, value):
#   ("pin", id, level)      every pin write (by the CPU or a PIO state machine)
#   ("ext", id, level)      a level driven from outside (a sensor)
#   ("pwm", id, (freq, duty))
#   ("adc", id, raw)        every ADC conversion
#   ("wdt", "feed"|"start", timeout_ms)
#   ("uart", id, bytes)     bytes the board wrote
#   ("rtc", "set", board_s)
# A Mechanism (the stepper driver, rotor and encoder) reacts to STEP/DIR/ENABLE and
# drives the feedback pin; it also checks the driver's timing rules as they happen.
import sys

INF = 1 << 62
# Where the board's time.time() counts from (Unix seconds), as measured on the official
# firmware (../shared/rp2/README.md): rp2 1970, esp32 2000. Set by reset() per profile.
EPOCHS = {"rp2": 0, "esp32": 946684800}
BOARD_EPOCH = EPOCHS["rp2"]


class WatchdogBite(BaseException):
    """The hardware watchdog expired: on a board, an instant reset."""


class BoardReset(BaseException):
    """machine.reset() was called."""


class PinState:
    """One GPIO: what the MCU drives, what the outside drives, pulls and IRQs."""

    def __init__(self, world, pid):
        self.world = world
        self.id = pid
        self.mode = None  # "in", "out"
        self.pull = None  # "up", "down"
        self.out = 0
        self.ext = None  # level forced from outside, None = not driven
        self.handler = None
        self.trigger = 0
        self.obj = None  # the Pin object handed to IRQ handlers
        self.last_change = None

    def level(self):
        if self.mode == "out":
            return self.out
        if self.ext is not None:
            return self.ext
        return 1 if self.pull == "up" else 0


class World:
    def __init__(self, profile):
        self.profile = profile  # "rp2" or "esp32": which API details the fakes have
        self.now_ns = 0
        self.events = []  # [t_ns, seq, fn], sorted
        self.seq = 0
        self.log = []
        self.record = True
        self.pins = {}
        self.sms = []
        self.regs = {}  # machine.mem32
        self.rtc_base = 0  # board-epoch seconds at now_ns == 0
        self.reset_cause = 1  # PWRON_RESET on both ports
        self.bootsel = 0
        self.adc_pin_mv = {}  # pin id -> millivolts at the ADC pin
        self.wdt_timeout_ns = 0
        self.wdt_fed = 0
        self.bites = []
        self.uarts = {}
        self.mech = None
        self.cpu_write_ns = 0  # CPU time a Pin write takes (a slow interpreter)
        self.ms_base = 0  # tick counter value at virtual time 0 (see reset())
        self.violations = []  # timing rules broken (the mechanism's checks)

    # -- time and events -----------------------------------------------------------
    def at(self, t_ns, fn):
        """Run fn() when virtual time reaches t_ns."""
        self.seq += 1
        ev = [t_ns, self.seq, fn]
        ev_list = self.events
        i = len(ev_list)
        while i and (ev_list[i - 1][0], ev_list[i - 1][1]) > (t_ns, self.seq):
            i -= 1
        ev_list.insert(i, ev)
        return ev

    def cancel(self, ev):
        if ev in self.events:
            self.events.remove(ev)

    def advance_to(self, t):
        """Move virtual time to t, running due events and PIO instructions in order."""
        while True:
            ev_t = self.events[0][0] if self.events else INF
            best = None
            for sm in self.sms:
                nt = sm.next_t
                if nt is not None and (best is None or nt < best.next_t):
                    best = sm
            if best is not None and best.next_t < ev_t:
                if best.next_t > t:
                    break
                self.now_ns = best.next_t
                self._check_wdt()
                best.step()
            else:
                if ev_t > t:
                    break
                self.now_ns = ev_t
                self._check_wdt()
                self.events.pop(0)[2]()
        if t > self.now_ns:
            self.now_ns = t
        self._check_wdt()

    def sleep_ns(self, dt):
        self.advance_to(self.now_ns + (dt if dt > 0 else 0))

    def next_event_t(self):
        t = self.events[0][0] if self.events else INF
        for sm in self.sms:
            if sm.next_t is not None and sm.next_t < t:
                t = sm.next_t
        return t

    def _check_wdt(self):
        if self.wdt_timeout_ns and self.now_ns - self.wdt_fed > self.wdt_timeout_ns:
            t = self.wdt_fed + self.wdt_timeout_ns
            self.bites.append(t)
            self.wdt_timeout_ns = 0  # the chip resets: this watchdog is gone
            raise WatchdogBite("watchdog expired at %d ns (last fed %d ns)" % (t, self.wdt_fed))

    def rec(self, kind, name, value):
        if self.record:
            self.log.append((self.now_ns, kind, name, value))

    def rtc_s(self):
        return self.rtc_base + self.now_ns // 1_000_000_000

    def set_rtc(self, board_s):
        self.rtc_base = board_s - self.now_ns // 1_000_000_000

    # -- pins --------------------------------------------------------------------------
    def pin(self, pid):
        p = self.pins.get(pid)
        if p is None:
            p = self.pins[pid] = PinState(self, pid)
        return p

    def level(self, pid):
        return self.pin(pid).level()

    def write(self, pid, v, src="cpu"):
        """The MCU (or a PIO state machine) drives pin pid to v."""
        p = self.pin(pid)
        old = p.level()
        p.out = 1 if v else 0
        self.rec("pin", pid, p.out)
        if p.mode == "out" and old != p.out:
            p.last_change = self.now_ns
            if self.mech is not None:
                self.mech.on_pin(pid, p.out)
            self._irq(p, old, p.out)
        if src == "cpu" and self.cpu_write_ns:
            self.sleep_ns(self.cpu_write_ns)

    def drive(self, pid, v):
        """The outside world (a sensor, a switch) drives pin pid to v (None: let go)."""
        p = self.pin(pid)
        old = p.level()
        p.ext = v
        self.rec("ext", pid, v)
        new = p.level()
        if old != new:
            p.last_change = self.now_ns
            self._irq(p, old, new)

    def _irq(self, p, old, new):
        import machine

        if p.handler is None:
            return
        if (new and p.trigger & machine.Pin.IRQ_RISING) or (not new and p.trigger & machine.Pin.IRQ_FALLING):
            p.handler(p.obj)

    # -- what a test reads back ---------------------------------------------------------
    def writes(self, pid, kind="pin"):
        return [(t, v) for (t, k, n, v) in self.log if k == kind and n == pid]

    def edges(self, pid, level=1):
        """Times at which pin pid changed to `level` (from the log)."""
        out = []
        prev = None
        for t, k, n, v in self.log:
            if k == "pin" and n == pid:
                if v == level and prev is not None and prev != level:
                    out.append(t)
                prev = v
        return out

    def feeds(self):
        return [t for (t, k, n, v) in self.log if k == "wdt" and n == "feed"]

    # -- asyncio's wait: jump virtual time instead of blocking ---------------------------
    def wait_io(self, dt_ms, original, io_map):
        # Queue the tasks whose streams are ready. The unix port's poll() sleeps 1 ms
        # whenever it polls a Python stream object, so look at the fakes' readiness
        # first and only call it when something is ready (or a real fd is waited on).
        # dt_ms < 0: no task is due, so (as the real poll) return only once a stream is.
        while True:
            for entry in io_map.values():
                s = entry[2]
                mask = (1 if entry[0] is not None else 0) | (4 if entry[1] is not None else 0)
                if not hasattr(s, "ioctl") or s.ioctl(3, mask):
                    original(0)
                    return
            if dt_ms == 0:
                return
            nxt = self.next_event_t()
            if dt_ms > 0:
                t = self.now_ns + dt_ms * 1_000_000
                self.advance_to(t if t < nxt else nxt)
                return
            if nxt >= INF:
                raise RuntimeError("fake world: every task waits on a stream and nothing is scheduled")
            self.advance_to(nxt)


class Mechanism:
    """A stepper driver, its motor and the feedback encoder on the motor shaft.

    On each STEP rising edge with ENABLE active the rotor moves one microstep (unless
    `stalled`); the encoder toggles its pin every microsteps_per_rev / edges_per_rev
    microsteps. The driver's datasheet rules are checked as the pins move and any
    breach is appended to world.violations: STEP high or low shorter than min_pulse_ns,
    a STEP edge while ENABLE is off, DIR changed less than dir_setup_ns before a STEP.
    """

    def __init__(self, world, step, dir_, en, feedback, en_active=0, forward=1,
                 microsteps_per_rev=3200, edges_per_rev=100, min_pulse_ns=1900, dir_setup_ns=650):
        self.w = world
        self.step, self.dir, self.en, self.fb = step, dir_, en, feedback
        self.en_active = en_active
        self.forward = forward
        self.usteps_rev = microsteps_per_rev
        self.edges_rev = edges_per_rev
        self.min_pulse = min_pulse_ns
        self.dir_setup = dir_setup_ns
        self.pos = 0  # microsteps turned (forward positive)
        self.stalled = False
        self.steps_ignored = 0  # STEP edges the driver got with ENABLE off
        self.enc_phase = 0
        self.last_rise = None
        self.last_fall = None
        world.pin(feedback).ext = 1  # the encoder output idles high (slot open)

    def on_pin(self, pid, v):
        w = self.w
        if pid == self.step:
            if v:
                if self.last_fall is not None and w.now_ns - self.last_fall < self.min_pulse:
                    w.violations.append("STEP low %d ns at %d" % (w.now_ns - self.last_fall, w.now_ns))
                self.last_rise = w.now_ns
                self._step()
            else:
                if self.last_rise is not None and w.now_ns - self.last_rise < self.min_pulse:
                    w.violations.append("STEP high %d ns at %d" % (w.now_ns - self.last_rise, w.now_ns))
                self.last_fall = w.now_ns

    def _step(self):
        w = self.w
        if w.level(self.en) != self.en_active:
            self.steps_ignored += 1
            w.violations.append("STEP with ENABLE off at %d" % w.now_ns)
            return
        d = w.pin(self.dir)
        if d.last_change is not None and w.now_ns - d.last_change < self.dir_setup:
            w.violations.append("DIR changed %d ns before STEP" % (w.now_ns - d.last_change))
        if self.stalled:
            return
        self.pos += 1 if w.level(self.dir) == self.forward else -1
        phase = (self.pos * self.edges_rev) // self.usteps_rev
        if phase != self.enc_phase:
            self.enc_phase = phase
            w.drive(self.fb, phase & 1 ^ 1)


world = None


def reset(profile):
    """A new world (every test starts from one); fakes always use the current one."""
    global world, BOARD_EPOCH
    world = World(profile)
    BOARD_EPOCH = EPOCHS[profile]
    m = sys.modules.get("machine")
    if m is not None and hasattr(m, "profile"):
        m.profile(profile)  # the fake's constants: the port's
    import utime

    # asyncio's C task queue stamps new tasks with the real tick counter: starting the
    # virtual ticks a minute ahead of it keeps every new task due at once, however long
    # the test itself takes in real time before virtual time moves
    world.ms_base = utime.ticks_ms() + 60_000
    return world


def install(board, mpy_dir=None):
    """Put the fakes in place for board "rp2_pico" or "esp32": the board's directory,
    boards/common and the fakes first on sys.path (or `mpy_dir`, holding all of them
    compiled), virtual time as `time`, and asyncio waiting in virtual time. Call before
    importing the board or asyncio."""
    reset("rp2" if board == "rp2_pico" else "esp32")
    dirs = (mpy_dir,) if mpy_dir else ("tests/mp/fake_machine", "boards/common", "boards/" + board)
    for p in dirs:
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
    import machine

    machine.profile(world.profile)
    import vtime

    sys.modules["time"] = vtime
    import asyncio.core as core

    core.ticks = vtime.ticks_ms
    original = core._io_queue.wait_io_event

    def wait(dt):
        world.wait_io(dt, original, core._io_queue.map)

    core._io_queue.wait_io_event = wait
