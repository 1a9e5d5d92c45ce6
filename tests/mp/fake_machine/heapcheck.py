# How much heap the rp2 board and the firmware keep alive, run from .mpy files.
# Usage (tests/test_boards.py): micropython -X heapsize=H heapcheck.py MPY_DIR FLASH_FILE
# MPY_DIR holds the firmware, boards/rp2_pico, boards/common and these fakes compiled
# for the unix port. Runs main.main() for six virtual hours (program, patient boluses,
# status, MAINTENANCE) with the flash in a host file and the fake world not recording,
# sampling the live heap after a collection every five minutes. Prints one JSON line.
import gc
import sys

gc.collect()
_b0 = gc.mem_alloc()
sys.path.insert(0, sys.argv[1])
import fakeworld  # noqa: E402

fakeworld.install("rp2_pico", sys.argv[1])
import asyncio  # noqa: E402,F401
import machine  # noqa: E402,F401
import rp2  # noqa: E402,F401
import vtime  # noqa: E402,F401

gc.collect()
_fakes = gc.mem_alloc() - _b0  # the fake hardware and virtual time, not the firmware's

import json  # noqa: E402
import struct  # noqa: E402

import rig  # noqa: E402

rig.FLASH_FILE = sys.argv[2]
import board  # noqa: E402
import msgdefs as md  # noqa: E402
from fakehw import rx_blob  # noqa: E402

w = rig.setup(board, "rp2_pico")
w.record = False
h = rig.HostLink(w, "rp2_pico")
S = 1_000_000_000
h.send_at(1 * S, md.T_SET_TIME, struct.pack(md.SET_TIME_FMT, rig.DEVICE_T0, 0))
h.send_at(2 * S, md.T_PROGRAM, rx_blob(pb=(100_000, 600, 3600, 4)))
for k in range(1, 6):
    h.send_at(k * 3600 * S, md.T_PATIENT_BOLUS, role=md.ROLE_PATIENT)
h.send_at(6 * 3600 * S, md.T_GET_STATUS)
h.send_at(6 * 3600 * S + S, md.T_MAINTENANCE)
samples = []


def sample():
    gc.collect()
    samples.append(gc.mem_alloc() - _b0)
    w.at(w.now_ns + 300 * S, sample)


w.at(3 * S, sample)
import main  # noqa: E402

try:
    main.main()
except fakeworld.BoardReset:
    pass  # rp2: MAINTENANCE resets into the maintenance boot
print(json.dumps({
    "fakes": _fakes,
    "peak": max(samples),
    "replies": [[r[1], r[2]] for r in h.replies()],
    "bites": len(w.bites),
    "board_file": board.__file__,
}))
