"""Every code the protocol carries, with its name: the one place for names.

Host tools render codes through these tables; `gen_firmware.py` turns them into
`const()` names in `firmware/msgdefs.py`, so firmware and host cannot disagree.
Names are lower_snake_case because they appear verbatim in JSON output.
"""

from __future__ import annotations

from typing import NamedTuple

#: Header byte 0 of every frame.
FRAME_VERSION = 1

#: Theca epoch: device time 0 is 2020-01-01T00:00:00Z.
EPOCH_UNIX = 1577836800
#: SET_TIME accepts device times from the epoch to 2049-12-31T23:59:59Z and no later, so
#: that no time the pump computes (ETA, refill due) passes 2**30 - 1 (a 32-bit board's
#: small int); outside: NACK `invalid` (field `utc`).
UTC_MIN = 0
UTC_MAX = 946_771_199
#: The twin's mechanism (and a board's unless its provision.json says otherwise): the
#: fastest rate it delivers, basal or bolus (1000 uL/h); DEVICE_INFO.max_rate_nl_h.
DEFAULT_MAX_RATE_NL_H = 1_000_000
#: ... and the slowest basal rate it keeps up (48 uL/day); DEVICE_INFO.min_rate_nl_day. A
#: basal step below it (0 included) is refused: the limit `min_rate`.
DEFAULT_MIN_RATE_NL_DAY = 48_000

#: Device geometry (DEVICE_INFO): what the twin and a board get unless their configuration
#: or provision.json says otherwise, and the bounds a configuration must keep.
DEFAULT_STROKE_NL = 250
MAX_STROKE_NL = 65535  # DEVICE_INFO.stroke_nl is a u16
DEFAULT_CAPACITY_NL = 20_000_000
#: The reservoir sizes a scenario may choose (20 mL, 40 mL on large models).
CAPACITIES_NL = (20_000_000, 40_000_000)
MAX_CAPACITY_NL = 40_000_000
DEFAULT_CATHETER_NL = 150_000
#: The largest catheter volume CATHETER accepts (1 mL; implanted catheters hold 0.1-0.3 mL).
MAX_CATHETER_NL = 1_000_000
DEFAULT_LOW_RESERVOIR_NL = 2_000_000
#: Bound of max_rate_nl_h: a day at the fastest rate stays below 2**30 nL.
MAX_RATE_BOUND_NL_H = 24_000_000
#: SET_TIME local offsets: UTC-14:00 .. UTC+14:00.
MAX_LOCAL_OFFSET_S = 14 * 3600
#: The longest clinician bolus (CLINICIAN_BOLUS duration_s).
MAX_BOLUS_DURATION_S = 86400

#: Seconds a CHALLENGE stays valid: a state-changing command signed with it is executed
#: only if it arrives within this long of the device issuing the challenge (device time,
#: monotonic: SET_TIME does not move it), else NACK `stale`.
FRESH_S = 60
#: Identical bolus denials (same reason, same kind) within this many seconds are one
#: `bolus_denied` record with a count.
DENIAL_WINDOW_S = 60
#: Bad MACs are recorded as one `auth_failure` per this many seconds at most (with their
#: count): a keyless sender cannot fill the log.
AUTH_FAILURE_WINDOW_S = 3600
#: Days of the log a patient's or a keyless sender's frames can never evict a protected
#: event (PROTECTED_EVENTS) from.
PROTECTED_DAYS = 30
#: DEVICE_INFO.runtime.
RUNTIMES: dict[int, str] = {1: "micropython"}

#: Pump modes (STATUS.mode).
MODES: dict[int, str] = {
    0: "stopped",
    1: "running",
    2: "suspended",
    3: "halted",  # delivery stopped by an alarm
    4: "safe",  # internal fault
}

#: STATUS.flags bit numbers (STATUS.flags has 1 << bit): bolus_running, a bolus (timed,
#: patient or clinician) is being delivered, so the rate is basal + bolus; bridge, the
#: catheter still holds the previous concentration after a refill; trial, the prescription
#: in force is a trial prescription (its Rx flags bit `trial`); catheter_unprimed, the
#: catheter volume set by CATHETER has not all been pushed yet (drug has not reached the
#: tip); refill_due_stability, STATUS.refill_due is the fill's stability limit;
#: refill_due_battery, it is the battery's end of service (else it is the reservoir's);
#: admixture, the reservoir holds more drugs than STATUS.drug (READ_RX names them).
STATUS_FLAGS: dict[int, str] = {
    0: "bolus_running",
    1: "bridge",
    2: "trial",
    3: "catheter_unprimed",
    4: "refill_due_stability",
    5: "refill_due_battery",
    6: "admixture",
}

