# The pump mechanism behind a stepper driver, shared by the real boards: a stroke of a
# fixed number of microsteps, its feedback and the occlusion input. Each board makes the
# pulse train (boards/rp2_pico: PIO; boards/esp32: a timed loop) in a subclass. Nothing
# here touches hardware at import: the board's build() hands the pins in.
import time

import machine

class StepperMotor:
    """The pump mechanism behind a stepper driver's STEP/DIR/ENABLE inputs.

    A stroke is a fixed number of microsteps (MOTOR["microsteps_per_stroke"]) that moves
    stroke_nl of drug. stroke() returns 0 done, 1 stalled, 2 occluded:
    - occluded: the occlusion input is active before the stroke, or becomes active
      during it (an IRQ latches it; the pulse loop checks it): ENABLE drops at once
      and the stroke is abandoned (not counted by the pump);
    - stalled: the mechanism's feedback (a slotted-disc optical encoder or a hall
      sensor on a magnet ring, on the motor shaft) gave fewer than feedback_min_edges
      edges while the pulses went out: the rotor did not turn. Edges are counted by
      IRQ on both edges.
    ENABLE is asserted only while a stroke runs: the driver's outputs are off (and
    draw nothing) between strokes. DIR is set before ENABLE, so it is stable for
    settle_us before the first STEP edge.

    A board subclass makes the pulse train: `_run()` -> 0 sent, 1 the generator
    failed, 2 occluded; `_halt()` stops it at once.
    """

    def __init__(self, step, dir_, en, feedback, occlusion, cfg):
        self.step = step
        self.dir = dir_
        self.en = en
        self.occlusion = occlusion
        self.cfg = cfg
        self.n = cfg["microsteps_per_stroke"]
        self.step_hz = cfg["step_hz"]
        self.min_edges = cfg["feedback_min_edges"]
        self.settle_us = cfg["settle_us"]
        self.forward = cfg["dir_forward"]
        self.en_on = cfg["enable_active"]
        self.en_off = 1 - self.en_on
        # what one stroke may take: the pulses at step_hz, twice over, plus settling
        self.timeout_ms = 2 * self.n * 1000 // self.step_hz + 2 * self.settle_us // 1000 + 20
        en.value(self.en_off)
        dir_.value(self.forward)
        step.value(0)
        self.edges = 0
        self.tripped = False
        self.moving = False
        # counters for the bench (read them at the REPL after MAINTENANCE)
        self.strokes = 0
        self.stalls = 0
        self.occlusions = 0
        # Hard IRQs: the handlers only bump an int or set a flag (nothing allocates), and
        # a soft IRQ is dropped when the scheduler's small queue is full, which would
        # undercount edges and report a stall that is not there.
        feedback.irq(handler=self._edge, trigger=machine.Pin.IRQ_RISING | machine.Pin.IRQ_FALLING, hard=True)
        trig = machine.Pin.IRQ_FALLING if occlusion.active == 0 else machine.Pin.IRQ_RISING
        occlusion.pin.irq(handler=self._occluded, trigger=trig, hard=True)

    def _edge(self, _pin):
        self.edges += 1

    def _occluded(self, _pin):
        if self.moving:
            self.tripped = True

    def occluded_now(self):
        """True once the occlusion input went active during this stroke."""
        return self.tripped or self.occlusion.blocked()

    def stroke(self):
        """One stroke; blocks for its length (64 ms at the default settings)."""
        if self.occlusion.blocked():
            self.occlusions += 1
            return 2
        self.edges = 0
        self.tripped = False
        self.dir.value(self.forward)
        self.moving = True
        self.en.value(self.en_on)
        time.sleep_us(self.settle_us)  # the driver's outputs come up before the first step
        r = self._run()
        if r == 0:
            # the last feedback edge comes with the last step: let the rotor settle
            # before counting
            time.sleep_us(self.settle_us)
        self.en.value(self.en_off)
        self.moving = False
        if r == 2:
            self.occlusions += 1
            return 2
        if r != 0 or self.edges < self.min_edges:
            self.stalls += 1
            return 1
        self.strokes += 1
        return 0

    def _run(self):
        raise NotImplementedError  # the board's pulse train

    def _halt(self):
        raise NotImplementedError

    def off(self):
        """Stop now: outputs off first (the rotor stops even if pulses still come)."""
        self.en.value(self.en_off)
        self._halt()
        self.moving = False
