# The dose guard's cost on the unix port (run by bench/run.py with tests/mp on the path):
# microseconds and bytes allocated per check, against a day of history and a running plan.
import gc
import time

import msgdefs as md
import pump as P
from fakehw import HW, Host, reply, rx_blob

LIB = P.load_druglib("firmware/druglib.json")
T0 = 189_388_800
hw = HW(T0)
p = P.Pump(hw, T0, LIB)
h = Host()
hw.telemetry.keep = False
assert reply(p.command(h.cmd(md.T_PROGRAM, rx_blob(steps=((0, 5_500_000), (480, 6_000_000)),
                                               pb=(100_000, 600, 3600, 4))), T0))[2] == 0
t = T0
while t < T0 + 86400:  # a day of history in the buckets
    t = p.tick(t)
d = LIB[1]
N = 200
gc.collect()
gc.disable()
a0 = gc.mem_alloc()
t0 = time.ticks_us()
for _ in range(N):
    r = p.guard.check(t, d, p.plan.conc, 100_000, 10_000, 600)
us = time.ticks_diff(time.ticks_us(), t0) / N
alloc = (gc.mem_alloc() - a0) // N
gc.enable()
# what one check keeps: the guard holds no state of its own (the buckets are the history)
print(f"GUARD {r} {us:.1f} {alloc}")