#: Alarm bit numbers (STATUS.alarms is a mask of 1 << bit).
ALARMS: dict[int, str] = {
    0: "low_reservoir",
    1: "empty_reservoir",
    2: "motor_stall",
    3: "occlusion",
    4: "battery_eri",
    5: "battery_eos",
    6: "internal_fault",
    7: "rx_invalid",
    8: "auth_backoff",  # no longer raised (the back-off per claimed role is gone)
    9: "watchdog_reset",
    10: "volume_discrepancy",
    11: "suspended_too_long",
    12: "storage_damaged",  # detail: STORAGE_DAMAGE bits; only a clinician acknowledges it
    13: "flash_fault",  # flash writes fail: no stroke without its journal; retried
}
#: Alarms only the clinician key acknowledges (SAFETY.md SR-ALM-03, SR-STO-01).
CLINICIAN_ACK_ALARMS: frozenset[str] = frozenset({"volume_discrepancy", "storage_damaged"})
#: The same as a bit mask.
CLINICIAN_ACK_MASK: int = sum(1 << b for b, n in ALARMS.items() if n in CLINICIAN_ACK_ALARMS)
#: storage_damaged's detail: what the boot found damaged or missing (bits).
STORAGE_DAMAGE: dict[int, str] = {
    0: "state_copy",  # one copy of the state failed its CRC: the other was taken up
    1: "state_lost",  # no good copy: taken up from the journal and the event log
    2: "journal",  # a journal record failed its CRC or the journal is gone
    3: "events",  # an event slot failed its CRC or the event log is gone
}
#: Alarms whose raise event's detail is a mask of a table: shown as the names under the key.
ALARM_DETAIL_MASKS: dict[str, tuple[str, str]] = {"storage_damaged": ("damage", "STORAGE_DAMAGE")}
#: Alarms an acknowledgement does not silence: they sound until their cause is gone
#: (a suspension past its maximum: stopping intrathecal baclofen abruptly can kill).
UNSILENCEABLE_ALARMS: frozenset[str] = frozenset({"suspended_too_long"})
#: The same as a bit mask.
UNSILENCEABLE_MASK: int = sum(1 << b for b, n in ALARMS.items() if n in UNSILENCEABLE_ALARMS)
#: The longest suspension without an alarm unless the command says otherwise (SUSPEND
#: max_s 0 means none: MAINTENANCE).
DEFAULT_SUSPEND_MAX_S = 2 * 3600

#: Critical alarms (repeating two-tone, delivery stops).
CRITICAL_ALARMS: frozenset[str] = frozenset(
    {"empty_reservoir", "motor_stall", "occlusion", "battery_eos", "internal_fault", "rx_invalid",
     "flash_fault"}
)
#: How long an acknowledgement pauses a critical alarm's tones (IEC 60601-1-8 "audio
#: paused" is time-limited): then it sounds again until its cause is gone.
ALARM_PAUSE_S = 30 * 60
#: The same as a bit mask.
CRITICAL_MASK: int = sum(1 << b for b, n in ALARMS.items() if n in CRITICAL_ALARMS)

#: Who caused an event (EventRecord.who).
WHO: dict[int, str] = {0: "device", 1: "clinician", 2: "patient", 3: "schedule"}

#: Command roles (command envelope `role`).
ROLES: dict[int, str] = {1: "clinician", 2: "patient"}

#: Boot causes (boot event, a).
BOOT_CAUSES: dict[int, str] = {
    0: "power_on",
    1: "watchdog",
    2: "brown_out",
    3: "soft_reset",
    4: "hard_reset",
    5: "power_loss_recovered",
}

#: Bolus kinds (bolus_started / bolus_completed, b).
BOLUS_KINDS: dict[int, str] = {0: "timed", 1: "patient", 2: "clinician", 3: "prime"}

