# heapsize: 32m
# boards/rp2_pico on the unix port over fake machine/rp2 modules (tests/mp/fake_machine):
# the PIO state machine's pulse train, the RP2040's reset causes and clock kept across a
# watchdog reset, and every check all boards share (fake_machine/boardchecks.py).
import sys

sys.path.insert(0, "tests/mp/fake_machine")
import fakeworld  # noqa: E402

fakeworld.install("rp2_pico")
import board  # noqa: E402

# importing the board must not touch the hardware
_AT_IMPORT = (list(fakeworld.world.log), dict(fakeworld.world.pins), list(fakeworld.world.sms))

import boardchecks as C  # noqa: E402
import hal  # noqa: E402
import msgdefs as md  # noqa: E402
import rig  # noqa: E402

NAME = "rp2_pico"
WDT_BASE = 0x40058000
SCRATCH0, SCRATCH1, SCRATCH4 = WDT_BASE + 0x0C, WDT_BASE + 0x10, WDT_BASE + 0x1C
MAGIC = 0x6AB73121


def test_import_touches_no_hardware():
    assert _AT_IMPORT == ([], {}, []), _AT_IMPORT
    assert board.__file__.startswith("boards/rp2_pico/")


def test_interface():
    C.check_interface(board, NAME)


def test_strokes_pio_pulse_train_exact():
    # PIO: 32 cycles per pulse at 64 kHz -> exactly 500 us, 250 us high
    C.check_strokes(board, NAME, exact_period_ns=500_000)
    w = fakeworld.world
    sm = w.sms[0]
    assert sm.freq == 64_000 and sm.set_base == rig.WIRING[NAME]["step"]


def test_dose_through_pump():
    C.check_dose_through_pump(board, NAME)


def test_stall():
    # REQ: SR-STALL-01
    C.check_stall(board, NAME)


def test_partial_stall():
    C.check_partial_stall(board, NAME)


def test_battery_alarms():
    # REQ: SR-BATT-01
    C.check_battery(board, NAME)


def test_occlusion_alarm():
    # REQ: SR-OCCL-01
    C.check_occlusion(board, NAME)


def test_occlusion_during_stroke_stops_the_pio():
    C.check_occlusion_during_stroke(board, NAME)
    w = fakeworld.world
    sm = w.sms[0]
    # the state machine was put back at the program start: it waits there for a count
    w.advance_to(w.now_ns + C.MS)
    assert sm.running and sm.next_t is None and sm.pc == 0 and sm.tx == [] and sm.inits == 2
    assert w.level(rig.WIRING[NAME]["step"]) == 0


def test_bench_calibration_run():
    C.check_bench_calibration(board, NAME)


def test_usb_link():
    C.check_usb_link(board, NAME)


def test_main_watchdog_link_maintenance():
    # REQ: SR-WDT-01
    C.check_main_watchdog_and_maintenance(board, NAME)


def test_fatal_lets_the_watchdog_reset():
    # REQ: SR-FAULT-01
    C.check_fatal_lets_watchdog_reset(board, NAME)


def test_provision_errors():
    C.check_provision_errors(board, NAME)


def test_storage_must_be_littlefs():
    C.check_storage_must_be_littlefs(board, NAME)


def test_motor_override_from_provision():
    C.check_motor_override(board, NAME)


def test_clock():
    C.check_clock(board, NAME)


def test_buzzer():
    C.check_buzzer_does_not_block(board, NAME)


def test_safe_boot_bootsel():
    def hold(w):
        w.bootsel = 1

    def release(w):
        w.bootsel = 0

    C.check_safe_boot(board, NAME, hold, release)


def _with(regs, **kw):
    d = dict(regs)
    for k, v in kw.items():
        d[{"s4": SCRATCH4}[k]] = v
    return d


def _boot(rtc_device_t, regs, cause):
    w = rig.setup(board, NAME, device_t=rtc_device_t, reset_cause=cause)
    w.regs.update(regs)
    hw = board.build()
    return hw.reset_cause(), hw.clock.now()


def test_reset_cause_mapping():
    floor = hal.UNSET_FLOOR  # the rp2 port's RTC after any hardware reset: 2021-01-01
    t = rig.DEVICE_T0 + 1234
    saved = {SCRATCH1: t, SCRATCH0: t ^ 0x3A5A5A5A}
    # power on: scratch registers cleared, RTC at its default
    assert _boot(floor, {}, 1) == (md.BOOT_POWER_ON, floor)
    # our watchdog bit: pico-sdk's magic in scratch[4]; the clock comes back from scratch
    assert _boot(floor, _with(saved, s4=MAGIC), 3) == (md.BOOT_WATCHDOG, t)
    # the watchdog used to reboot (machine.reset(), picotool, UF2): a hard reset
    assert _boot(floor, _with(saved, s4=0), 3) == (md.BOOT_HARD_RESET, t)
    # a soft reset keeps the RTC running (and the scratch time is not used)
    assert _boot(rig.DEVICE_T0, _with(saved, s4=MAGIC), 3) == (md.BOOT_SOFT_RESET, rig.DEVICE_T0)
    # a soft reset an hour after a power-on, the time never set: the RTC kept running
    assert _boot(floor + 3600, _with(saved, s4=0), 1) == (md.BOOT_SOFT_RESET, floor + 3600)
    # a watchdog reset some seconds after the boot: the RTC's run since then is added
    assert _boot(floor + 7, _with(saved, s4=MAGIC), 3) == (md.BOOT_WATCHDOG, t + 7)
    # a damaged saved time is not trusted
    bad = {SCRATCH1: t, SCRATCH0: t ^ 1, SCRATCH4: MAGIC}
    assert _boot(floor, bad, 3) == (md.BOOT_WATCHDOG, floor)


