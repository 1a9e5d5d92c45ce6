# heapsize: 32m
# boards/esp32 on the unix port over a fake machine module (tests/mp/fake_machine): the
# CPU-timed pulse train (with every pin write costing 3 us, as a slow interpreter
# would), the ESP32's reset causes and unset RTC, and every check all boards share
# (fake_machine/boardchecks.py).
import sys

sys.path.insert(0, "tests/mp/fake_machine")
import fakeworld  # noqa: E402

fakeworld.install("esp32")
import board  # noqa: E402

# importing the board must not touch the hardware
_AT_IMPORT = (list(fakeworld.world.log), dict(fakeworld.world.pins))

import boardchecks as C  # noqa: E402
import hal  # noqa: E402
import msgdefs as md  # noqa: E402
import rig  # noqa: E402

NAME = "esp32"
rig.CPU_WRITE_NS = 3000


def test_import_touches_no_hardware():
    assert _AT_IMPORT == ([], {}), _AT_IMPORT
    assert board.__file__.startswith("boards/esp32/")


def test_interface():
    C.check_interface(board, NAME)


def test_strokes_timed_loop():
    wins = C.check_strokes(board, NAME)
    # pulses are never shorter than asked, and a slow pin write only adds its own time
    for start, end, _n in wins:
        assert end - start < 128 * 520_000 + 3_000_000


def test_timed_loop_never_shorter_than_the_driver_minimum():
    # even when every pin write takes 40 us the levels last at least the half period
    w, hw = C.built(board, NAME, cpu_write_ns=40_000)
    assert hw.motor.stroke() == 0
    assert w.violations == []
    r = w.edges(rig.WIRING[NAME]["step"], 1)
    f = w.edges(rig.WIRING[NAME]["step"], 0)
    assert min(b - a for a, b in zip(r, f)) >= 250_000
    assert min(b - a for a, b in zip(r, r[1:])) >= 500_000


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


def test_battery_reads_calibrated_microvolts():
    w, hw = C.built(board, NAME, battery_mv=3700)
    assert hw.battery.cell_mv() == 3700
    reads = w.writes(rig.WIRING[NAME]["battery_adc"], "adc")
    assert reads and reads[-1][1] == 1_850_000  # read_uv() of the divided voltage


def test_occlusion_alarm():
    # REQ: SR-OCCL-01
    C.check_occlusion(board, NAME)


def test_occlusion_during_stroke():
    C.check_occlusion_during_stroke(board, NAME)


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


def test_clock_unset_after_power_loss():
    # the ESP32's RTC restarts at 2000-01-01 after a power loss: before the Theca epoch.
    # Device time must never be negative: the clock starts at 2021-01-01 until SET_TIME.
    w = rig.setup(board, NAME, device_t=-rig.TO_BOARD)
    hw = board.build()
    assert hw.clock.now() == hal.UNSET_FLOOR
    assert w.rtc_s() == hal.UNSET_FLOOR + rig.TO_BOARD


def test_buzzer():
    C.check_buzzer_does_not_block(board, NAME)


def test_safe_boot_button():
    boot = rig.WIRING[NAME]["safe_boot"]

    def hold(w):
        w.drive(boot, 0)

    def release(w):
        w.drive(boot, None)

    C.check_safe_boot(board, NAME, hold, release)


def test_reset_cause_mapping():
    # machine.reset_cause() on esp32: PWRON 1, HARD 2, WDT 3, DEEPSLEEP 4, SOFT 5, 0 unknown
    expect = ((1, md.BOOT_POWER_ON), (3, md.BOOT_WATCHDOG), (5, md.BOOT_SOFT_RESET),
              (2, md.BOOT_HARD_RESET), (4, md.BOOT_HARD_RESET), (0, md.BOOT_HARD_RESET))
    for rc, cause in expect:
        rig.setup(board, NAME, reset_cause=rc)
        assert board.build().reset_cause() == cause, (rc, cause)


def test_the_fakes_have_the_real_port_s_constants():
    # issue 14: the esp32 fake used rp2's Pin constants (ports/esp32/machine_pin.c:
    # GPIO_MODE_INPUT 1, INPUT_OUTPUT 3, INPUT_OUTPUT_OD 7, GPIO_PULL_UP 2, GPIO_PULL_DOWN
    # 1, GPIO_INTR_POSEDGE 1, GPIO_INTR_NEGEDGE 2); the esp32 epoch is 2000
    import machine
    import time

    rig.setup(board, NAME)
    P = machine.Pin
    assert (P.IN, P.OUT, P.OPEN_DRAIN, P.PULL_UP, P.PULL_DOWN, P.IRQ_RISING,
            P.IRQ_FALLING) == (1, 3, 7, 2, 1, 1, 2)
    assert time.mktime((2020, 1, 1, 0, 0, 0, 0, 0)) == 1577836800 - 946684800
    pwm = machine.PWM(machine.Pin(5), freq=2000, duty_u16=0)
    try:
        pwm.freq(40_000_001)
        raise AssertionError("over 40 MHz")
    except ValueError as e:
        assert "1Hz to 40MHz" in str(e)
