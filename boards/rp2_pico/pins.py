# Raspberry Pi Pico (RP2040): the wiring and the mechanism's constants, as plain data.
# docs/hardware.md has the same tables for the person holding the soldering iron; a test
# (tests/test_boards.py) checks the two agree. GP numbers are the RP2040's GPIOs.
PINS = {
    "step": 2,  # driver STEP, driven by PIO state machine 0 (set pin)
    "dir": 3,  # driver DIR
    "enable": 4,  # driver EN (TMC2209) / nENBL (DRV8825), active low
    "feedback": 6,  # encoder / hall sensor output, open collector, internal pull-up
    "occlusion": 7,  # pressure switch to GND when the line is blocked, internal pull-up
    "buzzer": 15,  # piezo buzzer through an NPN transistor, PWM slice 7 channel B
    "battery_adc": 28,  # ADC2: the cell through a 100k/100k divider
    "uart_tx": 0,  # UART0 TX, the optional protocol link (provision.json "link": "uart")
    "uart_rx": 1,  # UART0 RX
    "led": 25,  # the Pico's on-board LED: heartbeat
}

# The stepper driver and the mechanism (docs/hardware.md, "Mechanism").
MOTOR = {
    "microsteps_per_stroke": 128,  # 8 full steps at 1/16 microstepping = 1/25 turn
    "step_hz": 2000,  # microsteps per second: a stroke takes 64 ms
    "min_pulse_ns": 1900,  # DRV8825 minimum STEP high and low time (TMC2209: 100 ns)
    "enable_active": 0,  # EN / nENBL is active low on both drivers
    "dir_forward": 1,  # DIR level that pumps forward (swap a coil pair to reverse)
    "settle_us": 1000,  # ENABLE -> first STEP, and last STEP -> counting the feedback
    "feedback_edges_per_stroke": 4,  # 50-slot disc, both edges, 1/25 turn
    "feedback_min_edges": 2,  # fewer edges in a stroke: stalled
    "pio_sm": 0,  # PIO state machine making the STEP pulse train
}

OCCLUSION = {"active": 0}  # level on PINS["occlusion"] that means blocked

# Battery: a 1S LiPo stands in for the implant's primary cell (docs/hardware.md,
# "Battery"). The curve maps the cell's resting voltage to the days left of the emulated
# implant battery: elective replacement (90 days) at 3.55 V, end of service (0) at 3.30 V.
BATTERY = {
    "r_top_k": 100,  # divider: cell - 100k - ADC pin - 100k - GND
    "r_bottom_k": 100,
    "vref_mv": 3300,  # the Pico's ADC reference (3V3 through its RC filter)
    "samples": 9,  # median of 9 conversions per reading
    "recover_mv": 100,  # a rise this large is a new or charged cell
    "curve": (  # (cell mV, days left), mV decreasing
        (4150, 2555),
        (4000, 2000),
        (3850, 1200),
        (3750, 600),
        (3650, 250),
        (3550, 90),
        (3450, 30),
        (3300, 0),
    ),
}

BUZZER = {"duty_u16": 32768, "timer": -1}  # 50 % duty; timer -1: a software timer

WATCHDOG = {
    "timeout_ms": 8000,  # RP2040 maximum: 8388 ms
    "period_s": 2,  # main.py feeds it this often
    "timer": -1,  # feeds it after MAINTENANCE, while the REPL runs
}

LINK = {"default": "usb", "uart_id": 0, "baudrate": 115200}

# RP2040 watchdog registers: the scratch registers survive a watchdog reset and
# machine.reset() but not a power loss. (RP2350 / Pico 2: base 0x400D8000.)
CHIP = {"watchdog_base": 0x40058000}

FS_ROOT = "/"  # the Pico's default filesystem: littlefs2 over the flash after the firmware
