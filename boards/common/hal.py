# Board support shared by the real boards (boards/rp2_pico, boards/esp32).
#
# docs/DESIGN.md ("Hardware interface") fixes what `board.build()` hands the firmware.
# Everything here is the part of that interface that is the same on every MicroPython
# board: provisioning, the clock over the RTC, the battery curve, the buzzer, the
# watchdog, the occlusion input, the link, storage checks and the object `build()`
# returns. What differs (the pulse train, reset causes, the ADC, the safe-boot input)
# lives in each board's board.py, and every pin number and constant in its pins.py.
#
# Nothing here touches hardware at import: classes get their pins and peripherals
# from the board's build().
import asyncio
import json
import os
import select
import sys
import time
from binascii import unhexlify

import machine
import micropython
import msgdefs as md

# The Theca epoch (2020-01-01T00:00:00Z) as a time tuple: time.mktime() gives it in the
# board's own epoch (1970-01-01 on the official rp2 firmware, 2000-01-01 on esp32), so
# the conversion is right whatever epoch the port was built with.
_EPOCH_TUPLE = (2020, 1, 1, 0, 0, 0, 0, 0)
# An RTC that reads before this (device seconds) was never set: rp2 starts its RTC at
# 2021-01-01 on every hardware reset, esp32 at 2000-01-01 after a power loss. Device
# time must stay >= 0 (u32 on the wire), so an unset clock starts here until SET_TIME.
UNSET_FLOOR = 31_622_400  # 2021-01-01T00:00:00Z in device seconds
_REANCHOR_MS = 600_000  # re-base the tick counter every 10 min: ticks_diff never nears 2**29 ms
# provision.json "motor" keys a deployment may override (the rest of MOTOR is wiring)
MOTOR_KEYS = ("microsteps_per_stroke", "step_hz", "feedback_min_edges")


class ProvisionError(Exception):
    """provision.json is missing or wrong: the firmware cannot start (message says why)."""


class StorageError(Exception):
    """The filesystem at fs_root is not a usable littlefs2 filesystem."""


class SafeBoot(Exception):
    """The safe-boot input was held at boot: the firmware does not start, the REPL does."""


# -- provisioning --------------------------------------------------------------------


def _int_field(p, name, lo, hi, default=None):
    v = p.get(name, default)
    if v is None:
        raise ProvisionError("provision.json: '%s' is missing" % name)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProvisionError("provision.json: '%s' must be an integer %d..%d, got %r" % (name, lo, hi, v))
    return v


def _key_field(keys, role):
    v = keys.get(role) if isinstance(keys, dict) else None
    if not isinstance(v, str) or len(v) != 64:
        raise ProvisionError("provision.json: keys.%s must be 64 hex digits (32 bytes)" % role)
    try:
        return unhexlify(v)
    except ValueError:
        raise ProvisionError("provision.json: keys.%s is not hex" % role)


def _extra(p):
    # the optional board settings of provision.json: the link and the motor
    extra = {}
    link = p.get("link")
    if link is not None:
        if link not in ("usb", "uart"):
            raise ProvisionError("provision.json: 'link' must be \"usb\" or \"uart\", got %r" % (link,))
        extra["link"] = link
    motor = p.get("motor")
    if motor is not None:
        if not isinstance(motor, dict):
            raise ProvisionError("provision.json: 'motor' must be an object")
        for name in motor:
            if name not in MOTOR_KEYS:
                raise ProvisionError("provision.json: motor.%s is not a setting (%s)" % (name, ", ".join(MOTOR_KEYS)))
        extra["motor"] = motor
    return extra


