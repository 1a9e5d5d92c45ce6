# Runs the test_* functions of one MicroPython test module, one JSON line each.
# Usage: micropython _runner.py MODULE [NAME ...]
import io
import json
import sys
import time


def main():
    modname = sys.argv[1]
    wanted = sys.argv[2:]
    mod = __import__(modname)
    names = [n for n in dir(mod) if n.startswith("test_")]
    # dir() order is hash order on MicroPython; sort for a stable report.
    names.sort()
    if wanted:
        names = [n for n in names if n in wanted]
    for name in names:
        t0 = time.ticks_us()
        ok = True
        tb = ""
        try:
            getattr(mod, name)()
        except Exception as e:  # a failed test is reported, the next one still runs
            ok = False
            s = io.StringIO()
            sys.print_exception(e, s)
            tb = s.getvalue()
        us = time.ticks_diff(time.ticks_us(), t0)
        print("@@MPTEST " + json.dumps({"name": name, "ok": ok, "tb": tb, "us": us}))


main()
