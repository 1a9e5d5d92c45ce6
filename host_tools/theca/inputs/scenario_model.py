"""A scenario for `theca simulate` in device units (scenario.py reads one from its TOML
file): the commands sent at their times, the faults the simulated board injects, and the
run's set-up."""

from __future__ import annotations

from dataclasses import dataclass

from theca_protocol import names as N

from theca.inputs.prescription import Prescription

DEFAULT_STATUS_PERIOD_S = 60
DEFAULT_CAPACITY_NL = N.DEFAULT_CAPACITY_NL
DEFAULT_STROKE_NL = N.DEFAULT_STROKE_NL
DEFAULT_CATHETER_NL = N.DEFAULT_CATHETER_NL
DEFAULT_BATTERY_DAYS = 2555

@dataclass(frozen=True)
class Event:
    """A command sent to the device at `at` (device s). Fields not used by `action` are None.

    - clinician_bolus: dose_ng, duration_s
    - refill: volume_nl (the fill after emptying), conc_ng_ml, drug_id (None: the
      reservoir's drug), residual_nl (None: what the twin's reservoir really holds)
    - program: prescription
    - ack_alarm: alarm_mask, role (who acknowledges; None: the clinician)
    - set_time: utc (device s), local_offset_s
    - catheter: volume_nl (the new catheter's volume); replaced: the twin's physical
      catheter is replaced (new and empty) too; False: only the command is sent, the old,
      full catheter stays (a data-entry mistake or a hostile clinician key)
    `index` is the event's 1-based position in the file, for messages.
    """

    at: int
    action: str
    index: int = 0
    dose_ng: int | None = None
    duration_s: int | None = None
    volume_nl: int | None = None
    conc_ng_ml: int | None = None
    prescription: Prescription | None = None
    alarm_mask: int | None = None
    max_s: int | None = None  # suspend: the alarm after this long (None: the default)
    expect_refused: bool = False  # the scenario says the pump is to refuse it
    drug_id: int | None = None
    residual_nl: int | None = None
    utc: int | None = None
    local_offset_s: int | None = None
    role: str | None = None  # ack_alarm: who acknowledges (None: the clinician)
    replaced: bool = True  # catheter: the physical catheter is replaced as well
    #: refill: an admixture's other drugs ((drug id, conc ng/mL), ...); () with drug_id
    #: None: the reservoir's fill (its other drugs too), with a drug_id: that drug alone
    mix: tuple = ()


@dataclass(frozen=True)
class Fault:
    """A fault the simulated board injects at `at` (device s).

    motor_stall, occlusion, power_loss: `duration_s`; battery: `remaining_days`;
    pocket_fill: `volume_nl` of the next refill goes into the pocket beside the pump
    instead of the reservoir (the physical truth only: the pump cannot tell); storage: the
    power fails for `duration_s` and the pump's `file` suffers `damage` meanwhile;
    flash_error: every flash write fails for `duration_s`; mri: the scanner holds the
    rotor for `duration_s`, then it moves again (`recovery` False: it stays stuck).
    """

    at: int
    kind: str
    index: int = 0
    duration_s: int | None = None
    remaining_days: int | None = None
    volume_nl: int | None = None
    file: str | None = None  # storage: "state", "journal" or "events"
    damage: str | None = None  # storage: "bitflip" or "erase"
    recovery: bool = True  # mri: the rotor moves again after the scan (False: it stays stuck)

    def to_config(self) -> dict:
        """The entry for THECA_SIM's "faults" list (docs/DESIGN.md). An MRI scan holds the
        rotor as a stall does: for its duration, or for good without recovery."""
        d: dict = {"at": self.at, "kind": self.kind}
        if self.kind == "mri":
            d["kind"] = "motor_stall"
            d["duration_s"] = self.duration_s if self.recovery else 0x3FFFFFFF - self.at
            return d
        if self.duration_s is not None:
            d["duration_s"] = self.duration_s
        if self.remaining_days is not None:
            d["remaining_days"] = self.remaining_days
        return d


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. Times in device seconds, volumes nL.

    `events` and `faults` are sorted by time (stably: equal times keep file order).
    """

    start: int
    end: int
    status_period_s: int
    reservoir_nl: int
    prescription: Prescription
    events: tuple[Event, ...] = ()
    faults: tuple[Fault, ...] = ()
    capacity_nl: int = DEFAULT_CAPACITY_NL
    stroke_nl: int = DEFAULT_STROKE_NL
    catheter_nl: int = DEFAULT_CATHETER_NL
    battery_days: int = DEFAULT_BATTERY_DAYS
    local_offset_s: int = 0
    override_soft_limit: bool = False
    path: str | None = None
    serial: str = "SIM000000000"  # the twin's serial (DEVICE_INFO), by default from the content

    @property
    def duration_s(self) -> int:
        """Length of the run, seconds."""
        return self.end - self.start