def load_provision(root, board_name):
    """Read and check `<root>provision.json` (docs/DESIGN.md, "Provisioning").

    Returns (info, keys, extra): info as the firmware's hw.info, keys {role: 32 bytes},
    extra the optional board settings ("link", "motor"). Raises ProvisionError with a
    message naming the file and the field.
    """
    path = root + "provision.json"
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ProvisionError(
            "%s not found: this board has no serial and no keys. Run `theca flash --board %s` "
            "(it writes provision.json next to the firmware) or copy one with "
            "`mpremote cp provision.json :%s`" % (path, board_name, path)
        )
    try:
        p = json.loads(text)
    except ValueError:
        raise ProvisionError("%s is not valid JSON" % path)
    if not isinstance(p, dict):
        raise ProvisionError("%s must hold a JSON object" % path)
    serial = p.get("serial")
    if not isinstance(serial, str) or not 1 <= len(serial) <= 12 or not all(" " < c <= "~" for c in serial):
        raise ProvisionError("provision.json: 'serial' must be 1..12 printable ASCII characters")
    keys = p.get("keys")
    k = {md.ROLE_CLINICIAN: _key_field(keys, "clinician"), md.ROLE_PATIENT: _key_field(keys, "patient")}
    # stroke_nl is a u16 in DEVICE_INFO; volumes stay below 2**30 (small ints on the board)
    stroke = _int_field(p, "stroke_nl", 1, md.MAX_STROKE_NL)
    cap = _int_field(p, "capacity_nl", stroke, md.MAX_CAPACITY_NL)
    info = {
        "serial": serial.encode(),
        "board": board_name,
        "stroke_nl": stroke,
        "capacity_nl": cap,
        "catheter_nl": _int_field(p, "catheter_nl", 0, cap),
        "low_reservoir_nl": _int_field(p, "low_reservoir_nl", 0, cap, md.DEFAULT_LOW_RESERVOIR_NL),
        # the mechanism's fastest rate (1000 uL/h); a day at it stays a small int in nL
        "max_rate_nl_h": _int_field(p, "max_rate_nl_h", 1, md.MAX_RATE_BOUND_NL_H, md.DEFAULT_MAX_RATE_NL_H),
        # the slowest basal rate it keeps up (48 uL/day); a day at the fastest bounds it
        "min_rate_nl_day": _int_field(p, "min_rate_nl_day", 0, md.MAX_RATE_BOUND_NL_H * 24,
                                      md.DEFAULT_MIN_RATE_NL_DAY),
        # the fill at first boot: a board is provisioned as a pump just filled (as the twin)
        "reservoir_nl": _int_field(p, "reservoir_nl", 0, cap, cap),
    }
    return info, k, _extra(p)


def motor_settings(defaults, extra):
    """The board's MOTOR data with provision.json's overrides applied and checked."""
    m = dict(defaults)
    m.update(extra.get("motor", {}))
    n = m["microsteps_per_stroke"]
    if not isinstance(n, int) or not 1 <= n <= 65536:
        raise ProvisionError("provision.json: motor.microsteps_per_stroke must be 1..65536, got %r" % (n,))
    hz = m["step_hz"]
    # the driver's minimum STEP high and low times bound the step rate from above
    hz_max = 1_000_000_000 // (2 * m["min_pulse_ns"])
    if not isinstance(hz, int) or not 1 <= hz <= hz_max:
        raise ProvisionError("provision.json: motor.step_hz must be 1..%d for this driver, got %r" % (hz_max, hz))
    e = m["feedback_min_edges"]
    if not isinstance(e, int) or not 1 <= e <= n:
        raise ProvisionError("provision.json: motor.feedback_min_edges must be 1..microsteps_per_stroke, got %r" % (e,))
    return m


# -- storage -------------------------------------------------------------------------


def check_storage(root):
    """Check that `root` is on a littlefs2 filesystem; returns its free bytes.

    littlefs2 is copy-on-write: a power cut during a write leaves the old or the new
    file, never a torn one, which store.py relies on. FAT gives no such guarantee, so a
    FAT root is refused rather than trusted with the pump's state.
    """
    try:
        import vfs  # MicroPython >= 1.23

        mounts = vfs.mount()
    except (ImportError, AttributeError, TypeError):
        mounts = None  # an older MicroPython cannot list mounts: the type is not checked
    if mounts is not None:
        best, best_len = None, -1
        for fs, mp in mounts:
            mpd = mp.rstrip("/") + "/"
            if (root + "/").startswith(mpd) and len(mpd) > best_len:
                best, best_len = fs, len(mpd)
        kind = type(best).__name__ if best is not None else "nothing"
        if kind != "VfsLfs2":
            raise StorageError(
                "%s is on %s, not littlefs2: reformat it as littlefs2 (docs/hardware.md, "
                "'Storage'); the pump's state needs a power-fail-safe filesystem" % (root, kind)
            )
    st = os.statvfs(root)
    return st[0] * st[4]  # f_bsize * f_bavail


