# A fake `machine` module for running board modules on the MicroPython unix port.
#
# Same names, signatures and behaviour as the rp2 / esp32 ports' machine module for
# what the boards use (Pin, PWM, ADC, WDT, UART, RTC, Timer, mem32, reset_cause), over
# fakeworld's simulated hardware, with every action recorded there. Where the two ports
# differ (reset-cause constants, WDT limits, the ADC) the world's profile decides.
import io

import fakeworld


def _w():
    return fakeworld.world


class Pin:
    # the rp2 port's values (ports/rp2/machine_pin.c); profile() sets the esp32 port's
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        self.id = id
        self._s = _w().pin(id)
        self._s.obj = self
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None):
        s = self._s
        if value is not None:
            s.out = 1 if value else 0  # as on the ports: the level is set before the mode
        if mode == Pin.OUT:
            s.mode = "out"
            _w().rec("pin", self.id, s.out)
        elif mode == Pin.IN:
            s.mode = "in"
        if pull == Pin.PULL_UP:
            s.pull = "up"
        elif pull == Pin.PULL_DOWN:
            s.pull = "down"

    def value(self, v=None):
        if v is None:
            return self._s.level()
        _w().write(self.id, v)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        _w().write(self.id, 1)

    def off(self):
        _w().write(self.id, 0)

    def toggle(self):
        _w().write(self.id, 1 - self._s.out)

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, hard=False):
        # hard or soft, the handler runs at the edge's time (a soft one would run a few
        # bytecodes later on a board)
        self._s.handler = handler
        self._s.trigger = trigger
        self._s.hard = hard

    def __repr__(self):
        return "Pin(%d)" % self.id


class PWM:
    def __init__(self, pin, *, freq=None, duty_u16=None):
        self.id = pin.id
        self._f = 0
        self._d = 0
        if freq is not None:
            self.freq(freq)  # (the port checks the range here too)
        if duty_u16 is not None:
            self._d = duty_u16
        self._rec()

    def _rec(self):
        _w().rec("pwm", self.id, (self._f, self._d))

    def freq(self, f=None):
        if f is None:
            return self._f
        if _w().profile == "esp32":
            if not 1 <= f <= 40_000_000:  # ports/esp32/machine_pwm.c check_freq_ranges
                raise ValueError("frequency must be from 1Hz to 40MHz")
        elif f < 8:  # ports/rp2/machine_pwm.c at clk_sys 125 MHz: a divider past 256
            raise ValueError("freq too small")
        elif f > 125_000_000:
            raise ValueError("freq too large")
        self._f = f
        self._rec()

    def duty_u16(self, d=None):
        if d is None:
            return self._d
        if not 0 <= d <= 65535:
            raise ValueError("duty out of range")
        self._d = d
        self._rec()

    def deinit(self):
        self._d = 0
        self._rec()


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, src, *, atten=None):
        self.id = src.id if isinstance(src, Pin) else src
        w = _w()
        if w.profile == "rp2" and self.id not in (26, 27, 28, 29, 0, 1, 2, 3, 4):
            raise ValueError("invalid ADC pin")
        self.atten = atten

    def _mv(self):
        return _w().adc_pin_mv.get(self.id, 0)

    def read_u16(self):
        # the rp2's 12-bit converter against 3.3 V, scaled to 16 bits as the port does
        mv = self._mv()
        raw = (mv * 4095 // 3300) if mv < 3300 else 4095
        v = raw << 4 | raw >> 8
        _w().rec("adc", self.id, v)
        return v

    def read_uv(self):
        if _w().profile != "esp32":
            raise AttributeError("read_uv")
        # esp32: calibrated microvolts, to the millivolt; 11 dB attenuation saturates ~3.1 V
        mv = self._mv()
        uv = (mv if mv < 3100 else 3100) * 1000
        _w().rec("adc", self.id, uv)
        return uv


class WDT:
    def __init__(self, id=0, timeout=5000):
        w = _w()
        if w.profile == "rp2":
            if timeout > 8388:
                raise ValueError("timeout exceeds 8388")
            # pico-sdk's watchdog_enable() marks scratch[4]: the reset cause reads it
            w.regs[0x4005801C] = 0x6AB73121
        w.wdt_timeout_ns = timeout * 1_000_000
        w.wdt_fed = w.now_ns
        w.rec("wdt", "start", timeout)

    def feed(self):
        w = _w()
        w.wdt_fed = w.now_ns
        w.rec("wdt", "feed", None)


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kw):
        w = _w()
        if w.profile == "esp32" and id not in (0, 1, 2, 3):
            raise ValueError("esp32 timers are 0..3")
        if w.profile == "rp2" and id != -1:
            # ports/rp2/machine_timer.c: only the soft timer (-1) exists
            raise ValueError("Timer doesn't exist")
        self.id = id
        self._ev = None
        if kw:
            self.init(**kw)

    def init(self, *, mode=PERIODIC, period=-1, freq=-1, callback=None):
        self.deinit()
        ms = period if period > 0 else 1000 // freq
        self.mode = mode
        self.period_ns = ms * 1_000_000
        self.callback = callback
        self._arm()

    def _arm(self):
        w = _w()
        self._ev = w.at(w.now_ns + self.period_ns, self._fire)

    def _fire(self):
        self._ev = None
        if self.mode == Timer.PERIODIC:
            self._arm()
        if self.callback is not None:
            self.callback(self)

    def deinit(self):
        if self._ev is not None:
            _w().cancel(self._ev)
            self._ev = None


