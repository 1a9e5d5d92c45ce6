# Prescription: the Rx blob (docs/DESIGN.md, protocol/PROTOCOL.md) in device units,
# and the checks the device makes itself before it accepts one.
import struct
from binascii import crc32

import msgdefs as md
from msgdefs import (
    MIX_BYTES,
    RX_HEAD_FMT as _HDR,
    RX_HEAD_SIZE as _HDR_SIZE,
    RX_MAX_STEPS as MAX_STEPS,
    RX_MAX_TIMED as MAX_TIMED,
    RX_STEP_FMT as _STEP,
    RX_STEP_SIZE as _STEP_SIZE,
    RX_TIMED_FMT as _TIMED,
    RX_TIMED_SIZE as _TIMED_SIZE,
    RX_VERSION as VERSION,
    RX_ZONE_FMT as _ZONE,
    RX_ZONE_SIZE as _ZONE_SIZE,
)



NO_MIX = bytes(MIX_BYTES)


class RxError(ValueError):
    """A prescription the device refuses: `field` is the NACK field code (md.FIELD_*)
    naming it, `limit` is the bound."""

    def __init__(self, field, limit=0):
        super().__init__(field)
        self.field = field
        self.limit = limit


class Rx:
    """A parsed prescription in drug units (ng, ng/day, ng/mL, seconds)."""

    def __init__(self):
        self.blob = b""
        self.crc = 0
        self.drug = 0
        self.flags = 0
        self.low_nl = 0
        self.conc_ng_ml = 0
        self.step_start_s = []  # local seconds of day
        self.step_rate_ng_day = []
        self.timed_start_s = []
        self.timed_duration_s = []
        self.timed_dose_ng = []
        self.pb_max_per_day = 0
        self.pb_duration_s = 0
        self.pb_dose_ng = 0
        self.pb_lockout_s = 0
        # the local offset's changes (a `timezone` on the host): UTC device time, offset s
        self.zone_utc = []
        self.zone_offset = []
        # an admixture's other drugs (MIX_BYTES: MixEntry slots; zeros: one drug)
        self.mix = NO_MIX

    def daily_basal_ng(self):
        """Drug one day of the basal schedule delivers (ng, rounded down)."""
        n = len(self.step_start_s)
        tot = 0
        for i in range(n):
            end = self.step_start_s[i + 1] if i + 1 < n else 86400
            tot += self.step_rate_ng_day[i] * (end - self.step_start_s[i])
        return tot // 86400

    def worst_case_ng(self):
        """Most drug any rolling 24 h can hold: basal + timed + every allowed patient bolus.

        A daily-periodic basal schedule delivers the same amount in every 24 h window,
        so the basal day total is exact for any window.
        """
        tot = self.daily_basal_ng() + sum(self.timed_dose_ng)
        return tot + self.pb_max_per_day * self.pb_dose_ng


def parse(blob):
    """Rx blob -> Rx. Raises RxError naming the malformed field."""
    n = len(blob)
    if n < _HDR_SIZE:
        raise RxError(md.FIELD_LENGTH)
    (ver, drug, ns, nt, flags, pbmax, pbdur, conc, pbdose, pblock, low_ul) = struct.unpack_from(
        _HDR, blob, 0
    )
    if not 2 <= ver <= VERSION:  # (2: without the zone, 3: without the mix, as older hosts send)
        raise RxError(md.FIELD_VERSION, VERSION)
    if not 1 <= ns <= MAX_STEPS:
        raise RxError(md.FIELD_N_STEPS, MAX_STEPS)
    if nt > MAX_TIMED:
        raise RxError(md.FIELD_N_TIMED, MAX_TIMED)
    body = _HDR_SIZE + ns * _STEP_SIZE + nt * _TIMED_SIZE
    nz = blob[body] if ver >= 3 and n > body else 0
    if nz > md.RX_MAX_ZONE:
        raise RxError(md.FIELD_ZONE, md.RX_MAX_ZONE)
    zend = body + (1 + nz * _ZONE_SIZE if ver >= 3 else 0)
    if n != zend + (MIX_BYTES if ver >= 4 else 0):
        raise RxError(md.FIELD_LENGTH)
    rx = Rx()
    rx.blob = bytes(blob)
    rx.crc = crc32(rx.blob)
    rx.drug = drug
    rx.flags = flags
    rx.low_nl = low_ul * 1000  # 0: the device's threshold
    rx.conc_ng_ml = conc
    rx.pb_max_per_day = pbmax
    rx.pb_duration_s = pbdur
    rx.pb_dose_ng = pbdose
    rx.pb_lockout_s = pblock
    off = _schedule(rx, blob, ns, nt)
    _zone(rx, blob, off + 1, nz)
    if ver >= 4 and blob[zend:] != NO_MIX:
        rx.mix = _mix(blob[zend:], drug)
    if low_ul and not md.RX_LOW_RESERVOIR_MIN_UL <= low_ul <= md.RX_LOW_RESERVOIR_MAX_UL:
        raise RxError(md.FIELD_LOW_RESERVOIR)
    if pbmax:
        _check_pb(pbdose, pbdur, pblock, pbmax)
    return rx


