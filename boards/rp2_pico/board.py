# The Raspberry Pi Pico (RP2040) board: the reference board.
#
# build() reads provision.json, checks the littlefs2 filesystem and the drug library,
# and hands the firmware its hardware (docs/DESIGN.md, "Hardware interface"). Pin
# numbers and the mechanism's constants are plain data in pins.py; what all boards
# share is in boards/common/hal.py. Here: the STEP pulse train from a PIO state
# machine, the RP2040's reset causes, the clock kept across watchdog resets, the ADC.
#
# Nothing touches hardware at import (the PIO program is assembled in build()).
import sys

import machine
import rp2
import time
from machine import Pin
from micropython import const

import hal
import motor
import msgdefs as md
import pins

FS_ROOT = pins.FS_ROOT  # module-level so a bench or a test can point it elsewhere
BOARD = "rp2_pico"

_CYCLES_PER_STEP = const(32)  # PIO cycles per STEP pulse in _step_train below
_WDT_ENABLE_MAGIC = const(0x6AB73121)  # pico-sdk watchdog_enable() puts this in scratch[4]
_TIME_MASK = const(0x3A5A5A5A)  # scratch[0] = scratch[1] ^ mask marks a saved time valid
# The rp2 port sets its RTC to 2021-01-01 on every hardware reset, not on a soft reset.
# build() runs about a second after a reset: an RTC a minute or more past 2021-01-01 has
# kept running since an earlier boot (a soft reset), even if the time was never set.
_RTC_RESET_WINDOW_S = const(60)
# Maintenance (MAINTENANCE, or BOOTSEL held while the firmware runs): the watchdog that
# build() started cannot be stopped, and a soft reset (Ctrl-D, mpremote exec/run/fs
# without `resume`) stops the soft timer feeding it, so it would bite under the REPL.
# Instead the board resets into a maintenance boot, where no watchdog runs, and stays
# there across soft resets. scratch[2] says which: MAINT_ENTER before that reset,
# MAINT_IN after it; the next hardware reset (machine.reset(), the RUN pin, a power
# cycle) starts the firmware again.
MAINT_ENTER = const(0x4D4E5452)
MAINT_IN = const(0x4D4E5449)


def _step_train():
    # PIO program (rp2.asm_pio assembles it in build()): take a count N-1 from the TX
    # FIFO, make N STEP pulses of 16 cycles high and 16 low (15 + the jmp), then push
    # a word to the RX FIFO to say the train is done. At step_hz * 32 cycles per second
    # the pulses come at exactly step_hz with a 50 % duty, whatever the CPU is doing.
    pull(block)  # noqa: F821 (PIO assembler names)
    mov(x, osr)  # noqa: F821 (PIO assembler names)
    label("pulse")  # noqa: F821 (PIO assembler names)
    set(pins, 1)[15]  # noqa: F821  # pyright: ignore[reportCallIssue, reportIndexIssue] (PIO)
    set(pins, 0)[14]  # noqa: F821  # pyright: ignore[reportCallIssue, reportIndexIssue] (PIO)
    jmp(x_dec, "pulse")  # noqa: F821 (PIO assembler names)
    push(noblock)  # noqa: F821 (PIO assembler names)


