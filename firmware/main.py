# The shell: the only firmware module that waits on clocks and talks to the board.
# One asyncio task per concern (therapy, link, telemetry, watchdog, alarm tones),
# gathered in main(); the motor is switched off in `finally` whatever happens.
import asyncio
import gc
import sys

import board
import micropython
from codec import Deframer, cobs_frame_into, cobs_max
import msgdefs as md
from msgdefs import ALARMS_CRITICAL, ALARMS_UNSILENCEABLE, MAX_FRAME
from store import Store

import pump as pumpmod

_LINK_CHUNK = 256
CRITICAL_TONE_S = 60  # a critical alarm repeats its two-tone this often until acknowledged
OTHER_TONE_S = 3600  # a non-critical alarm sounds its single tone this often
# fault codes (fault event a: which concern failed), from the protocol definition
F_THERAPY = md.FAULT_THERAPY
F_LINK = md.FAULT_LINK
F_TELEMETRY = md.FAULT_TELEMETRY
F_TONES = md.FAULT_TONES


class _Shared:
    # Small state the tasks share; never allocated per stroke or per frame.
    def __init__(self):
        # (annotations for the type checker; MicroPython does not evaluate them)
        self.therapy: "asyncio.Task | None" = None
        self.waiting = False
        self.poked = False
        self.tones: "asyncio.Task | None" = None
        self.tones_waiting = False
        self.tones_poked = False
        self.alarms_seen = 0
        self.expect_by = 0
        self.stop = False
        self.until: "asyncio.Task | None" = None  # the board's until_done, woken by MAINTENANCE
        self.died: "BaseException | None" = None  # the exception a task ended with (none may end so, silently)


def _poke(sh):
    # The plan changed (a bolus, a prescription): wake the therapy task now rather
    # than at the time it planned before the change.
    if sh.waiting and sh.therapy is not None:
        sh.poked = True
        sh.therapy.cancel()


def _poke_tones(app, sh):
    # A newly raised alarm sounds at once, not at the tone task's next period.
    m = app.alarms.sounding()
    if m & ~sh.alarms_seen and sh.tones_waiting and sh.tones is not None:
        sh.tones_poked = True
        sh.tones.cancel()
    sh.alarms_seen = m


async def therapy_task(app, clock, sh):
    """Deliver: tick the pump, sleep until it next needs to run."""
    while True:
        try:
            nxt = app.tick(clock.now())
        except Exception as e:  # unexpected: motor off, critical alarm, logged, safe state
            _fault(app, clock, F_THERAPY, e)
            nxt = clock.now() + pumpmod.SENSE_S
        app.planned()
        _poke_tones(app, sh)
        sh.expect_by = nxt + 30
        if clock.skip_to(nxt):
            continue  # the twin: nobody else is due before nxt, its clock moved there
        sh.waiting = True
        try:
            await clock.sleep_until(nxt)
        except asyncio.CancelledError:
            if not sh.poked:
                raise
            sh.poked = False
        sh.waiting = False


def report(hw, e):
    """A traceback for a person, on the board's console; never onto the binary link (a
    board whose link is its USB serial port has no console: its fatal() keeps it)."""
    out = hw.console
    if out is not None:
        sys.print_exception(e, out)


def _fault(app, clock, code, e):
    report(app.hw, e)
    app.fault(clock.now(), code)
    app.hw.fatal(e)  # the board decides: a board stays safe and alarms, the twin reports


async def tone_task(app, hw, sh):
    """Alarm tones: critical alarms a repeating two-tone, others a single tone, until
    acknowledged. Acknowledging silences the tone; the alarm stays until its cause goes."""
    bz = hw.buzzer
    clock = hw.clock
    while True:
        snd = app.alarms.sounding()
        now = clock.now()
        nxt = now + OTHER_TONE_S
        try:
            if snd & (ALARMS_CRITICAL | ALARMS_UNSILENCEABLE):
                bz.tone(880, 200)
                await asyncio.sleep_ms(300)
                bz.tone(660, 200)
                nxt = now + CRITICAL_TONE_S
            elif snd:
                bz.tone(880, 300)
        except Exception as e:  # a buzzer driver fault must not silence alarms unnoticed
            _fault(app, clock, F_TONES, e)
        sh.tones_waiting = True
        try:
            await clock.sleep_until(nxt)
        except asyncio.CancelledError:
            if not sh.tones_poked:
                raise
            sh.tones_poked = False
        sh.tones_waiting = False


class _LinkBuffers:
    # Made before the tasks start: a board without room for them fails at boot, loudly,
    # not later in a task nobody watches.
    def __init__(self):
        self.rx = bytearray(_LINK_CHUNK)
        self.rxmv = memoryview(self.rx)
        self.outmv = memoryview(bytearray(cobs_max(MAX_FRAME) + 1))  # + the 0x00
        self.deframer = Deframer(MAX_FRAME)


