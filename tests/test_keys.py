"""Keys on the host (issue 12): a key others can read is refused, as ssh refuses one; a
twin's keys live in its folder under $THECA_HOME, go when it ends, and a killed twin's
are removed by the next `theca twin`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from test_link import env_for, in_home, run_theca, status_json
from theca.link import keys as K
from theca.twin.live import LiveTwin


def test_a_key_others_can_read_is_refused_with_the_fix(tmp_path):
    # REQ: SR-KEY-01
    home = tmp_path / "home"
    dev = tmp_path / "pump"
    with LiveTwin(dev, speed=10, env=env_for(home), args=["--flash-image", tmp_path / "f.img"]) as t:
        with in_home(home):
            kp = K.key_path(t.serial, "clinician")
        assert kp.stat().st_mode & 0o777 == 0o600
        kp.chmod(0o644)
        r = run_theca(home, "--device", dev, "status")
        assert r.returncode == 2, r.stderr
        assert str(kp) in r.stderr and f"chmod 600 {kp}" in r.stderr and "0644" in r.stderr
        kp.chmod(0o600)
        assert status_json(home, dev)["serial"] == t.serial


def test_a_twin_s_keys_live_in_its_folder_and_go_with_it(tmp_path):
    # REQ: SR-KEY-01
    home = tmp_path / "home"
    dev = tmp_path / "pump"
    with LiveTwin(dev, speed=10, env=env_for(home)) as t:
        d = home / "twins" / t.serial
        assert (d / "clinician.key").exists() and (d / "twin.json").exists()
        assert d.stat().st_mode & 0o777 == 0o700
        for f in [*d.glob("*.key"), d / "twin.json"]:  # what holds keys: yours only
            assert f.stat().st_mode & 0o077 == 0, f
        assert not list(home.glob("*.key"))  # nothing of it outside its folder
        assert status_json(home, dev)["serial"] == t.serial
    assert not d.exists()  # it ended: its keys are gone


def test_a_killed_twin_s_keys_are_removed_by_the_next_twin(tmp_path):
    # REQ: SR-KEY-01
    # The issue: SIGKILL left a temporary folder holding both keys for ever.
    home = tmp_path / "home"
    dev = tmp_path / "pump"
    t = LiveTwin(dev, speed=10, env=env_for(home)).start()
    killed = home / "twins" / t.serial
    assert (killed / "patient.key").exists()
    t.proc.send_signal(signal.SIGKILL)
    t.proc.wait()
    time.sleep(0.3)
    assert (killed / "patient.key").exists()  # nothing could clean up
    with LiveTwin(tmp_path / "pump2", speed=10, env=env_for(home)) as t2:
        assert not killed.exists()
        assert (home / "twins" / t2.serial).exists()


def test_a_second_twin_never_takes_over_a_path_in_use(tmp_path):
    # issue 13: a second `theca twin --pty PATH` took over a path in use and deleted the
    # symlink when it stopped; the first twin ran on, unreachable
    home = tmp_path / "home"
    dev = tmp_path / "pump"
    img = tmp_path / "f.img"
    with LiveTwin(dev, speed=10, env=env_for(home), args=["--flash-image", img]) as t:
        target = dev.resolve()
        r = run_theca(home, "twin", "--pty", dev)
        assert r.returncode == 2 and "in use by twin" in r.stderr and t.serial in r.stderr
        r = run_theca(home, "twin", "--pty", tmp_path / "other", "--flash-image", img)
        assert r.returncode == 2 and "--flash-image" in r.stderr and "in use" in r.stderr
        assert dev.resolve() == target  # the first twin's link is untouched
        assert status_json(home, dev)["serial"] == t.serial


def test_a_host_that_stops_reading_never_starves_therapy(tmp_path):
    # issue 13: at --speed 60 a host that stopped reading (5,000 unread NACKs) left the
    # pump delivering nothing for 78 device minutes; at speed 1 it was exact
    from datetime import datetime

    from theca.link.client import Client

    def hours_between(a, b):
        f = "%Y-%m-%dT%H:%M:%SZ"
        return (datetime.strptime(b, f) - datetime.strptime(a, f)).total_seconds() / 3600

    home = tmp_path / "home"
    dev = tmp_path / "pump"
    rx = tmp_path / "rx.toml"
    rx.write_text('drug = "morphine"\nconcentration = "10 mg/mL"\n[[steps]]\n'
                  'start = "00:00"\nrate = "4.8 mg/day"\n')  # 20 uL an hour
    with LiveTwin(dev, speed=600, env=env_for(home), args=["--flash-image", tmp_path / "f.img"]):
        assert run_theca(home, "--device", dev, "program", rx, "--yes").returncode == 0
        s0 = status_json(home, dev)
        with in_home(home), Client(str(dev)) as c:
            c.identify("clinician")
            frame, _, _ = c.sign(0x40, b"", "clinician")
            t_end = time.monotonic() + 3
            n = 0
            while time.monotonic() < t_end:  # the same frame again and again, never read
                c.link.send(frame)
                n += 1
        s1 = status_json(home, dev)
    assert n > 1000
    hours = hours_between(s0["device_time"], s1["device_time"])
    delivered = s1["delivered_ul"] - s0["delivered_ul"]
    assert hours > 0.3, hours
    assert abs(delivered - 20 * hours) <= 1.0, (delivered, hours)


def test_a_killed_twin_left_a_zombie_frees_its_port(tmp_path, monkeypatch):
    # issue 23: a twin killed with SIGKILL whose parent has not reaped it (a container
    # without an init) is a zombie: its pid still answers, so a pid check kept its pty
    # "in use by twin ..." for ever. Its lock (flock) went with it.
    import subprocess
    import sys

    monkeypatch.setenv("THECA_HOME", str(tmp_path))
    code = ("from theca.link import keys as K; "
            "K.make_twin_dir('ZOMBIE1', uses={'pty': '/tmp/zombie-pty'}); "
            "print('up', flush=True); import time; time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        assert K.twin_using("/tmp/zombie-pty", "pty") == ("ZOMBIE1", child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (Path(f"/proc/{child.pid}/stat").read_text().split()[2] != "Z"
               and time.monotonic() < deadline):
            time.sleep(0.05)  # dead, not reaped: a zombie
        os.kill(child.pid, 0)  # its pid still answers
        assert K.twin_using("/tmp/zombie-pty", "pty") is None
        assert K.reap_twins() == ["ZOMBIE1"]
    finally:
        child.kill()
        child.wait()
