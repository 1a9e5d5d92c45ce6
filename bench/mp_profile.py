# Where the twin's time goes (bench/bench_profile.py runs this under the unix port with
# the twin's configuration): the firmware's main() timed as it is, or with one concern
# replaced by a stand-in that does nothing (ABLATE names it). The difference is that
# concern's cost. Prints "PROFILE <microseconds>".
import os
import sys
import time

import board
import main as fwmain
import pump
import strokes

ABLATE = os.getenv("ABLATE", "")

if ABLATE == "status_build":
    _build = pump.Pump.status_frame
    _keep = []

    def _cached(self, now):
        if not _keep:
            _keep.append(bytes(_build(self, now)))
        return _keep[0]

    pump.Pump.status_frame = _cached
elif ABLATE == "tlog_write":
    board.TlogSink.emit = lambda self, mv: None
elif ABLATE == "sensing":
    pump.Pump.sense = lambda self, now: None
elif ABLATE == "mechanism":
    def _moved(self):
        self.strokes += 1
        return 0

    board.Mechanism.stroke = _moved
elif ABLATE == "accounting":
    strokes._account = lambda p, now: None
elif ABLATE == "skip_to":
    board.Clock.skip_to = lambda self, t: False
elif ABLATE:
    raise SystemExit("mp_profile: unknown ABLATE " + ABLATE)

t0 = time.ticks_us()
fwmain.main()
us = time.ticks_diff(time.ticks_us(), t0)
sys.stderr.write(f"PROFILE {us}\n")
