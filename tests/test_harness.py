"""The MicroPython test collector must not hide failures."""

import json
from pathlib import Path

from mphost import run_mp


def test_failing_mp_test_is_reported(tmp_path: Path):
    mod = tmp_path / "mptest_tmpfail.py"
    mod.write_text("def test_ok():\n    pass\n\ndef test_bad():\n    assert 1 == 2, 'boom'\n")
    runner = Path(__file__).parent / "mp" / "_runner.py"
    proc = run_mp([str(runner), "mptest_tmpfail"], extra_path=[tmp_path])
    rows = {}
    for line in proc.stdout.decode().splitlines():
        if line.startswith("@@MPTEST "):
            r = json.loads(line[9:])
            rows[r["name"]] = r
    assert rows["test_ok"]["ok"] is True
    assert rows["test_bad"]["ok"] is False
    assert "boom" in rows["test_bad"]["tb"]


def test_worker_roundtrip_and_errors(mpw):
    import pytest
    from mphost import MPError

    with pytest.raises(MPError, match="ZeroDivisionError"):
        mpw.call("mp_helpers.divide", 1, 0)
    assert mpw.call("mp_helpers.divide", 6, 3) == 2
