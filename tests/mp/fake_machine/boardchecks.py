# Checks every real board must pass on the fakes; tests/mp/mptest_board_<board>.py call
# them with their board module. Each builds a fresh world (rig.setup) wired as the
# documentation says and runs the board's code, with the real pump core where the
# behaviour is the pump's (alarms, modes) and main.py where it is the shell's (the
# watchdog task, the link, MAINTENANCE).
import struct

import fakeworld
import hal
import msgdefs as md
import rig
from fakehw import Host, heap_blocks_taken, reply, rx_blob

import pump as P
import strokes

S = 1_000_000_000
MS = 1_000_000
LIB = P.load_druglib("firmware/druglib.json")
STROKE_N = rig.MICROSTEPS_PER_STROKE


def built(board, name, watchdog=False, **kw):
    """A board built on a fresh world, its clock set as the host's SET_TIME would.

    The hardware watchdog is started by build() as on the board; unless `watchdog`,
    the world then stops enforcing it: these checks drive the pump core without
    main.py's watchdog task (check_main_watchdog_and_maintenance covers that)."""
    w = rig.setup(board, name, **kw)
    hw = board.build()
    hw.clock.set(rig.DEVICE_T0)
    w.clock_set_ns = w.now_ns
    if not watchdog:
        w.wdt_timeout_ns = 0
    return w, hw


def running_pump(hw, rx=None):
    """The real pump core on the board's hardware, programmed (1.5 mg/day morphine at
    10 mg/mL unless rx is given: 600 strokes a day). `p.host` sends further commands."""
    now = hw.clock.now()
    p = P.Pump(hw, now, LIB)
    p.host = Host()
    r = reply(p.command(p.host.cmd(md.T_PROGRAM, rx or rx_blob(), t=now), now))
    assert r[2] == 0, r
    return p


def run_pump(w, hw, p, seconds):
    """main.py's therapy loop in virtual time: tick, then sleep until the next tick."""
    end = hw.clock.now() + seconds
    while True:
        now = hw.clock.now()
        if now >= end:
            break
        nxt = p.tick(now)
        if nxt > end:
            nxt = end
        w.advance_to(w.now_ns + (nxt - now) * S)
    p.tick(hw.clock.now())


def delivered_strokes(p):
    d = p.delivery
    return (d.delivered_ul * 1000 + d.delivered_nl) // d.stroke_nl


def wire(name):
    return rig.WIRING[name]


# -- the interface ---------------------------------------------------------------------


def check_interface(board, name):
    w, hw = built(board, name)
    info = hw.info
    assert info["serial"] == b"BENCH0000001" and info["board"] == name
    assert info["stroke_nl"] == 250 and info["capacity_nl"] == 20_000_000
    assert info["catheter_nl"] == 150_000 and info["low_reservoir_nl"] == 2_000_000
    assert info["reservoir_nl"] == 20_000_000  # provisioned as a pump just filled
    assert hw.keys == {md.ROLE_CLINICIAN: b"\x11" * 32, md.ROLE_PATIENT: b"\x22" * 32}
    assert hw.fs_root == "/lfs/" and hw.druglib_path == "/lfs/druglib.json"
    assert hw.telemetry is None and hw.status_period_s == 0
    starts = [v for (t, k, n, v) in w.log if k == "wdt" and n == "start"]
    assert len(starts) == 1 and hw.wdt.period_s * 1000 * 2 <= starts[0], (starts, hw.wdt.period_s)
    assert hw.reset_cause() in (md.BOOT_POWER_ON, md.BOOT_WATCHDOG, md.BOOT_SOFT_RESET,
                                md.BOOT_HARD_RESET)
    for name_ in ("readinto", "write"):
        assert hasattr(hw.link, name_)
    assert not hw.occlusion.blocked()
    # the driver is disabled and STEP low until a stroke
    assert w.level(wire(name)["enable"]) == 1 and w.level(wire(name)["step"]) == 0


# -- the motor -------------------------------------------------------------------------