async def link_task(app, hw, sh, bufs):
    """Frames in from the link, replies out. Garbage never reaches the pump."""
    rx = bufs.rx
    rxmv = bufs.rxmv
    outmv = bufs.outmv
    d = bufs.deframer
    clock = hw.clock
    tel = hw.telemetry
    while True:
        n = await hw.link.readinto(rx)
        if n == 0:
            return
        i = 0
        while i < n:
            i = d.feed(rxmv, i, n)
            frame = d.frame
            if frame is None:
                continue
            try:
                reply = app.command(frame, clock.now())
            except Exception as e:  # a bug reached by a frame: safe state, keep listening
                _fault(app, clock, F_LINK, e)
                reply = None
            if reply is not None:
                # COBS and the 0x00 delimiter: without it the host cannot tell where
                # the reply ends (PROTOCOL.md section 3)
                m = cobs_frame_into(reply, len(reply), outmv)
                hw.link.write(outmv[:m])
                if tel is not None:
                    tel.emit(reply)
            if app.changed:
                _poke(sh)
            _poke_tones(app, sh)
            if app.exit_requested:
                # MAINTENANCE: the board's until_done may be asleep for minutes (the
                # unix board sleeps a watchdog period): wake it, the REPL is wanted now
                sh.stop = True
                if sh.until is not None:
                    sh.until.cancel()
                return


async def telemetry_task(app, clock, period):
    """A STATUS frame every `period` seconds of device time."""
    tel = app.hw.telemetry
    t = clock.now()
    while True:
        t += period
        if not clock.skip_to(t):
            await clock.sleep_until(t)
        try:
            tel.emit(app.status_frame(clock.now()))
        except Exception as e:  # unexpected: safe state, logged, as in every concern
            _fault(app, clock, F_TELEMETRY, e)


async def watchdog_task(hw, clock, sh):
    """Feed the watchdog only while the therapy task keeps its own schedule: a hung
    therapy task then starves the watchdog and the board resets."""
    wdt = hw.wdt
    period = wdt.period_s
    while True:
        if clock.now() <= sh.expect_by:
            wdt.feed()
        t = clock.now() + period
        if not clock.skip_to(t):
            await clock.sleep_until(t)


def _supervise(sh):
    # A task that ends by an exception stops the run with it (main: safe state, fault,
    # the board's fatal): a pump whose link or alarms silently died must not go on as
    # if nothing happened.
    def died(loop, ctx):
        if sh.died is None:
            sh.died = ctx["exception"]
        if sh.until is not None:
            sh.until.cancel()

    asyncio.get_event_loop().set_exception_handler(died)


async def run(hw, app, bufs=None):
    sh = _Shared()
    clock = hw.clock
    if bufs is None:
        bufs = _LinkBuffers()
    _supervise(sh)
    sh.therapy = asyncio.create_task(therapy_task(app, clock, sh))
    tasks = [sh.therapy, asyncio.create_task(link_task(app, hw, sh, bufs))]
    if hw.telemetry is not None and hw.status_period_s:
        tasks.append(asyncio.create_task(telemetry_task(app, clock, hw.status_period_s)))
    if hw.wdt is not None:
        tasks.append(asyncio.create_task(watchdog_task(hw, clock, sh)))
    if hw.buzzer is not None:
        sh.tones = asyncio.create_task(tone_task(app, hw, sh))
        tasks.append(sh.tones)
    try:
        until = sh.until = asyncio.create_task(hw.until_done(sh))
        try:
            await until
        except asyncio.CancelledError:
            if sh.died is not None:
                raise sh.died
            if not sh.stop:
                raise
    finally:
        for t in tasks:
            t.cancel()


def main():
    # Binary frames share the USB serial port with the REPL: a 0x03 byte in a frame
    # must not raise KeyboardInterrupt. MAINTENANCE (or the board's safe-boot pin)
    # gives the REPL back. Set before build(): a host may already be sending frames
    # while the board starts.
    micropython.kbd_intr(-1)
    try:
        hw = board.build()
    except BaseException:
        micropython.kbd_intr(3)  # no pump: give Ctrl-C back to the REPL
        raise
    app = None
    cut = None
    try:
        now = hw.clock.now()
        store = Store(hw.fs_root) if hw.fs_root else None
        druglib = pumpmod.load_druglib(hw.druglib_path)
        # the boot's garbage (imports, the library's JSON) goes before the pump's buffers
        # are made: they are the biggest blocks, and a fragmented heap has no room for them
        gc.collect()
        bufs = _LinkBuffers()  # the big blocks first, while the heap has its largest holes
        app = pumpmod.Pump(hw, now, druglib, hw.reset_cause(), store)
        asyncio.run(run(hw, app, bufs))
        if hw.telemetry is not None:
            hw.telemetry.emit(app.status_frame(hw.clock.now()))
    except Exception as e:  # any unexpected error: safe state, logged, then reported
        hw.motor.off()
        if app is not None:
            app.fault(hw.clock.now(), F_THERAPY)
        report(hw, e)
        hw.fatal(e)
    except BaseException as e:  # a reset (watchdog, power): nothing more is written
        cut = e
    finally:
        hw.motor.off()
        micropython.kbd_intr(3)
        hw.close(cut)


if __name__ == "__main__":
    main()