def test_watchdog_reset_keeps_the_clock():
    # run, feeding: each feed stores the time in the scratch registers
    w, hw = C.built(board, NAME, watchdog=True)
    for _ in range(5):
        w.advance_to(w.now_ns + 2 * C.S)
        hw.wdt.feed()
    t = hw.clock.now()
    # the firmware hangs: nothing feeds, the watchdog bites
    try:
        w.advance_to(w.now_ns + 10 * C.S)
        raise AssertionError("no bite")
    except fakeworld.WatchdogBite:
        pass
    regs = dict(w.regs)  # they survive the reset; the rp2 port resets its RTC
    got = _boot(hal.UNSET_FLOOR, regs, 3)
    assert got == (md.BOOT_WATCHDOG, t), (got, t)


def test_maintenance_boot_survives_soft_resets():
    # issue 14, found on the emulated Pico: after MAINTENANCE a soft reset (Ctrl-D,
    # mpremote exec without resume) stopped the timer feeding the watchdog, which bit
    # 9 s later and started the firmware under the user. Now MAINTENANCE resets into
    # a boot where no watchdog runs, kept across soft resets, left at a hard reset.
    s2 = WDT_BASE + 0x14
    floor = hal.UNSET_FLOOR

    def boot(rtc_t, s2_value, cause=3):
        w = rig.setup(board, NAME, device_t=rtc_t, reset_cause=cause)
        w.regs.update({s2: s2_value, SCRATCH4: 0})
        try:
            board.build()
            return "firmware", w.regs.get(s2, 0), w.wdt_timeout_ns or None
        except hal.SafeBoot as e:
            assert "maintenance" in str(e)
            return "repl", w.regs.get(s2, 0), w.wdt_timeout_ns or None

    enter, inside = board.MAINT_ENTER, board.MAINT_IN
    # the reset MAINTENANCE makes (machine.reset(): a hardware reset), then soft resets
    assert boot(floor, enter) == ("repl", inside, None)
    assert boot(floor + 120, inside) == ("repl", inside, None)
    assert boot(floor + 900, inside) == ("repl", inside, None)
    # machine.reset() or the RUN pin: the firmware again, with its watchdog
    kind, left, wdt = boot(floor, inside)
    assert (kind, left) == ("firmware", 0) and wdt is not None
    # a power cycle clears the scratch registers: the firmware
    assert boot(floor, 0, cause=1)[0] == "firmware"
    # and an ENTER left from before a soft reset does not trap a running board
    assert boot(floor + 3600, enter)[0] == "firmware"


def test_wdt_timeout_within_rp2040_limit():
    assert board.pins.WATCHDOG["timeout_ms"] <= 8388


def test_the_fakes_have_the_real_port_s_constants():
    # issue 14: the fakes differed from the real rp2 port (checked against the official
    # v1.28 source: ports/rp2/rp2_pio.c, machine_pin.c, machine_timer.c; and the measured
    # epoch of the official firmware, ../shared/rp2/README.md)
    import machine
    import rp2
    import time

    rig.setup(board, NAME)
    assert (rp2.PIO.IN_LOW, rp2.PIO.IN_HIGH, rp2.PIO.OUT_LOW, rp2.PIO.OUT_HIGH) == (0, 1, 2, 3)
    P = machine.Pin
    assert (P.IN, P.OUT, P.OPEN_DRAIN, P.PULL_UP, P.PULL_DOWN, P.IRQ_FALLING,
            P.IRQ_RISING) == (0, 1, 2, 1, 2, 4, 8)
    assert time.mktime((2020, 1, 1, 0, 0, 0, 0, 0)) == 1577836800  # the 1970 epoch
    assert fakeworld.BOARD_EPOCH == 0
    try:
        machine.Timer(0)
        raise AssertionError("rp2 has only the soft timer")
    except ValueError as e:
        assert "doesn't exist" in str(e)
    machine.Timer(-1)
    pwm = machine.PWM(machine.Pin(5), freq=2000, duty_u16=0)
    for bad in (7, 125_000_001):
        try:
            pwm.freq(bad)
            raise AssertionError(bad)
        except ValueError:
            pass
