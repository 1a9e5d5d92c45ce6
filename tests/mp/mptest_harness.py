# The harness itself: a failing MicroPython test must be reported as failing.
import sys


def test_runs_on_micropython():
    assert sys.implementation.name == "micropython"


def test_firmware_dir_on_path():
    assert any(p.endswith("firmware") for p in sys.path)
