"""`make bench`: the project's speed and memory figures, measured here and now.

Twin speed (180 days, 1-minute status frames), the smallest MicroPython heap that
runs 30 days, telemetry decoding speed side by side with pymavlink (bench_decode,
bench_mavlink), report and trumpet times on a 30-day log, and the live link's round
trip and efficiency (bench_link, when that module exists). Writes build/bench.json
and BENCHMARKS.md (every figure with its requirement and the peer's figure beside
it where there is one). Run from the repository root.

`bench_link.run()` returns a dict; each value is either a plain figure or a dict
with `value` and optionally `unit`, `peer`, `requirement` and `note`, which
BENCHMARKS.md shows in those columns.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from theca.log.data import read_log

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from heap_search import smallest_heap_kib  # noqa: E402
from theca.board.build import compile_firmware  # noqa: E402
from theca.inputs.scenario import load_scenario  # noqa: E402
from theca.twin.simulate import simulate  # noqa: E402

SCENARIO = """
start = 2026-01-01T00:00:00Z
days = {days}
status_period_s = 60
reservoir_ml = 20.0
prescription = "{rx}"
[[events]]
at = 2026-01-03T10:00:00Z
action = "patient_bolus"
[[events]]
at = 2026-01-20T09:00:00Z
action = "refill"
volume = "18 mL"
concentration = "10 mg/mL"
"""


def scenario(days: int, d: Path):
    p = d / f"bench_{days}.toml"
    p.write_text(SCENARIO.format(days=days, rx=ROOT / "examples" / "rx_morphine.toml"))
    return load_scenario(p)


def twin_speed(d: Path, days: int = 180, runs: int = 3) -> dict:
    sc = scenario(days, d)
    mpy = compile_firmware("unix")
    best = None
    for _ in range(runs):
        res = simulate(sc, d / "speed.tlog", mpy_dir=mpy)
        if res["returncode"]:
            raise RuntimeError(res["stdout"] + res["stderr"])
        best = res["seconds"] if best is None else min(best, res["seconds"])
    frames = (d / "speed.tlog").stat().st_size
    return {
        "days": days,
        "seconds": round(best, 3),
        "x_real_time": round(days * 86400 / best),
        "tlog_bytes": frames,
    }


def min_heap(d: Path, days: int = 30) -> dict:
    """Smallest -X heapsize (KiB, 4 KiB steps) that runs `days` from .mpy files."""
    sc = scenario(days, d)
    mpy = compile_firmware("unix")

    def ok(kib: int) -> bool:
        return simulate(sc, d / "heap.tlog", heapsize=f"{kib}k", mpy_dir=mpy)["returncode"] == 0

    return {"days": days, "min_heap_kib": smallest_heap_kib(ok)}


def report_speed(d: Path) -> dict:
    """Seconds for `theca report` and `theca trumpet` on 30 days with 30 s status frames."""
    from theca.analysis import report, trumpet

    sc = load_scenario(_write(d / "rep.toml", SCENARIO.format(days=30, rx=RX).replace(
        "status_period_s = 60", "status_period_s = 30")))
    res = simulate(sc, d / "rep.tlog", mpy_dir=compile_firmware("unix"))
    if res["returncode"]:
        raise RuntimeError(res["stdout"] + res["stderr"])
    t = time.perf_counter()
    _, rep = report.make_report(d / "rep.tlog", d / "report")
    rs = time.perf_counter() - t
    t = time.perf_counter()
    log = read_log(d / "rep.tlog")
    tr = trumpet.compute(log, trumpet.default_start(log))
    ts = time.perf_counter() - t
    return {
        "report_days": len(report.drug_days(rep.days)),
        "report_frames": log.summary["frames"],
        "report_s": round(rs, 2),
        "trumpet_s": round(ts, 3),
        "trumpet_mean_error_pct": round(tr.mean_error, 3),
    }


RX = ROOT / "examples" / "rx_morphine.toml"


def guard_cost() -> dict:
    """The dose guard on the unix port: microseconds and bytes allocated per check (a day of
    history, a two-step plan with patient boluses; every 24 h and 1 h window)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mphost import run_mp

    r = run_mp(["bench/mp_guard.py"])
    line = [x for x in r.stdout.decode().splitlines() if x.startswith("GUARD")]
    if r.returncode or not line:
        return {"error": (r.stdout + r.stderr).decode()[-300:]}
    _, _, us, alloc = line[0].split()
    return {"check_us": float(us), "check_alloc_bytes": int(alloc)}


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def link_figures() -> dict:
    """bench_link.run() if the module exists, else why not."""
    if not (ROOT / "bench" / "bench_link.py").exists():
        return {"error": "not measured: bench_link.py missing"}
    try:
        import bench_link

        return bench_link.run()
    except Exception as e:  # noqa: BLE001 (a failing link bench must not hide the others)
        return {"error": f"not measured: bench_link.run() failed: {type(e).__name__}: {e}"}


