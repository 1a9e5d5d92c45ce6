# ESP32 dev board (ESP32-WROOM-32, e.g. ESP32-DevKitC): the wiring and the mechanism's
# constants, as plain data. docs/hardware.md has the same tables; a test checks the two
# agree. Numbers are ESP32 GPIOs; all avoid the strapping pins (0, 2, 5, 12, 15) except
# the LED on GPIO2 (an output, low at boot, which is what the strap wants) and the BOOT
# button on GPIO0 (read only).
PINS = {
    "step": 25,  # driver STEP, timed by the CPU (board.py)
    "dir": 26,  # driver DIR
    "enable": 27,  # driver EN (TMC2209) / nENBL (DRV8825), active low
    "feedback": 32,  # encoder / hall sensor output, open collector, internal pull-up
    "occlusion": 33,  # pressure switch to GND when the line is blocked, internal pull-up
    "buzzer": 23,  # piezo buzzer through an NPN transistor, LEDC PWM
    "battery_adc": 35,  # ADC1 channel 7 (input only): the cell through a 100k/100k divider
    "uart_tx": 17,  # UART2 TX, the optional protocol link (provision.json "link": "uart")
    "uart_rx": 16,  # UART2 RX
    "led": 2,  # on-board LED of most dev boards: heartbeat
    "safe_boot": 0,  # the BOOT button (to GND): held, the firmware does not start
}

MOTOR = {
    "microsteps_per_stroke": 128,  # 8 full steps at 1/16 microstepping = 1/25 turn
    "step_hz": 2000,  # microsteps per second: a stroke takes 64 ms
    "min_pulse_ns": 1900,  # DRV8825 minimum STEP high and low time (TMC2209: 100 ns)
    "enable_active": 0,  # EN / nENBL is active low on both drivers
    "dir_forward": 1,  # DIR level that pumps forward
    "settle_us": 1000,  # ENABLE -> first STEP, and last STEP -> counting the feedback
    "feedback_edges_per_stroke": 4,  # 50-slot disc, both edges, 1/25 turn
    "feedback_min_edges": 2,  # fewer edges in a stroke: stalled
}

OCCLUSION = {"active": 0}

# The same emulated-implant curve as the Pico's (docs/hardware.md, "Battery").
BATTERY = {
    "r_top_k": 100,
    "r_bottom_k": 100,
    "atten": "11dB",  # ADC full scale ~3.1 V; read_uv() applies the chip's calibration
    "samples": 9,
    "recover_mv": 100,
    "curve": (
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

BUZZER = {"duty_u16": 32768, "timer": 0}  # ESP32 timers are hardware timers 0..3

WATCHDOG = {"timeout_ms": 8000, "period_s": 2, "timer": 1}

# "usb": the console UART0 behind the board's USB-serial bridge (the REPL's port).
LINK = {"default": "usb", "uart_id": 2, "baudrate": 115200}

FS_ROOT = "/"  # the ESP32 port's default filesystem: littlefs2 on the "vfs" partition