class RTC:
    def datetime(self, t=None):
        import vtime
        import utime

        w = _w()
        if t is None:
            y, mo, d, h, mi, s, wd = vtime.gmtime()[:7]
            return (y, mo, d, wd, h, mi, s, 0)
        y, mo, d, wd, h, mi, s = t[:7]
        board_s = utime.mktime((y, mo, d, h, mi, s, 0, 0)) - fakeworld.BOARD_EPOCH
        w.set_rtc(board_s)
        w.rec("rtc", "set", board_s)


class UART(io.IOBase):
    """A UART whose other end is the test: world.uarts[id].feed(bytes) delivers bytes to
    the board; what the board writes is in `tx` (and in the log)."""

    def __init__(self, id, baudrate=115200, *, tx=None, rx=None, txbuf=256, rxbuf=256, timeout=0):
        self.id = id
        self.baudrate = baudrate
        self.rx = bytearray()
        self.tx = bytearray()
        self.writes = []
        _w().uarts[id] = self

    def feed(self, data):
        self.rx += data

    def any(self):
        return len(self.rx)

    def readinto(self, buf):
        n = len(self.rx) if len(self.rx) < len(buf) else len(buf)
        if n == 0:
            return None  # timeout=0 with nothing waiting, as on the ports
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n

    def read(self, n=-1):
        if not self.rx:
            return None
        n = len(self.rx) if n < 0 or n > len(self.rx) else n
        b = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return b

    def write(self, b):
        b = bytes(b)
        self.tx += b
        self.writes.append(b)
        _w().rec("uart", self.id, b)
        return len(b)

    def ioctl(self, req, arg):
        if req == 3:  # MP_STREAM_POLL
            r = 0
            if arg & 1 and self.rx:
                r |= 1
            if arg & 4:
                r |= 4
            return r
        return -1


class _Mem32:
    def __getitem__(self, addr):
        return _w().regs.get(addr, 0)

    def __setitem__(self, addr, v):
        _w().regs[addr] = v & 0xFFFFFFFF


mem32 = _Mem32()

PWRON_RESET = 1
WDT_RESET = 3
if fakeworld.world is not None and fakeworld.world.profile == "esp32":
    HARD_RESET = 2
    DEEPSLEEP_RESET = 4
    SOFT_RESET = 5


def reset_cause():
    return _w().reset_cause


def reset():
    raise fakeworld.BoardReset()


def unique_id():
    return b"\xe6\x61\x41\x04\x03\x27\x2b\x2c"


def freq(f=None):
    return 125_000_000 if _w().profile == "rp2" else 240_000_000


def idle():
    pass


# The ports' values (checked against ports/esp32/machine_pin.c: GPIO_MODE_INPUT,
# GPIO_MODE_INPUT_OUTPUT, GPIO_MODE_INPUT_OUTPUT_OD, GPIO_PULL_*, GPIO_INTR_*EDGE)
_PIN = {
    "rp2": {"IN": 0, "OUT": 1, "OPEN_DRAIN": 2, "PULL_UP": 1, "PULL_DOWN": 2,
            "IRQ_FALLING": 4, "IRQ_RISING": 8},
    "esp32": {"IN": 1, "OUT": 3, "OPEN_DRAIN": 7, "PULL_UP": 2, "PULL_DOWN": 1,
              "IRQ_FALLING": 2, "IRQ_RISING": 1},
}


def profile(name):
    """Give the fakes the constants of the port `name` ("rp2" or "esp32")."""
    for k, v in _PIN[name].items():
        setattr(Pin, k, v)
