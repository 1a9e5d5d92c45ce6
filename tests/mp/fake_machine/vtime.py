# Virtual `time` for board tests (fakeworld.install() puts it in sys.modules["time"]).
#
# ticks and sleeps follow fakeworld's virtual clock; time.time() reads the simulated
# RTC in the boards' epoch (2000-01-01), and mktime/gmtime use that epoch too, as
# MicroPython does on rp2 and esp32. Sleeping advances virtual time and runs whatever
# the world has due (PIO instructions, timers, sensor events) on the way.
import utime

import fakeworld

_E = fakeworld.BOARD_EPOCH
ticks_diff = utime.ticks_diff
ticks_add = utime.ticks_add


def _w():
    return fakeworld.world


def ticks_ms():
    w = _w()
    return w.ms_base + w.now_ns // 1_000_000


def ticks_us():
    w = _w()
    return w.ms_base * 1000 + w.now_ns // 1000


def ticks_cpu():
    return ticks_us()


def sleep_us(us):
    _w().sleep_ns(us * 1000)


def sleep_ms(ms):
    _w().sleep_ns(ms * 1_000_000)


def sleep(s):
    _w().sleep_ns(int(s * 1_000_000_000))


def time():
    return _w().rtc_s()


def time_ns():
    w = _w()
    return w.rtc_base * 1_000_000_000 + w.now_ns


def gmtime(secs=None):
    # 8 items as on the boards (the unix port adds a ninth)
    return utime.gmtime((time() if secs is None else secs) + _E)[:8]


localtime = gmtime


def mktime(t):
    return utime.mktime(t) - _E
