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

from codec import TlogWriter

EPOCH_UNIX = 1577836800  # Theca epoch (2020-01-01T00:00:00Z) in Unix seconds
_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


class Clock:
    """Device time for the twin.

    virtual (speed 0): asyncio never waits; when every task sleeps, time jumps to the
    earliest wake-up, as Peter Hinch's sched/simulate.py and Pybricks' virtual hub do.
    speed N >= 1: real time scaled by N, and the link is polled for real.
    """

    def __init__(self, start, speed=0):
        self.base = start  # device seconds at ms == ms0
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

    def set(self, t):
        """Set device time (SET_TIME): the monotonic ticks go on, the base moves."""
        self.base = t - (self.ticks() - self.ms0) // 1000

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

    @staticmethod
    def _in(windows, t):
        for a, b in windows:
            if a <= t < b:
                return True
        return False

    def stalled(self):
        return self._in(self.stall, self.clock.now())

    def occluded(self):
        return self._in(self.occl, self.clock.now())


class Mechanism:
    """The pump mechanism and its physical reservoir: the truth the firmware believes.

    Refills are physical too: the drug a clinician injects through the septum at a
    scenario's refill time (if it fits), whatever the firmware makes of the command.
    """

    def __init__(self, stroke_nl, reservoir_nl, faults, capacity_nl=20_000_000, refills=()):
        self.stroke_nl = stroke_nl
        self.reservoir_nl = reservoir_nl
        self.capacity_nl = capacity_nl
        self.refills = sorted(refills)
        self.pumped_nl = 0
        self.strokes = 0
        self.failed = 0
        self.faults = faults
        self.running = False

    def _refill(self):
        now = self.faults.clock.now()
        while self.refills and self.refills[0][0] <= now:
            _, nl = self.refills.pop(0)
            if self.reservoir_nl + nl <= self.capacity_nl:
                self.reservoir_nl += nl

    def stroke(self):
        if self.refills:
            self._refill()
        if self.faults.stalled():
            self.failed += 1
            return 1
        if self.faults.occluded():
            self.failed += 1
            return 2
        if self.reservoir_nl >= self.stroke_nl:
            self.reservoir_nl -= self.stroke_nl
            self.pumped_nl += self.stroke_nl
        self.strokes += 1
        return 0

    def off(self):
        self.running = False


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
        days, t0 = self.days, self.t0
        for at, rem in self.faults.battery:
            if at <= now:
                days, t0 = rem, at
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
        self.fed = clock.now()

    def feed(self):
        self.fed = self.clock.now()


class ScheduledLink:
    """Simulate: the scenario's commands arrive as wire bytes at their device times."""

    def __init__(self, path, clock):
        self.clock = clock
        self.recs = []
        if path:
            with open(path, "rb") as f:
                data = f.read()
            off = 0
            while off + 6 <= len(data):
                t, n = struct.unpack_from("<IH", data, off)
                self.recs.append((t, data[off + 6 : off + 6 + n]))
                off += 6 + n
        # after a restart, what was sent before it was already delivered (or was lost
        # while the power was off: a command to a pump that is off gets no answer)
        self.i = 0
        t0 = clock.now()
        while self.i < len(self.recs) and self.recs[self.i][0] < t0:
            self.i += 1
        self.pos = 0
        self.written = 0

    async def readinto(self, buf):
        if self.i >= len(self.recs):
            await asyncio.Event().wait()  # no more input: wait for the end of the run
        t, data = self.recs[self.i]
        await self.clock.sleep_until(t)
        n = min(len(buf), len(data) - self.pos)
        buf[:n] = data[self.pos : self.pos + n]
        self.pos += n
        if self.pos >= len(data):
            self.i += 1
            self.pos = 0
        return n

    def write(self, mv):
        self.written += len(mv)


