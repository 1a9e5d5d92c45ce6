"""Layouts that never cross the link but that more than one program reads: the pump's
files on flash (its event ring, stroke journal and snapshot) and the twin's files (the
scheduled link input and the physical truth stream).

Defined here, with construct, for the same reason as the wire: `gen_firmware.py` derives
the firmware's struct formats from them and host tools and tests read the same objects,
so no module keeps a copy of a layout. They are not part of the schema fingerprint: the
wire does not carry them (a change of the snapshot is a change of STATE_VERSION).
"""

from __future__ import annotations

from construct import Bytes, Int8ul, Int16ul, Int32sl, Int32ul, Int64sl, Struct

from .messages import MIX_BYTES, EventRecord

u8, u16, u32, i32, i64 = Int8ul, Int16ul, Int32ul, Int32sl, Int64sl

#: Version of the snapshot layout in state.bin (StateHeader.version).
STATE_VERSION = 3
#: Slots of the event ring on flash (events.bin): event n is in slot n % EVENT_SLOTS.
EVENT_SLOTS = 10240
#: Slots of the stroke journal (journal.bin).
JOURNAL_SLOTS = 32

#: One slot of events.bin: the EventRecord, the CRC-32 of it, padding to 32 bytes.
EventSlot = Struct(
    "record" / Bytes(EventRecord.sizeof()) * "EventRecord",
    "crc" / u32 * "CRC-32 of the record",
    "pad" / Bytes(32 - EventRecord.sizeof() - 4) * "0",
)

#: One slot of journal.bin, written before each stroke: the accounting as it will be
#: once the stroke is done (so a cut can only over-count one stroke, never under-count).
JournalRecord = Struct(
    "seq" / u32 * "journal record number, from 1",
    "t" / u32 * "monotonic device time of the stroke",
    "reservoir_nl" / u32 * "reservoir after the stroke",
    "delivered_ul" / u32 * "delivered after the stroke, whole uL",
    "acc" / u32 * "the engine's stroke accumulator after the stroke",
    "delivered_nl" / u16 * "0..999: the nL part",
    "flags" / u16 * "the pump's mode",
    "window_ng" / i32 * ("drug counted in the rolling 24 h window with the stroke, ng (the "
                         "dose history's witness if the state is lost)"),
    "crc" / u32 * "CRC-32 of the 28 bytes before",
)

#: state.bin and its second copy state.bak: this header, then the snapshot.
StateHeader = Struct(
    "version" / u16 * "STATE_VERSION",
    "rev" / u16 * "save number, mod 2**16: of two good copies the newer is taken up",
    "crc" / u32 * "CRC-32 of the snapshot that follows",
)

#: The snapshot's head (firmware/snapshot.py); the bolus gate's start times, the rolling
#: 24 h buckets, the Rx blob and the bridge's Rx blob follow it.
SnapshotHead = Struct(
    "t" / u32 * "monotonic device time of the snapshot",
    "mode" / u8,
    "offset" / i32 * "local offset, s",
    "wall_delta" / i32 * "UTC - monotonic device time, s",
    "conc" / u32 * "ng/mL in the reservoir",
    "drug" / u8 * "drug library id in the reservoir (0: unknown)",
    "bridge_drug" / u8 * "during a drug change's bridge: the drug in the catheter",
    "bridge_nl" / i32 * "catheter volume still of the previous concentration",
    "bridge_conc" / u32,
    "alarm_mask" / u32,
    "alarm_acked" / u32,
    "reservoir_nl" / u32,
    "delivered_ul" / u32,
    "delivered_nl" / u16,
    "j_seq" / u32 * "journal seq the snapshot includes",
    "ng_frac" / u32 * "drug accounting remainder, 1e-6 ng",
    "seq" / u16 * "frame counter",
    "ctr_clinician" / u32 * "last counter accepted, clinician key",
    "ctr_patient" / u32,
    "id_clinician" / u32 * "last cmd_id executed (0xFFFFFFFF: none)",
    "id_patient" / u32,
    "last_type_clinician" / u8 * "last command executed: type, result, detail",
    "last_result_clinician" / u8,
    "last_detail_clinician" / u32,
    "last_type_patient" / u8,
    "last_result_patient" / u8,
    "last_detail_patient" / u32,
    "held_first" / u32 * ("event_seq of the first of the command's events that follow the "
                          "snapshot (0: none): written to the log at restart if the cut "
                          "came before they were"),
    "held_n" / u32 * "how many (EventRecords after the bridge's Rx blob)",
    "gate_n" / u8 * "patient boluses in the gate",
    "gate_head" / u8,
    "rolling_idx" / u32,
    "rolling_total" / i32,
    "rx_len" / u16 * "bytes of the Rx blob after the buckets",
    "bridge_rx_len" / u16 * "bytes of the bridge's Rx blob after it (a drug change)",
    "suspend_alarm_t" / u32 * "monotonic time suspended_too_long is raised (0: none)",
    "catheter_nl" / u32 * "the catheter's volume (CATHETER; the board's until then)",
    "unprimed_nl" / u32 * "catheter volume not yet pushed since the last CATHETER",
    "fill_t" / u32 * "monotonic time of the fill in the reservoir (0: none known)",
    "fill_first" / u8 * "1: that fill is the reservoir's first of its drug",
    "mix" / Bytes(MIX_BYTES) * "the fill's other drugs (an admixture), MixEntry slots",
    "bridge_mix" / Bytes(MIX_BYTES) * "during a bridge: the other drugs of the old fill",
)