def check_strokes(board, name, exact_period_ns=None):
    """N strokes make N x microsteps_per_stroke STEP pulses, within ENABLE windows, with
    DIR set beforehand and every pulse at least as long as the driver needs."""
    w, hw = built(board, name)
    step, d = wire(name)["step"], wire(name)["dir"]
    for _ in range(5):
        assert hw.motor.stroke() == 0
    wins = rig.strokes_of(w, name)
    assert [n for (_, _, n) in wins] == [STROKE_N] * 5, wins
    rises = w.edges(step, 1)
    falls = w.edges(step, 0)
    assert len(rises) == len(falls) == 5 * STROKE_N
    assert w.mech.pos == 5 * STROKE_N and w.mech.steps_ignored == 0
    assert w.violations == [], w.violations[:5]
    period_ns = 1_000_000_000 // board.pins.MOTOR["step_hz"]
    k = 0
    for start, end, n in wins:
        r = rises[k : k + n]
        f = falls[k : k + n]
        k += n
        assert start < r[0] and f[-1] < end
        # ENABLE -> first STEP: the driver's settle time; DIR was written before ENABLE
        assert r[0] - start >= board.pins.MOTOR["settle_us"] * 1000
        dir_writes = [t for (t, v) in w.writes(d) if start < t < end]
        assert dir_writes == [], "DIR written while the motor moved"
        for i in range(n):
            high = f[i] - r[i]
            assert high >= board.pins.MOTOR["min_pulse_ns"] and high >= period_ns // 2, high
            if i:
                per = r[i] - r[i - 1]
                if exact_period_ns is not None:
                    assert per == exact_period_ns, per
                else:
                    assert period_ns <= per <= period_ns * 21 // 20, per
    # between strokes the driver is off
    assert w.level(wire(name)["enable"]) == 1 and w.level(step) == 0
    for t in rises:
        assert any(s < t < e for (s, e, _) in wins)
    return wins


def check_dose_through_pump(board, name):
    """The pump core's strokes over an hour (basal + a clinician bolus) each become
    exactly microsteps_per_stroke pulses; what the mechanism turned is what the pump
    counted."""
    w, hw = built(board, name)
    p = running_pump(hw)
    now = hw.clock.now()
    # clinician bolus 0.1 mg at 10 mg/mL = 10 uL = 40 strokes over 10 minutes
    bolus = struct.pack(md.CLINICIAN_BOLUS_FMT, 100_000, 600)
    r = reply(p.command(p.host.cmd(md.T_CLINICIAN_BOLUS, bolus, t=now), now))
    assert r[2] == 0, r
    run_pump(w, hw, p, 3600)
    n = delivered_strokes(p)
    assert n == 25 + 40, n  # 150 uL/day basal is 25 strokes an hour
    wins = rig.strokes_of(w, name)
    assert len(wins) == n and all(c == STROKE_N for (_, _, c) in wins)
    assert w.mech.pos == n * STROKE_N
    assert w.violations == []
    assert hw.motor.strokes == n and hw.motor.stalls == 0


def check_stall(board, name):
    w, hw = built(board, name)
    w.mech.stalled = True
    assert hw.motor.stroke() == 1
    (start, end, pulses), = rig.strokes_of(w, name)
    assert pulses == STROKE_N and w.mech.pos == 0  # pulses went out, the rotor did not turn
    assert w.level(wire(name)["enable"]) == 1
    # through the pump core: the motor_stall alarm, delivery halted, nothing counted
    p = running_pump(hw)
    run_pump(w, hw, p, 600)
    assert p.alarms.active(md.ALARM_MOTOR_STALL) and p.mode == P.HALTED
    assert delivered_strokes(p) == 0
    # the mechanism frees itself: the pump's retry finds it turning and clears the alarm
    w.mech.stalled = False
    run_pump(w, hw, p, 3 * strokes.STALL_RETRY_S)
    assert not p.alarms.active(md.ALARM_MOTOR_STALL) and p.mode == P.RUNNING
    assert delivered_strokes(p) >= 1 and w.mech.pos == delivered_strokes(p) * STROKE_N