class StdioLink:
    """Live twin or a flashed unix REPL: the link is this process's stdin/stdout, which
    the host puts on a pseudo-terminal (a USB-serial board's single port)."""

    # MicroPython's stream read()/readinto() loop until the whole buffer is filled on a
    # blocking file, so a 256-byte read would sit on a 40-byte command. Two ways out:
    # - nonblocking: `theca twin` sets O_NONBLOCK on the pty master it hands us (the
    #   flag belongs to the open file, so it is ours too): a read returns what has come.
    # - otherwise (a flashed unix REPL behind socat, a pipe): poll, then read one byte at
    #   a time while more is waiting. Slower, but correct on any file.

    def __init__(self, nonblocking=False):
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self.reader = asyncio.StreamReader(self.inp)
        self.nonblocking = nonblocking
        self.dropped = 0  # bytes of replies the host never took (its side was full)
        if not nonblocking:
            import select

            self.poller = select.poll()
            self.poller.register(self.inp, select.POLLIN)
            self.one = bytearray(1)

    async def readinto(self, buf):
        """Wait for link bytes; returns how many (never 0: a quiet link is not closed)."""
        while True:
            try:
                if self.nonblocking:
                    n = await self.reader.readinto(buf)
                else:
                    n = await self._bytewise(buf)
            except OSError:
                # EIO: nobody holds the other end of the pty right now. The pump goes
                # on; the link is tried again, as a board's USB port would be.
                n = 0
            if n:
                return n
            await asyncio.sleep_ms(20)  # spurious wake-up or hang-up: do not spin

    async def _bytewise(self, buf):
        if await self.reader.readinto(self.one) != 1:  # waits for the first byte
            return 0
        buf[0] = self.one[0]
        n = 1
        cap = len(buf)
        while n < cap and self.poller.poll(0):
            if self.inp.readinto(self.one) != 1:
                break
            buf[n] = self.one[0]
            n += 1
        return n

    def write(self, mv):
        """Send a reply. On the non-blocking pty a full buffer (a host that stopped
        reading) must not stall therapy: retry briefly, then drop the rest."""
        n = len(mv)
        off = 0
        tries = 0
        while off < n:
            try:
                k = self.out.write(mv[off:] if off else mv)
            except OSError:
                k = None
            if k:
                off += k
                continue
            tries += 1
            if tries > 20:
                self.dropped += n - off
                return
            time.sleep_ms(1)


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


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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
            # a restarted twin's clock goes on from where it was (the RTC has a backup cell)
            start = phys["device_time"] if phys else int(time.time()) - EPOCH_UNIX
        self.clock = Clock(start, cfg.get("speed", 0))
        faults = Faults(cfg.get("faults", []), self.clock)
        self.faults = faults
        self.info = {
            "serial": cfg.get("serial", "TWIN00000001").encode(),
            "board": "unix",
            "stroke_nl": cfg.get("stroke_nl", 250),
            "capacity_nl": cfg.get("capacity_nl", 20_000_000),
            "catheter_nl": cfg.get("catheter_nl", 150_000),
            "low_reservoir_nl": cfg.get("low_reservoir_nl", 2_000_000),
            "reservoir_nl": cfg.get("reservoir_nl", 20_000_000),
        }
        self.motor = Mechanism(
            self.info["stroke_nl"], self.info["reservoir_nl"], faults,
            self.info["capacity_nl"], [tuple(r) for r in cfg.get("refills", [])],
        )
        if phys:
            self.motor.reservoir_nl = phys["reservoir_nl"]
            self.motor.pumped_nl = phys["pumped_nl"]
            self.motor.strokes = phys["strokes"]
            self.motor.failed = phys["failed_strokes"]
            self.motor.refills = [r for r in self.motor.refills if r[0] > start]
        self.occlusion = Occlusion(faults)
        self.battery = Battery(cfg.get("battery_days", 2555), cfg.get("battery_t0", start), faults)
        self.buzzer = Buzzer()
        self.wdt = Watchdog(self.clock, cfg.get("wdt_s", 1200))
        keys = cfg.get("keys", {})
        self.keys = {}
        if "clinician" in keys:
            self.keys[1] = unhexlify(keys["clinician"])
        if "patient" in keys:
            self.keys[2] = unhexlify(keys["patient"])
        if image:
            from simflash import mount  # only a twin with a flash image pays for it

            self.bdev = mount(image, cfg.get("cut_after_writes", 0))
        else:
            self.bdev = None
        self.fs_root = "/flash" if image else None
        self.status_period_s = cfg.get("status_period_s", 0)
        self.telemetry = TlogSink(cfg["tlog"], cfg.get("tlog_append", False)) if cfg.get("tlog") else None
        if cfg.get("mode", "simulate") == "simulate":
            self.link = ScheduledLink(cfg.get("inputs"), self.clock)
        else:
            # live (`theca twin`: a non-blocking pty master) or flashed (the REPL's tty)
            self.link = StdioLink(cfg.get("link_nonblocking", False))
        self.end = cfg.get("end")
        self.failed = None
        self.druglib_path = cfg.get("druglib") or _find_druglib()

    def reset_cause(self):
        return self.cfg.get("boot_cause", 0)

    def physical(self):
        """The mechanism's truth, for the host's checks (never read by the firmware)."""
        if self.motor.refills:
            self.motor._refill()
        return {
            "pumped_nl": self.motor.pumped_nl,
            "reservoir_nl": self.motor.reservoir_nl,
            "strokes": self.motor.strokes,
            "failed_strokes": self.motor.failed,
            "device_time": self.clock.now(),
            "tones": self.buzzer.tones,
            "block_writes": self.bdev.writes if self.bdev else 0,
            "block_erases": self.bdev.erases if self.bdev else 0,
        }

    async def until_done(self, sh):
        """Runs until the scenario's end, a MAINTENANCE command, or a watchdog bite."""
        clock = self.clock
        progress = self.cfg.get("progress", 0)  # seconds of device time between reports
        next_report = clock.now()
        heap_every = self.cfg.get("heap_report", 0)  # live heap after a collection
        next_heap = clock.now()
        while not sh.stop:
            if heap_every and clock.now() >= next_heap:
                import gc

                gc.collect()
                sys.stderr.write("@@heap %d %d\n" % (clock.now(), gc.mem_alloc()))
                next_heap += heap_every
            if progress and clock.now() >= next_report:
                # for the host's progress bar: "@@progress <device time>" on stderr
                sys.stderr.write("@@progress %d\n" % clock.now())
                next_report += progress
            if self.end is not None and clock.now() >= self.end:
                if self.cfg.get("cut_at_end"):
                    # a scenario's power loss: the supply goes, nothing is shut down
                    from simflash import PowerCut

                    raise PowerCut()
                return
            t = clock.now() + self.wdt.timeout_s
            if self.end is not None and self.end < t:
                t = self.end
            await clock.sleep_until(t)
            if clock.now() - self.wdt.fed > self.wdt.timeout_s:
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
        if self.truth_path:
            with open(self.truth_path, "w") as f:
                json.dump(self.physical(), f)
        if isinstance(cut, WatchdogReset):
            sys.exit(5)
        if cut is not None and type(cut).__name__ == "PowerCut":
            sys.exit(7)
        if self.failed is not None:
            sys.exit(3)


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
    for k in ("stroke_nl", "capacity_nl", "catheter_nl", "low_reservoir_nl", "reservoir_nl"):
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