def require_file(path, what):
    try:
        os.stat(path)
    except OSError:
        raise ProvisionError("%s not found: %s" % (path, what))


# -- time ----------------------------------------------------------------------------


def epoch_offset():
    """Seconds from the board's time epoch to the Theca epoch (2020-01-01)."""
    return time.mktime(_EPOCH_TUPLE)


def rtc_tuple(board_s):
    """machine.RTC.datetime() tuple for board-epoch seconds `board_s`."""
    t = time.gmtime(board_s)  # (year, month, mday, hour, min, sec, wday, yday[, ...])
    return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)


class Clock:
    """Device time (seconds since 2020-01-01Z) from the board's RTC.

    The RTC is read once here and written by set() (at boot only); between the two, the millisecond
    tick counter carries the time, so now() allocates nothing (time.time() on a board
    can exceed 2**30 and allocate) and sleep_until() is exact to the millisecond. The
    tick counter and the RTC run from the same crystal on both boards.
    """

    def __init__(self, rtc):
        self.rtc = rtc
        self.off = epoch_offset()
        t = time.time() - self.off
        if t < UNSET_FLOOR:
            # never set since a power loss: start at the floor, never below 0
            t = UNSET_FLOOR
            rtc.datetime(rtc_tuple(t + self.off))
        self._base = t
        self._ms0 = time.ticks_ms()

    def now(self):
        el = time.ticks_diff(time.ticks_ms(), self._ms0)
        if el >= _REANCHOR_MS:
            s = el // 1000
            self._base += s
            self._ms0 = time.ticks_add(self._ms0, s * 1000)
            el -= s * 1000
        return self._base + el // 1000

    def set(self, t):
        """Move the clock on (at boot, past the stored state: the firmware's monotonic
        clock never goes back); writes the RTC so a reset keeps it. SET_TIME never calls
        this: it sets only the pump's wall clock."""
        self.rtc.datetime(rtc_tuple(t + self.off))
        self._base = t
        self._ms0 = time.ticks_ms()

    def sleep_until(self, t):
        """Awaitable: sleep until device time t (asyncio's allocation-free sleep)."""
        dt = (t - self._base) * 1000 - time.ticks_diff(time.ticks_ms(), self._ms0)
        return asyncio.sleep_ms(dt if dt > 0 else 0)

    def skip_to(self, t):
        """A board's time passes by itself: never skipped (the task sleeps)."""
        return False


# -- sensors and outputs -------------------------------------------------------------


class Occlusion:
    """A pressure switch (or a pressure sensor behind a comparator) on the catheter
    line: its `active` level means the line is blocked. The pin is read directly, so
    the alarm clears by itself when the pressure falls."""

    def __init__(self, pin, active):
        self.pin = pin
        self.active = active

    def blocked(self):
        return self.pin.value() == self.active


@micropython.native
def days_from_curve(curve, mv):
    """Days left for a battery at `mv` millivolts, interpolated linearly in `curve`
    (pairs of (mV, days), mV decreasing). Above the first point: its days; below the
    last point: its days (0 on every board's curve: end of service)."""
    if mv >= curve[0][0]:
        return curve[0][1]
    for i in range(1, len(curve)):
        v1, d1 = curve[i]
        if mv >= v1:
            v0, d0 = curve[i - 1]
            return d1 + (d0 - d1) * (mv - v1) // (v0 - v1)
    return curve[-1][1]