def machine() -> dict:
    """nproc, CPU model, Python and OS, for the record."""
    import os
    import platform

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "?"
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}"}


def _n(x) -> str:
    if isinstance(x, float):
        return f"{x:,.3g}" if x < 100 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _ratio(a, b) -> str:
    return f"{a / b:.1f}x" if isinstance(a, int | float) and isinstance(b, int | float) and b else "-"


#: The twin's heap requirement for the bench's 30 days (docs: README "Figures").
HEAP_REQUIREMENT_KIB = 128


def _heap_verdict(hp: dict) -> str:
    # said beside the figure: a requirement the figure misses is never reported as met
    k = hp.get("min_heap_kib")
    return "" if not isinstance(k, int) or k <= HEAP_REQUIREMENT_KIB else " (NOT MET)"


def _heavy_rows(hv: dict, tw: dict) -> list[str]:
    rows: list[str] = []
    if "error" in hv:
        rows.append(f"| twin, heavy scenario | not measured: {hv['error']} | - | - |")
    elif hv:
        light_s = tw.get("seconds")
        rows += [
            f"| twin: {hv['days']} days of heavy therapy (5.5 mg/day morphine at 10 mg/mL, "
            f"{_n(hv['strokes'])} strokes, 2 boluses a day, a refill every 30 days), firmware | "
            f"{hv['firmware_s']} s ({_n(hv['x_real_time'])}x real time"
            + (f"; {_ratio(hv['firmware_s'], light_s)} of the light scenario's time" if light_s else "")
            + ") | - | 10,000,000x (1.6 s): "
            + ("met" if hv["x_real_time"] >= 10_000_000 else
               f"NOT MET ({_ratio(hv['x_real_time'], 10_000_000)} of it)") + " |",
            f"| twin, heavy: strokes per second / microseconds per stroke | "
            f"{_n(hv['strokes_per_s'])} /s, {hv['us_per_stroke']} us | - | - |",
            f"| `theca simulate` of the heavy scenario, the whole command | {hv['simulate_cli_s']} s"
            + (f" ({hv['host_s']} s of it host work beside the firmware's {hv['firmware_s']} s)"
               if "host_s" in hv else "") + " | - | host work no slower than the firmware: "
            + (("met" if hv["host_s"] <= hv["firmware_s"] else "NOT MET") if "host_s" in hv else "-")
            + " |",
            f"| twin, heavy, with a STATUS frame an hour instead of a minute: {hv['days']} days | "
            f"{hv.get('hourly_s', '-')} s ({_n(hv.get('hourly_x_real_time', 0))}x real time) | - | - |",
            f"| smallest heap, 30 days of the heavy scenario (4 KiB steps) | "
            f"{hv['min_heap_kib_30d']} KiB | - | 96 KiB: "
            + ("met" if (hv["min_heap_kib_30d"] or 999) <= 96 else "NOT MET") + " |",
        ]
        for k, v in hv["growth"].items():
            rows.append(f"| twin time, {k} | {v} s | - | - |")
    return rows


