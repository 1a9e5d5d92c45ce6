"""`theca simulate SCENARIO.toml -o RUN.tlog [--heapsize SIZE]`.

The scenario's commands become authenticated protocol frames (the same envelope and
MAC as a live link) that the twin's scheduled link delivers at their device times to
the firmware's own receive path. Faults go to the simulated board. The firmware runs
under the MicroPython unix port at full virtual speed and writes the .tlog itself.
"""

from __future__ import annotations

import json
import secrets
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import theca_protocol as tp

from . import progress as progress_mod
from . import twinproc
from .build import compile_firmware
from .druglib import default_path as druglib_path
from .errors import BAD_INPUT, OK, BadInput
from .scenario import Scenario, load_scenario

# twin exit status 0 is success; anything else is a firmware failure worth showing
TWIN_FAILED = 1
# command type by name, from the one protocol definition
CMD = {m.name: m.type for m in tp.COMMANDS.values()}


class FrameFactory:
    """Numbers and signs commands as a programmer would: a rising counter per key and
    a fresh command id per command."""

    def __init__(self, keys: dict[int, bytes]):
        self.keys = keys
        self.counter = {1: 0, 2: 0}
        self.cmd_id = 0
        self.seq = 0

    def command(self, msg_type: int, body: bytes, role: int, t: int) -> bytes:
        self.counter[role] += 1
        self.cmd_id += 1
        self.seq = (self.seq + 1) & 0xFFFF
        return tp.build_command(msg_type, body, role, self.keys[role], self.cmd_id,
                                self.counter[role], self.seq, t)


def scenario_frames(sc: Scenario, keys: dict[int, bytes]) -> list[tuple[int, bytes]]:
    """(device time, frame) for every command the scenario sends, in order."""
    f = FrameFactory(keys)
    out: list[tuple[int, bytes]] = []
    clin, pat = 1, 2
    if sc.local_offset_s:
        out.append((sc.start, f.command(CMD["SET_TIME"], struct.pack("<Ii", sc.start, sc.local_offset_s), clin, sc.start)))
    out.append((sc.start, f.command(CMD["PROGRAM"], sc.prescription.to_blob(), clin, sc.start)))
    for ev in sc.events:
        a, t = ev.action, ev.at
        if a == "patient_bolus":
            out.append((t, f.command(CMD["PATIENT_BOLUS"], b"", pat, t)))
        elif a == "clinician_bolus":
            out.append((t, f.command(CMD["CLINICIAN_BOLUS"], struct.pack("<II", ev.dose_ng, ev.duration_s), clin, t)))
        elif a == "refill":
            out.append((t, f.command(CMD["REFILL"], struct.pack("<II", ev.volume_nl, ev.conc_ng_ml), clin, t)))
        elif a == "program":
            out.append((t, f.command(CMD["PROGRAM"], ev.prescription.to_blob(), clin, t)))
        elif a == "suspend":
            out.append((t, f.command(CMD["SUSPEND"], b"", clin, t)))
        elif a == "resume":
            out.append((t, f.command(CMD["RESUME"], b"", clin, t)))
        elif a == "ack_alarm":
            mask = 0xFFFFFFFF if ev.alarm_mask is None else ev.alarm_mask
            out.append((t, f.command(CMD["ACK_ALARM"], struct.pack("<I", mask), pat, t)))
        elif a == "set_time":
            offs = sc.local_offset_s if ev.local_offset_s is None else ev.local_offset_s
            out.append((t, f.command(CMD["SET_TIME"], struct.pack("<Ii", ev.utc, offs), clin, t)))
        else:  # the scenario loader admits only the actions above
            raise BadInput.at(f"events[{ev.index}].action", f"unsupported action {a!r}")
    return out


def input_records(frames: list[tuple[int, bytes]]) -> bytes:
    """The scheduled link's input file: (t u32, length u16, COBS wire bytes) records."""
    out = bytearray()
    for t, fr in frames:
        wire = tp.cobs_encode(fr) + b"\x00"
        out += struct.pack("<IH", t, len(wire)) + wire
    return bytes(out)


