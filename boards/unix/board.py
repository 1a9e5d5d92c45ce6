# The twin's board: the firmware's hardware, simulated on the MicroPython unix port.
#
# `build()` reads the twin configuration (JSON, path in $THECA_SIM; docs/DESIGN.md)
# and hands the firmware a clock, a pump mechanism, sensors, a link and a telemetry
# sink. The mechanism keeps its own physical truth (what it really pumped) apart from
# the firmware's belief, so tests can compare the two.
import asyncio
import asyncio.core as _core
import json
import os
import struct
import sys
import time
from binascii import unhexlify

import msgdefs as md
from codec import TlogWriter, cobs_decode_inplace
from mechanism import Mechanism

EPOCH_UNIX = md.EPOCH_UNIX  # Theca epoch (2020-01-01T00:00:00Z) in Unix seconds
_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


class Clock:
    """The twin's two clocks: the world's true time and the pump's RTC.

    true time (`true_now`) is what the scenario, the faults, the refills and the physical
    truth run on; nothing the firmware does moves it. The RTC (`now`) is the firmware's
    monotonic clock: it runs with true time from `rtc_start` (a battery-backed RTC keeps
    its offset across restarts; one without a backup cell starts at the epoch at every
    boot) and only the firmware's boot, never a command, sets it.

    virtual (speed 0): asyncio never waits; when every task sleeps, time jumps to the
    earliest wake-up, as Peter Hinch's sched/simulate.py and Pybricks' virtual hub do.
    speed N >= 1: real time scaled by N, and the link is polled for real.
    """

    def __init__(self, start, speed=0, rtc_start=None):
        self.true0 = start  # true seconds at ms == ms0
        self.base = start if rtc_start is None else rtc_start  # RTC seconds at ms == ms0
        self.speed = speed
        self._real0 = time.ticks_ms()
        # asyncio's C task queue stamps new tasks with the real tick counter, which no
        # Python patch reaches: virtual ticks start at the real value and only ever run
        # ahead of it, so a new task is never scheduled in the virtual future.
        self.ms0 = self._real0
        self.ms = self.ms0
        self._wait = _core._io_queue.wait_io_event
        _core.ticks = self.ticks
        _core._io_queue.wait_io_event = self._wait_io

    def ticks(self):
        if self.speed:
            self.ms = self.ms0 + time.ticks_diff(time.ticks_ms(), self._real0) * self.speed
        return self.ms

    def _wait_io(self, dt):
        if self.speed:
            self._wait(-1 if dt < 0 else (dt + self.speed - 1) // self.speed)
        elif dt > 0:
            self.ms += dt
        elif dt < 0 and not _core._io_queue.map:
            raise RuntimeError("twin: nothing left to run")

    def now(self):
        return self.base + (self.ticks() - self.ms0) // 1000

    def true_now(self):
        """The world's time (device seconds), which no firmware command moves."""
        return self.true0 + (self.ticks() - self.ms0) // 1000

    def set(self, t):
        """Set the RTC (at boot, moving it on past the stored state): the ticks and the
        world's time go on, the RTC's base moves."""
        self.base = t - (self.ticks() - self.ms0) // 1000

    def sleep_until_true(self, t):
        """Awaitable: sleep until true time t (the world's events)."""
        dt = (t - self.true0) * 1000 - (self.ticks() - self.ms0)
        return asyncio.sleep_ms(dt if dt > 0 else 0)

    def skip_to(self, t):
        """Virtual time: if no other task wakes up to device time t, move the clock to t
        and return True, and the caller goes on at once, as asyncio would have woken it
        next anyway; else False (the caller sleeps). One task's run of wake-ups (strokes
        between two status frames) then costs no trip through the scheduler."""
        if self.speed:
            return False
        dt = (t - self.base) * 1000 - (self.ms - self.ms0)
        target = self.ms + (dt if dt > 0 else 0)
        head = _core._task_queue.peek()
        # a task due at the same millisecond might run first: only a strict lead skips
        if head is not None and time.ticks_diff(head.ph_key, target) <= 0:
            return False
        if _core._io_queue.map:
            return False  # a stream waits on poll (the live twin): asyncio must look
        self.ms = target
        return True

    def sleep_until(self, t):
        """Awaitable: sleep until device time t. A plain function returning asyncio's
        singleton sleep, so a wake-up allocates nothing (no generator per call)."""
        dt = (t - self.base) * 1000 - (self.ticks() - self.ms0)
        return asyncio.sleep_ms(dt if dt > 0 else 0)


class Faults:
    """Scheduled faults from the scenario: windows of motor stall and occlusion,
    battery changes. Power loss is handled by the host restarting the twin."""

    def __init__(self, faults, clock):
        self.clock = clock
        self.stall = [(f["at"], f["at"] + f["duration_s"]) for f in faults if f["kind"] == "motor_stall"]
        self.occl = [(f["at"], f["at"] + f["duration_s"]) for f in faults if f["kind"] == "occlusion"]
        self.battery = sorted((f["at"], f["remaining_days"]) for f in faults if f["kind"] == "battery")
        self.flash = [(f["at"], f["at"] + f["duration_s"]) for f in faults if f["kind"] == "flash_error"]

    @staticmethod
    def _in(windows, t):
        for a, b in windows:
            if a <= t < b:
                return True
        return False

    def stalled(self):
        # most runs have no window at all: no clock read then (a stroke asks, and a tick)
        return bool(self.stall) and self._in(self.stall, self.clock.true_now())

    def occluded(self):
        return bool(self.occl) and self._in(self.occl, self.clock.true_now())

    def flash_failing(self):
        """True while a scenario's flash_error lasts: every flash write fails."""
        return self._in(self.flash, self.clock.true_now())

    def add(self, kind, at, duration_s):
        """A fault window from now (the control channel)."""
        (self.stall if kind == "motor_stall" else self.occl).append((at, at + duration_s))


class Occlusion:
    def __init__(self, faults):
        self.faults = faults

    def blocked(self):
        return self.faults.occluded()


class Battery:
    """Days of battery left: falls one a day; a scenario fault sets it."""

    def __init__(self, days, start, faults):
        self.days = days
        self.t0 = start
        self.faults = faults

    def days_left(self, now):
        now = self.faults.clock.true_now()  # the cell's chemistry, not the pump's clock
        days = self.days
        t0 = self.t0
        b = self.faults.battery
        i = 0
        while i < len(b):  # (no iterator: the frame fits the C stack, SR-HEAP-01)
            if b[i][0] <= now:
                days = b[i][1]
                t0 = b[i][0]
            i += 1
        return days - (now - t0) // 86400


class Buzzer:
    def __init__(self):
        self.tones = 0
        self.last = None

    def tone(self, freq, ms):
        self.tones += 1
        self.last = (freq, ms)

    def off(self):
        pass


class Watchdog:
    """The twin's watchdog: a virtual-time deadline checked by `until_done`."""

    def __init__(self, clock, timeout_s):
        self.clock = clock
        self.period_s = timeout_s // 4
        self.timeout_s = timeout_s
        self.fed = clock.true_now()

    def feed(self):
        # true time: a watchdog counts real seconds, whatever the firmware's clocks say
        self.fed = self.clock.true_now()

    def starved(self):
        return self.clock.true_now() - self.fed > self.timeout_s


class ScheduledLink:
    """Simulate: the scenario's commands arrive as wire bytes at their device times.

    A state-changing command comes as a CHALLENGE request and then the command itself
    (LinkInRecord flag `fresh`): the link reads the challenge from the device's reply
    and signs the command with it at delivery, as a programmer does in the same
    session: nothing is signed before the run, so no command is older than FRESH_S."""

    def __init__(self, path, clock, hw=None):
        self.clock = clock
        self.hw = hw  # the roles' keys; a refill's residual is measured from its mechanism
        # read one record at a time: a long scenario's commands are not all in the heap
        self.f = open(path, "rb") if path else None
        self._head = bytearray(md.LINK_IN_SIZE)
        self.cur = None  # (true time, bytes, flags) of the record being delivered
        # after a restart, what was sent before it was already delivered (or was lost
        # while the power was off: a command to a pump that is off gets no answer)
        t0 = clock.true_now()
        self._next()
        while self.cur is not None and self.cur[0] < t0:
            self._next()
        self.pos = 0
        self.written = 0
        self.challenge = 0  # the challenge the device last gave (0: none this session)
        self._out = None

    def _next(self):
        # the next record of the inputs file, or None at its end (a cut record is its end)
        self.cur = None
        f = self.f
        if f is None or f.readinto(self._head) != md.LINK_IN_SIZE:
            return
        t, n, flags = struct.unpack_from(md.LINK_IN_FMT, self._head, 0)
        data = f.read(n)
        if len(data) == n:
            self.cur = (t, data, flags)

    async def readinto(self, buf):
        if self.cur is None:
            await asyncio.Event().wait()  # no more input: wait for the end of the run
        t, data, flags = self.cur
        await self.clock.sleep_until_true(t)
        if flags & (md.LINK_IN_MEASURE_RESIDUAL | md.LINK_IN_FRESH) and self.pos == 0:
            import visit

            data = visit.signed(self.hw, t, data, flags, self.challenge)
            self.cur = (t, data, 0)
        n = min(len(buf), len(data) - self.pos)
        buf[:n] = data[self.pos : self.pos + n]
        self.pos += n
        if self.pos >= len(data):
            self._next()
            self.pos = 0
        return n

    def write(self, mv):
        self.written += len(mv)
        # a CHALLENGE reply: keep its challenge for the command that follows it
        n = len(mv)
        if n < 8 or n > 64:
            return  # a challenge reply is small; nothing else is read here
        b = self._out
        if b is None:
            b = self._out = bytearray(64)
        b[:n] = mv
        m = cobs_decode_inplace(b, n - 1 if b[n - 1] == 0 else n)
        at = md.HDR_SIZE
        if m >= at + md.REPLY_HEAD_SIZE + md.CHALLENGE_REPLY_SIZE and b[1] == md.T_REPLY:
            _, ctype, res, _ = struct.unpack_from(md.REPLY_HEAD_FMT, b, at)
            if ctype == md.T_CHALLENGE and res == 0:
                self.challenge = struct.unpack_from(md.CHALLENGE_REPLY_FMT, b,
                                                    at + md.REPLY_HEAD_SIZE)[0]

class TlogSink:
    def __init__(self, path, append=False):
        # append: the same run after a restart (power loss, watchdog) goes on in one log
        self.f = open(path, "ab" if append else "wb")
        self.w = TlogWriter(self.f, header=not append)

    def emit(self, mv):
        self.w.write_record(mv)

    def close(self):
        self.w.close()
        self.f.close()


def _link(cfg, clock, hw):
    # the link of the twin's mode; each mode's module is loaded only by a twin in it
    mode = cfg.get("mode", "simulate")
    if mode == "simulate":
        return ScheduledLink(cfg.get("inputs"), clock, hw)
    if mode == "control":
        from control import ControlLink  # tests only

        return ControlLink()
    # live (`theca twin`: a non-blocking pty master) or flashed (the REPL's tty)
    from stdio_link import StdioLink

    return StdioLink(cfg.get("link_nonblocking", False))


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _info(cfg):
    # what the firmware's hw.info says of this twin (the configuration's, or the defaults)
    return {
        "serial": cfg.get("serial", "TWIN00000001").encode(),
        "board": "unix",
        "stroke_nl": cfg.get("stroke_nl", md.DEFAULT_STROKE_NL),
        "capacity_nl": cfg.get("capacity_nl", md.DEFAULT_CAPACITY_NL),
        "catheter_nl": cfg.get("catheter_nl", md.DEFAULT_CATHETER_NL),
        "low_reservoir_nl": cfg.get("low_reservoir_nl", md.DEFAULT_LOW_RESERVOIR_NL),
        "max_rate_nl_h": cfg.get("max_rate_nl_h", md.DEFAULT_MAX_RATE_NL_H),
        "min_rate_nl_day": cfg.get("min_rate_nl_day", md.DEFAULT_MIN_RATE_NL_DAY),
        "reservoir_nl": cfg.get("reservoir_nl", md.DEFAULT_CAPACITY_NL),
    }


def _flash(cfg, faults):
    # the twin's flash chip, mounted at /flash, with the storage faults done while the
    # power was off; returns the block device
    from simflash import damage, mount  # only a twin with a flash image pays for it

    bdev = mount(cfg["flash_image"], cfg.get("cut_after_writes", 0),
                 faults.flash_failing if faults.flash else None)
    for dmg in cfg.get("storage_damage", ()):
        damage("/flash", dmg["file"], dmg["damage"])
    return bdev


class Hardware:
    """What `build()` hands the firmware (docs/DESIGN.md, "Hardware interface")."""

    def __init__(self, cfg):
        self.cfg = cfg
        image = cfg.get("flash_image")
        # the physical world outside the firmware: survives its restarts and power cuts
        self.truth_path = cfg.get("truth") or (image + ".truth" if image else None)
        phys = _read_json(self.truth_path) if image and self.truth_path else None
        start = cfg.get("start")
        if start is None:
            # a restarted twin's world goes on from where it was
            start = phys["device_time"] if phys else int(time.time()) - EPOCH_UNIX
        if cfg.get("rtc_backed", True):
            # the RTC has a backup cell: it kept running through the restart
            rtc = start + (phys.get("rtc_offset", 0) if phys else cfg.get("rtc_offset", 0))
        else:
            rtc = cfg.get("rtc_epoch", 0)  # no backup cell: every boot starts at the epoch
        self.clock = Clock(start, cfg.get("speed", 0), rtc)
        faults = Faults(cfg.get("faults", []), self.clock)
        self.faults = faults
        self.info = _info(cfg)
        stream = cfg.get("truth_stream")
        self.stream = open(stream, "ab") if stream else None
        tips = cfg.get("truth_tips")
        self.tip_stream = open(tips, "ab") if tips else None
        self.motor = Mechanism(
            self.info["stroke_nl"], self.info["reservoir_nl"], faults,
            self.info["capacity_nl"], [tuple(r) for r in cfg.get("refills", [])],
            cfg.get("reservoir_conc_ng_ml", 0), self.info["catheter_nl"], self.stream,
            [tuple(c) for c in cfg.get("catheters", [])], cfg.get("reservoir_drug", 0),
            self.tip_stream,
        )
        if phys:
            self.motor.resume(phys, start)
        if self.motor.refills:
            import visit  # noqa: F401  (loaded at boot: a refill then allocates nothing new)
        self.occlusion = Occlusion(faults)
        self.battery = Battery(cfg.get("battery_days", 2555), cfg.get("battery_t0", start), faults)
        self.buzzer = Buzzer()
        self.wdt = Watchdog(self.clock, cfg.get("wdt_s", 1200))
        keys = cfg.get("keys", {})
        self.keys = {rid: unhexlify(keys[name]) for rid, name in
                     ((md.ROLE_CLINICIAN, "clinician"), (md.ROLE_PATIENT, "patient")) if name in keys}
        self.bdev = _flash(cfg, faults) if image else None
        self.fs_root = "/flash" if image else None
        self.status_period_s = cfg.get("status_period_s", 0)
        self.telemetry = TlogSink(cfg["tlog"], cfg.get("tlog_append", False)) if cfg.get("tlog") else None
        self.link = _link(cfg, self.clock, self)
        # tracebacks for a person: stderr (stdout may be the binary link, `theca twin`)
        self.console = sys.stderr
        self.end = cfg.get("end")
        self.failed = None
        self.druglib_path = cfg.get("druglib") or _find_druglib()

    def reset_cause(self):
        return self.cfg.get("boot_cause", 0)

    def physical(self):
        """The mechanism's truth, for the host's checks (never read by the firmware)."""
        import truth  # only at the end of a run and for the tests' control: not resident

        return truth.physical(self)

    async def until_done(self, sh):
        """Runs until the scenario's end, a MAINTENANCE command, or a watchdog bite."""
        if self.cfg.get("mode") == "control":
            import control

            return await control.run(self, sh)
        clock = self.clock
        progress = self.cfg.get("progress", 0)  # seconds of true time between reports
        next_report = clock.true_now()
        heap_every = self.cfg.get("heap_report", 0)  # live heap after a collection
        next_heap = clock.true_now()
        while not sh.stop:
            now = clock.true_now()
            if heap_every and now >= next_heap:
                import gc

                gc.collect()
                sys.stderr.write("@@heap %d %d\n" % (now, gc.mem_alloc()))
                next_heap += heap_every
            if progress and now >= next_report:
                # for the host's progress bar: "@@progress <true time>" on stderr
                sys.stderr.write("@@progress %d\n" % now)
                next_report += progress
            if self.end is not None and now >= self.end:
                if self.cfg.get("cut_at_end"):
                    # a scenario's power loss: the supply goes, nothing is shut down
                    from simflash import PowerCut

                    raise PowerCut()
                return
            t = now + self.wdt.timeout_s
            if self.end is not None and self.end < t:
                t = self.end
            await clock.sleep_until_true(t)
            if self.wdt.starved():
                raise WatchdogReset()

    def fatal(self, e):
        """The firmware failed (it already stopped the motor and logged): the twin's
        process must not look like a success."""
        self.failed = e

    def close(self, cut=None):
        """Last call. `cut`: the PowerCut or WatchdogReset that ended the run, which
        becomes the process's exit status (5 watchdog, 7 power cut) for the host."""
        if self.telemetry is not None:
            self.telemetry.close()
        if isinstance(self.link, ScheduledLink) and self.link.f is not None:
            self.link.f.close()
        if self.stream is not None:
            self.stream.close()
        if self.tip_stream is not None:
            self.tip_stream.close()
        if self.truth_path:
            with open(self.truth_path, "w") as f:
                json.dump(self.physical(), f)
        if isinstance(cut, WatchdogReset):
            sys.exit(md.TWIN_EXIT_WATCHDOG)
        if cut is not None and type(cut).__name__ == "PowerCut":
            sys.exit(md.TWIN_EXIT_POWER_CUT)
        if self.failed is not None:
            sys.exit(md.TWIN_EXIT_FIRMWARE_FAILED)


class WatchdogReset(BaseException):
    """The twin's watchdog bit: like a board's, nothing in the firmware can catch it."""


def _find_druglib():
    # the host passes "druglib"; otherwise beside the firmware or in the working folder
    for p in ("druglib.json", "firmware/druglib.json", _HERE + "/../../firmware/druglib.json"):
        try:
            os.stat(p)
            return p
        except OSError:
            pass
    return "druglib.json"


def _flashed_config():
    """A unix REPL that `theca flash` wrote into: provision.json in the working folder
    (docs/DESIGN.md, "Provisioning") makes it a pump on its own stdin/stdout, in real
    time, keeping its state in ./theca like a board in its flash."""
    prov = _read_json("provision.json")
    if prov is None:
        return None
    cfg = {"mode": "flashed", "speed": 1, "serial": prov["serial"], "keys": prov["keys"]}
    for k in ("stroke_nl", "capacity_nl", "catheter_nl", "low_reservoir_nl", "reservoir_nl",
              "max_rate_nl_h", "min_rate_nl_day"):
        if k in prov:
            cfg[k] = prov[k]
    return cfg


def build():
    """The twin's hardware, from the configuration file named by $THECA_SIM, or, with
    no THECA_SIM, a flashed unix REPL's provision.json."""
    path = os.getenv("THECA_SIM")
    if not path:
        cfg = _flashed_config()
        if cfg is None:
            raise RuntimeError("THECA_SIM is not set and there is no provision.json here: "
                               "run the twin with `theca twin`, or flash with `theca flash`")
        hw = Hardware(cfg)
        hw.fs_root = "."
        return hw
    with open(path) as f:
        cfg = json.load(f)
    return Hardware(cfg)