def profile_md(pf: dict) -> str:
    """The twin's profile on the heavy scenario (bench_profile.py) as a table."""
    if not pf:
        return ""
    if "error" in pf:
        return f"\nProfile of the twin: not measured: {pf['error']}\n"
    out = [
        "",
        f"## Where the twin's time goes: {pf['days']} days of the heavy scenario",
        "",
        f"{_n(pf['strokes'])} strokes and {_n(pf['status_frames'])} STATUS frames, inside MicroPython"
        " (bench/bench_profile.py): each concern's cost is the run's time less the time with that",
        "concern replaced by a stand-in that does nothing; the scheduler is asyncio alone with as",
        "many wake-ups. Best of 3 runs each; a share moves by about 0.05 s from one `make bench` to the next, and the shares overlap a little and do not add up to the whole exactly.",
        "",
        "| concern | seconds | microseconds each |",
        "|---|---|---|",
        f"| the whole run, as it is | {pf['rows']['as is']['s']} | "
        f"{pf['rows']['as is']['us_per_stroke']} per stroke, all included |",
    ]
    for k, v in pf["rows"].items():
        if k == "as is":
            continue
        out.append(f"| {v['what']} | {v['s']} | {v['us_each']} per {v['each']} |")
    out += [
        f"| the same run with a STATUS frame an hour | {pf['hourly_status_s']} | "
        f"{pf['hourly_us_per_stroke']} per stroke, all included |",
        f"| of which saved by `Clock.skip_to` (strokes in a row with no other task due) | "
        f"{pf.get('hourly_skip_to_s', '-')} | - |",
        "",
    ]
    return "\n".join(out)


def _pico_rows(pc: dict) -> list[str]:
    rows: list[str] = []
    if "error" in pc:
        rows.append(f"| emulated Pico | not measured: {pc['error']} | - | - |")
    elif pc:
        tot = pc["heap_total"]

        def heap(v):
            return f"{_n(v)} of {_n(tot)} bytes free ({100 * v // tot} %)"

        rows += [
            f"| Pico (official rp2 v1.28.0, emulated): `gc.mem_free()` after boot | "
            f"{heap(pc['heap_free_boot'])} | - | >= half free |",
            f"| Pico: lowest `gc.mem_free()` in {pc['therapy_device_s'] // 3600} h of therapy "
            f"(status every 15 s of real time) | {heap(pc['heap_free_therapy_min'])} | - | >= half free |",
            f"| Pico: `gc.mem_free()` after a log pull | {heap(pc['heap_free_after_pull'])} | - | "
            ">= half free |",
            f"| Pico: .mpy of the firmware and board (armv6m) | {_n(pc['mpy_bytes'])} bytes | - | - |",
            f"| Pico: CPU time of a request at 125 MHz (median of the run's, host's last byte to the reply's "
            f"first) | {pc['frame_cpu_us_median']} us (median) | - | - |",
            f"| Pico: CPU time of one GET_STATUS at 125 MHz (with its heap sample) | "
            f"{pc['status_cpu_us']} us | - | - |",
            f"| Pico: one stroke (128 PIO pulses at 2 kHz, settling, feedback) | "
            f"{pc['stroke_us']} us | - | 64 ms of pulses |",
            f"| Pico: emulated therapy against real time | {pc['x_real_time']}x "
            f"({pc['therapy_device_s']} s in {pc['therapy_wall_s']} s, {pc['strokes']} strokes) | - | - |",
            f"| Pico: `theca flash` of a bare emulated board | {pc['flash_s']} s | - | - |",
        ]
    return rows