def twin_config(sc: Scenario, keys: dict[int, bytes], inputs: Path, tlog: Path,
                truth: Path | None = None, **extra) -> dict:
    cfg = {
        "mode": "simulate",
        "start": sc.start,
        "end": sc.end,
        "status_period_s": sc.status_period_s,
        "serial": "TWIN00000001",
        "stroke_nl": sc.stroke_nl,
        "capacity_nl": sc.capacity_nl,
        "reservoir_nl": sc.reservoir_nl,
        "catheter_nl": sc.catheter_nl,
        "low_reservoir_nl": 2_000_000,
        "battery_days": sc.battery_days,
        "keys": {"clinician": keys[1].hex(), "patient": keys[2].hex()},
        "inputs": str(inputs),
        "faults": [f.to_config() for f in sc.faults],
        "tlog": str(tlog),
        # the drug a clinician physically injects; the board's mechanism keeps it
        "refills": [[e.at, e.volume_nl, e.conc_ng_ml] for e in sc.events if e.action == "refill"],
        # what the reservoir physically holds at the start: the first prescription's drug
        "reservoir_conc_ng_ml": sc.prescription.conc_ng_ml,
        "druglib": str(druglib_path()),
    }
    if truth is not None:
        cfg["truth"] = str(truth)
    cfg.update(extra)
    return cfg


# exit status of the twin's process when its power failed or its watchdog bit
TWIN_POWER_CUT = 7
TWIN_WATCHDOG = 5


def segments(sc: Scenario) -> list[tuple[int, int, bool]]:
    """(start, end, power fails at end) for each stretch the twin is powered."""
    out = []
    t = sc.start
    for f in sorted((f for f in sc.faults if f.kind == "power_loss"), key=lambda f: f.at):
        if f.at > t:
            out.append((t, f.at, True))
        t = max(t, f.at + (f.duration_s or 0))
    if t < sc.end:
        out.append((t, sc.end, False))
    return out