class Battery:
    """Battery voltage by ADC -> days left, through the board's curve (pins.BATTERY).

    `read_mv()` returns the ADC pin's millivolts; the divider scales it to the cell.
    Each reading is the median of `samples` conversions (one spike cannot raise an
    alarm), and the voltage used only goes down unless it rises by `recover_mv` (a
    charged or replaced cell): a cell that recovers a little at rest does not make the
    battery alarms chatter around their thresholds.
    """

    def __init__(self, read_mv, cfg):
        self.read_mv = read_mv
        self.num = cfg["r_top_k"] + cfg["r_bottom_k"]
        self.den = cfg["r_bottom_k"]
        self.curve = cfg["curve"]
        self.samples = cfg["samples"]
        self.recover_mv = cfg["recover_mv"]
        self._buf = [0] * self.samples
        self.mv = None  # the cell voltage in use

    def cell_mv(self):
        """One median-filtered reading of the cell's voltage in mV."""
        b = self._buf
        for i in range(self.samples):
            b[i] = self.read_mv()
        b.sort()
        return b[self.samples // 2] * self.num // self.den

    def days_left(self, now):
        mv = self.cell_mv()
        if self.mv is None or mv < self.mv or mv >= self.mv + self.recover_mv:
            self.mv = mv
        return days_from_curve(self.curve, self.mv)


class Buzzer:
    """A piezo buzzer on a PWM pin.

    tone(freq, ms) starts the tone and returns at once: a one-shot machine.Timer ends
    it, so the asyncio loop is never blocked for the tone's length (main.py's alarm
    task awaits between the notes of a two-tone). A new tone replaces one still playing.
    """

    def __init__(self, pwm, timer, duty_u16):
        self.pwm = pwm
        self.timer = timer
        self.duty = duty_u16
        self.playing = False
        self._end = self._stop  # bound once: arming the timer allocates no new method
        pwm.duty_u16(0)

    def tone(self, freq_hz, ms):
        if ms <= 0:
            self.off()
            return
        # piezo transducers are useless outside ~20 Hz..20 kHz, and PWM has limits too
        self.pwm.freq(20 if freq_hz < 20 else 20_000 if freq_hz > 20_000 else freq_hz)
        self.pwm.duty_u16(self.duty)
        self.playing = True
        self.timer.init(mode=machine.Timer.ONE_SHOT, period=ms, callback=self._end)

    def _stop(self, _t):
        self.pwm.duty_u16(0)
        self.playing = False

    def off(self):
        self.timer.deinit()
        self._stop(None)


class Watchdog:
    """machine.WDT, fed by main.py's watchdog task every `period_s` (< the timeout).

    Once started a hardware watchdog cannot be stopped. When the firmware hands the
    board back to the REPL (MAINTENANCE), `hand_over()` keeps feeding it from a
    periodic timer, so the REPL is not reset under the user's hands.
    """

    def __init__(self, timeout_ms, period_s, timer):
        if period_s * 1000 * 2 > timeout_ms:
            # main.py's sleep can run up to a second late and a stroke blocks briefly:
            # half the timeout is the most a feeding period may take
            raise ValueError("watchdog: period_s %d too long for a %d ms timeout" % (period_s, timeout_ms))
        self.timeout_ms = timeout_ms
        self.period_s = period_s
        self.timer = timer
        self.wdt = machine.WDT(timeout=timeout_ms)

    def feed(self):
        self.wdt.feed()

    def _feed_cb(self, _t):
        self.wdt.feed()

    def hand_over(self):
        self.timer.init(mode=machine.Timer.PERIODIC, period=self.period_s * 1000, callback=self._feed_cb)


# -- the link ------------------------------------------------------------------------


class StreamLink:
    """The protocol link over a byte stream: USB CDC (sys.stdin/stdout.buffer, the
    REPL's port) or a machine.UART.

    readinto() waits (asyncio, not blocking the loop) for one byte, then takes the
    bytes already waiting one at a time: a board's stdin.readinto(buf) blocks until
    len(buf) bytes have come, which would stall the pump on a short frame.
    """

    def __init__(self, inp, out):
        self.inp = inp
        self.out = out
        self.reader = asyncio.StreamReader(inp)
        self.poll = select.poll()
        self.poll.register(inp, select.POLLIN)
        self._one = bytearray(1)

    def _ready(self):
        for _ in self.poll.ipoll(0):
            return True
        return False

    async def readinto(self, buf):
        one = self._one
        while True:
            n = await self.reader.readinto(one)
            if n:  # a UART may wake with nothing to read (None): wait again
                break
        buf[0] = one[0]
        n = 1
        lim = len(buf)
        inp = self.inp
        while n < lim and self._ready():
            if not inp.readinto(one):
                break
            buf[n] = one[0]
            n += 1
        return n

    def write(self, mv):
        # UART.write may take part of the frame when its buffer is full: go on until
        # all of it is out (bounded, so a dead port cannot hang the pump).
        n = self.out.write(mv) or 0
        tries = 0
        while n < len(mv) and tries < 100:
            w = self.out.write(mv[n:])
            n += w or 0
            tries += 1
            if not w:
                time.sleep_ms(1)


def usb_link():
    """The link on the USB serial port (shared with the REPL; main.py disables Ctrl-C)."""
    return StreamLink(sys.stdin.buffer, sys.stdout.buffer)


# -- the bench -----------------------------------------------------------------------


def run_strokes(hw, n, gap_ms=100):
    """Bench calibration (docs/hardware.md, "Calibrating the stroke volume"): n strokes,
    one every gap_ms; stops at the first failed stroke. Returns (done, stalled,
    occluded). Use it at the REPL on hardware from board.bench()."""
    done = stalled = occluded = 0
    for _ in range(n):
        r = hw.motor.stroke()
        if r == 1:
            stalled += 1
            break
        if r == 2:
            occluded += 1
            break
        done += 1
        time.sleep_ms(gap_ms)
    hw.motor.off()
    return done, stalled, occluded


# -- what build() returns ------------------------------------------------------------


class Hardware:
    """What `board.build()` hands the firmware (docs/DESIGN.md, "Hardware interface").

    The board fills in the parts; this class adds the run loop's board side
    (until_done: heartbeat LED and the safe-boot input), fatal and close.
    """

    telemetry = None  # boards emit no telemetry log; the host pulls the event log
    status_period_s = 0

    def __init__(self, root, info, keys, boot_cause):
        self.fs_root = root
        self.info = info
        self.keys = keys
        # the boot's salt for link challenges: the chip's entropy (rp2: the ring
        # oscillator; esp32: its RNG), so no two boots issue the same challenges
        self.salt = os.urandom(8)
        self.druglib_path = root + "druglib.json"
        self._boot_cause = boot_cause
        self.failed = None
        # (type comments: the MicroPython code carries no annotations; pyright reads these)
        self.led = None  # type: machine.Pin | None
        self.safe_held = None  # function -> True while the safe-boot input is held
        self.safe_hold_s = 3
        self.clock = None  # type: Clock | None
        self.motor = None  # type: StepperMotor | None
        self.occlusion = None  # type: Occlusion | None
        self.battery = None  # type: Battery | None
        self.buzzer = None  # type: Buzzer | None
        self.wdt = None  # type: Watchdog | None
        self.link = None  # type: StreamLink | None
        # where a traceback may go for a person: never the binary link. A link on the USB
        # serial port is stdout itself, so there is none (fatal() keeps it on flash); a
        # board whose link is a UART sets sys.stdout here.
        self.console = None  # type: object | None
        # the board's way to the REPL after MAINTENANCE with its watchdog running (None:
        # the watchdog is fed from a timer, which a soft reset stops: see rp2_pico)
        self.maintenance = None

    def reset_cause(self):
        """Why the board booted: a msgdefs BOOT_* code (read before the watchdog started)."""
        return self._boot_cause

    async def until_done(self, sh):
        """Never returns on a board, unless the firmware asked to stop (MAINTENANCE sets
        sh.stop) or the safe-boot input is held for safe_hold_s seconds: then main.py
        stops the motor and returns to the REPL. Blinks the LED once a second meanwhile,
        so a glance tells the firmware is running."""
        held = 0
        led = self.led
        lit = 0
        while not sh.stop:
            if led is not None:
                lit ^= 1
                led.value(lit)
            if self.safe_held is not None and self.safe_held():
                held += 1
                if held >= self.safe_hold_s:
                    return
            else:
                held = 0
            await asyncio.sleep_ms(1000)

    def fatal(self, e):
        """The firmware failed (the motor is already off and the fault logged). Keep the
        traceback on flash for the bench; close() then lets the watchdog restart the
        board, which boots again with cause `watchdog`."""
        self.failed = e
        try:
            with open(self.fs_root + "fault.txt", "w") as f:
                f.write("device time %d\n" % self.clock.now())
                sys.print_exception(e, f)
        except Exception:  # the filesystem may be what failed: nothing more to do
            pass

    def close(self, cut=None):
        """Last call: motor and buzzer off. After MAINTENANCE the board resets into its
        maintenance boot (where no watchdog runs) if it has one, else the watchdog is fed
        from a timer so the REPL stays usable; after a failure it is left to bite."""
        self.motor.off()
        if self.buzzer is not None:
            self.buzzer.off()
        if self.led is not None:
            self.led.value(0)
        if self.failed is None and self.wdt is not None:
            if self.maintenance is not None and cut is None:
                self.maintenance()  # resets the board: does not return
            self.wdt.hand_over()
