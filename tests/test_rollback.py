"""A flash image put back (rollback): the pump itself cannot tell an old image from a
restart, so the host notices (issue 23, SR-ROLL-01): `log pull` finds the device's log
behind or renumbered against the file it pulled before, keeps both histories and says so
(exit 1); `status` finds the pump delivered less than this host saw it deliver."""

from __future__ import annotations

import shutil
import time

from test_link import env_for, run_theca
from theca.twin.live import LiveTwin

RX = """
drug = "morphine"
concentration = "10 mg/mL"
[[steps]]
start = "00:00"
rate = "2 mg/day"
[patient_bolus]
dose = "0.1 mg"
duration = "1 min"
lockout = "30 min"
max_per_day = 4
"""


def test_a_rolled_back_image_is_named_and_both_histories_are_kept(tmp_path):
    # REQ: SR-ROLL-01
    home, dev, img = tmp_path / "home", tmp_path / "pump", tmp_path / "flash.img"
    rx = tmp_path / "rx.toml"
    rx.write_text(RX)
    log = tmp_path / "pump.tlog"
    args = ["--flash-image", img, "--reservoir-ml", 15]
    with LiveTwin(dev, speed=600, env=env_for(home), args=args):
        assert run_theca(home, "--device", dev, "program", rx, "--yes").returncode == 0
        assert run_theca(home, "--device", dev, "bolus").returncode == 0
        r = run_theca(home, "--device", dev, "log", "pull", "-o", log)
        assert r.returncode == 0, r.stderr
    old = tmp_path / "old.img"
    shutil.copyfile(img, old)  # the image as it was: what an attacker keeps to put back
    with LiveTwin(dev, speed=600, env=env_for(home), args=args):
        assert run_theca(home, "--device", dev, "suspend").returncode == 0
        assert run_theca(home, "--device", dev, "resume").returncode == 0
        time.sleep(6)  # an hour of delivery at 600x: what the old image never delivered
        r = run_theca(home, "--device", dev, "log", "pull", "-o", log)
        assert r.returncode == 0, r.stderr
        assert run_theca(home, "--device", dev, "status").returncode == 0
    before = log.read_bytes()
    shutil.copyfile(old, img)  # the rollback
    with LiveTwin(dev, speed=600, env=env_for(home), args=args):
        # it delivered less than this host saw it deliver
        s = run_theca(home, "--device", dev, "status")
        assert s.returncode == 1 and "went BACK" in s.stderr and "delivered" in s.stderr
        # the pump boots from the old image and numbers events again, with other content
        assert run_theca(home, "--device", dev, "bolus").returncode in (0, 3)
        r = run_theca(home, "--device", dev, "log", "pull", "-o", log)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "ROLLBACK" in r.stderr and "went BACK" in r.stderr
    assert log.read_bytes() == before  # the earlier history, untouched
    new = list(tmp_path.glob("pump.rollback-*.tlog"))
    assert len(new) == 1
    d = run_theca(home, "decode", new[0], "--format", "jsonl")
    assert d.returncode == 0 and '"event":"boot"' in d.stdout  # the device's own history