#: The names of limits (../shared/interface.md, "Names of limits"): why a bolus was
#: denied (bolus_denied a), why a prescription or a clock change was refused
#: (prescription_refused / time_refused a), and REPLY.detail of every `limit` NACK.
DENY_REASONS: dict[int, str] = {
    1: "lockout",
    2: "max_per_day",
    3: "daily_limit",
    4: "not_running",
    5: "not_configured",
    6: "in_progress",
    7: "reservoir",
    8: "max_per_hour",
    9: "max_bolus",
    10: "max_concentration",
    11: "max_rate",
    12: "min_rate",
    13: "capacity",
    14: "clock_changed",  # a timed bolus the clock jumped over by 2 h or more: not given
    15: "motor_stall",  # MRI_CHECK: the test stroke did not move the motor
}
#: A timed bolus the clock jumped over starts at the jump if it is less late than this;
#: later, it is recorded as not given (bolus_denied clock_changed).
TIMED_LATE_MAX_S = 2 * 3600

#: REPLY.result: 0 is ACK, anything else is the NACK reason.
RESULTS: dict[int, str] = {
    0: "ack",
    1: "bad_frame",
    2: "bad_mac",
    3: "replay",
    4: "forbidden",
    5: "invalid",
    6: "limit",
    7: "busy",
    8: "schema",
    9: "unknown_command",
    10: "backoff",  # no longer sent (the bad-MAC back-off per claimed role let a keyless
    #               sender lock a role out); kept so that old logs decode
    11: "stale",
    12: "fault",  # the device could not make the change durable (its flash failed): not done
}
#: NACKs the device sends without a reply MAC (it has no key to sign with: the frame was
#: unreadable, its MAC failed, or it speaks another frame version): a host shows them as
#: unauthenticated diagnoses and changes nothing on their word.
UNSIGNED_RESULTS: frozenset[str] = frozenset({"bad_frame", "bad_mac", "schema"})
#: NACK reasons only (RESULTS without ack).
NACK_REASONS: dict[int, str] = {k: v for k, v in RESULTS.items() if k}

#: The fields a NACK `invalid` can name: REPLY.detail is the index here + 1 (0: none).
INVALID_FIELDS: tuple[str, ...] = (
    "length", "version", "n_steps", "n_timed", "steps.start", "timed.start",
    "timed.dose", "patient_bolus.dose", "patient_bolus.lockout",
    "patient_bolus.max_per_day", "drug", "concentration", "max_ng_day", "steps.rate",
    "volume", "dose", "offset", "utc", "low_reservoir", "primed", "zone", "drugs",
)

#: What REPLY.detail means: its kind, by result. Each command may declare its own kinds for
#: the results it gives (messages.py, Message.details); these are every command's.
#: Kinds: `field` (INVALID_FIELDS, index + 1), `deny` (DENY_REASONS), `mode` (MODES),
#: `role` (ROLES), `alarms` (a mask of 1 << ALARMS bit), `bytes` (a body's length),
#: `counter` (the role's last counter), `age_s` (seconds since the challenge; 0: not one
#: the device issued), `version` (the frame version), `rx_version` (the prescription
#: format's version), `none` (0).
DETAIL_KINDS: tuple[str, ...] = ("field", "deny", "mode", "role", "alarms", "bytes", "counter",
                                 "age_s", "version", "rx_version", "none")
RESULT_DETAILS: dict[str, str] = {
    "ack": "none", "bad_frame": "bytes", "bad_mac": "none", "replay": "counter",
    "forbidden": "role", "schema": "version", "unknown_command": "none", "stale": "age_s",
    "backoff": "none", "fault": "none",
}

#: fault a: which concern of the firmware failed (it stopped the motor, raised
#: internal_fault and entered its safe state).
FAULT_CODES: dict[int, str] = {1: "therapy", 2: "link", 3: "telemetry", 4: "tones",
                               5: "storage"}

#: stroke_failed a.
STROKE_FAILURES: dict[int, str] = {1: "stall", 2: "occlusion", 3: "flash"}

#: mri_checked a: what the test stroke after a scan did (1..3: its STROKE_FAILURES code).
MRI_RESULTS: dict[int, str] = {0: "moved", 1: "stalled", 2: "occluded", 3: "flash", 4: "empty"}

