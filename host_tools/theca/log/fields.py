"""One model of every STATUS field a person or a program reads (issue 22), as pymavlink's
message classes carry theirs: its name, its unit, what it means, and the raw field(s) of
the protocol's `Status` it is made of and how. Every writer renders from it: the generic
record (`records.Renderer.status_fields`), jsonl (per line and as byte matrices), csv,
parquet (names and Arrow types) and the table; none lists a STATUS field by hand
(tests/test_fields.py), so a field added to the protocol appears everywhere or fails a
test.

How a raw value becomes the field (`Field.kind`):
- `int`: as it is; `code`: its name in `table` (an unknown code as `<prefix>_<n>`);
- `milli`: nL as uL (a number with 3 decimals); `milli2`: whole uL plus its nL part;
- `time`: device time as ISO-8601 UTC, 0 as none; `alarm_mask`: a mask as alarm names;
- `drug_id`: a drug library id as its name, 0 as none.
"""

from __future__ import annotations

from typing import NamedTuple

import theca_protocol as tp
from theca_protocol import names as N


class Field(NamedTuple):
    """A STATUS field as users see it."""

    name: str
    kind: str
    raw: tuple[str, ...]
    unit: str = ""
    table: dict | None = None
    prefix: str = ""
    help: str = ""
    hex: bool = False  # shown in hexadecimal to a person (a CRC)
    #: how the table shows it to a person, beside its raw value in jsonl/csv/parquet:
    #: "index1" (counted from 1), "conc" (mg/mL or mcg/mL), "dose" (in its drug's unit)
    person: str = ""


STATUS_FIELDS: tuple[Field, ...] = (
    Field("mode", "code", ("mode",), table=N.MODES, prefix="mode",
          help="the pump's mode"),
    Field("reservoir_ul", "milli", ("reservoir_nl",), "uL", help="drug left in the reservoir"),
    Field("delivered_ul", "milli2", ("delivered_ul", "delivered_nl"), "uL",
          help="volume delivered since therapy start; never goes down"),
    Field("rate_ul_per_day", "milli", ("rate_nl_day",), "uL/day",
          help="the volume rate running now (0 unless running)"),
    Field("alarms", "alarm_mask", ("alarms",), help="the alarms raised"),
    Field("low_reservoir_eta", "time", ("low_eta",), "UTC",
          help="when the reservoir reaches its low threshold by the plan alone (none: not "
               "known); patient boluses not counted"),
    Field("step", "int", ("step",), help="the basal step in force (0-based here; the table "
                                        "and `theca status` number steps from 1)",
          person="index1"),
    Field("drug", "drug_id", ("drug",), help="the prescription's drug"),
    Field("conc_ng_ml", "int", ("conc_ng_ml",), "ng/mL",
          help="the concentration in the reservoir", person="conc"),
    Field("battery_days", "int", ("battery_days",), "days", help="battery days left"),
    Field("rolling_24h_ng", "int", ("rolling_ng",), "ng",
          help="drug that reached the patient in the last 24 h", person="dose"),
    Field("boluses_24h", "int", ("boluses_24h",), help="patient boluses in the last 24 h"),
    Field("flags", "int", ("flags",), help="STATUS_FLAGS bits"),
    Field("acked", "int", ("acked",), help="alarm bits 0..7 acknowledged"),
    Field("rx_crc", "int", ("rx_crc",), help="CRC-32 of the prescription in force", hex=True),
    Field("refill_due", "time", ("refill_due",), "UTC",
          help="refill by then (the reservoir with every allowed bolus, the fill's "
               "stability or the battery's end of service; none: not known)"),
    Field("heap_free", "int", ("heap_free",), "bytes", help="MicroPython heap free"),
    Field("heap_total", "int", ("heap_total",), "bytes", help="MicroPython heap in all"),
)

#: The protocol's Status fields, in wire order (what the model is made of).
STATUS_RAW: tuple[str, ...] = tuple(sc.name for sc in tp.Status.subcons)
#: Each raw field's width in bytes (the Arrow type of an `int` field).
RAW_BYTES: dict[str, int] = {sc.name: sc.sizeof() for sc in tp.Status.subcons}


#: What STATUS.refill_due is, by its reason (refill_due_reason), in words.
REFILL_DUE_WORDS: dict[str, str] = {
    "reservoir": "the reservoir, every allowed patient bolus taken",
    "stability": "the fill's stability",
    "battery": "the battery's end of service",
}
_DUE_FLAGS = (("stability", N.mask_of(N.STATUS_FLAGS, "refill_due_stability")),
              ("battery", N.mask_of(N.STATUS_FLAGS, "refill_due_battery")))


def refill_due_reason(flags: int) -> str:
    """Why STATUS.refill_due is what it is, from STATUS.flags: reservoir, stability or
    battery (one rule for status, the summary and the report)."""
    for name, bit in _DUE_FLAGS:
        if flags & bit:
            return name
    return "reservoir"


def code_name(f: Field, code: int) -> str:
    """A `code` field's name for `code`."""
    assert f.table is not None
    return N.name_of(f.table, code, f.prefix)

#: `--format table`: the STATUS fields in every status line (their heading and column
#: width, negative: left-aligned), then those shown only when they change (heap figures:
#: jsonl, csv, parquet).
TABLE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("mode", "mode", -9), ("step", "step", 4), ("reservoir_ul", "reservoir_uL", 12),
    ("delivered_ul", "delivered_uL", 12), ("rate_ul_per_day", "rate_uL/day", 11),
    ("rolling_24h_ng", "24h_dose", 10), ("alarms", "alarms", 0),
)
#: Names the table gives fields it shows in a person's units (`person`).
TABLE_LABELS: dict[str, str] = {"conc_ng_ml": "conc"}
TABLE_CHANGES: tuple[str, ...] = ("drug", "conc_ng_ml", "battery_days", "low_reservoir_eta",
                                  "refill_due", "boluses_24h", "flags", "acked", "rx_crc")
BY_NAME: dict[str, Field] = {f.name: f for f in STATUS_FIELDS}