class PioMotor(motor.StepperMotor):
    """The stepper driven by PIO state machine pins.MOTOR["pio_sm"] (see motor.StepperMotor).

    The state machine makes the pulses; the CPU only polls for the end of the train
    (and the occlusion latch) every 0.5 ms.
    """

    def __init__(self, step, dir_, en, feedback, occlusion, cfg):
        motor.StepperMotor.__init__(self, step, dir_, en, feedback, occlusion, cfg)
        self.step_pin = step
        self.prog = rp2.asm_pio(set_init=rp2.PIO.OUT_LOW)(_step_train)
        self.freq = self.step_hz * _CYCLES_PER_STEP
        # PIO clock dividers reach down to 125 MHz / 65536 ~ 1.9 kHz
        if not 2000 <= self.freq <= 125_000_000:
            raise hal.ProvisionError("motor.step_hz %d is outside what the PIO can time" % self.step_hz)
        self.sm = rp2.StateMachine(cfg["pio_sm"])
        self._start()

    def _start(self):
        # init() puts the program counter at the start, clears the FIFOs and drives
        # the STEP pin low (set_init): the state machine then waits at pull(block)
        self.sm.init(self.prog, freq=self.freq, set_base=self.step_pin)
        self.sm.active(1)

    def _run(self):
        sm = self.sm
        sm.put(self.n - 1)
        t0 = time.ticks_ms()
        while not sm.rx_fifo():
            if self.occluded_now():
                self._halt()
                return 2
            if time.ticks_diff(time.ticks_ms(), t0) > self.timeout_ms:
                self._halt()  # the train never ended: count it as not delivered
                return 1
            time.sleep_us(500)
        sm.get()
        return 0

    def _halt(self):
        self.sm.active(0)
        self._start()


class Rp2Watchdog(hal.Watchdog):
    """machine.WDT, and at each feed the device time into two watchdog scratch
    registers, which survive a watchdog reset (the RTC does not): the next boot
    restores the clock from them."""

    def __init__(self, clock, cfg, timer):
        hal.Watchdog.__init__(self, cfg["timeout_ms"], cfg["period_s"], timer)
        self.clock = clock
        base = pins.CHIP["watchdog_base"]
        self.s0 = base + 0x0C
        self.s1 = base + 0x10

    def _save_time(self):
        t = self.clock.now()
        machine.mem32[self.s1] = t
        machine.mem32[self.s0] = t ^ _TIME_MASK

    def feed(self):
        self.wdt.feed()
        self._save_time()

    def _feed_cb(self, _t):
        self.wdt.feed()
        self._save_time()


def boot_cause(rtc, off):
    """Why the RP2040 booted (msgdefs BOOT_*), and the clock put back after a reset.

    Must run before machine.WDT() is created: creating it rewrites scratch[4].
    - the RTC still runs from an earlier boot (a minute or more past 2021-01-01, where
      a hardware reset puts it): a soft reset;
    - machine.reset_cause() == WDT_RESET with pico-sdk's watchdog_enable() magic in
      scratch[4]: our watchdog bit; without it the watchdog was used to reboot
      (machine.reset(), picotool, a UF2 copy): a hard reset;
    - otherwise a power-on (or the RUN pin). RP2040 has no brown-out detector.
    After a hardware reset the RTC restarts at 2021-01-01; if the scratch registers hold
    a checked time (they do unless the power was lost), the RTC is set to it plus what
    the RTC has counted since it restarted. What the reset itself took (up to the
    watchdog timeout since the last feed) is lost.
    """
    base = pins.CHIP["watchdog_base"]
    mem = machine.mem32
    t = time.time() - off
    if t >= hal.UNSET_FLOOR + _RTC_RESET_WINDOW_S:
        return md.BOOT_SOFT_RESET
    saved = mem[base + 0x10]
    if saved and mem[base + 0x0C] == saved ^ _TIME_MASK:
        rtc.datetime(hal.rtc_tuple(saved + (t - hal.UNSET_FLOOR) + off))
    if machine.reset_cause() == machine.WDT_RESET:
        if mem[base + 0x1C] == _WDT_ENABLE_MAGIC:
            return md.BOOT_WATCHDOG
        return md.BOOT_HARD_RESET
    return md.BOOT_POWER_ON


def _maintenance(cause):
    """True if this boot stays at the REPL for maintenance (see MAINT_ENTER)."""
    a = pins.CHIP["watchdog_base"] + 0x14
    v = machine.mem32[a]
    if v == MAINT_ENTER and cause != md.BOOT_SOFT_RESET:
        machine.mem32[a] = MAINT_IN
        return True
    if v == MAINT_IN:
        if cause == md.BOOT_SOFT_RESET:
            return True
        machine.mem32[a] = 0
    return False


