"""The `theca` command: simulate, decode, talk to a pump, flash a board, report.

Exit status: 0 success; 1 a run or check that did not pass (the firmware stopped, a
log with problems under --strict); 2 bad input (file, unit, limit); 3 device refused
(the reason printed); 4 link failure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from theca.cli.helptext import HELP, epilog
from theca.errors import BAD_INPUT, BadInput

# Subcommand modules; each has add_parser(subparsers) and run(args) -> int.
_COMMANDS = ["simulate", "decode", "report", "trumpet", "programmer", "twin", "emu", "flash",
             "devices", "campaign"]
# Options that belong to the programmer and may stand before or after the command name.
_GLOBAL = {"--device": True, "--role": True}


def _hoist_globals(argv: list[str]) -> list[str]:
    """Move --device/--role (and their values) in front, wherever the user put them."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if name in _GLOBAL:
            if "=" in a:
                front.append(a)
            else:
                front.append(a)
                if i + 1 < len(argv):
                    front.append(argv[i + 1])
                    i += 1
        else:
            rest.append(a)
        i += 1
    return front + rest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="theca",
        description="Theca host tools: twin, telemetry decoding, programmer, flashing.",
        epilog="Exit status: 0 ok; 1 a run or check that did not pass (the firmware "
               "stopped, `decode --strict` found problems); 2 bad input (file, unit, limit); "
               "3 device refused; 4 link failure.",
    )
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--device", default=os.environ.get("THECA_DEVICE"),
                   help="serial device or pseudo-terminal of the pump (default $THECA_DEVICE)")
    p.add_argument("--role", choices=["clinician", "patient"], default=None,
                   help="which of the device's keys to use (default: the command's own)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMANDS:
        importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, sp in sub.choices.items():
        if not sp.description:
            sp.description = helps.get(name)
        # its own exit statuses and examples (helptext.py), laid out as written
        sp.formatter_class = argparse.RawDescriptionHelpFormatter
        sp.epilog = epilog(name)
        if HELP[name].link:
            # a command that talks to a pump shows them too (they may stand before or
            # after the command's name; main() moves them to the front)
            sp.add_argument("--device", default=argparse.SUPPRESS,
                            help="serial device or pseudo-terminal of the pump (default "
                                 "$THECA_DEVICE)")
            sp.add_argument("--role", choices=["clinician", "patient"],
                            default=argparse.SUPPRESS,
                            help="which of the device's keys to use (default: the command's own)")
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import theca_protocol as tp

    try:
        v = version("theca")
    except PackageNotFoundError:
        v = "unknown (not installed)"
    return f"theca {v} (protocol frame version {tp.FRAME_VERSION}, schema 0x{tp.SCHEMA:08x})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_hoist_globals(argv))
    try:
        rc = args.func(args)
    except BadInput as e:
        for m in e.messages:
            print(f"theca {args.command}: {m}", file=sys.stderr)
        rc = BAD_INPUT
    except KeyboardInterrupt:
        print(f"theca {args.command}: interrupted", file=sys.stderr)
        rc = 130
    except BrokenPipeError:
        # `theca decode ... | head`: the reader left; that is not an error of ours
        sys.stderr.close()
        rc = 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