def _decode_rows(dc: dict, mv: dict) -> list[str]:
    # decoding against pymavlink on the same machine
    out: list[str] = []
    peer = None if "pymavlink_error" in mv else mv
    pv = f"pymavlink {mv.get('pymavlink_version', '?')}"
    if "decode_summary_frames_per_s" in dc:
        ps = peer["pymavlink_parse_frames_per_s"] if peer else None
        out.append(
            f"| `theca decode --summary` (scan, CRC, counts; {_n(dc['decode_frames'])} frames) | "
            f"{_n(dc['decode_summary_frames_per_s'])} frames/s | "
            + (f"{pv} `parse_buffer`: {_n(ps)} frames/s ({_ratio(dc['decode_summary_frames_per_s'], ps)})"
               if peer else "not measured: " + mv.get("pymavlink_error", "?"))
            + " | >= 500,000 frames/s; >= pymavlink, aim 10x |")
        pj = peer["pymavlink_parse_json_frames_per_s"] if peer else None
        out.append(
            f"| `theca decode --format jsonl` ({_n(dc['decode_frames'])} frames, into memory) | "
            f"{_n(dc['decode_jsonl_frames_per_s'])} frames/s | "
            + (f"{pv} `parse_buffer` + `to_json()`: {_n(pj)} frames/s "
               f"({_ratio(dc['decode_jsonl_frames_per_s'], pj)})" if peer else "-")
            + " | 10x pymavlink (issue 15): "
            + (("met" if dc["decode_jsonl_frames_per_s"] >= 10 * pj else "NOT MET") if pj else "-")
            + " |")
    if "theca_columns_frames_per_s" in mv:
        ps = peer["pymavlink_parse_frames_per_s"] if peer else None
        out.append(
            f"| every field decoded (`read_log`, what report/trumpet use; "
            f"{_n(mv['theca_frames'])} frames) | {_n(mv['theca_columns_frames_per_s'])} frames/s | "
            + (f"{pv} `parse_buffer` (CRC + every field): {_n(ps)} frames/s "
               f"({_ratio(mv['theca_columns_frames_per_s'], ps)})" if peer else "-")
            + " | >= pymavlink, aim 10x |")
        pt = peer["pymavlink_mavutil_tlog_frames_per_s"] if peer else None
        out.append(
            f"| `theca decode --format parquet` ({_n(mv['theca_frames'])} frames) | "
            f"{_n(mv['theca_parquet_frames_per_s'])} frames/s | "
            + (f"{pv} mavutil .tlog `recv_match()`: {_n(pt)} frames/s" if peer else "-") + " | - |")
    return out


def _link_rows(lk: dict) -> list[str]:
    # the live link: round trip and efficiency
    out: list[str] = []
    if "error" in lk:
        out.append(f"| round trip (live link) | {lk['error']} | - | - |")
        out.append(f"| link efficiency | {lk['error']} | - | - |")
    else:
        for k, v in lk.items():
            if isinstance(v, dict):
                val = _n(v.get("value", "?")) + (f" {v['unit']}" if v.get("unit") else "")
                if v.get("note"):
                    val += f" ({v['note']})"
                out.append(f"| link: {k} | {val} | {v.get('peer', '-')} | "
                           f"{v.get('requirement', '-')} |")
            else:
                out.append(f"| link: {k} | {_n(v)} | - | - |")
    return out


