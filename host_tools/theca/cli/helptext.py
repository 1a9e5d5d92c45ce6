"""Each command's help beyond its options: whether it talks to a pump (then, and only then,
--device and --role are its options), its exit statuses, and one to three examples. One
table, read by the parser (cli/__init__.py) and checked by tests/test_packaging.py."""

from __future__ import annotations

from typing import NamedTuple


class Help(NamedTuple):
    link: bool  # it talks to a pump: --device/--role apply
    exits: str  # its exit statuses
    examples: tuple[str, ...]


_DEVICE_EXITS = ("0 done; 1 not confirmed (a question not answered yes) or the pump's past "
                 "went back (a rollback); 2 bad input (nothing sent); 3 the pump refused (the "
                 "reason printed); 4 link failure (no pump on --device, no answer)")

HELP: dict[str, Help] = {
    "simulate": Help(False, "0 the scenario ran; 1 the firmware stopped or the twin failed; 2 bad "
                     "input (the scenario or a prescription: every problem, with its line); 3 a "
                     "scenario command the pump refused or did not answer (unless expect = "
                     '"refused")', (
                         "theca simulate examples/demo.toml -o demo/run.tlog",
                         "theca simulate s.toml -o run.tlog --truth truth.json --quiet")),
    "decode": Help(False, "0 decoded; 1 --strict and the log has problems (gaps, damage, "
                   "unknown frames); 2 bad input (not a .tlog, a bad filter)", (
                       "theca decode run.tlog",
                       "theca decode run.tlog --format jsonl --type event -o events.jsonl",
                       "theca decode run.tlog --format parquet -o logs/pump1.parquet")),
    "report": Help(False, "0 written; 2 bad input (not a .tlog, an output that is a file)", (
        "theca report demo/run.tlog -o demo/report",)),
    "trumpet": Help(False, "0 computed; 2 bad input: not a .tlog, no 30 s samples, or an hour "
                    "whose set rate is not steady (the message names what changed)", (
                        "theca trumpet run.tlog",
                        "theca trumpet run.tlog --start 2026-01-02T03:00:00Z --png curve.png")),
    "status": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump status",
                                         "theca --device /dev/ttyACM0 status --json")),
    "info": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump info",)),
    "program": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump program rx.toml",
                                          "theca --device /tmp/pump program rx.toml --yes")),
    "refill": Help(True, _DEVICE_EXITS, (
        'theca --device /tmp/pump refill --volume "18 mL" --concentration "10 mg/mL" '
        '--residual "1.8 mL"',
        'theca --device /tmp/pump refill --volume "18 mL" --drug morphine --concentration '
        '"4 mg/mL" --with "bupivacaine 20 mg/mL" --residual "2 mL"')),
    "catheter": Help(True, _DEVICE_EXITS, ('theca --device /tmp/pump catheter --volume "150 uL"',)),
    "prime": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump prime",)),
    "mri": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump mri prepare",
                                      "theca --device /tmp/pump mri check")),
    "bolus": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump bolus",)),
    "clinician-bolus": Help(True, _DEVICE_EXITS, (
        'theca --device /tmp/pump clinician-bolus --dose "0.1 mg" --duration "10 min"',)),
    "suspend": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump suspend",
                                          'theca --device /tmp/pump suspend --max "2 h"')),
    "resume": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump resume",)),
    "ack-alarm": Help(True, _DEVICE_EXITS, (
        "theca --device /tmp/pump ack-alarm",
        "theca --device /tmp/pump ack-alarm --alarm low_reservoir")),
    "set-time": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump set-time",
                                           "theca --device /tmp/pump set-time --offset +01:00")),
    "maintenance": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump maintenance",)),
    "log": Help(True, _DEVICE_EXITS, ("theca --device /tmp/pump log pull -o pump.tlog",)),
    "twin": Help(False, "0 stopped (Ctrl-C, or the firmware left for its REPL: maintenance); "
                 "2 bad input (a path in use, an image of another pump)", (
                     "theca twin --pty /tmp/pump --speed 60 --flash-image pump.img",)),
    "emu": Help(False, "0 stopped, or the firmware fetched; 1 the emulator stopped by itself, or "
                "a download failed; 2 bad input (a file that is not the listed one: both "
                "hashes named)", (
                    "theca emu fetch-firmware",
                    "theca emu --board rp2_pico --pty /tmp/pico --flash-image pico.img")),
    "flash": Help(True, "0 flashed and answering; 2 bad input; 3 the board refused; 4 link "
                  "failure (no REPL on --device)", (
                      "theca --device /dev/ttyACM0 flash --board rp2_pico",
                      "theca --device /tmp/dev flash --board unix --new-keys")),
    "devices": Help(False, "0 listed (none known is not an error)", (
        "theca devices", "theca devices --json")),
    "campaign": Help(False, "0 every run held every invariant; 1 an invariant failed (see "
                     "DIR/summary.md and DIR/failures/); 2 bad input (the campaign file)", (
                         "theca campaign examples/campaign.toml -o camp",
                         "theca campaign c.toml -o camp --workers 2 --resume",
                         "theca campaign c.toml -o camp --scheduler tcp://127.0.0.1:8786")),
}


def epilog(name: str) -> str:
    """The text after a command's options: its exit statuses and its examples."""
    import textwrap

    h = HELP[name]
    ex = "\n".join(f"  {e}" for e in h.examples)
    return f"{textwrap.fill(f'Exit status: {h.exits}.', 79)}\n\nExamples:\n{ex}"