#: Rx blob flags bits.
#: The host-checked (soft) limits a clinician may override; an override is recorded in
#: the prescription (Rx flags bits 1..) and in `prescription_changed` (d: `overrides`).
SOFT_LIMITS: dict[int, str] = {0: "daily_limit", 1: "max_concentration", 2: "min_per_day",
                               3: "titration"}
#: Rx blob flags bits: the trial phase, then one bit per soft limit overridden.
RX_FLAGS: dict[int, str] = {0: "trial", **{b + 1: f"override_{n}" for b, n in SOFT_LIMITS.items()}}


class Arg(NamedTuple):
    """How one of an event's a/b/c words is named and rendered.

    kind: "int" (as is), "i32" (two's complement), "nl" (nanolitres, shown as
    uL under `name`), "time" (device time, shown as ISO-8601 UTC), "mask"
    (alarm mask, shown as a list of alarm names), "drug_id" (a drug library id, shown as
    the drug's name), "SOFT_LIMITS_MASK" (a mask of
    SOFT_LIMITS, shown as their names), or the name of a table in this module
    (shown as the name for the code).
    """

    name: str
    kind: str = "int"

    @property
    def wire_name(self) -> str:
        """The name of the raw value on the wire (nL where JSON shows uL)."""
        return self.name.replace("_ul", "_nl") if self.kind == "nl" else self.name


class EventDef(NamedTuple):
    """An event code: its name and the meaning of a, b, c, d (None: unused, 0)."""

    code: int
    name: str
    a: Arg | None = None
    b: Arg | None = None
    c: Arg | None = None
    d: Arg | None = None

    @property
    def args(self) -> tuple[Arg | None, ...]:
        """a, b, c, d."""
        return (self.a, self.b, self.c, self.d)


_EVENT_LIST = [
    EventDef(1, "boot", Arg("cause", "BOOT_CAUSES")),
    EventDef(2, "therapy_started", Arg("rx_crc32")),
    EventDef(3, "prescription_changed", Arg("rx_crc32"), Arg("drug", "drug_id"), Arg("rx_bytes"),
             Arg("overrides", "SOFT_LIMITS_MASK")),
    EventDef(4, "step_changed", Arg("step"), Arg("rate_ul_per_day", "nl")),
    EventDef(
        5,
        "bolus_started",
        Arg("dose_ul", "nl"),
        Arg("bolus", "BOLUS_KINDS"),
        Arg("duration_s"),
        Arg("late_s"),  # a timed bolus started late: the clock jumped over its time
    ),
    EventDef(6, "bolus_completed", Arg("volume_ul", "nl"), Arg("bolus", "BOLUS_KINDS")),
    EventDef(
        7,
        "bolus_denied",
        Arg("reason", "DENY_REASONS"),
        Arg("bolus", "BOLUS_KINDS"),
        Arg("dose_ul", "nl"),
        Arg("count"),
    ),
    EventDef(8, "alarm_raised", Arg("alarm", "ALARMS"), Arg("reservoir_ul", "nl"), Arg("detail")),
    EventDef(9, "alarm_cleared", Arg("alarm", "ALARMS"), Arg("reservoir_ul", "nl"), Arg("detail")),
    EventDef(
        10,
        "refilled",
        Arg("volume_ul", "nl"),
        Arg("residual_ul", "nl"),
        Arg("conc_ng_ml"),
        Arg("drug", "drug_id"),
    ),
    EventDef(11, "suspended", Arg("max_s")),
    EventDef(12, "resumed"),
    EventDef(
        13,
        "time_changed",
        Arg("old_time", "time"),
        Arg("new_time", "time"),
        Arg("local_offset_s", "i32"),
    ),
    EventDef(14, "alarm_acknowledged", Arg("alarms", "mask"), Arg("paused_until", "time")),
    EventDef(15, "auth_failure", Arg("failures"), Arg("role", "ROLES"), Arg("window_s")),
    EventDef(16, "log_wrapped", Arg("first_seq_kept")),
    EventDef(17, "delivery_gap", Arg("gap_s"), Arg("undelivered_ul", "nl")),
    EventDef(
        18, "refill_refused", Arg("requested_ul", "nl"), Arg("reservoir_ul", "nl"),
        Arg("capacity_ul", "nl"),
    ),
    EventDef(19, "fault", Arg("fault", "FAULT_CODES")),
    EventDef(20, "stroke_failed", Arg("failure", "STROKE_FAILURES")),
    EventDef(21, "motor_recovered"),
    EventDef(
        22, "prescription_refused", Arg("reason", "DENY_REASONS"), Arg("drug", "drug_id"), Arg("rx_crc32"),
    ),
    EventDef(23, "time_refused", Arg("reason", "DENY_REASONS"), Arg("requested_time", "time")),
    EventDef(24, "refill_discrepancy", Arg("expected_ul", "nl"), Arg("residual_ul", "nl")),
    EventDef(25, "catheter_changed", Arg("volume_ul", "nl")),
    EventDef(26, "prime_started", Arg("volume_ul", "nl"), Arg("duration_s")),
    EventDef(27, "prime_completed", Arg("volume_ul", "nl")),
    EventDef(28, "mri_prepared", Arg("max_s")),
    EventDef(29, "mri_checked", Arg("result", "MRI_RESULTS")),
    # an admixture: each drug of the fill beside the primary one, after its `refilled`
    # (or its first prescription); the amounts of a fill are its volume x each conc
    EventDef(30, "fill_drug", Arg("drug", "drug_id"), Arg("conc_ng_ml")),
]