def check_partial_stall(board, name):
    """A rotor that slips (turns only a third of the steps) gives too few edges: stalled."""
    w, hw = built(board, name)
    mech = w.mech
    orig = mech._step
    count = [0]

    def slipping():
        count[0] += 1
        if count[0] % 3 == 0:
            orig()  # two steps in three are lost in the mechanism

    mech._step = slipping
    r = hw.motor.stroke()
    assert mech.pos < STROKE_N // 2
    assert r == 1, (r, hw.motor.edges)


def check_battery(board, name):
    """A low ADC reading reaches the pump's battery alarms."""
    w, hw = built(board, name, battery_mv=4100)
    p = running_pump(hw)
    p.tick(hw.clock.now())
    assert not p.alarms.active(md.ALARM_BATTERY_ERI) and p.battery_days > 2000
    adc = wire(name)["battery_adc"]
    n_reads = len(w.writes(adc, "adc"))
    assert n_reads >= 9  # median of 9 conversions per reading
    rig.set_battery(w, name, 3500)  # days left ~60 on the curve: elective replacement
    w.advance_to(w.now_ns + 600 * S)
    p.tick(hw.clock.now())
    assert p.alarms.active(md.ALARM_BATTERY_ERI) and not p.alarms.active(md.ALARM_BATTERY_EOS)
    assert 50 <= p.battery_days <= 65, p.battery_days
    assert p.mode == P.RUNNING  # ERI is a warning
    rig.set_battery(w, name, 3550)  # recovers a little at rest: no chatter
    p.tick(hw.clock.now())
    assert p.alarms.active(md.ALARM_BATTERY_ERI)
    rig.set_battery(w, name, 3250)  # end of service: critical, delivery halts
    p.tick(hw.clock.now())
    assert p.alarms.active(md.ALARM_BATTERY_EOS) and p.battery_days <= 0 and p.mode == P.HALTED
    rig.set_battery(w, name, 4100)  # a new cell: the battery alarms clear
    p.tick(hw.clock.now())
    assert not p.alarms.active(md.ALARM_BATTERY_EOS) and not p.alarms.active(md.ALARM_BATTERY_ERI)
    assert p.battery_days > 2000
    # every tick reads the cell: on the curve's slope too, no heap block, not even a frame
    rig.set_battery(w, name, 3500)
    w.record = False
    assert not heap_blocks_taken(lambda: hw.battery.days_left(0), 50)
    w.record = True


def check_occlusion(board, name):
    w, hw = built(board, name)
    occ = wire(name)["occlusion"]
    p = running_pump(hw)
    run_pump(w, hw, p, 300)
    before = delivered_strokes(p)
    assert before > 0
    w.drive(occ, 0)  # the pressure switch closes to GND
    assert hw.occlusion.blocked()
    p.tick(hw.clock.now())
    assert p.alarms.active(md.ALARM_OCCLUSION) and p.mode == P.HALTED
    wins = len(rig.strokes_of(w, name))
    assert hw.motor.stroke() == 2
    assert len(rig.strokes_of(w, name)) == wins  # never enabled against a blocked line
    w.drive(occ, None)  # released: the pull-up reads open
    p.tick(hw.clock.now())
    assert not p.alarms.active(md.ALARM_OCCLUSION) and p.mode == P.RUNNING


def check_occlusion_during_stroke(board, name):
    w, hw = built(board, name)
    occ = wire(name)["occlusion"]
    trip = w.now_ns + 20 * MS
    w.at(trip, lambda: w.drive(occ, 0))
    assert hw.motor.stroke() == 2
    (start, end, pulses), = rig.strokes_of(w, name)
    assert 0 < pulses < STROKE_N, pulses
    assert trip <= end <= trip + 1 * MS, (end - trip)  # ENABLE dropped within a millisecond
    assert w.mech.pos == pulses
    assert not w.edges(wire(name)["step"], 1) or max(w.edges(wire(name)["step"], 1)) < end
    assert hw.motor.occlusions == 1


