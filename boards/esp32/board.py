# The ESP32 board (ESP32-WROOM-32 dev board).
#
# build() reads provision.json, checks the littlefs2 filesystem and the drug library,
# and hands the firmware its hardware (docs/DESIGN.md, "Hardware interface"). Pin
# numbers and the mechanism's constants are plain data in pins.py; what all boards
# share is in boards/common/hal.py. Here: the STEP pulse train timed by the CPU, the
# ESP32's reset causes, its calibrated ADC and its BOOT button.
#
# Why a timed loop and not the RMT peripheral: MicroPython's esp32.RMT changed its
# constructor and its limits between releases (the legacy IDF 4 driver, then IDF 5),
# while a stroke is only 128 pulses (64 ms): a loop on time.ticks_us() deadlines,
# measured from each edge, can only make a pulse longer than asked, never shorter than
# the driver's minimum, and the stepper does not mind the jitter.
import sys

import machine
import time
from machine import Pin

import hal
import motor
import msgdefs as md
import pins

FS_ROOT = pins.FS_ROOT  # module-level so a bench or a test can point it elsewhere
BOARD = "esp32"


class LoopMotor(motor.StepperMotor):
    """The stepper with its STEP pulses made by a timed loop (see motor.StepperMotor).

    Each STEP level is held for at least its half period, timed from the moment the
    pin was written; the occlusion input is looked at after every pulse.
    """

    def __init__(self, step, dir_, en, feedback, occlusion, cfg):
        motor.StepperMotor.__init__(self, step, dir_, en, feedback, occlusion, cfg)
        period_us = 1_000_000 // self.step_hz
        self.hi_us = period_us // 2
        self.lo_us = period_us - self.hi_us
        min_us = (cfg["min_pulse_ns"] + 999) // 1000
        if self.hi_us < min_us or self.lo_us < min_us:
            raise hal.ProvisionError("motor.step_hz %d: pulses shorter than the driver's minimum" % self.step_hz)
        self._on = step.on  # bound once: the loop allocates nothing
        self._off = step.off

    def _run(self):
        on, off = self._on, self._off
        hi, lo = self.hi_us, self.lo_us
        ticks_us, diff, sleep_us = time.ticks_us, time.ticks_diff, time.sleep_us
        i = self.n
        while i:
            on()
            t = ticks_us()
            d = hi - diff(ticks_us(), t)
            if d > 0:
                sleep_us(d)
            off()
            t = ticks_us()
            if self.occluded_now():
                return 2
            d = lo - diff(ticks_us(), t)
            if d > 0:
                sleep_us(d)
            i -= 1
        return 0

    def _halt(self):
        self._off()


def boot_cause():
    """Why the ESP32 booted, as a msgdefs BOOT_* code, from machine.reset_cause().

    MicroPython folds ESP-IDF's brown-out reset into PWRON_RESET, so a brown-out reads
    as a power-on; machine.reset() reads as HARD_RESET (SOFT_RESET on older releases).
    A deep-sleep wake (the firmware never sleeps) or an unknown cause is a hard reset.
    """
    rc = machine.reset_cause()
    if rc == machine.WDT_RESET:
        return md.BOOT_WATCHDOG
    if rc == machine.SOFT_RESET:
        return md.BOOT_SOFT_RESET
    if rc == machine.PWRON_RESET:
        return md.BOOT_POWER_ON
    return md.BOOT_HARD_RESET


def _link(kind):
    if kind == "uart":
        c = pins.LINK
        u = machine.UART(
            c["uart_id"], baudrate=c["baudrate"], tx=pins.PINS["uart_tx"], rx=pins.PINS["uart_rx"],
            txbuf=2048, rxbuf=2048, timeout=0,
        )
        return hal.StreamLink(u, u)
    return hal.usb_link()


def build():
    """The ESP32's hardware for the firmware. Raises (and main.py stops, leaving the
    REPL) if BOOT is held, or provision.json, druglib.json or littlefs2 is missing."""
    root = FS_ROOT
    p = pins.PINS
    safe = Pin(p["safe_boot"], Pin.IN, Pin.PULL_UP)
    if safe.value() == 0:
        raise hal.SafeBoot("BOOT held: firmware not started, the REPL is yours")
    info, keys, extra = hal.load_provision(root, BOARD)
    hal.require_file(root + "druglib.json",
                     "the drug library must sit next to provision.json (theca flash writes both)")
    hal.check_storage(root)
    motor_cfg = hal.motor_settings(pins.MOTOR, extra)
    hw = hal.Hardware(root, info, keys, boot_cause())
    hw.clock = hal.Clock(machine.RTC())
    en_off = 1 - motor_cfg["enable_active"]
    occl = hal.Occlusion(Pin(p["occlusion"], Pin.IN, Pin.PULL_UP), pins.OCCLUSION["active"])
    hw.occlusion = occl
    hw.motor = LoopMotor(
        Pin(p["step"], Pin.OUT, value=0), Pin(p["dir"], Pin.OUT, value=motor_cfg["dir_forward"]),
        Pin(p["enable"], Pin.OUT, value=en_off), Pin(p["feedback"], Pin.IN, Pin.PULL_UP),
        occl, motor_cfg,
    )
    adc = machine.ADC(Pin(p["battery_adc"]), atten=getattr(machine.ADC, "ATTN_" + pins.BATTERY["atten"].upper()))
    hw.battery = hal.Battery(lambda: adc.read_uv() // 1000, pins.BATTERY)
    hw.buzzer = hal.Buzzer(
        machine.PWM(Pin(p["buzzer"]), freq=2000, duty_u16=0), machine.Timer(pins.BUZZER["timer"]),
        pins.BUZZER["duty_u16"],
    )
    hw.led = Pin(p["led"], Pin.OUT, value=0)
    hw.safe_held = lambda: safe.value() == 0  # pyright: ignore[reportAttributeAccessIssue] (a function)
    kind = extra.get("link", pins.LINK["default"])
    hw.link = _link(kind)
    if kind == "uart":
        hw.console = sys.stdout  # the link is on the UART: USB serial is the console
    # Last: a started watchdog cannot be stopped, so a build that failed above must
    # leave a REPL that is not reset under the user.
    w = pins.WATCHDOG
    hw.wdt = hal.Watchdog(w["timeout_ms"], w["period_s"], machine.Timer(w["timer"]))
    return hw


def bench():
    """The hardware for bench work at the REPL (after MAINTENANCE): build(), with the
    watchdog that build() starts fed by a timer, e.g.
        >>> import board, hal
        >>> hw = board.bench()
        >>> hal.run_strokes(hw, 1000)"""
    hw = build()
    hw.wdt.hand_over()
    return hw
