# heapsize: 8m
# The shell (firmware/main.py) on the real unix board in virtual time: the watchdog
# catches a hung task, an unexpected error ends in the safe state, alarms sound.
import asyncio
import struct

import board
import main
import msgdefs as md
from fakehw import Host, reply, rx_blob

import pump as P

T0 = 189_388_800
LIB = P.load_druglib("firmware/druglib.json")
KEYS = {"clinician": "11" * 32, "patient": "22" * 32}


def hardware(end_s, **kw):
    cfg = {"mode": "simulate", "start": T0, "end": T0 + end_s, "status_period_s": 0,
           "keys": KEYS, "inputs": None, "faults": [], "tlog": None,
           "druglib": "firmware/druglib.json", "wdt_s": 120}
    cfg.update(kw)
    return board.Hardware(cfg)


def programmed(hw):
    app = P.Pump(hw, hw.clock.now(), LIB, 0, None)
    assert reply(app.command(Host().cmd(md.T_PROGRAM, rx_blob(), t=T0), T0))[2] == 0
    return app


def test_hung_therapy_task_starves_the_watchdog():
    # REQ: SR-WDT-01
    hw = hardware(3600)
    app = programmed(hw)
    real = main.therapy_task
    hung = asyncio.Event()

    async def hanging(app, clock, sh):
        # runs normally for ten minutes, then waits forever: a hung concern
        t = clock.now()
        while clock.now() < t + 600:
            nxt = app.tick(clock.now())
            sh.expect_by = nxt + 30
            await clock.sleep_until(nxt)
        await hung.wait()

    main.therapy_task = hanging
    try:
        asyncio.run(main.run(hw, app))
        bitten = False
    except board.WatchdogReset:
        bitten = True
    finally:
        main.therapy_task = real
    assert bitten
    # it bit soon after the hang (the task's last planned wake-up, at most SENSE_S
    # ahead, plus 30 s of grace, plus the watchdog timeout), long before the run's end
    assert hw.clock.now() <= T0 + 600 + P.SENSE_S + 30 + 2 * hw.wdt.timeout_s
    # a therapy task that keeps its schedule never lets it bite
    hw2 = hardware(3 * 3600)
    asyncio.run(main.run(hw2, programmed(hw2)))
    assert hw2.clock.now() == T0 + 3 * 3600, hw2.clock.now() - T0


def test_unexpected_exception_ends_in_the_safe_state():
    # REQ: SR-FAULT-01
    hw = hardware(2 * 3600)
    app = programmed(hw)

    def broken_stroke():
        raise RuntimeError("driver bug")

    hw.motor.stroke = broken_stroke
    offs = [0]
    real_off = hw.motor.off

    def off():
        offs[0] += 1
        real_off()

    hw.motor.off = off
    asyncio.run(main.run(hw, app))
    assert app.mode == P.SAFE
    assert app.alarms.active(md.ALARM_INTERNAL_FAULT)
    assert offs[0] >= 1
    assert isinstance(hw.failed, RuntimeError)  # the twin reports it as a failure
    ev = [app.events.record(s) for s in range(app.events.first_seq, app.events.next_seq)]
    codes = [struct.unpack_from(md.EVENT_FMT, e, 0)[2] for e in ev if e is not None]
    assert md.EV_FAULT in codes
    # in the safe state no stroke is tried again, and the link still answers
    assert app.tick(hw.clock.now()) > hw.clock.now()
    r = reply(app.command(Host().cmd(md.T_GET_STATUS, ctr=99, cmd_id=7), hw.clock.now()))
    assert r[2] == 0 and r[4][0] == P.SAFE


def test_alarm_tones_critical_repeat_and_ack_silences():
    # REQ: SR-TONE-01
    hw = hardware(3600, reservoir_nl=300)  # one stroke, then empty: a critical alarm
    app = programmed(hw)
    asyncio.run(main.run(hw, app))
    assert app.alarms.active(md.ALARM_EMPTY_RESERVOIR)
    # two tones every minute for most of the hour
    assert hw.buzzer.tones >= 2 * 50, hw.buzzer.tones
    # acknowledged: silent, but the alarm stays until its cause is gone
    app.alarms.ack(app.alarms.mask)  # low reservoir is raised too: acknowledge all
    hw.end += 3600
    before = hw.buzzer.tones
    asyncio.run(main.run(hw, app))
    assert hw.buzzer.tones == before
    assert app.alarms.active(md.ALARM_EMPTY_RESERVOIR)


def test_non_critical_alarm_single_tone_hourly():
    # REQ: SR-TONE-01
    hw = hardware(6 * 3600, battery_days=80)  # elective replacement: not critical
    app = programmed(hw)
    asyncio.run(main.run(hw, app))
    assert app.alarms.active(md.ALARM_BATTERY_ERI) and app.mode == P.RUNNING
    assert 5 <= hw.buzzer.tones <= 8, hw.buzzer.tones
    assert hw.buzzer.last[0] == 880


def test_a_failing_buzzer_ends_in_the_safe_state_too():
    # REQ: SR-FAULT-01
    # every concern is guarded, not only therapy and the link
    hw = hardware(3600, reservoir_nl=300)  # empties: a critical alarm that must sound
    app = programmed(hw)

    def broken_tone(freq, ms):
        raise OSError("PWM fault")

    hw.buzzer.tone = broken_tone
    asyncio.run(main.run(hw, app))
    assert app.mode == P.SAFE
    assert app.alarms.active(md.ALARM_INTERNAL_FAULT)
    assert isinstance(hw.failed, OSError)


def test_a_task_that_dies_stops_the_run_loudly():
    # REQ: SR-FAULT-01
    # found by a heap too small for the link's buffers: the link task died at its start,
    # the pump went on without a link, and the run ended "successfully"
    hw = hardware(2 * 3600)
    app = programmed(hw)

    async def broken_readinto(buf):
        raise OSError(5)

    hw.link.readinto = broken_readinto
    try:
        asyncio.run(main.run(hw, app))
    except OSError as e:
        assert e.args[0] == 5
    else:
        raise AssertionError("the run went on without its link")
    assert hw.clock.now() < T0 + 2 * 3600  # it stopped at once, not at the scenario's end