def _schedule(rx, blob, ns, nt):
    # the basal steps (the first at 00:00, in time order) and the timed boluses; returns
    # the offset after them
    off = _HDR_SIZE
    prev = -1
    for i in range(ns):
        start, rate = struct.unpack_from(_STEP, blob, off)
        off += _STEP_SIZE
        if (i == 0 and start != 0) or start <= prev or start >= 1440:
            raise RxError(md.FIELD_STEPS_START)
        prev = start
        rx.step_start_s.append(start * 60)
        rx.step_rate_ng_day.append(rate)
    for _ in range(nt):
        start, dur, dose = struct.unpack_from(_TIMED, blob, off)
        off += _TIMED_SIZE
        if start >= 1440:
            raise RxError(md.FIELD_TIMED_START)
        if dur == 0 or dose == 0:
            raise RxError(md.FIELD_TIMED_DOSE)
        rx.timed_start_s.append(start * 60)
        rx.timed_duration_s.append(dur)
        rx.timed_dose_ng.append(dose)
    return off


def _mix(raw, primary):
    # an admixture's other drugs, checked (only a pump that meets one loads mix.py)
    import mix

    bad = mix.check(raw, primary)
    if bad is not None:
        raise RxError(bad)
    return bytes(raw)


def _zone(rx, blob, off, nz):
    # the offset changes: in time order, each a real offset
    prev = -1
    for _ in range(nz):
        utc, offset = struct.unpack_from(_ZONE, blob, off)
        off += _ZONE_SIZE
        if utc <= prev or not -md.MAX_LOCAL_OFFSET_S <= offset <= md.MAX_LOCAL_OFFSET_S:
            raise RxError(md.FIELD_ZONE)
        prev = utc
        rx.zone_utc.append(utc)
        rx.zone_offset.append(offset)


def _check_pb(pbdose, pbdur, pblock, pbmax):
    # the patient bolus of a blob that allows one
    if pbdose == 0 or pbdur == 0:
        raise RxError(md.FIELD_PATIENT_BOLUS_DOSE)
    if pblock < pbdur or pblock > md.RX_MAX_LOCKOUT_S:
        raise RxError(md.FIELD_PATIENT_BOLUS_LOCKOUT, md.RX_MAX_LOCKOUT_S)
    if pbmax > md.RX_MAX_PB_PER_DAY:
        raise RxError(md.FIELD_PATIENT_BOLUS_MAX_PER_DAY, md.RX_MAX_PB_PER_DAY)


def check_fields(rx, drug, lib):
    """The fields a drug library entry `drug` (a dict, None if unknown) needs to judge the
    prescription at all, and every drug of an admixture in the library `lib`. Raises
    RxError(field); the limits are the dose guard's."""
    if drug is None:
        raise RxError(md.FIELD_DRUG)
    if rx.conc_ng_ml == 0:
        raise RxError(md.FIELD_CONCENTRATION)
    if rx.mix[0]:
        import mix

        if mix.check(rx.mix, rx.drug, lib) is not None:
            raise RxError(md.FIELD_DRUGS)


def ng_to_nl(ng, conc_ng_ml):
    """Drug ng -> volume nL at conc (ng/mL), rounded to nearest. Not for hot paths."""
    return (ng * 1_000_000 + conc_ng_ml // 2) // conc_ng_ml


def nl_to_ng(nl, conc_ng_ml):
    """Volume nL -> drug ng at conc (ng/mL), rounded to nearest. Not for hot paths."""
    return (nl * conc_ng_ml + 500_000) // 1_000_000
