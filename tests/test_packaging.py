"""The wheel holds every package of the host tools: each folder with an __init__.py under
host_tools/theca and protocol/theca_protocol is listed in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_packaged():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for top, base in (("theca", ROOT / "host_tools" / "theca"),
                      ("theca_protocol", ROOT / "protocol" / "theca_protocol")):
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join((top, *rel.parts)))
    assert found - listed == set(), f"packages missing from pyproject.toml: {found - listed}"
    assert listed - found == set(), f"listed but not packages: {listed - found}"


def test_the_cli_says_its_version_and_every_command_its_options():
    # issue 13: no --version; subcommand --help omitted --device/--role; twin, flash and
    # simulate had no description; the top-level help omitted exit status 1
    import subprocess
    import sys

    def run(*a):
        return subprocess.run([sys.executable, "-m", "theca.cli", *a], capture_output=True,
                              text=True)

    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("theca ") and "schema 0x" in r.stdout
    top = run("--help").stdout
    assert "1 a run or check that did not pass" in top
    from theca.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        out = run(name, "--help")
        assert out.returncode == 0, name
        text = out.stdout
        assert "--device" in text and "--role" in text, name
        assert "Exit status" in text, name
        lines = text.split("\n\n")
        assert len(lines) > 1 and lines[1].strip() and not lines[1].lstrip().startswith("positional"), (
            name, "no description")
