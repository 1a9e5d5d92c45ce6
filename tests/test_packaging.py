"""The wheel holds every package of the host tools: each folder with an __init__.py under
host_tools/theca and protocol/theca_protocol is listed in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from test_flash import repl  # noqa: F401  (the fixture: a unix REPL behind a pty)

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
    device = {p for p in listed if p.split(".")[0] == "theca_device"}  # the device side as data
    assert listed - found - device == set(), f"listed but not packages: {listed - found - device}"
    dirs = cfg["package-dir"]
    for p in device:
        assert (ROOT / dirs[p]).is_dir(), p


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
    from theca.cli.helptext import HELP

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(HELP)
    for name in sub.choices:
        out = run(name, "--help")
        assert out.returncode == 0, name
        text = out.stdout
        # issue 25: the link options only where they apply, each command its own exit
        # statuses (bolus --help mentioned decode --strict) and one to three examples
        assert ("--device" in text and "--role" in text) == HELP[name].link, name
        assert "Exit status" in text and "decode --strict" not in text.replace(
            "theca decode", ""), name
        examples = text.split("Examples:\n", 1)[1].strip().splitlines()
        assert 1 <= len(examples) <= 3 and all(e.strip().startswith("theca ") for e in examples), name
        lines = text.split("\n\n")
        assert len(lines) > 1 and lines[1].strip() and not lines[1].lstrip().startswith("positional"), (
            name, "no description")


@pytest.mark.slow
def test_an_installed_theca_works_from_any_folder(tmp_path, repl):  # noqa: F811
    # issue 13: after `pip install .` (not editable) `theca decode` worked but `theca
    # simulate` failed ("firmware/druglib.json: cannot read the drug library"). A wheel
    # is built, installed into a fresh venv, and run from a folder outside the checkout.
    import os
    import subprocess
    import sys

    whl = tmp_path / "whl"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q",
                        "-w", str(whl), "--disable-pip-version-check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wheel = next(whl.glob("theca-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # issue 25: only what theca runs with, no development tools
    r = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze",
                        "--disable-pip-version-check"], capture_output=True, text=True)
    have = {ln.split("==")[0].lower() for ln in r.stdout.split()}
    assert "mpremote" in have and "construct" in have, have
    assert not have & {"pytest", "mypy", "pyright", "pymavlink", "lxml", "hypothesis", "ruff",
                       "dask", "distributed"}, have
    work = tmp_path / "elsewhere"
    work.mkdir()
    for f in ("demo.toml", "rx_morphine.toml"):
        (work / f).write_text((ROOT / "examples" / f).read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MICROPYPATH",
                                                             "THECA_MICROPYTHON")}
    env.update(THECA_HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"),
               PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    theca = str(venv / "bin" / "theca")

    def run(*a, timeout=300):
        return subprocess.run([theca, *map(str, a)], capture_output=True, text=True,
                              cwd=work, env=env, timeout=timeout)

    r = run("simulate", "demo.toml", "-o", "run.tlog", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("decode", "run.tlog", "--summary", "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    # the installed copy, not the checkout, is what ran
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import theca.paths as p; print(p.FIRMWARE, p.CHECKOUT)"],
                       capture_output=True, text=True, cwd=work, env=env)
    assert "site-packages" in r.stdout and "False" in r.stdout, r.stdout
    assert (tmp_path / "cache" / "theca" / "build").is_dir()  # compiled into the user cache
    r = run("--device", repl["dev"], "flash", "--board", "unix")
    assert r.returncode == 0 and "flashed TH" in r.stdout, r.stdout + r.stderr
    assert "main.py" in {p.name for p in repl["board"].iterdir()}
    # issue 14: the installed `theca emu` installs the pinned rp2040js into the user's
    # cache on first use, and its emulated Pico answers mpremote
    from theca.emu import firmware_missing, rp2_dir

    missing = firmware_missing()
    if missing and os.environ.get("CI", "").lower() != "true":
        pytest.skip(f"the installed theca works; its emulated Pico is not tried: {missing}")
    pico = tmp_path / "pico"
    env["THECA_RP2_FIRMWARE"] = str(rp2_dir())
    emu = subprocess.Popen([theca, "emu", "--pty", str(pico)], cwd=work, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = emu.stdout.readline() if emu.stdout else ""
        assert "emulated Pico on" in line, line + (emu.stderr.read() if emu.poll() is not None
                                                   and emu.stderr else "")
        assert (tmp_path / "cache" / "theca" / "emu" / "node_modules" / "rp2040js").is_dir()
        r = subprocess.run([str(venv / "bin" / "mpremote"), "connect", str(pico), "exec",
                            "print(6 * 7)"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "42" in r.stdout, r.stdout + r.stderr
    finally:
        emu.terminate()
        emu.wait(timeout=30)
