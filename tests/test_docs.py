"""docs/cli.md, the project's user contract, is kept true: every command has a section,
every option a section names is in that command's --help, and every option of a command
is named in its section (issue 13)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from theca.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "cli.md").read_text()
GLOBAL = {"--device", "--role", "--help", "-h"}


def _sections() -> dict[str, str]:
    parts = re.split(r"^### `theca ([a-z-]+)`\n", DOC, flags=re.M)
    return {parts[i]: parts[i + 1].split("\n## ", 1)[0] for i in range(1, len(parts), 2)}


def _commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices


def _options(sp) -> list[frozenset[str]]:
    # each option as the set of its spellings (-o, --output)
    out = []
    for a in sp._actions:
        names = frozenset(a.option_strings) - GLOBAL
        if names:
            out.append(names)
        if getattr(a, "choices", None) and not a.option_strings and isinstance(a.choices, dict):
            for child in a.choices.values():  # `log pull`
                out += _options(child)
    return out


def test_every_command_has_its_section_and_its_options():
    secs = _sections()
    cmds = _commands()
    assert set(cmds) == set(secs), (set(cmds) ^ set(secs))
    for name, sp in cmds.items():
        sec = secs[name]
        synopsis = sec.split("```")[1]
        named = set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", synopsis)) - GLOBAL
        have = _options(sp)
        spelled = set().union(*have) if have else set()
        assert named <= spelled, (name, named - spelled, "named in docs/cli.md, not an option")
        missing = [sorted(o) for o in have if not o & named]
        assert not missing, (name, missing, "an option docs/cli.md does not name")


def test_every_documented_command_s_help_runs():
    for name in _sections():
        r = subprocess.run([sys.executable, "-m", "theca.cli", name, "--help"],
                           capture_output=True, text=True)
        assert r.returncode == 0 and f"theca {name}" in r.stdout, (name, r.stderr)
    r = subprocess.run([sys.executable, "-m", "theca.cli", "log", "pull", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--pages" in r.stdout


def test_the_exit_statuses_are_the_cli_s():
    from theca import errors

    documented = re.findall(r"^\| (\d) \| ", DOC, flags=re.M)
    assert documented == ["0", "1", "2", "3", "4"]
    used = {errors.OK, errors.BAD_INPUT, errors.DEVICE_REFUSED, errors.LINK_FAILURE}
    assert used <= {int(d) for d in documented}
    top = subprocess.run([sys.executable, "-m", "theca.cli", "--help"], capture_output=True,
                         text=True).stdout
    for d in documented[1:]:
        assert f"{d} " in top.split("Exit status", 1)[1], d