#: A bolus running when the snapshot was taken (after the held events: a count u8, then
#: these): a power cut mid-bolus is recorded at the restart as the bolus's end with what it
#: delivered, and its rest counted as missed.
SnapBolus = Struct(
    "kind" / u8 * "BOLUS_KINDS",
    "dose_nl" / u32 * "the bolus's dose",
    "start" / u32 * "monotonic time it started",
    "rate" / u32 * "its rate, 1/86400 nL per s",
)

#: The catheter's priming exemption, after the running boluses (a snapshot of older
#: firmware ends before it: its catheter's unprimed volume is then exempt, as it was).
SnapPrime = Struct(
    "exempt_nl" / u32 * ("of the unprimed catheter volume, what is exempt from the dose "
                         "limits (one catheter change in 24 h is)"),
    "exempt_t" / u32 * "monotonic time of the last catheter change that was exempt (0: none)",
)

#: The event log's next number, after the priming exemption (a snapshot of older firmware
#: ends before it): an event log found erased or behind it never numbers an event twice.
SnapEvents = Struct(
    "event_next" / u32 * "the number the next event gets",
)

#: The twin's scheduled link input (simulate): this head, then the frame.
LinkInRecord = Struct(
    "t" / u32 * "true time the frame arrives",
    "length" / u16 * "bytes that follow",
    "flags" / u8 * "LINK_IN_FLAGS",
)
#: LinkInRecord.flags bits. measure_residual: the bytes are a REFILL frame, not yet COBS
#: encoded, whose residual_nl the twin sets at delivery to what its reservoir really holds
#: (a clinician aspirating and measuring), then signs with the role's key and encodes.
#: fresh: the bytes are a state-changing command frame, not yet COBS encoded, that the twin
#: signs at delivery with the challenge the device gave in reply to the CHALLENGE
#: record just before it (the host signs nothing ahead of time: a command is fresh).
LINK_IN_FLAGS: dict[int, str] = {0: "measure_residual", 1: "fresh"}

#: The twin's physical truth stream: one record per stroke the mechanism made.
TruthRecord = Struct(
    "t" / u32 * "true time of the stroke",
    "volume_nl" / u32 * "volume the stroke moved",
    "tip_ung" / i64 * "drug that left the catheter tip with it, 1e-6 ng",
)

#: The twin's per-drug truth stream (`simulate --truth`): per stroke, one record for each
#: drug that left the catheter tip with it (a stroke may straddle two fills).
TruthTipRecord = Struct(
    "t" / u32 * "true time of the stroke",
    "drug" / u16 * "drug id (0: none, the fluid a new catheter held)",
    "spare" / u16 * "0",
    "tip_ung" / i64 * "that drug's part of the stroke at the tip, 1e-6 ng",
)

#: Exit statuses of the twin's process (boards/unix), which the host tools read.
TWIN_EXITS: dict[int, str] = {
    0: "ok",
    3: "firmware_failed",  # the firmware raised: it stopped the motor and logged a fault
    5: "watchdog",  # the watchdog bit (the therapy task hung)
    7: "power_cut",  # a scheduled power cut ended the run
}
TWIN_EXIT: dict[str, int] = {v: k for k, v in TWIN_EXITS.items()}
