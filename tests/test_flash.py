"""`theca flash` with the real mpremote onto the plain MicroPython unix port's REPL,
behind a pseudo-terminal made by socat exactly as a USB-serial board would be; then
the booted firmware answers `status`, gives its REPL back on MAINTENANCE, and can be
flashed again keeping its identity and its therapy state."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import theca_protocol as tp
from test_link import RX, env_for, in_home, run_theca, status_json
from theca import paths
from theca.link.client import Client

SOCAT = shutil.which("socat")


@pytest.fixture
def repl(tmp_path):
    """The unix port's REPL on a pty at tmp/dev; its working folder tmp/board."""
    if SOCAT is None:
        pytest.skip("socat is not installed (`make setup` installs it)")
    board = tmp_path / "board"
    board.mkdir()
    dev = tmp_path / "dev"
    env = dict(os.environ)
    env.pop("MICROPYPATH", None)
    env.pop("THECA_SIM", None)  # a board knows nothing of the twin's configuration
    p = subprocess.Popen(
        [SOCAT, f"PTY,link={dev},raw,echo=0",
         f"EXEC:{paths.micropython()} -i,pty,raw,echo=0,stderr,setsid,ctty"],
        cwd=board, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not dev.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dev.exists(), "socat made no pty"
    time.sleep(0.3)  # the REPL's banner
    yield {"dev": dev, "board": board, "home": tmp_path / "home"}
    os.killpg(p.pid, signal.SIGTERM)  # socat and the micropython it started
    p.wait(timeout=10)


def test_flash_the_unix_repl_then_status(repl, tmp_path):
    dev, board, home = repl["dev"], repl["board"], repl["home"]
    t0 = time.monotonic()
    r = run_theca(home, "--device", dev, "flash", "--board", "unix", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\nflash: {time.monotonic() - t0:.1f} s: {r.stdout.strip()}")
    assert "flashed TH" in r.stdout and "new keys" in r.stdout
    serial = r.stdout.split()[1]
    # what landed in the REPL's working folder
    names = {p.name for p in board.iterdir()}
    assert {"main.py", "theca_main.mpy", "pump.mpy", "codec.mpy", "board.mpy", "provision.json",
            "druglib.json"} <= names
    assert "main.mpy" not in names
    prov = json.loads((board / "provision.json").read_text())
    assert prov["serial"] == serial and prov["stroke_nl"] == 250
    for role in ("clinician", "patient"):
        kp = home / f"{serial}-{role}.key"
        assert kp.read_text().strip() == prov["keys"][role]
        assert kp.stat().st_mode & 0o777 == 0o600
    # the booted firmware answers
    s = status_json(home, dev)
    assert s["serial"] == serial and s["mode"] == "stopped" and s["reservoir_ul"] == 20_000

    # frames full of 0x03 (Ctrl-C at a REPL) do not stop it
    rx = tmp_path / "rx.toml"
    rx.write_text(RX)
    r = run_theca(home, "--device", dev, "program", rx, "--yes")
    assert r.returncode == 0, r.stderr
    with in_home(home), Client(str(dev)) as c:
        c.identify("clinician")
        c.link.write(b"\x03" * 64 + b"\x00")
        for i in range(20):
            f, _, _ = c.sign(tp.TYPES["ACK_ALARM"], tp.compiled(tp.AckAlarm).pack(0x03030303), "patient",
                             challenge=c.challenge("patient"))
            assert b"\x03" in tp.cobs_encode(f)
            assert c.transact(f).result == 0, i
    assert status_json(home, dev)["mode"] == "running"

    # the way back to the REPL, and a second flash: same identity, therapy kept
    r = run_theca(home, "--device", dev, "maintenance")
    assert r.returncode == 0, r.stderr
    # the stroke volume calibrated on the bench (docs/hardware.md) survives a reflash
    prov["stroke_nl"] = 252
    (board / "provision.json").write_text(json.dumps(prov))
    r = run_theca(home, "--device", dev, "flash", "--board", "unix", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((board / "provision.json").read_text())["stroke_nl"] == 252
    assert f"flashed {serial}" in r.stdout and "its keys kept" in r.stdout
    assert "at the REPL" in r.stdout
    s = status_json(home, dev)
    assert s["serial"] == serial and s["drug"] == "morphine"
    assert s["mode"] == "suspended"  # MAINTENANCE suspended it; a clinician resumes
    assert run_theca(home, "--device", dev, "resume").returncode == 0
    # a third flash straight onto the running firmware: it is stopped first (MAINTENANCE)
    r = run_theca(home, "--device", dev, "flash", "--board", "unix", "--new-keys", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(MAINTENANCE)" in r.stdout and "new keys" in r.stdout
    s2 = status_json(home, dev)
    assert s2["serial"] != serial and s2["drug"] is None  # another identity starts afresh


def test_a_board_that_only_claims_a_known_serial_never_gets_its_keys(repl):
    # REQ: SR-KEY-02
    # The attack: a bare board whose provision.json names a real pump's serial (one
    # this host has keys for) got that pump's keys, mode 0644. It must prove it holds them.
    dev, board, home = repl["dev"], repl["board"], repl["home"]
    with in_home(home):
        from theca.link import keys as K

        real = K.new_serial("TH")
        real_keys = K.make_keys(real)
    (board / "provision.json").write_text(json.dumps(
        {"serial": real, "keys": {"clinician": "ab" * 32, "patient": "cd" * 32}}))
    r = run_theca(home, "--device", dev, "flash", "--board", "unix", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "does not prove" in r.stderr and "new keys" in r.stdout
    prov = json.loads((board / "provision.json").read_text())
    assert prov["serial"] != real
    assert bytes.fromhex(prov["keys"]["clinician"]) != real_keys["clinician"]
    assert bytes.fromhex(prov["keys"]["patient"]) != real_keys["patient"]
    # the keys the board got are readable by their owner only
    assert (board / "provision.json").stat().st_mode & 0o077 == 0


def test_flash_bad_input_and_no_repl(tmp_path):
    home = tmp_path / "home"
    r = run_theca(home, "flash", "--board", "unix")
    assert r.returncode == 2 and "--device" in r.stderr
    r = run_theca(home, "--device", tmp_path / "nothing", "flash", "--board", "unix", timeout=120,
                  env=env_for(home))
    assert r.returncode == 4 and "cannot open" in r.stderr
    r = run_theca(home, "--device", tmp_path / "nothing", "flash", "--board", "atari")
    assert r.returncode == 2 and "atari" in r.stderr
    # a port that is no REPL (a board running firmware this host has no keys for)
    m, sl = os.openpty()
    try:
        silent = tmp_path / "silent"
        silent.symlink_to(os.ttyname(sl))
        r = run_theca(home, "--device", silent, "flash", "--board", "unix", timeout=120)
        assert r.returncode == 4
        assert "gives no REPL" in r.stderr and "maintenance" in r.stderr and "BOOTSEL" in r.stderr
        assert not home.exists() or not list(home.glob("*.key"))  # no keys made for nothing
    finally:
        os.close(m)
        os.close(sl)