def _enter_maintenance():
    # the MAINTENANCE reply is on its way out of the USB port: let it go, then reset
    machine.mem32[pins.CHIP["watchdog_base"] + 0x14] = MAINT_ENTER
    time.sleep_ms(200)
    machine.reset()


def _link(kind):
    if kind == "uart":
        c = pins.LINK
        u = machine.UART(
            c["uart_id"], baudrate=c["baudrate"], tx=Pin(pins.PINS["uart_tx"]),
            rx=Pin(pins.PINS["uart_rx"]), txbuf=2048, rxbuf=2048, timeout=0,
        )
        return hal.StreamLink(u, u)
    return hal.usb_link()


def build(maintenance=True):
    """The Pico's hardware for the firmware (maintenance=False: also in a maintenance
    boot, for bench()). Raises (and main.py stops, leaving the
    REPL) if BOOTSEL is held, or provision.json, druglib.json or littlefs2 is missing."""
    root = FS_ROOT
    if rp2.bootsel_button():
        raise hal.SafeBoot("BOOTSEL held: firmware not started, the REPL is yours")
    rtc = machine.RTC()
    cause = boot_cause(rtc, hal.epoch_offset())
    if maintenance and _maintenance(cause):
        raise hal.SafeBoot("maintenance: firmware stopped, no watchdog runs, the REPL is yours "
                           "across soft resets; machine.reset() or a power cycle starts it")
    info, keys, extra = hal.load_provision(root, BOARD)
    hal.require_file(root + "druglib.json",
                     "the drug library must sit next to provision.json (theca flash writes both)")
    hal.check_storage(root)
    motor_cfg = hal.motor_settings(pins.MOTOR, extra)
    hw = hal.Hardware(root, info, keys, cause)
    hw.clock = hal.Clock(rtc)
    p = pins.PINS
    en_off = 1 - motor_cfg["enable_active"]
    occl = hal.Occlusion(Pin(p["occlusion"], Pin.IN, Pin.PULL_UP), pins.OCCLUSION["active"])
    hw.occlusion = occl
    hw.motor = PioMotor(
        Pin(p["step"], Pin.OUT, value=0), Pin(p["dir"], Pin.OUT, value=motor_cfg["dir_forward"]),
        Pin(p["enable"], Pin.OUT, value=en_off), Pin(p["feedback"], Pin.IN, Pin.PULL_UP),
        occl, motor_cfg,
    )
    adc = machine.ADC(Pin(p["battery_adc"]))
    vref = pins.BATTERY["vref_mv"]
    hw.battery = hal.Battery(lambda: adc.read_u16() * vref // 65535, pins.BATTERY)
    hw.buzzer = hal.Buzzer(
        machine.PWM(Pin(p["buzzer"]), freq=2000, duty_u16=0), machine.Timer(pins.BUZZER["timer"]),
        pins.BUZZER["duty_u16"],
    )
    hw.led = Pin(p["led"], Pin.OUT, value=0)
    hw.safe_held = rp2.bootsel_button  # pyright: ignore[reportAttributeAccessIssue] (a function)
    kind = extra.get("link", pins.LINK["default"])
    hw.link = _link(kind)
    if kind == "uart":
        hw.console = sys.stdout  # the link is on the UART: USB serial is the console
    # Last: a started watchdog cannot be stopped, so a build that failed above must
    # leave a REPL that is not reset under the user.
    hw.wdt = Rp2Watchdog(hw.clock, pins.WATCHDOG, machine.Timer(pins.WATCHDOG["timer"]))
    hw.maintenance = _enter_maintenance  # pyright: ignore[reportAttributeAccessIssue] (a function)
    return hw


def bench():
    """The hardware for bench work at the REPL (after MAINTENANCE): build(), with the
    watchdog that build() starts fed by a timer, e.g.
        >>> import board, hal
        >>> hw = board.bench()
        >>> hal.run_strokes(hw, 1000)"""
    hw = build(False)
    hw.wdt.hand_over()
    return hw
