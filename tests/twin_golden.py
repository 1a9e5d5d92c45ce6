"""The twin's decisions on a fixed heavy scenario, stroke for stroke (issue 15).

`python tests/twin_golden.py --write` records, from the firmware as it stands, every EVENT
and STATUS frame of a 4-day heavy run (morphine 5.5 mg/day at 10 mg/mL, patient boluses
twice a day with one denied by the lockout, a refill, a motor stall, an occlusion, a battery
change) and the mechanism's stroke-by-stroke truth, as per-day digests in
tests/vectors/twin_golden.json. test_twin_speed.py runs the same scenario on today's firmware
and compares: a speed-up that changed what the firmware decides, or when a stroke moved,
fails there, naming the first day and frame kind that differ. Regenerate only for a change
that is meant to change the pump's behaviour, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "vectors" / "twin_golden.json"
KEYS = {1: b"\x11" * 32, 2: b"\x22" * 32}
DAY = 86400

RX = ('drug = "morphine"\nconcentration = "10 mg/mL"\n[[steps]]\nstart = "00:00"\n'
      'rate = "5.5 mg/day"\n[[steps]]\nstart = "22:00"\nrate = "4 mg/day"\n'
      '[patient_bolus]\ndose = "0.25 mg"\nduration = "10 min"\nlockout = "6 h"\n'
      'max_per_day = 4\n')


def scenario_text(status_period_s: int = 60) -> str:
    ev = []
    for d in range(4):
        for h in ("08:00", "20:00"):
            ev.append(f'[[events]]\nat = 2026-01-0{d + 1}T{h}:00Z\naction = "patient_bolus"\n')
    ev.append('[[events]]\nat = 2026-01-02T09:00:00Z\naction = "patient_bolus"\n')  # lockout
    ev.append('[[events]]\nat = 2026-01-03T10:00:00Z\naction = "refill"\nvolume = "20 mL"\n'
              'concentration = "10 mg/mL"\n')
    faults = ('[[faults]]\nat = 2026-01-02T03:00:00Z\nkind = "motor_stall"\nduration = "40 min"\n'
              '[[faults]]\nat = 2026-01-03T15:00:00Z\nkind = "occlusion"\nduration = "25 min"\n'
              '[[faults]]\nat = 2026-01-04T06:00:00Z\nkind = "battery"\nremaining = "80 days"\n')
    return (f'start = 2026-01-01T00:00:00Z\ndays = 4\nstatus_period_s = {status_period_s}\n'
            'reservoir_ml = 20.0\nprescription = "rx.toml"\n' + "".join(ev) + faults)


def run(d: Path, status_period_s: int = 60, extra: dict | None = None) -> dict:
    """Run the scenario on the twin (compiled firmware); returns the per-day digests."""
    sys.path.insert(0, str(ROOT / "host_tools"))
    import theca_protocol as tp
    from construct import Struct
    from theca.board.build import compile_firmware
    from theca.inputs.scenario import load_scenario
    from theca.log.tlog import Tlog
    from theca.twin import proc as twinproc
    from theca.twin.simulate import input_records, scenario_frames, twin_config
    from theca_protocol.messages import Status
    from theca_protocol.storage import TruthRecord

    (d / "rx.toml").write_text(RX)
    (d / "sc.toml").write_text(scenario_text(status_period_s))
    sc = load_scenario(d / "sc.toml")
    (d / "in.bin").write_bytes(input_records(scenario_frames(sc, KEYS)))
    stream = d / "truth.bin"
    stream.unlink(missing_ok=True)  # the twin appends to it (a restart goes on in it)
    cfg = twin_config(sc, KEYS, d / "in.bin", d / "run.tlog", d / "truth.json",
                      truth_stream=str(stream), **(extra or {}))
    (d / "cfg.json").write_text(json.dumps(cfg))
    r = twinproc.run_twin(d / "cfg.json", mpy_dir=compile_firmware("unix"), timeout=600)
    if r.returncode:
        raise RuntimeError((r.stdout + r.stderr).decode()[-800:])
    kinds = {tp.T_EVENT: "event", tp.T_STATUS: "status"}
    header = tp.compiled(tp.Header)
    rec = tp.compiled(TruthRecord)
    # the heap's figures in a STATUS frame: the run's memory, not a decision (they move with
    # the length of a path), so they and the CRC over them are left out
    names = [s.name for s in Status.subcons]
    heap = tp.HDR_SIZE + Struct(*Status.subcons[:names.index("heap_free")]).sizeof()
    heap_end = tp.HDR_SIZE + Status.sizeof()
    digests: dict[str, dict[str, list]] = {}

    def put(kind: str, t: int, data: bytes) -> None:
        day = str((t - sc.start) // DAY)
        h = digests.setdefault(kind, {}).setdefault(day, [0, hashlib.sha256()])
        h[0] += 1
        h[1].update(data)

    with Tlog(d / "run.tlog") as log:
        for _, fr in log.frames():
            kind = kinds.get(fr[1])
            if kind is not None:
                t = header.unpack_from(fr, 0)[3]
                data = bytearray(fr[:-tp.CRC_SIZE])
                if kind == "status":
                    data[heap:heap_end] = bytes(heap_end - heap)
                put(kind, t, bytes(data))
    raw = stream.read_bytes()
    for off in range(0, len(raw), rec.size):
        t = rec.unpack_from(raw, off)[0]
        put("stroke", t, raw[off:off + rec.size])
    truth = json.loads((d / "truth.json").read_text())
    out = {k: {day: [n, h.hexdigest()[:16]] for day, (n, h) in sorted(v.items(), key=lambda x: int(x[0]))}
           for k, v in sorted(digests.items())}
    out["truth"] = {k: truth[k] for k in ("strokes", "failed_strokes", "pumped_nl", "tip_mass",
                                          "reservoir_nl")}
    return out


if __name__ == "__main__":
    import tempfile

    if "--write" not in sys.argv:
        sys.exit("usage: python tests/twin_golden.py --write   (records today's behaviour)")
    with tempfile.TemporaryDirectory() as t:
        res = {"60": run(Path(t)), "3600": run(Path(t), 3600)}
    GOLDEN.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