# -- the shell through main.py ------------------------------------------------------------


def check_main_watchdog_and_maintenance(board, name):
    """main.main() on the board: the host sets the time, programs, reads the status and
    sends MAINTENANCE over the UART. The watchdog is fed every period_s all along (never
    bites), every stroke is 128 pulses, and after MAINTENANCE main() returns with the
    watchdog handed to a timer so the REPL is not reset."""
    import main

    w = rig.setup(board, name)
    h = rig.HostLink(w, name)
    h.send_at(1 * S, md.T_SET_TIME, struct.pack(md.SET_TIME_FMT, rig.DEVICE_T0, 0))
    h.send_at(2 * S, md.T_PROGRAM, rx_blob())
    h.send_at(7200 * S, md.T_GET_STATUS)
    h.send_at(7201 * S, md.T_MAINTENANCE)
    reset = False
    try:
        main.main()
    except fakeworld.BoardReset:
        reset = True  # rp2: MAINTENANCE resets into the maintenance boot
    assert reset == (name == "rp2_pico"), reset
    assert w.bites == []
    assert 7201 * S <= w.now_ns < 7203 * S  # main returned because of MAINTENANCE
    reps = h.replies()
    assert [(r[1], r[2]) for r in reps] == [(md.T_SET_TIME, 0), (md.T_PROGRAM, 0),
                                            (md.T_GET_STATUS, 0), (md.T_MAINTENANCE, 0)], reps
    st = struct.unpack(md.STATUS_FMT, reps[2][4])
    assert st[0] == P.RUNNING and st[4] == 0, st  # running, no alarm
    delivered_nl = st[6] * 1000 + st[7]  # delivered_ul, delivered_nl
    wins = rig.strokes_of(w, name)
    assert all(c == STROKE_N for (_, _, c) in wins)
    assert delivered_nl == len(wins) * 250, (delivered_nl, len(wins))
    assert 48 <= len(wins) <= 51  # 25 strokes an hour for two hours
    period = board.pins.WATCHDOG["period_s"] * S
    timeout = board.pins.WATCHDOG["timeout_ms"] * MS
    f = w.feeds()
    assert f[0] < 2 * S
    gaps = [b - a for a, b in zip(f, f[1:])]
    # the clock counts whole seconds: a feed comes 1..2 periods' worth of seconds apart
    assert min(gaps) >= period - S and max(gaps) <= period + 100 * MS, (min(gaps), max(gaps))
    assert max(gaps) * 2 <= timeout
    assert abs(sum(gaps) // len(gaps) - period) <= 50 * MS
    assert w.level(wire(name)["enable"]) == 1  # the motor is off
    if reset:
        return  # the maintenance boot: mptest_board_rp2.test_maintenance_boot
    # the REPL after MAINTENANCE: the watchdog still fed
    n = len(f)
    w.advance_to(w.now_ns + 60 * S)
    assert w.bites == [] and len(w.feeds()) >= n + 29


def check_fatal_lets_watchdog_reset(board, name):
    w, hw = built(board, name, watchdog=True)
    try:
        raise ValueError("a bug")
    except ValueError as e:
        hw.fatal(e)
    hw.close()
    with open(hw.fs_root + "fault.txt") as f:
        assert "ValueError: a bug" in f.read()
    try:
        w.advance_to(w.now_ns + 20 * S)
    except fakeworld.WatchdogBite:
        pass
    assert len(w.bites) == 1
    assert w.level(wire(name)["enable"]) == 1


# -- provisioning and storage -----------------------------------------------------------


def _build_error(board):
    try:
        board.build()
    except Exception as e:
        return e
    raise AssertionError("build() accepted it")


def check_provision_errors(board, name):
    w = rig.setup(board, name, provision=None)
    e = _build_error(board)
    assert isinstance(e, hal.ProvisionError)
    msg = str(e)
    assert "/lfs/provision.json not found" in msg and "theca flash --board " + name in msg, msg
    assert w.wdt_timeout_ns == 0  # no watchdog: the REPL must stay usable to fix it
    # main.py lets it through to the REPL (build() is outside its try)
    import main

    try:
        main.main()
        raise AssertionError("main() started without provision.json")
    except hal.ProvisionError:
        pass
    cases = (
        ("not json", "not valid JSON"),
        (dict(rig.PROVISION, keys={"clinician": "11" * 31, "patient": "22" * 32}), "keys.clinician"),
        (dict(rig.PROVISION, stroke_nl=0), "'stroke_nl' must be an integer 1..65535"),
        (dict(rig.PROVISION, serial="TOO-LONG-SERIAL"), "'serial'"),
        (dict(rig.PROVISION, link="wifi"), "'link'"),
        (dict(rig.PROVISION, motor={"microsteps": 3}), "motor.microsteps is not a setting"),
        (dict(rig.PROVISION, motor={"step_hz": 10**7}), "motor.step_hz"),
    )
    for prov, words in cases:
        w = rig.setup(board, name, provision=prov)
        e = _build_error(board)
        assert isinstance(e, hal.ProvisionError) and words in str(e), (words, str(e))
        assert w.wdt_timeout_ns == 0
    w = rig.setup(board, name, druglib=False)
    e = _build_error(board)
    assert isinstance(e, hal.ProvisionError) and "druglib.json" in str(e), str(e)


def check_storage_must_be_littlefs(board, name):
    w = rig.setup(board, name, fs="fat")
    e = _build_error(board)
    assert isinstance(e, hal.StorageError) and "littlefs2" in str(e) and "VfsFat" in str(e), str(e)
    assert w.wdt_timeout_ns == 0


def check_motor_override(board, name):
    """provision.json's "motor" settings reach the mechanism (bench calibration)."""
    prov = dict(rig.PROVISION, motor={"microsteps_per_stroke": 64, "feedback_min_edges": 1})
    w, hw = built(board, name, provision=prov)
    assert hw.motor.stroke() == 0
    assert [n for (_, _, n) in rig.strokes_of(w, name)] == [64]


# -- clock, buzzer, safe boot -------------------------------------------------------------


def check_clock(board, name):
    import asyncio

    w, hw = built(board, name)
    # device time counts from 2020-01-01; the board's RTC from 2000-01-01
    assert hw.clock.now() == rig.DEVICE_T0 and w.rtc_s() == rig.DEVICE_T0 + rig.TO_BOARD
    for _ in range(24 * 10):  # ten days, reading the clock hourly: re-anchoring keeps it exact
        w.advance_to(w.now_ns + 3600 * S)
        assert hw.clock.now() == rig.DEVICE_T0 + (w.now_ns - w.clock_set_ns) // S
    t = hw.clock.now()
    assert t == w.rtc_s() - rig.TO_BOARD
    hw.clock.set(rig.DEVICE_T0 + 50 * rig.DAY)  # SET_TIME writes the RTC
    assert w.rtc_s() == rig.DEVICE_T0 + 50 * rig.DAY + rig.TO_BOARD
    async def nap():
        await hw.clock.sleep_until(hw.clock.now() + 5)

    t0 = w.now_ns
    asyncio.run(nap())
    assert w.now_ns - t0 == 5 * S
    assert hw.clock.now() == rig.DEVICE_T0 + 50 * rig.DAY + 5


def check_buzzer_does_not_block(board, name):
    w, hw = built(board, name)
    bz = wire(name)["buzzer"]
    t = w.now_ns
    hw.buzzer.tone(880, 200)
    assert w.now_ns == t  # returned at once: a timer ends the tone
    assert w.writes(bz, "pwm")[-1][1] == (880, board.pins.BUZZER["duty_u16"])
    w.advance_to(t + 199 * MS)
    assert w.writes(bz, "pwm")[-1][1][1] > 0
    w.advance_to(t + 201 * MS)
    assert w.writes(bz, "pwm")[-1] == (t + 200 * MS, (880, 0))
    # a new tone replaces one still sounding, with its own length
    hw.buzzer.tone(880, 200)
    w.advance_to(w.now_ns + 100 * MS)
    t2 = w.now_ns
    hw.buzzer.tone(660, 200)
    w.advance_to(t2 + 150 * MS)
    assert w.writes(bz, "pwm")[-1][1] == (660, board.pins.BUZZER["duty_u16"])
    w.advance_to(t2 + 201 * MS)
    assert w.writes(bz, "pwm")[-1][1][1] == 0
    hw.buzzer.tone(880, 0)
    assert w.writes(bz, "pwm")[-1][1][1] == 0


def check_safe_boot(board, name, hold, release):
    """Held at boot: no firmware, no watchdog. Held 3 s while running: until_done
    returns, so main.py stops the motor and gives the REPL back."""
    import asyncio

    w = rig.setup(board, name)
    hold(w)
    e = _build_error(board)
    assert isinstance(e, hal.SafeBoot) and w.wdt_timeout_ns == 0
    w, hw = built(board, name)

    class Sh:
        stop = False

    t0 = w.now_ns
    w.at(t0 + 10 * S, lambda: hold(w))
    asyncio.run(hw.until_done(Sh()))
    assert 12 * S <= w.now_ns - t0 <= 14 * S
    release(w)
    # the LED blinked once a second while it ran
    led = w.writes(wire(name)["led"])
    assert len(led) >= 10


class FakeStdin:
    """A board's sys.stdin.buffer: readinto(buf) blocks until len(buf) bytes came (so
    asking for more than is waiting would hang the pump: here it fails the test)."""

    def __init__(self):
        import io

        class _S(io.IOBase):
            def __init__(s):
                s.data = bytearray()

            def readinto(s, buf):
                if len(buf) > len(s.data):
                    raise AssertionError("stdin.readinto(%d) with %d waiting would block" % (len(buf), len(s.data)))
                n = len(buf)
                buf[:n] = s.data[:n]
                s.data = s.data[n:]
                return n

            def ioctl(s, req, arg):
                if req == 3:
                    return arg & 1 if s.data else 0
                return -1

        self.s = _S()


class FakeStdout:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b
        return len(b)


def check_usb_link(board, name):
    """The USB link takes only the bytes that are there (stdin.readinto blocks for a
    full buffer on a board), wakes asyncio when they come, and writes whole frames."""
    import asyncio
    import sys

    w, hw = built(board, name, provision=dict(rig.PROVISION, link="usb"))
    assert isinstance(hw.link, hal.StreamLink) and hw.link.inp is sys.stdin.buffer
    inp, out = FakeStdin(), FakeStdout()
    link = hal.StreamLink(inp.s, out)
    t0 = w.now_ns
    w.at(t0 + 1 * S, lambda: inp.s.data.extend(b"\x05abc\x00"))
    w.at(t0 + 3 * S, lambda: inp.s.data.extend(b"xy"))
    got = []

    async def reader():
        buf = bytearray(256)
        for _ in range(2):
            n = await link.readinto(buf)
            got.append((w.now_ns - t0, bytes(buf[:n])))

    asyncio.run(reader())
    assert got == [(1 * S, b"\x05abc\x00"), (3 * S, b"xy")], got
    link.write(memoryview(b"\x02A\x00"))
    assert out.data == b"\x02A\x00"


def check_bench_calibration(board, name):
    """board.bench() + hal.run_strokes(): the calibration run at the REPL makes exactly
    n strokes of microsteps_per_stroke pulses, and the watchdog is fed meanwhile."""
    w = rig.setup(board, name)
    hw = board.bench()
    assert hal.run_strokes(hw, 100, gap_ms=100) == (100, 0, 0)
    assert [c for (_, _, c) in rig.strokes_of(w, name)] == [STROKE_N] * 100
    assert w.mech.pos == 100 * STROKE_N and w.bites == []
    w.advance_to(w.now_ns + 60 * S)  # the REPL idles: no reset
    assert w.bites == []
    w.mech.stalled = True
    assert hal.run_strokes(hw, 10) == (0, 1, 0)