#: Events no frame with the patient key or without a valid MAC may evict from the last
#: PROTECTED_DAYS of the log (the record of what was done to the patient and why).
PROTECTED_EVENTS: frozenset[str] = frozenset({
    "boot", "therapy_started", "prescription_changed", "alarm_raised", "alarm_cleared",
    "alarm_acknowledged", "refilled", "refill_discrepancy", "suspended", "resumed",
    "time_changed", "catheter_changed", "prime_started", "prime_completed", "fault",
    "mri_prepared", "mri_checked", "fill_drug",
})

#: Event codes -> definitions.
EVENTS: dict[int, EventDef] = {e.code: e for e in _EVENT_LIST}
#: Event names -> codes.
EVENT_CODES: dict[str, int] = {e.name: e.code for e in _EVENT_LIST}

#: The enumeration tables an Arg kind may name.
TABLES: dict[str, dict[int, str]] = {
    "MODES": MODES,
    "ALARMS": ALARMS,
    "WHO": WHO,
    "ROLES": ROLES,
    "BOOT_CAUSES": BOOT_CAUSES,
    "BOLUS_KINDS": BOLUS_KINDS,
    "DENY_REASONS": DENY_REASONS,
    "RESULTS": RESULTS,
    "STATUS_FLAGS": STATUS_FLAGS,
    "RX_FLAGS": RX_FLAGS,
    "SOFT_LIMITS": SOFT_LIMITS,
    "STROKE_FAILURES": STROKE_FAILURES,
    "FAULT_CODES": FAULT_CODES,
    "STORAGE_DAMAGE": STORAGE_DAMAGE,
    "MRI_RESULTS": MRI_RESULTS,
}


def alarm_names(mask: int) -> list[str]:
    """Names of the alarms set in `mask`, lowest bit first; unknown bits as `bit_N`."""
    out = []
    b = 0
    while mask:
        if mask & 1:
            out.append(ALARMS.get(b, f"bit_{b}"))
        mask >>= 1
        b += 1
    return out


def name_of(table: dict[int, str], code: int, prefix: str = "code") -> str:
    """The name for `code`, or `<prefix>_<code>` when the table has none (never fails)."""
    n = table.get(code)
    return n if n is not None else f"{prefix}_{code}"


def flag_names(table: dict[int, str], value: int) -> list[str]:
    """Names of the bits set in `value` by `table` (bit number -> name), lowest first;
    unknown bits as `bit_N`."""
    return [table.get(b, f"bit_{b}") for b in range(value.bit_length()) if value >> b & 1]


def mask_of(table: dict[int, str], name: str) -> int:
    """The mask (1 << bit) of the bit called `name` in `table` (bit number -> name)."""
    return 1 << next(b for b, n in table.items() if n == name)