def simulate(sc: Scenario, out: Path, heapsize: str | None = None, workdir: Path | None = None,
             mpy_dir: Path | None = None, flash_image: Path | None = None,
             extra: dict | None = None, progress=None, timeout: float | None = 3600) -> dict:
    """Run the scenario on the twin; returns {"returncode", "stderr", "stdout", "seconds",
    "truth", "boots"}.

    `progress(seconds)`, if given, is called with the virtual seconds simulated so far
    as the twin reports them (its stderr is then streamed rather than captured).

    A scenario with power losses runs in segments on one flash image (a littlefs2 file):
    the power fails at the loss, and the twin boots again when it comes back, its clock
    having gone on. `flash_image` keeps the image (and the pump's state) in that file.
    """
    keys = {1: secrets.token_bytes(32), 2: secrets.token_bytes(32)}
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        d = Path(d)
        inputs = d / "inputs.bin"
        inputs.write_bytes(input_records(scenario_frames(sc, keys)))
        segs = segments(sc)
        image = flash_image
        if image is None and len(segs) > 1:
            image = d / "flash.img"
        truth = d / "truth.json"
        t0 = time.perf_counter()
        stdout = stderr = ""
        rc = 0
        queue = list(segs)
        i = 0
        cause = 0  # BOOT_POWER_ON
        while queue:
            a, b, cut = queue.pop(0)
            cfg = twin_config(sc, keys, inputs, out, truth, start=a, end=b,
                              cut_at_end=cut, tlog_append=i > 0, battery_t0=sc.start,
                              boot_cause=cause, **(extra or {}))
            if image is not None:
                cfg["flash_image"] = str(image)
            if progress is not None:
                cfg["progress"] = max(3600, sc.duration_s // 200)
            cfgp = twinproc.write_config(d / f"twin{i}.json", cfg)
            i += 1
            if progress is None:
                # never left running: a twin that hangs is a firmware bug to report
                try:
                    proc = twinproc.run_twin(cfgp, heapsize=heapsize, mpy_dir=mpy_dir,
                                             timeout=timeout)
                except subprocess.TimeoutExpired:
                    stderr += f"twin: still running after {timeout:g} s; stopped it\n"
                    rc = 1
                    break
            else:
                proc = progress_mod.run_twin(cfgp, lambda t: progress(t - sc.start),
                                             heapsize=heapsize, mpy_dir=mpy_dir)
            stdout += proc.stdout.decode(errors="replace")
            stderr += proc.stderr.decode(errors="replace")
            if proc.returncode == TWIN_WATCHDOG and image is not None and i < 100:
                # the watchdog reset the pump: it boots again at once and recovers
                t = json.loads(truth.read_text())["device_time"]
                queue.insert(0, (t, b, cut))
                cause = 1  # BOOT_WATCHDOG
                continue
            if proc.returncode == TWIN_WATCHDOG:
                stderr += ("twin: the watchdog reset the pump; without a flash image its state "
                           "is lost (run with --flash-image to let it recover)\n")
            expected = TWIN_POWER_CUT if cut else 0
            if proc.returncode != expected:
                rc = proc.returncode or 1
                break
            cause = 0
        secs = time.perf_counter() - t0
        tr = json.loads(truth.read_text()) if truth.exists() else None
    return {
        "returncode": rc,
        "stderr": stderr,
        "stdout": stdout,
        "seconds": secs,
        "truth": tr,
        "boots": len(segs),
    }


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="run a scenario on the twin at full virtual speed")
    p.add_argument("scenario", help="scenario TOML file")
    p.add_argument("-o", "--output", required=True, help="telemetry log to write (.tlog)")
    p.add_argument("--heapsize", help="MicroPython heap, as for `micropython -X heapsize=` (e.g. 64k)")
    p.add_argument("--override-soft-limit", action="store_true",
                   help="accept prescriptions above the drug library's soft limits")
    p.add_argument("--quiet", action="store_true", help="print only the one-line result")
    p.add_argument("--source", action="store_true",
                   help="run the firmware from .py source instead of compiled .mpy")
    p.add_argument("--flash-image", type=Path,
                   help="keep the twin's flash (a littlefs2 image) in this file")
    p.set_defaults(func=run)


def run(args) -> int:
    sc = load_scenario(args.scenario, override_soft=args.override_soft_limit)
    if args.heapsize and not _heap_ok(args.heapsize):
        print(f"theca simulate: --heapsize: {args.heapsize!r} is not a size like 64k, 128k or 1m",
              file=sys.stderr)
        return BAD_INPUT
    out = Path(args.output)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    mpy = None if args.source else compile_firmware("unix")
    days = sc.duration_s / 86400
    with progress_mod.Bar(days, "simulating", "days") as bar:
        res = simulate(sc, out, args.heapsize, mpy_dir=mpy, flash_image=args.flash_image,
                       progress=lambda s: bar.update(s / 86400))
    if res["returncode"] != 0:
        sys.stderr.write(res["stdout"][-4000:])
        sys.stderr.write(res["stderr"][-4000:])
        print(f"theca simulate: the firmware stopped with status {res['returncode']}"
              + (" (out of memory: raise --heapsize)"
                 if "MemoryError" in res["stderr"] + res["stdout"] else ""),
              file=sys.stderr)
        return TWIN_FAILED
    from .summary import print_summary, summarize

    summ = summarize(out)
    if not args.quiet:
        print_summary(summ, out, seconds=res["seconds"], truth=res["truth"])
    speed = sc.duration_s / max(res["seconds"], 1e-9)
    print(f"simulated {days:g} days in {res['seconds']:.2f} s ({speed:,.0f}x real time): "
          f"{summ.frames} frames -> {out}")
    return OK


def _heap_ok(s: str) -> bool:
    s = s.strip().lower()
    if s and s[-1] in "km":
        s = s[:-1]
    return s.isdigit() and int(s) > 0
