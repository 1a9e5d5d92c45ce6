"""`theca simulate SCENARIO.toml -o RUN.tlog [--heapsize SIZE]`.

The scenario's commands become authenticated protocol frames (the same envelope and
MAC as a live link) that the twin's scheduled link delivers at their device times to
the firmware's own receive path. Faults go to the simulated board. The firmware runs
under the MicroPython unix port at full virtual speed and writes the .tlog itself.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

import theca_protocol as tp
from theca_protocol import names as N
from theca_protocol import storage as S

from theca.errors import BadInput
from theca.inputs.druglib import write_device_library
from theca.inputs.scenario import Event, Scenario
from theca.link import requests as R
from theca.twin import proc as twinproc
from theca.twin import run as progress_mod

# twin exit status 0 is success; anything else is a firmware failure worth showing
TWIN_FAILED = 1
# command type by name, from the one protocol definition
CMD = R.T
_ROLE = {name: rid for rid, name in N.ROLES.items()}
_LINK_IN = tp.compiled(S.LinkInRecord)
_MEASURE = N.mask_of(S.LINK_IN_FLAGS, "measure_residual")
_FRESH = N.mask_of(S.LINK_IN_FLAGS, "fresh")
#: cmd_id bit of the CHALLENGE requests that go before the scenario's commands (the
#: scenario's k-th command has cmd_id k)
CHALLENGE_ID = 0x80000000


class FrameFactory:
    """Numbers and signs commands as a programmer would: a rising counter per key and
    a fresh command id per command."""

    def __init__(self, keys: dict[int, bytes]):
        self.keys = keys
        self.counter = dict.fromkeys(N.ROLES, 0)
        self.cmd_id = 0
        self.seq = 0

    def command(self, msg_type: int, body: bytes, role: int, t: int,
                cmd_id: int | None = None) -> bytes:
        self.counter[role] += 1
        if cmd_id is None:
            self.cmd_id += 1
            cmd_id = self.cmd_id
        self.seq = (self.seq + 1) & 0xFFFF
        return tp.build_command(msg_type, body, role, self.keys[role], cmd_id,
                                self.counter[role], self.seq, t)

    def fresh(self, msg_type: int, body: bytes, role: int, t: int,
              flags: int = 0) -> list[tuple[int, bytes, int]]:
        """A state-changing command as the link records: a CHALLENGE request, then the
        command, which the twin signs with the challenge when it is delivered (a
        command is fresh only within FRESH_S of its challenge)."""
        chal = self.command(CMD["CHALLENGE"], b"", role, t, CHALLENGE_ID | (self.cmd_id + 1))
        cmd = self.command(msg_type, body, role, t)
        return [(t, chal, 0), (t, cmd, flags | _FRESH)]


# scenario action -> (command, the role that sends it, its body from the scenario and
# the event). A scenario's ack_alarm is the clinician's by default (its programmer
# acknowledges what the clinic sees); `role = "patient"` makes it the remote's button.
_ACTIONS = {
    "patient_bolus": ("PATIENT_BOLUS", "patient", lambda sc, ev: b""),
    "clinician_bolus": ("CLINICIAN_BOLUS", "clinician",
                        lambda sc, ev: R.clinician_bolus(ev.dose_ng, ev.duration_s)),
    "refill": ("REFILL", "clinician", lambda sc, ev: R.refill(
        ev.volume_nl, ev.conc_ng_ml, ev.residual_nl or 0, ev.drug_id or 0, ev.mix)),
    "program": ("PROGRAM", "clinician", lambda sc, ev: ev.prescription.to_blob()),
    "suspend": ("SUSPEND", "clinician", lambda sc, ev: R.suspend(
        N.DEFAULT_SUSPEND_MAX_S if ev.max_s is None else ev.max_s)),
    "resume": ("RESUME", "clinician", lambda sc, ev: b""),
    "ack_alarm": ("ACK_ALARM", "clinician", lambda sc, ev: R.ack_alarm(
        0xFFFFFFFF if ev.alarm_mask is None else ev.alarm_mask)),
    "set_time": ("SET_TIME", "clinician", lambda sc, ev: R.set_time(
        ev.utc, sc.local_offset_s if ev.local_offset_s is None else ev.local_offset_s)),
    "catheter": ("CATHETER", "clinician", lambda sc, ev: R.catheter(ev.volume_nl)),
    "prime": ("PRIME", "clinician", lambda sc, ev: b""),
    "mri_prepare": ("MRI_PREPARE", "clinician", lambda sc, ev: b""),
    "mri_check": ("MRI_CHECK", "clinician", lambda sc, ev: b""),
}


def scenario_commands(sc: Scenario) -> list[tuple[str, Event | None]]:
    """Every command the scenario sends, in order, with its event (None for the set-up:
    the local offset, the first prescription). The k-th has cmd_id k."""
    out: list[tuple[str, Event | None]] = []
    if sc.local_offset_s:
        out.append(("SET_TIME", None))
    out.append(("PROGRAM", None))
    for ev in sc.events:
        if ev.action not in _ACTIONS:  # the scenario loader admits only the actions above
            raise BadInput.at(f"events[{ev.index}].action", f"unsupported action {ev.action!r}")
        out.append((_ACTIONS[ev.action][0], ev))
    return out


def scenario_frames(sc: Scenario, keys: dict[int, bytes]) -> list[tuple[int, bytes, int]]:
    """(device time, frame, LinkInRecord flags) for every command the scenario sends, in
    order. A refill without `residual` is measured by the twin when it arrives."""
    f = FrameFactory(keys)
    out: list[tuple[int, bytes, int]] = []
    clin = _ROLE["clinician"]
    for name, ev in scenario_commands(sc):
        if ev is None:
            body = (R.set_time(sc.start, sc.local_offset_s) if name == "SET_TIME"
                    else sc.prescription.to_blob())
            out += f.fresh(CMD[name], body, clin, sc.start)
            continue
        _, role, make = _ACTIONS[ev.action]
        if ev.role is not None:
            role = ev.role
        measure = ev.action == "refill" and ev.residual_nl is None
        out += f.fresh(CMD[name], make(sc, ev), _ROLE[role], ev.at, _MEASURE if measure else 0)
    return out


def input_records(frames: list[tuple[int, bytes, int]]) -> bytes:
    """The scheduled link's input file: LinkInRecord (t, length, flags), then the COBS
    wire bytes (or, to be measured by the twin, the frame itself)."""
    out = bytearray()
    for t, fr, flags in frames:
        wire = fr if flags & (_MEASURE | _FRESH) else tp.cobs_encode(fr) + b"\x00"
        out += _LINK_IN.pack(t, len(wire), flags) + wire
    return bytes(out)


#: The mechanism tags each fill's fluid with its drug; an admixture's fluid with
#: MIX_TAG + its fill's number (0: the reservoir at the start), whose drugs fill_tags() gives.
MIX_TAG = 256


def fill_tags(sc: Scenario) -> dict[int, list[tuple[int, int, int]]]:
    """{tag: [(drug id, num, den), ...]} of each admixture fill of the scenario: its fluid's
    primary-drug mass times num / den is that drug's (the primary's: 1 / 1)."""
    out = {}
    for i, (drug, conc, mix) in enumerate(_fills(sc)):
        if mix:
            out[MIX_TAG + i] = [(drug, 1, 1)] + [(k, ck, conc) for k, ck in mix]
    return out


def _fills(sc: Scenario) -> list[tuple[int, int, tuple]]:
    # (primary drug, its conc, other drugs) of the fill at the start and after each refill
    rx = sc.prescription
    drug, conc, mix = rx.drug_id, rx.conc_ng_ml, tuple((m.drug_id, m.conc_ng_ml) for m in rx.mix)
    out = [(drug, conc, mix)]
    for e in sc.events:
        if e.action == "refill":
            if e.drug_id is not None:
                drug, mix = e.drug_id, e.mix
            conc = e.conc_ng_ml or conc
            out.append((drug, conc, mix))
    return out


def _tag(i: int, fill: tuple) -> int:
    return MIX_TAG + i if fill[2] else fill[0]


def _physical_refills(sc: Scenario) -> list[list]:
    # [t, volume, conc, into the pocket, drug tag]: a pocket_fill fault takes from the next
    # refill; a refill that names no drug is of the reservoir's
    pockets = [f for f in sc.faults if f.kind == "pocket_fill"]
    out = []
    fills = _fills(sc)
    for i, e in enumerate(e for e in sc.events if e.action == "refill"):
        pocket = 0
        while pockets and pockets[0].at <= e.at:
            pocket += pockets.pop(0).volume_nl or 0
        out.append([e.at, e.volume_nl, e.conc_ng_ml, min(pocket, e.volume_nl or 0),
                    _tag(i + 1, fills[i + 1])])
    return out


def twin_config(sc: Scenario, keys: dict[int, bytes], inputs: Path, tlog: Path,
                truth: Path | None = None, **extra) -> dict:
    cfg = {
        "mode": "simulate",
        "start": sc.start,
        "end": sc.end,
        "status_period_s": sc.status_period_s,
        "serial": sc.serial,
        "stroke_nl": sc.stroke_nl,
        "capacity_nl": sc.capacity_nl,
        "reservoir_nl": sc.reservoir_nl,
        "catheter_nl": sc.catheter_nl,
        "low_reservoir_nl": N.DEFAULT_LOW_RESERVOIR_NL,
        "battery_days": sc.battery_days,
        "keys": {name: keys[rid].hex() for rid, name in N.ROLES.items()},
        "inputs": str(inputs),
        "faults": [f.to_config() for f in sc.faults if f.kind != "pocket_fill"],
        "tlog": str(tlog),
        # the drug a clinician physically injects (after emptying the pump); the board's
        # mechanism keeps it, less what a pocket fill put beside the pump
        "refills": _physical_refills(sc),
        # the surgeon's new catheter, empty, at the scenario's time (physical truth)
        "catheters": [[e.at, e.volume_nl] for e in sc.events
                      if e.action == "catheter" and e.replaced],
        # what the reservoir physically holds at the start: the first prescription's drug
        "reservoir_conc_ng_ml": sc.prescription.conc_ng_ml,
        "reservoir_drug": _tag(0, _fills(sc)[0]),
        # what the device reads of the library, beside the inputs
        "druglib": str(write_device_library(inputs.parent)),
    }
    if truth is not None:
        cfg["truth"] = str(truth)
    cfg.update(extra)
    return cfg


# exit status of the twin's process when its power failed or its watchdog bit
TWIN_POWER_CUT = S.TWIN_EXIT["power_cut"]
TWIN_WATCHDOG = S.TWIN_EXIT["watchdog"]


def segments(sc: Scenario) -> list[tuple[int, int, bool]]:
    """(start, end, power fails at end) for each stretch the twin is powered."""
    out = []
    t = sc.start
    for f in sorted((f for f in sc.faults if f.kind in _POWER_OFF), key=lambda f: f.at):
        if f.at > t:
            out.append((t, f.at, True))
        t = max(t, f.at + (f.duration_s or 0))
    if t < sc.end:
        out.append((t, sc.end, False))
    return out


_BOOT = {name: code for code, name in N.BOOT_CAUSES.items()}
# fault kinds that turn the twin's power off (a storage fault damages a file meanwhile)
_POWER_OFF = ("power_loss", "storage")
# fault kinds that need the pump's flash (a scenario without a file system has none)
_FLASH_FAULTS = ("storage", "flash_error")


def _damage(sc: Scenario, after: int, until: int) -> list[dict]:
    # the storage faults done while the power was off between `after` and `until`
    return [{"file": f.file, "damage": f.damage} for f in sc.faults
            if f.kind == "storage" and after <= f.at < until]


def _run_segment(cfgp: Path, heapsize: str | None, mpy_dir: Path | None,
                 timeout: float | None, progress, start: int):
    # one boot of the twin; None if it ran past `timeout`
    if progress is None:
        # never left running: a twin that hangs is a firmware bug to report
        try:
            return twinproc.run_twin(cfgp, heapsize=heapsize, mpy_dir=mpy_dir, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    return progress_mod.run_twin(cfgp, lambda t: progress(t - start), heapsize=heapsize,
                                 mpy_dir=mpy_dir)


def _boots(sc: Scenario, keys: dict[int, bytes], d: Path, inputs: Path, out: Path, truth: Path,
           image: Path | None, segs: list, run: dict, extra: dict) -> tuple[int, str, str]:
    # every boot of the twin, segment by segment: (status, stdout, stderr)
    stdout = stderr = ""
    rc = 0
    queue = list(segs)
    i = 0
    cause = _BOOT["power_on"]
    off_from = sc.start  # the power went off then (the previous segment's end)
    while queue:
        a, b, cut = queue.pop(0)
        cfg = twin_config(sc, keys, inputs, out, truth, start=a, end=b,
                          cut_at_end=cut, tlog_append=i > 0, battery_t0=sc.start,
                          boot_cause=cause, **extra)
        if i > 0 and cause == _BOOT["power_on"]:
            cfg["storage_damage"] = _damage(sc, off_from, a)
        off_from = b
        if image is not None:
            cfg["flash_image"] = str(image)
        if run["progress"] is not None:
            cfg["progress"] = max(3600, sc.duration_s // 200)
        cfgp = twinproc.write_config(d / f"twin{i}.json", cfg)
        i += 1
        proc = _run_segment(cfgp, run["heapsize"], run["mpy_dir"], run["timeout"],
                            run["progress"], sc.start)
        if proc is None:
            stderr += f"twin: still running after {run['timeout']:g} s; stopped it\n"
            rc = 1
            break
        stdout += proc.stdout.decode(errors="replace")
        stderr += proc.stderr.decode(errors="replace")
        if proc.returncode == TWIN_WATCHDOG and image is not None and i < 100:
            # the watchdog reset the pump: it boots again at once and recovers
            t = json.loads(truth.read_text())["device_time"]
            queue.insert(0, (t, b, cut))
            cause = _BOOT["watchdog"]
            continue
        if proc.returncode == TWIN_WATCHDOG:
            stderr += ("twin: the watchdog reset the pump; without a flash image its state "
                       "is lost (run with --flash-image to let it recover)\n")
        expected = TWIN_POWER_CUT if cut else 0
        if proc.returncode != expected:
            rc = proc.returncode or 1
            break
        cause = _BOOT["power_on"]
    return rc, stdout, stderr


def simulate(sc: Scenario, out: Path, heapsize: str | None = None, workdir: Path | None = None,
             mpy_dir: Path | None = None, flash_image: Path | None = None,
             extra: dict | None = None, progress=None, timeout: float | None = 3600,
             tips: bool = False) -> dict:
    """Run the scenario on the twin; returns {"returncode", "stderr", "stdout", "seconds",
    "truth", "boots"}.

    `tips`: also record per drug what reached the catheter tip (result "tips": the
    TruthTipRecord stream's bytes, for truthfile.truth_document).

    `progress(seconds)`, if given, is called with the virtual seconds simulated so far
    as the twin reports them (its stderr is then streamed rather than captured).

    A scenario with power losses runs in segments on one flash image (a littlefs2 file):
    the power fails at the loss, and the twin boots again when it comes back, its clock
    having gone on. `flash_image` keeps the image (and the pump's state) in that file.
    """
    keys = {rid: secrets.token_bytes(32) for rid in N.ROLES}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        d = Path(tmp)
        inputs = d / "inputs.bin"
        inputs.write_bytes(input_records(scenario_frames(sc, keys)))
        segs = segments(sc)
        image = flash_image
        if image is None and (len(segs) > 1 or any(f.kind in _FLASH_FAULTS for f in sc.faults)):
            image = d / "flash.img"
        truth = d / "truth.json"
        extra = dict(extra or {})
        tipf = d / "tips.bin"
        if tips:
            extra["truth_tips"] = str(tipf)
        t0 = time.perf_counter()
        rc, stdout, stderr = _boots(
            sc, keys, d, inputs, out, truth, image, segs,
            dict(heapsize=heapsize, mpy_dir=mpy_dir, timeout=timeout, progress=progress),
            extra)
        secs = time.perf_counter() - t0
        tr = json.loads(truth.read_text()) if truth.exists() else None
        tip_bytes = tipf.read_bytes() if tipf.exists() else b""
    return {
        "returncode": rc,
        "stderr": stderr,
        "stdout": stdout,
        "seconds": secs,
        "truth": tr,
        "tips": tip_bytes,
        "fills": fill_tags(sc),
        "boots": len(segs),
    }