def benchmarks_md(r: dict) -> str:
    """BENCHMARKS.md from the results of main()."""
    m = r["machine"]
    tw, hp, dc, mv, rp, lk = (r.get(k, {}) for k in ("twin", "heap", "decode", "mavlink",
                                                      "report", "link"))
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (bench/run.py); do not edit by hand.",
        "",
        f"- date: {r['date']}",
        f"- machine: {m['nproc']} CPU(s), {m['cpu']}; Python {m['python']}; {m['os']}",
        f"- `make bench` took {r['bench_seconds']} s",
        "",
        "| figure | measured | peer (same machine) | requirement |",
        "|---|---|---|---|",
    ]
    if "seconds" in tw:
        out.append(f"| twin: {tw['days']} days of therapy, 1-minute status frames | "
                   f"{tw['seconds']} s ({_n(tw['x_real_time'])}x real time) | - | < 15 s |")
    else:
        out.append(f"| twin speed | not measured: {tw.get('error', '?')} | - | < 15 s |")
    out.append(f"| smallest `micropython -X heapsize` running {hp.get('days', 30)} days (.mpy) | "
               f"{hp.get('min_heap_kib', 'not measured')} KiB{_heap_verdict(hp)} | - | "
               f"<= {HEAP_REQUIREMENT_KIB} KiB |")
    out += _decode_rows(dc, mv)
    gd = r.get("guard", {})
    if "check_us" in gd:
        out.append(f"| dose guard: one check (24 h and 1 h windows, a day of history), unix port | "
                   f"{gd['check_us']} us, {gd['check_alloc_bytes']} bytes allocated | - | "
                   "on commands and timed-bolus starts only; never per stroke |")
    if "report_s" in rp:
        out.append(f"| `theca report`, {rp['report_days']} days with 30 s status "
                   f"({_n(rp['report_frames'])} frames, 4 pictures) | {rp['report_s']} s | - | - |")
        out.append(f"| `theca trumpet` on the same log (read + first steady hour) | "
                   f"{rp['trumpet_s']} s | - | - |")
    elif rp:
        out.append(f"| `theca report` | not measured: {rp.get('error')} | - | - |")
    out += _link_rows(lk)
    out += _heavy_rows(r.get("heavy", {}), tw) + _pico_rows(r.get("pico", {}))
    import bench_campaign

    out += bench_campaign.rows(r.get("campaign", {}))
    size = (f"{mv.get('theca_frame_bytes', 54)}-byte STATUS frames vs "
            f"{mv.get('mavlink_frame_bytes', '?')}-byte MAVLink 2 {mv.get('mavlink_message', '?')}")
    out += [
        "",
        f"Decoding is compared on frames of about the same size ({size}: Theca's carry more",
        "bytes and fields); both decoders check every CRC and unpack every field (`--summary`",
        "checks every CRC and counts). pymavlink's figure is its fastest path here",
        "(`parse_buffer` fed 4 KiB at a time; its CRC runs in the `fastcrc` extension).",
        "See bench/bench_mavlink.py.",
        "",
    ]
    out += bench_campaign.paper(r.get("campaign", {}))
    return "\n".join(out) + profile_md(r.get("heavy", {}).get("profile", {}))


def main() -> int:
    results: dict = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t0 = time.perf_counter()
        results["twin"] = twin_speed(d)
        results["heap"] = min_heap(d)
        try:
            import bench_decode

            results["decode"] = bench_decode.run()
        except ImportError as e:  # the decode benchmark is part of the tree; say so loudly
            results["decode"] = {"error": str(e)}
        import bench_mavlink

        results["mavlink"] = bench_mavlink.run()
        results["report"] = report_speed(d)
        results["link"] = link_figures()
        results["guard"] = guard_cost()
        import bench_heavy

        try:
            results["heavy"] = bench_heavy.run(d)
        except RuntimeError as e:
            results["heavy"] = {"error": str(e)[-300:]}
        try:
            import bench_campaign

            results["campaign"] = bench_campaign.run(d)
        except Exception as e:  # noqa: BLE001 (say why, keep the other figures)
            results["campaign"] = {"error": f"{type(e).__name__}: {e}"}
        try:
            import bench_pico

            results["pico"] = bench_pico.run()
        except Exception as e:  # the emulated Pico is measured when it runs; say why not
            results["pico"] = {"error": f"{type(e).__name__}: {e}"}
        results["bench_seconds"] = round(time.perf_counter() - t0, 1)
    import datetime

    results["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results["machine"] = machine()
    print(json.dumps(results, indent=2))
    tw, hp = results["twin"], results["heap"]
    print(f"\ntwin: {tw['days']} days with 1-minute status in {tw['seconds']} s "
          f"({tw['x_real_time']:,}x real time; requirement < 15 s)")
    print(f"heap: smallest -X heapsize for {hp['days']} days: {hp['min_heap_kib']} KiB "
          f"(requirement <= {HEAP_REQUIREMENT_KIB} KiB{_heap_verdict(hp)})")
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "bench.json").write_text(json.dumps(results, indent=2))
    (ROOT / "BENCHMARKS.md").write_text(benchmarks_md(results))
    print("wrote BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
